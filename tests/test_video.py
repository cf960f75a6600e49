"""Video: warping and Ruder's masks, the temporal term, the runner's modes (warping error,
batch == its documented joint objective and multi-pass schedule, sharded, resume), clip
I/O, and the script's outputs and one-line errors. Random weights, images of at most 40 px,
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
import optax
import pytest
from PIL import Image

pytest.importorskip("av")
pytest.importorskip("cv2")

import jnst.experiments as experiments  # noqa: E402
import jnst.flow as flow  # noqa: E402
import jnst.losses as losses  # noqa: E402
import jnst.optimize as optimize  # noqa: E402
import jnst.video as video  # noqa: E402
import jnst.video_io as video_io  # noqa: E402
from jnst.errors import JnstError  # noqa: E402
from tests import script_runner  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# Random weights put the terms on odd scales: TW makes the temporal term matter there.
TW = 1e7
CFG = experiments.StylizeConfig(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"),
                                style_weight=1e4)
OPT = optimize.OptConfig(steps=6, chunk=6)


def smooth_photo(n=96, seed=0):
  """A smooth random RGB 'photo' (n, n, 3) in [0, 1]: upsampled noise."""
  rng = np.random.default_rng(seed)
  small = Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8))
  return np.asarray(small.resize((n, n), Image.BICUBIC), np.float32) / 255.0


@pytest.fixture(scope="module")
def pan():
  """A 3-frame synthetic camera move (24 x 32) with its true flow, and a style image."""
  move = flow.CameraMove(smooth_photo(), 3, (24, 32), pan=(0.1, 0.05), zoom=1.05)
  return list(move.frames), move, smooth_photo(32, seed=1)


# ---------------------------------------------------------------- warping and masks


def test_warp_by_integer_translation_is_a_shift():
  rng = np.random.default_rng(0)
  img = rng.random((20, 24, 3), dtype=np.float32)
  dx, dy = 3, -2
  f = np.zeros((20, 24, 2), np.float32)
  f[..., 0], f[..., 1] = dx, dy
  out = np.asarray(flow.warp(jnp.asarray(img), jnp.asarray(f)))
  # out(y, x) = img(y + dy, x + dx) where that lies inside.
  np.testing.assert_allclose(out[2:, :-3], img[:-2, 3:], atol=1e-6)
  inside = np.asarray(flow.inside(jnp.asarray(f)))
  assert inside[2:, :-3].all() and not inside[:2].any() and not inside[:, -3:].any()
  assert not np.allclose(out[2:, :-3], img[2:, :-3])  # The shift is not the identity.


def test_reliability_is_zero_on_disocclusion_and_one_where_consistent():
  """A block 8 px wide moves 4 px right over a still background: where it was at t−1 is
  disoccluded at t; its interior and the far background are consistent."""
  h, w = 16, 40
  fwd = np.zeros((h, w, 2), np.float32)   # flow(t−1, t): block at columns 10..17 moves +4.
  fwd[:, 10:18, 0] = 4
  back = np.zeros((h, w, 2), np.float32)  # flow(t, t−1): block now at columns 14..21.
  back[:, 14:22, 0] = -4
  c = np.asarray(flow.reliability(jnp.asarray(fwd), jnp.asarray(back)))
  assert set(np.unique(c)) <= {0.0, 1.0}
  assert (c[:, 10:14] == 0).all()         # Disoccluded: the forward-backward check fails.
  assert (c[:, 16:20] == 1).all()         # Block interior: consistent.
  assert (c[:, :8] == 1).all() and (c[:, 25:] == 1).all()  # Background.
  assert (c[:, 13] == 0).all() and (c[:, 21] == 0).all()  # Motion boundaries.
  # Flows that agree everywhere give 1 everywhere except where p + ŵ leaves the frame.
  still = np.asarray(flow.reliability(jnp.zeros((h, w, 2)), jnp.zeros((h, w, 2))))
  assert (still == 1).all()


def test_dis_flow_recovers_a_translation():
  img = smooth_photo(64)
  a, b = img[8:40, 8:48], img[8:40, 11:51]  # b is a moved 3 px left: a(p) = b(p − 3).
  f = flow.dis_flow(a, b)
  assert abs(float(np.median(f[8:-8, 8:-8, 0])) + 3) < 0.5
  assert abs(float(np.median(f[8:-8, 8:-8, 1]))) < 0.5


def test_camera_move_flow_is_true():
  frames, flows, masks = flow.camera_move(smooth_photo(), 3, (24, 32))
  for t in (1, 2):
    m = jnp.asarray(masks[t])
    warped = flow.warp(jnp.asarray(frames[t - 1]), jnp.asarray(flows[t]))
    still = float(flow.masked_mse(jnp.asarray(frames[t]), jnp.asarray(frames[t - 1]), m))
    # What is left is resampling (frames and warp are both bilinear), far below the motion.
    assert float(flow.masked_mse(jnp.asarray(frames[t]), warped, m)) < 0.1 * still
    assert masks[t].mean() > 0.7 and still > 1e-3
  move = flow.CameraMove(smooth_photo(), 3, (24, 32))
  f20, m20 = move(2, 0)  # Any pair: two steps at once.
  warped = flow.warp(jnp.asarray(frames[0]), jnp.asarray(f20))
  assert float(flow.masked_mse(jnp.asarray(frames[2]), warped, jnp.asarray(m20))) < 1e-3


def test_temporal_term_and_long_term_masks():
  x = jnp.ones((4, 5, 3))
  warped = jnp.stack([jnp.zeros((4, 5, 3)), 2 * jnp.ones((4, 5, 3))])
  mask = jnp.stack([jnp.ones((4, 5, 1)), jnp.zeros((4, 5, 1))]).at[1, 0, 0].set(1.0)
  # 1/D Σ c (x − ω)²: 60 ones from the first target, 3 from the one pixel of the second.
  assert float(losses.temporal_loss(x, warped, mask)) == pytest.approx(63 / 60)
  near, far = np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[1.0, 1.0], [0.0, 1.0]])
  lt = video.long_term_masks([near, far])
  np.testing.assert_array_equal(lt[1], [[0.0, 1.0], [0.0, 1.0]])


# ---------------------------------------------------------------- the runner


def test_temporal_modes_flicker_less_than_naive(random_params, pan):
  frames, known, style = pan
  problems = video.FrameProblems(CFG, random_params, frames, [style])
  errs, style_terms = {}, {}
  for mode, coupling in (("none", "joint"), ("sequential", "joint"), ("batch", "joint"),
                         ("batch", "passes")):
    cfg = video.VideoConfig(mode=mode, coupling=coupling, passes=2, temporal_weight=TW)
    res = video.run(problems, cfg, OPT, flows=known)
    errs[mode, coupling] = res.warping_error
    style_terms[mode, coupling] = res.summary()["mean_terms"]["style"]
    assert res.rgb.shape == (3, 24, 32, 3) and len(res.frames) == 3
  naive = errs["none", "joint"]
  assert all(e < naive for k, e in errs.items() if k[0] != "none"), errs
  assert all(np.isfinite(v) for v in style_terms.values())


def reference_multipass(problems, cfg, opt, flows, seed=0):
  """jnst/video.py's documented batch schedule, frame by frame with ``optimize.run``."""
  s = opt.steps // cfg.passes
  popt = dataclasses.replace(opt, steps=s, chunk=s)
  ps = [video.with_temporal(p, cfg.temporal_weight, 1) for p in problems]
  x = [np.asarray(optimize.run(p.objective, p.x0(jax.random.key(seed)), p.data, popt).x)
       for p in ps]
  for p in range(1, cfg.passes):
    nb = -1 if p % 2 else 1  # Forward passes look at t−1, backward ones at t+1.
    new = []
    for t, prob in enumerate(ps):
      if 0 <= t + nb < len(ps):
        f, c = flows(t, t + nb)
        w = np.asarray(flow.warp(jnp.asarray(x[t + nb]), jnp.asarray(f)))
      else:
        w, c = np.zeros_like(x[t]), np.zeros(x[t].shape[:2], np.float32)
      c3 = c[..., None]
      x0 = cfg.blend * x[t] + (1 - cfg.blend) * (c3 * w + (1 - c3) * x[t])
      prob = video.set_temporal(prob, video.temporal_target(prob, w[None], c[None]))
      new.append(np.asarray(optimize.run(prob.objective, jnp.asarray(x0), prob.data, popt).x))
    x = new
  return np.stack(x)


