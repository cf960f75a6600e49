"""Video with a feed-forward network's frames (--fast_model: as initial images, or alone),
the memory pre-check, and one region mask for the whole clip. Random weights (backbone and
a tiny transformation network saved by the training code's checkpointer), 24 x 32 frames,
CPU. Needs the ``video`` extra (PyAV, OpenCV), which CI installs."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("av")
pytest.importorskip("cv2")

import jnst.checkpoints as checkpoints  # noqa: E402
import jnst.experiments as experiments  # noqa: E402
import jnst.feedforward as ff  # noqa: E402
import jnst.ff_train as ff_train  # noqa: E402
import jnst.flow as flow  # noqa: E402
import jnst.memory as memory  # noqa: E402
import jnst.optimize as optimize  # noqa: E402
import jnst.video as video  # noqa: E402
import jnst.video_cli as video_cli  # noqa: E402
import jnst.video_io as video_io  # noqa: E402
from jnst.errors import JnstError  # noqa: E402
from tests.test_video import pan, smooth_photo  # noqa: E402,F401  (pan: a shared fixture)

REPO = Path(__file__).resolve().parent.parent
CFG = experiments.StylizeConfig(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"),
                                style_weight=1e4)
OPT = optimize.OptConfig(steps=4, chunk=4)
FF = ff.FFConfig(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"), width=4,
                 num_res_blocks=1, image_size=32, batch_size=2, steps=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A randomly initialised network (not trained) checkpointed as train_feedforward does."""
  d = tmp_path_factory.mktemp("ff")
  state = jax.device_get(ff.init_state(dataclasses.replace(FF, seed=3), 1))
  # Random instance-norm scales, so the network's output is far from flat grey.
  state["params"] = jax.tree.map(
      lambda a: a + 0.3 * np.random.default_rng(a.size).standard_normal(a.shape).astype(a.dtype),
      state["params"])
  meta = {"config": dataclasses.asdict(FF), "net": FF.net, "members": ["style"],
          "styles": ["style.png"]}
  checkpoints.save(d / "checkpoints", 1, state, meta)
  return d


# ---------------------------------------------------------------- library


def test_fast_frames_are_the_networks_output(model_dir, pan):
  frames, _, _ = pan
  model = ff_train.load_model(model_dir)
  out, secs = video.fast_frames(ff.member_params(model.params, 0), model.net, frames, batch=2)
  assert out.shape == (3, 24, 32, 3) and secs > 0  # 3 frames in padded batches of 2.
  for t in range(3):
    np.testing.assert_allclose(out[t], ff.stylize(ff.member_params(model.params, 0), frames[t],
                                                  model.net), atol=1e-5)
  assert np.std(out) > 0.01


def test_init_frames_start_every_mode(random_params, pan, model_dir, monkeypatch):
  frames, known, style = pan
  model = ff_train.load_model(model_dir)
  fast, _ = video.fast_frames(ff.member_params(model.params, 0), model.net, frames)
  problems = video.FrameProblems(CFG, random_params, frames, [style], init_frames=fast)
  bb = problems[0].backbone
  for t in range(3):
    np.testing.assert_allclose(problems[t].x0(None), bb.preprocess(random_params, fast[t]),
                               atol=1e-3)
  starts = []

  def no_opt(problem, x0, opt, step_progress):  # Records the initial images only.
    starts.append(np.asarray(x0))
    return np.asarray(x0), {"loss": 0.0, "terms": {"style": 0.0}, "evaluations": 0,
                            "seconds": 0.0, "status": "steps"}

  monkeypatch.setattr(video, "_solve", no_opt)
  cfg = video.VideoConfig(mode="sequential", fill_from_init=True)
  res = video.run(problems, cfg, OPT, flows=known)
  f, c = known(1, 0)
  warped = np.asarray(flow.warp(jnp.asarray(starts[0]), jnp.asarray(f)))
  c3 = np.asarray(c)[..., None]
  expect = c3 * warped + (1 - c3) * np.asarray(problems[1].x0(None))
  np.testing.assert_allclose(starts[1], expect, atol=1e-3)
  assert 0 < c.mean() < 1  # Both sources are used: the move uncovers pixels at the edge.
  # Ruder's (fill_from_init=False): the warped frame everywhere.
  starts.clear()
  video.run(problems, dataclasses.replace(cfg, fill_from_init=False), OPT, flows=known)
  np.testing.assert_allclose(starts[1], warped, atol=1e-3)
  assert res.rgb.shape == (3, 24, 32, 3)


