"""jnst.pyramid: scale lists and per-scale sizes, each scale started from the upsampled
previous result, compile-once per shape, a one-scale schedule equal to a single run, batched
members equal to single pyramid runs, Adam moments carried; VGG rematerialisation gives the
same loss and gradient. Random weights, shallow layers, images <= 64 px."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnst import experiments, optimize, pyramid
from jnst.errors import JnstError

SHALLOW = dict(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"))
RTOL = 1e-3  # Batched member vs single run: 1e-4 per run (jnst/batched.py), chained twice.


def inputs(shape=(48, 64, 3)):
  rng = np.random.default_rng(0)
  return experiments.Inputs(rng.uniform(size=shape).astype(np.float32),
                            (rng.uniform(size=(40, 64, 3)).astype(np.float32),))


def config(steps=4, **kw):
  return experiments.StylizeConfig(**{**SHALLOW, **kw},
                                   opt=optimize.OptConfig(steps=steps, chunk=2))


# ------------------------------------------------------------------ the schedule


def test_sides():
  assert pyramid.sides(512) == (128, 181, 256, 362, 512)  # crowsonkb's √2 ladder.
  assert pyramid.sides(1000) == (177, 250, 354, 500, 707, 1000)
  assert pyramid.sides(64, min_size=32) == (32, 45, 64)
  assert pyramid.sides(512, min_size=128, factor=2) == (128, 256, 512)
  assert pyramid.sides(100, min_size=128) == (100,)  # min_size >= size: one scale.
  assert pyramid.sides(512, scales=[128, 256]) == (128, 256, 512)  # size appended.
  assert pyramid.sides(512, scales=[128, 512]) == (128, 512)
  for bad in ([256, 128], [128, 1024], [8, 64], [64, 64]):
    with pytest.raises(JnstError):
      pyramid.sides(512, scales=bad)
  with pytest.raises(JnstError, match="min_size"):
    pyramid.sides(512, min_size=4)


def test_shape_at_keeps_aspect_and_rounds_like_load_image():
  assert pyramid.shape_at((384, 512, 3), 512) == (384, 512, 3)
  assert pyramid.shape_at((384, 512, 3), 256) == (192, 256, 3)
  assert pyramid.shape_at((375, 500, 3), 181) == (136, 181, 3)  # round(135.75)
  assert pyramid.shape_at((500, 375), 181) == (181, 136)  # Portrait: H is the longer side.


def test_schedule_steps():
  assert pyramid.default_steps(5, 500) == (200, 100, 100, 100, 200)
  assert pyramid.default_steps(2, 10) == (4, 4)
  assert pyramid.default_steps(1, 500) == (500,)
  s = pyramid.schedule(512, 500, min_size=128, steps_per_scale=[50])
  assert s.steps == (50,) * 5 and s.rule == "steps per scale given"
  s = pyramid.schedule(512, 500, scales=[256], lbfgs_memory=[100, 20])
  assert (s.sides, s.lbfgs_memory) == ((256, 512), (100, 20))
  assert pyramid.schedule(512, 500, min_size=128).describe()["steps"] == [200, 100, 100, 100, 200]
  with pytest.raises(JnstError, match="step counts for 3 scales"):
    pyramid.schedule(512, 500, scales=[128, 256], steps_per_scale=[1, 2])
  with pytest.raises(JnstError, match="history"):
    pyramid.schedule(512, 500, scales=[128, 256], lbfgs_memory=[1, 2])


def test_chunk_fits_the_line_interval():
  opt = optimize.OptConfig(chunk=50)
  assert pyramid.chunk_for(opt, 16 * 16) == 50
  c = pyramid.chunk_for(opt, 512 * 384)  # ~2 s a step on the 2-core CPU.
  assert 50 % c == 0 and c * 512 * 384 * pyramid.CPU_SECONDS_PER_PIXEL <= pyramid.LINE_SECONDS
  assert pyramid.chunk_for(opt, 4096 * 4096) == 1


# ------------------------------------------------------------------ running


def test_one_scale_is_the_single_run_bit_for_bit(random_params):
  cfg, inp = config(), inputs()
  _, ref = experiments.run(cfg, random_params, inp)
  out = pyramid.run(cfg, random_params, pyramid.resizer(inp), pyramid.single(64, 4))
  assert np.array_equal(np.asarray(out.x), np.asarray(ref.x))
  assert out.result.loss_history == ref.loss_history
  assert out.describe()["schedule"]["rule"] == "single scale"


def test_two_scales_init_from_upsampled_previous_and_compile_once(random_params, monkeypatch):
  cfg, inp = config(init="noise", seed=3), inputs()
  sched = pyramid.schedule(64, 4, scales=[32], steps_per_scale=[3, 2])
  seen = []
  real_run = optimize.run

  def spy(loss_fn, x0, data, opt, **kw):
    res = real_run(loss_fn, x0, data, opt, **kw)
    seen.append((np.asarray(x0), opt, res))
    return res

  monkeypatch.setattr(pyramid.optimize, "run", spy)
  reports, shapes = [], []

  def progress(r):  # Report.image() is valid during the callback only.
    reports.append(r)
    shapes.append(r.image().shape)

  out = pyramid.run(cfg, random_params, pyramid.resizer(inp), sched, progress=progress)
  (x0a, opta, ra), (x0b, optb, rb) = seen
  assert x0a.shape == (24, 32, 3) and x0b.shape == (48, 64, 3)
  # Scale 0 starts from seed 3's noise at that size; scale 1 from scale 0's result, bicubic.
  problem0 = cfg.build(random_params, pyramid.resizer(inp)(32))
  np.testing.assert_array_equal(x0a, problem0.x0(jax.random.key(3)))
  np.testing.assert_array_equal(x0b, np.asarray(jax.image.resize(ra.x, (48, 64, 3), "cubic")))
  assert (opta.steps, optb.steps) == (3, 2)
  # The final image and its record are the output scale's.
  assert out.x.shape == (48, 64, 3) and out.problem.rgb(out.x).shape == (48, 64, 3)
  assert [s["shape"] for s in out.scales] == [[24, 32, 3], [48, 64, 3]]
  assert [s["evaluations"] for s in out.scales] == [4, 3]
  # Progress: scale fields, steps over all scales, the work share rising to 1, and images
  # at the output size.
  assert [(r.scale, r.global_step) for r in reports] == [(0, 2), (0, 3), (1, 5)]
  assert reports[-1].done_fraction == pytest.approx(1.0)
  assert all(0 < a.done_fraction < b.done_fraction for a, b in zip(reports, reports[1:]))
  assert shapes == [(48, 64, 3)] * 3 and reports[0].num_scales == 2
  # Every scale's shapes compiled once: the same pyramid again compiles nothing.
  before = optimize.CACHE.compiles
  again = pyramid.run(cfg, random_params, pyramid.resizer(inp), sched)
  assert optimize.CACHE.compiles == before
  np.testing.assert_array_equal(np.asarray(again.x), np.asarray(out.x))


def test_batched_seeds_equal_single_pyramid_runs(random_params):
  cfg, inp = config(init="noise", steps=3), inputs((32, 40, 3))
  sched = pyramid.schedule(40, 3, scales=[20], steps_per_scale=[2, 2])
  at = pyramid.resizer(inp)
  batch = pyramid.run_members(cfg, random_params, at, sched, [0, 5], members_per_batch=0)
  assert batch.x.shape == (2, 32, 40, 3)
  assert [s["evaluations"] for s in batch.scales] == [[3, 3], [3, 3]]
  for k, seed in enumerate([0, 5]):
    one = pyramid.run(dataclasses.replace(cfg, seed=seed), random_params, at, sched)
    np.testing.assert_allclose(batch.result.loss_history[k], one.result.loss_history, rtol=RTOL)
    x = np.asarray(one.x)
    np.testing.assert_allclose(batch.x[k], x, rtol=0, atol=RTOL * np.abs(x).max())


def test_adam_moments_carried_resized(random_params):
  mu = jnp.ones((4, 6, 3)) * jnp.arange(3.0)
  optax_state = optimize.make_optimizer(optimize.OptConfig("adam")).init(mu)
  adam = optax_state[0]._replace(count=jnp.int32(7), mu=mu, nu=-mu)  # nu < 0 is clipped to 0.
  new = optimize.make_optimizer(optimize.OptConfig("adam")).init(jnp.zeros((8, 12, 3)))
  out = pyramid.carry_adam(new, (adam, *optax_state[1:]), (8, 12))
  assert int(out[0].count) == 7 and out[0].mu.shape == (8, 12, 3)
  np.testing.assert_allclose(out[0].mu[..., 2], 2.0, rtol=1e-6)
  assert float(out[0].nu.min()) == 0.0
  # An Adam pyramid runs and each later scale starts from the carried moments.
  cfg = dataclasses.replace(config(), opt=optimize.OptConfig("adam", steps=2, chunk=2,
                                                        learning_rate=5.0))
  res = pyramid.run(cfg, random_params, pyramid.resizer(inputs()),
                    pyramid.schedule(64, 2, scales=[32], steps_per_scale=[2]))
  assert int(res.result.opt_state[0].count) == 4  # Two scales of 2 steps, count kept.


# ------------------------------------------------------------------ rematerialisation


@pytest.mark.parametrize("layers", [SHALLOW, {}])
def test_remat_same_loss_and_gradient(random_params, layers):
  inp = inputs((32, 48, 3))
  out = []
  for remat in (False, True):
    p = experiments.StylizeConfig(**layers, remat=remat, tv_weight=1.0).build(random_params, inp)
    assert p.backbone.remat is remat and p.backbone.describe().get("remat", False) is remat
    x = p.x0(jax.random.key(0)) + 3.0
    (loss, terms), g = jax.jit(jax.value_and_grad(p.objective, has_aux=True))(x, p.data)
    out.append((loss, terms, g))
  (l0, t0, g0), (l1, t1, g1) = out
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  for k in t0:
    np.testing.assert_allclose(t1[k], t0[k], rtol=1e-5)
  np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-5 * float(jnp.abs(g0).max()))
  assert math.isfinite(float(l0))


# ------------------------------------------------------------------ the scripts


def test_stylize_script_coarse_to_fine(tmp_path, random_weights_file):
  from PIL import Image
  from tests.test_scripts import make_images, run_script
  make_images(tmp_path)
  out = tmp_path / "out" / "p.png"
  p = run_script("stylize", f"--weights={random_weights_file}", "--size=32", "--steps=4",
                 f"--content={tmp_path / 'content.png'}", f"--style={tmp_path / 'style.jpg'}",
                 f"--output={out}", "--content_layers=relu2_1", "--style_layers=relu1_1",
                 "--scales=24", "--steps_per_scale=2,3", "--print_every=1", "--save_every=2")
  assert p.returncode == 0, p.stderr
  assert "coarse-to-fine: 2 scales 24, 32 px" in p.stdout and "scale 2/2 (32 px)" in p.stdout
  assert "lbfgs, 5 steps" in p.stdout  # The schedule's steps, not --steps.
  assert Image.open(out).size == (32, 27)
  # Intermediate images over both scales (global steps 2 and 4), at the output size.
  for step in (2, 4):
    assert Image.open(tmp_path / "out" / f"p_{step:05d}.png").size == (32, 27)
  rec = __import__("json").loads(out.with_suffix(".json").read_text())
  assert rec["schedule"] == {"sides": [24, 32], "steps": [2, 3], "lbfgs_memory": None,
                             "rule": "steps per scale given"}
  assert [s["shape"] for s in rec["pyramid"]["scales"]] == [[20, 24, 3], [27, 32, 3]]
  assert rec["evaluations"] == 4  # The output scale's record, 3 steps + the final loss.
  bad = run_script("stylize", f"--weights={random_weights_file}", "--size=32",
                   f"--content={tmp_path / 'content.png'}", f"--style={tmp_path / 'style.jpg'}",
                   f"--output={out}", "--steps_per_scale=2,3")
  assert bad.returncode == 2 and "--steps_per_scale needs a pyramid" in bad.stderr