def test_batch_mode_equals_its_multipass_schedule(random_params, pan):
  frames, _, style = pan
  problems = video.FrameProblems(CFG, random_params, frames, [style])
  flows = video.ContentFlows(frames)  # DIS both ways: backward passes use flow(t, t+1).
  cfg = video.VideoConfig(mode="batch", coupling="passes", passes=3, temporal_weight=TW,
                          blend=0.3, carry=False)
  # Adam: bounded steps. L-BFGS on random weights takes wild steps (a 1e-4 difference from
  # the batched convs can become a different iterate), which would test chaos, not schedule.
  opt = optimize.OptConfig(optimizer="adam", learning_rate=2.0, steps=6, chunk=2)
  res = video.run(problems, cfg, opt, flows=flows)
  ref = reference_multipass(problems, cfg, opt, flows)
  np.testing.assert_allclose(res.x, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
  # The schedule matters: without the later passes the result differs.
  one = video.run(problems, dataclasses.replace(cfg, passes=2),
                  dataclasses.replace(opt, steps=4), flows=flows)
  assert not np.allclose(one.x, ref, atol=1e-2 * np.abs(ref).max())


def reference_joint(problems, weight, opt, flows, stop=False, seed=0):
  """jnst/video.py's documented joint objective written frame by frame — Σ_t L_t(x_t) with
  frame t's temporal term towards x_{t−1} warped to t — minimised by Adam on the stacked
  frames (Adam is elementwise: the same as one Adam per frame). ``stop``: no gradient into
  x_{t−1} through the term."""
  ps = [video.with_temporal(p, weight, 1) for p in problems]
  pairs = [None] + [flows(t, t - 1) for t in range(1, len(ps))]

  def total(x):
    out = 0.0
    for t, p in enumerate(ps):
      if t:
        f, c = pairs[t]
        prev = jax.lax.stop_gradient(x[t - 1]) if stop else x[t - 1]
        w = flow.warp(prev, jnp.asarray(f))
        p = video.set_temporal(p, video.temporal_target(p, w[None], jnp.asarray(c)[None]))
      out = out + p.objective(x[t], p.data)[0]
    return out

  tx = optax.adam(opt.learning_rate)
  x = jnp.stack([p.x0(jax.random.key(seed)) for p in ps])
  state, grad = tx.init(x), jax.jit(jax.grad(total))
  for _ in range(opt.steps):
    updates, state = tx.update(grad(x), state, x)
    x = x + updates
  return np.asarray(x)


def test_batch_joint_equals_its_documented_objective(random_params, pan):
  frames, known, style = pan
  problems = video.FrameProblems(CFG, random_params, frames, [style])
  cfg = video.VideoConfig(mode="batch", temporal_weight=TW)
  assert cfg.coupling == "joint"  # The default.
  opt = optimize.OptConfig(optimizer="adam", learning_rate=2.0, steps=6, chunk=3)
  res = video.run(problems, cfg, opt, flows=known)
  ref = reference_joint(problems, TW, opt, known)
  np.testing.assert_allclose(res.x, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
  assert [f["evaluations"] for f in res.frames] == [7, 7, 7]  # 6 steps and the final loss.
  assert [f["status"] for f in res.frames] == ["steps"] * 3
  # The term's gradient reaches the earlier frame: without it the result differs.
  one_sided = reference_joint(problems, TW, opt, known, stop=True)
  assert not np.allclose(one_sided, ref, atol=1e-2 * np.abs(ref).max())
  # The final terms are each frame's own, at the final frames.
  temporal = [f["terms"]["temporal"] for f in res.frames]
  assert temporal[0] == 0 and all(v > 0 for v in temporal[1:])


SHARDED_JOINT = """
import jax, numpy as np
import jnst.backbones.vgg as vgg, jnst.video as video
from tests.test_video import joint_case
problems, cfg, opt, flows = joint_case(vgg.VGG19.init_random(jax.random.key(0)))
np.save(OUT, video.run(problems, cfg, opt, flows=flows).x)
print(jax.device_count())
"""


def joint_case(params):
  """(problems, config, optimiser, true flows) of a joint batch on a 3-frame camera move."""
  move = flow.CameraMove(smooth_photo(), 3, (24, 32), pan=(0.1, 0.05), zoom=1.05)
  problems = video.FrameProblems(CFG, params, list(move.frames), [smooth_photo(32, seed=1)])
  opt = optimize.OptConfig(optimizer="adam", learning_rate=2.0, steps=4, chunk=4)
  return problems, video.VideoConfig(mode="batch", temporal_weight=TW), opt, move


def test_batch_joint_sharded_over_two_devices(random_params, tmp_path):
  """3 frames on 2 devices: padded to 4 with a frame of weight 0, the coupling across the
  shards' boundary; the same frames as on one device."""
  out = tmp_path / "x.npy"
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  p = subprocess.run([sys.executable, "-c", f"OUT = {str(out)!r}" + SHARDED_JOINT],
                     capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
  assert p.returncode == 0, p.stderr
  assert p.stdout.split()[-1] == "2"
  problems, cfg, opt, flows = joint_case(random_params)
  one = video.run(problems, cfg, opt, flows=flows).x
  np.testing.assert_allclose(np.load(out), one, rtol=0, atol=1e-4 * np.abs(one).max())


@pytest.mark.parametrize("coupling", video.COUPLINGS)
def test_batch_windows_couple_to_the_previous_window(random_params, pan, coupling):
  frames, known, style = pan
  problems = video.FrameProblems(CFG, random_params, frames, [style])
  cfg = video.VideoConfig(mode="batch", coupling=coupling, passes=2, temporal_weight=TW)
  whole = video.run(problems, cfg, OPT, flows=known)
  windows = video.run(problems, dataclasses.replace(cfg, window=2), OPT, flows=known)
  np.testing.assert_allclose(windows.x[:2], video.run(
      video.FrameProblems(CFG, random_params, frames[:2], [style]), cfg, OPT, flows=known).x,
      rtol=0, atol=1e-3 * np.abs(whole.x).max())
  assert windows.warping_error < video.run(problems, video.VideoConfig(mode="none"), OPT,
                                           flows=known).warping_error


class Interrupt(Exception):
  pass


def test_resume_after_interruption_gives_the_same_frames(random_params, pan, tmp_path):
  frames, known, style = pan
  problems = video.FrameProblems(CFG, random_params, frames, [style])
  cfg = video.VideoConfig(mode="sequential", offsets=(1, 2), temporal_weight=TW)
  whole = video.run(problems, cfg, OPT, flows=known)
  store = video_io.FrameStore(tmp_path / "run")

  def stop_after_two(r):
    if r.frame == 1:
      raise Interrupt

  with pytest.raises(Interrupt):
    video.run(problems, cfg, OPT, flows=known, store=store, progress=stop_after_two)
  assert len(store) == 2
  seen = []
  resumed = video.run(problems, cfg, OPT, flows=known, store=store, progress=seen.append)
  assert [r.cached for r in seen] == [True, True, False]
  np.testing.assert_array_equal(resumed.x, whole.x)
  assert resumed.frames[2]["evaluations"] == whole.frames[2]["evaluations"]


def test_video_config_errors():
  for bad, msg in ((dict(mode="fast"), "unknown temporal mode"),
                   (dict(coupling="gauss"), "unknown coupling"),
                   (dict(offsets=(2, 4)), "start at 1"), (dict(passes=1), "at least 2 passes"),
                   (dict(blend=2.0), "blend"), (dict(temporal_weight=-1.0), "temporal_weight")):
    with pytest.raises(JnstError, match=msg):
      video.VideoConfig(**bad).validate()
  with pytest.raises(JnstError, match="splits --steps=3 over 4 passes: give more steps"):
    video.VideoConfig(mode="batch", coupling="passes", passes=4).validate(
        optimize.OptConfig(steps=3))
  video.VideoConfig(mode="batch", passes=4).validate(optimize.OptConfig(steps=3))  # Joint: no.
  with pytest.raises(JnstError, match="--linesearch=none"):
    video.VideoConfig(mode="batch").validate(optimize.OptConfig(linesearch="zoom"))
  # No weight given: the mode's own default, filled in.
  assert video.VideoConfig(mode="batch").validate().temporal_weight == video.JOINT_TEMPORAL_WEIGHT
  assert video.VideoConfig(mode="batch", coupling="passes").validate().temporal_weight == \
      video.DEFAULT_TEMPORAL_WEIGHT == video.VideoConfig().validate().temporal_weight
  with pytest.raises(JnstError, match=r"over 2 passes \(--first_pass=0.99\)"):
    video.VideoConfig(mode="batch", coupling="passes", passes=2, first_pass=0.99).validate(
        optimize.OptConfig(steps=5))


# ---------------------------------------------------------------- clip I/O


def test_clip_roundtrip_video_gif_and_directory(tmp_path):
  rng = np.random.default_rng(0)
  clip = rng.random((5, 24, 31, 3)).astype(np.float32)  # Odd width: padded for yuv420p.
  for name in ("c.mp4", "c.gif", "frames"):
    video_io.write_clip(tmp_path / name, clip, 10.0)
    back = video_io.read_clip(tmp_path / name, 32)
    rate = video_io.DEFAULT_DIR_FPS if name == "frames" else 10.0  # A directory has no rate.
    assert len(back.frames) == 5 and back.fps == pytest.approx(rate), name
  assert video_io.read_clip(tmp_path / "frames", 31).frames[0].shape == (24, 31, 3)
  np.testing.assert_allclose(video_io.read_clip(tmp_path / "frames", 31).frames[2], clip[2],
                             atol=1 / 255)
  sub = video_io.read_clip(tmp_path / "c.mp4", 32, start=1, max_frames=2, fps=5.0)
  assert sub.indices == [1, 2] and len(sub.frames) == 2 and sub.fps == 5.0
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- the script


def run_script(*args, cwd=REPO, pre=""):
  if not pre:  # In a reused worker process: tests/script_runner.py.
    return script_runner.run_script("stylize_video", *args, cwd=cwd)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  code = f"{pre}import runpy, sys; sys.argv = ['stylize_video', *{list(args)!r}]; " \
         f"runpy.run_path({str(REPO / 'scripts' / 'stylize_video.py')!r}, run_name='__main__')"
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                        cwd=cwd, timeout=300)


def frame_dir(d: Path, sizes):
  d.mkdir()
  for i, (h, w) in enumerate(sizes):
    img = (smooth_photo(48, seed=i)[:h, :w] * 255).astype(np.uint8)
    Image.fromarray(img).save(d / f"f{i:03d}.png")
  return d


def test_script_writes_video_and_record_and_resumes(tmp_path, random_weights_file):
  frames = frame_dir(tmp_path / "in", [(24, 32)] * 3)
  Image.fromarray((smooth_photo(32, 1) * 255).astype(np.uint8)).save(tmp_path / "style.png")
  out = tmp_path / "out" / "clip.mp4"
  args = [f"--input={frames}", f"--style={tmp_path / 'style.png'}", f"--output={out}",
          f"--weights={random_weights_file}", "--size=32", "--steps=4", "--temporal=batch",
          "--passes=2", "--content_layers=relu2_1", "--style_layers=relu1_1,relu2_1"]
  p = run_script(*args)
  assert p.returncode == 0, p.stderr
  assert "frame 3/3" in p.stdout and "eta" in p.stdout and "frames 1-3/3 step 4/4" in p.stdout
  rec = json.loads(out.with_suffix(".json").read_text())
  for key in ("flags", "versions", "run_id", "warping_error", "per_frame", "seconds",
              "frames_per_second", "mean_terms"):
    assert key in rec, key
  assert len(rec["per_frame"]) == 3 and rec["flags"]["temporal"] == "batch"
  assert rec["flags"]["coupling"] == "joint" and rec["video"]["temporal_weight"] == 5e8
  assert len(video_io.read_clip(out, 32).frames) == 3
  first = out.read_bytes()
  again = run_script(*args)
  assert again.returncode == 0, again.stderr
  assert "3 frames done" in again.stdout and again.stdout.count("cached") == 3
  assert out.read_bytes() == first
  assert not [p for p in (tmp_path / "out").iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("case,message", [
    ("unreadable", "not a readable video"),
    ("empty", "holds no frames"),
    ("sizes", "frames of different sizes"),
    ("start", "gave no frames"),
    ("unwritable", "cannot write"),
    ("suffix", "end it in"),
    ("max_frames", "--max_frames"),
    ("no_av", "pip install -e '.[video]'"),
])
def test_script_bad_input_is_one_line_exit_2(tmp_path, case, message):
  out = tmp_path / "out" / "o.mp4"
  (tmp_path / "bad.mp4").write_text("not a video")
  (tmp_path / "empty").mkdir()
  blocker = tmp_path / "blocker"
  blocker.write_text("a file, not a directory")
  video_io.write_clip(tmp_path / "ok.gif", np.zeros((2, 20, 20, 3)), 10.0)
  args, pre = {
      "unreadable": ([f"--input={tmp_path / 'bad.mp4'}"], ""),
      "empty": ([f"--input={tmp_path / 'empty'}"], ""),
      "sizes": ([f"--input={frame_dir(tmp_path / 'mixed', [(24, 32), (24, 30)])}"], ""),
      "start": ([f"--input={tmp_path / 'ok.gif'}", "--start=5"], ""),
      "unwritable": ([f"--input={tmp_path / 'ok.gif'}", f"--output={blocker / 'o.mp4'}"], ""),
      "suffix": ([f"--input={tmp_path / 'ok.gif'}", f"--output={tmp_path / 'o.txt'}"], ""),
      "max_frames": ([f"--input={tmp_path / 'ok.gif'}", "--max_frames=0"], ""),
      "no_av": ([f"--input={tmp_path / 'bad.mp4'}"], "import sys; sys.modules['av'] = None; "),
  }[case]
  if not any(a.startswith("--output") for a in args):
    args.append(f"--output={out}")
  p = run_script(*args, "--weights=/nonexistent.h5", "--style=/nonexistent.png", pre=pre)
  assert p.returncode == 2, (p.stdout, p.stderr)
  lines = p.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], p.stderr
  assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
  assert not [q for q in tmp_path.rglob("*") if ".tmp" in q.name or ".cache" in q.name]