def test_score_records_losses_of_given_frames(random_params, pan, model_dir):
  frames, known, style = pan
  model = ff_train.load_model(model_dir)
  fast, secs = video.fast_frames(ff.member_params(model.params, 0), model.net, frames)
  problems = video.FrameProblems(CFG, random_params, frames, [style])
  res = video.score(problems, fast, flows=known, seconds=secs)
  np.testing.assert_allclose(res.rgb, fast, atol=2e-3)
  for t in (0, 2):
    p = problems[t]
    x = p.backbone.preprocess(random_params, fast[t])
    loss, terms = p.objective(x, p.data)
    assert res.frames[t]["loss"] == pytest.approx(float(loss), rel=1e-4)
    assert res.frames[t]["terms"]["style"] == pytest.approx(float(terms["style"]), rel=1e-4)
    assert res.frames[t]["evaluations"] == 0
  assert res.warping_error == pytest.approx(flow.warping_error(
      res.rgb, [None] + [known(t, t - 1)[0] for t in (1, 2)],
      [None] + [known(t, t - 1)[1] for t in (1, 2)]), rel=1e-5)
  assert res.seconds["total"] >= secs


def two_regions(h, w):
  m = np.zeros((h, w, 3), np.uint8)
  m[:, : w // 2] = (255, 0, 0)
  m[:, w // 2:] = (0, 0, 255)
  return m


def test_one_content_mask_for_every_frame(random_params, pan):
  frames, _, style = pan
  cmask, smask = two_regions(24, 32), two_regions(32, 32)
  problems = video.FrameProblems(CFG, random_params, frames, [style], content_mask=cmask,
                                 style_masks=[smask])
  x = problems[0].backbone.preprocess(random_params, jnp.asarray(frames[0]))
  for t in (0, 2):
    direct = CFG.build(random_params, experiments.Inputs(frames[t], (style,), None, cmask,
                                                         (smask,)))
    got, _ = problems[t].objective(x, problems[t].data)
    want, _ = direct.objective(x, direct.data)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
  plain = video.FrameProblems(CFG, random_params, frames, [style])
  assert float(plain[2].objective(x, plain[2].data)[0]) != pytest.approx(float(got), rel=1e-3)
  res = video.run(problems, video.VideoConfig(mode="sequential", temporal_weight=1e7), OPT,
                  flows=pan[1])
  assert np.all(np.isfinite(res.x))


def test_memory_estimate_multiplies_by_the_window():
  seq = video.VideoConfig(mode="sequential")
  batch = video.VideoConfig(mode="batch", coupling="passes", carry=False)
  shape, styles = (96, 128, 3), [(128, 128, 3)]
  one = video_cli.estimate(CFG, seq, shape, 16, styles)
  whole = video_cli.estimate(CFG, batch, shape, 16, styles)
  four = video_cli.estimate(CFG, dataclasses.replace(batch, window=4), shape, 16, styles)
  assert one.batch == 1 and whole.batch == 16 and four.batch == 4
  per = lambda e: e.parts["activations"] + e.parts["lbfgs"] + e.parts["image"]
  assert per(whole) == 16 * per(one) and per(four) == 4 * per(one)
  assert whole.parts["clip"] == one.parts["clip"] > 0
  fast = video_cli.estimate(CFG, seq, shape, 16, styles, fast=True, fast_only=True)
  assert fast.parts["lbfgs"] == 0 and fast.parts["clip"] > one.parts["clip"]
  fixed = four.parts["params"] + four.parts["runtime"]  # Fits; the window's frames do not.
  with pytest.raises(JnstError, match="lower --window"):
    memory.check_fits(four, int((four.bytes + fixed) / 2 / memory.SHARE),
                      flags={"batch": "--window"})
  carried = video_cli.estimate(CFG, dataclasses.replace(batch, window=4, carry=True), shape, 16,
                               styles)
  assert carried.parts["carried"] == four.parts["lbfgs"]  # The old history beside the new.
  assert carried.bytes == four.bytes + four.parts["lbfgs"] and "carried" not in four.parts
  joint = video_cli.estimate(CFG, dataclasses.replace(batch, window=4, coupling="joint"), shape,
                             16, styles)  # Nothing carried; a flow per frame.
  assert "carried" not in joint.parts and joint.parts["temporal"] == four.parts["temporal"] + (
      4 * 4 * 96 * 128 * 3 * 2 // 3)


# ---------------------------------------------------------------- the script


def run_script(*args, env=None):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
  code = f"import runpy, sys; sys.argv = ['stylize_video', *{list(args)!r}]; " \
         f"runpy.run_path({str(REPO / 'scripts' / 'stylize_video.py')!r}, run_name='__main__')"
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                        cwd=REPO, timeout=900)


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
  d = tmp_path_factory.mktemp("clip")
  (d / "in").mkdir()
  for i in range(3):
    img = (smooth_photo(48, seed=i)[:24, :32] * 255).astype(np.uint8)
    Image.fromarray(img).save(d / "in" / f"f{i:03d}.png")
  Image.fromarray((smooth_photo(32, 1) * 255).astype(np.uint8)).save(d / "style.png")
  Image.fromarray(two_regions(48, 64)).save(d / "cmask.png")  # The frames' aspect, 2x.
  Image.fromarray(two_regions(32, 32)).save(d / "smask.png")
  return d


def common(d, weights, out):
  return [f"--input={d / 'in'}", f"--style={d / 'style.png'}", f"--output={out}",
          f"--weights={weights}", "--size=32", "--content_layers=relu2_1",
          "--style_layers=relu1_1,relu2_1"]


def test_script_fast_only_writes_the_networks_frames(tmp_path, clip_files, model_dir,
                                                     random_weights_file):
  out = tmp_path / "fast"  # A directory of PNG frames: exact values.
  p = run_script(*common(clip_files, random_weights_file, out), f"--fast_model={model_dir}",
                 "--fast_only")
  assert p.returncode == 0, p.stderr
  rec = json.loads(out.with_suffix(".json").read_text())
  assert rec["fast_model"]["network"] == 0 and rec["fast_model"]["use"].startswith("result")
  assert all(f["evaluations"] == 0 and f["status"] == "feed-forward" for f in rec["per_frame"])
  model = ff_train.load_model(model_dir)
  clip = video_io.read_clip(clip_files / "in", 32)
  want, _ = video.fast_frames(ff.member_params(model.params, 0), model.net, clip.frames)
  got = video_io.read_clip(out, 32).frames
  np.testing.assert_allclose(np.stack(got), want, atol=1.5 / 255)


def test_script_fast_init_sequential_with_masks(tmp_path, clip_files, model_dir,
                                                random_weights_file):
  out = tmp_path / "o.gif"
  p = run_script(*common(clip_files, random_weights_file, out), f"--fast_model={model_dir}",
                 "--temporal=sequential", "--steps=3", "--temporal_weight=1e7",
                 f"--content_mask={clip_files / 'cmask.png'}",
                 f"--style_mask={clip_files / 'smask.png'}")
  assert p.returncode == 0, p.stderr
  rec = json.loads(out.with_suffix(".json").read_text())
  assert rec["fast_model"]["use"].startswith("initial images")
  assert rec["inputs"]["content_mask"].endswith("cmask.png") and len(rec["per_frame"]) == 3
  assert all(f["evaluations"] > 0 for f in rec["per_frame"])


# At --size=256 (frames 256x192) one frame's estimate is about 1.62 GiB, two 1.90, three 2.19 GiB
# (0.6 GiB of each is XLA's runtime, 0.73 GiB the weights with their Winograd kernels).
@pytest.mark.parametrize("args,message", [
    (["--temporal=batch", "--size=256"], "lower --window (0 puts the whole clip"),
    (["--temporal=batch", "--window=2", "--size=256"], "lower --window"),
    (["--temporal=sequential", "--size=256"], "lower --size"),
    (["--fast_only"], "--fast_only needs --fast_model"),
    (["--content_mask=MASK_WIDE"], "aspect ratio"),
])
def test_script_refuses_up_front(tmp_path, clip_files, args, message):
  wide = tmp_path / "wide.png"
  Image.fromarray(two_regions(24, 64)).save(wide)
  args = [a.replace("MASK_WIDE", str(wide)) for a in args]
  memory_bytes = {"--temporal=batch": "2.0e9", "--temporal=sequential": "1.65e9"}.get(args[0], "")
  out = tmp_path / "out" / "o.mp4"
  p = run_script(*common(clip_files, "/nonexistent.h5", out), *args,
                 env={"JNST_MEMORY_BYTES": memory_bytes} if memory_bytes else {})
  assert p.returncode == 2, (p.stdout, p.stderr)
  lines = p.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], p.stderr
  assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("rules", ["torch", "optax"])
def test_carried_lbfgs_state_keeps_its_curvature(rules):
  """A separable quadratic whose target moves between passes (as the temporal target
  does; the curvature stays): L-BFGS carried over (``video.carry_state``) keeps its history
  and its first step gets far closer to the new minimum than a restarted one."""
  a = jnp.array([1.0, 10.0, 100.0])

  def loss_fn(x, d):
    return jnp.sum(a * (x - d) ** 2), {}

  cfg = optimize.OptConfig(steps=8, learning_rate=1.0, lbfgs_memory=10,
                           lbfgs_rules=rules).validate()
  step = jax.jit(jax.vmap(optimize.make_step(loss_fn, cfg), in_axes=(0, 0)))
  init = jax.jit(jax.vmap(lambda x: optimize.init_state(x, cfg)))
  state = init(jnp.array([[3.0, -2.0, 1.0], [0.5, 0.5, 0.5]]))
  for _ in range(4):
    state, _ = step(state, jnp.zeros((2, 3)))
  moved = jnp.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]])  # The new pass's target.
  new_loss = jax.vmap(lambda x, d: loss_fn(x, d)[0])
  value, grad = jax.vmap(jax.value_and_grad(lambda x, d: loss_fn(x, d)[0]))(state.x, moved)
  carried = video.carry_state(init(state.x), state, value, grad)
  first = (lambda o: o) if rules == "torch" else (lambda o: o[0])
  lb_old, lb_new = first(state.opt), first(carried.opt)
  np.testing.assert_array_equal(lb_new.count, lb_old.count)
  if rules == "optax":
    np.testing.assert_array_equal(lb_new.diff_params_memory, lb_old.diff_params_memory)
    s_last = np.asarray(lb_old.diff_params_memory)[:, 2]  # The 4th step's pair: slot 2.
    np.testing.assert_allclose(lb_new.params, np.asarray(state.x) - s_last, rtol=1e-6)
  else:  # jnst.lbfgs: the last accepted pair is taken again by the first update.
    np.testing.assert_array_equal(lb_new.s, lb_old.s)
    last = (np.asarray(lb_old.stored) - 1) % 10
    rows = np.arange(2)
    np.testing.assert_array_equal(lb_new.update, np.asarray(lb_old.s)[rows, last])
    np.testing.assert_allclose(lb_new.grad, np.asarray(grad) - np.asarray(lb_old.y)[rows, last],
                               rtol=1e-6)
  assert np.all(np.asarray(carried.evals) == 1)
  one, _ = step(carried, moved)
  restarted, _ = step(init(state.x), moved)
  after, fresh = np.asarray(new_loss(one.x, moved)), np.asarray(new_loss(restarted.x, moved))
  # optax's fixed first step is long, torch's short (min(1, 1/|g|_1)): a restart costs more there.
  gain = 0.1 if rules == "optax" else 0.5
  assert np.all(after < fresh) and after[0] < gain * fresh[0], (after, fresh)


def test_batch_mode_carries_the_optimiser_across_passes(random_params, pan):
  frames, known, style = pan
  problems = video.FrameProblems(CFG, random_params, frames, [style])
  cfg = video.VideoConfig(mode="batch", coupling="passes", passes=2, temporal_weight=1e7,
                          blend=1.0, carry=False)
  assert video.VideoConfig().carry  # The default since BENCHMARKS.md's 256 px comparison.
  plain = video.run(problems, cfg, OPT, flows=known)
  carried = video.run(problems, dataclasses.replace(cfg, carry=True), OPT, flows=known)
  assert np.all(np.isfinite(carried.x)) and not np.allclose(carried.x, plain.x)
  # L-BFGS without a line search: pass 1 evaluates its start once more (counted).
  assert [f["evaluations"] for f in carried.frames] == [
      f["evaluations"] + 1 for f in plain.frames]
  # Adam needs no evaluation at the start: the same count, a different result.
  adam = dataclasses.replace(OPT, optimizer="adam", learning_rate=2.0)
  plain = video.run(problems, cfg, adam, flows=known)
  carried = video.run(problems, dataclasses.replace(cfg, carry=True), adam, flows=known)
  assert not np.allclose(carried.x, plain.x)
  assert [f["evaluations"] for f in carried.frames] == [f["evaluations"] for f in plain.frames]


def test_carried_adam_keeps_its_moments():
  x = jnp.ones((2, 3))
  cfg = optimize.OptConfig(optimizer="adam", steps=3, learning_rate=0.1).validate()
  init = jax.vmap(lambda x: optimize.init_state(x, cfg))
  step = jax.vmap(optimize.make_step(lambda x, d: (jnp.sum((x - d) ** 2), {}), cfg))
  state = init(x)
  for _ in range(3):
    state, _ = step(state, jnp.zeros((2, 3)))
  carried = video.carry_state(init(state.x), state)
  np.testing.assert_array_equal(carried.opt[0].mu, state.opt[0].mu)
  np.testing.assert_array_equal(carried.opt[0].count, [3, 3])
  assert np.all(np.asarray(carried.evals) == 0)
  with pytest.raises(ValueError, match="L-BFGS"):
    lb = optimize.OptConfig(steps=3).validate()
    fresh = jax.vmap(lambda x: optimize.init_state(x, lb))(x)
    video.carry_state(fresh, fresh)
