"""jnst.batched: vmapped members equal single runs, chunking reuses one compilation, the
member axis is sharded over a device mesh, weight sweeps, the auto batch size, progress
reports; and the diversity metrics of jnst.metrics."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from jnst import batched, colour, experiments, metrics, optimize, plots
from jnst.backbones import vgg
from jnst.errors import JnstError

REPO = Path(__file__).resolve().parent.parent
RTOL = 1e-4  # Member k vs a single run with seed k (jnst/batched.py docstring).
SHALLOW = ("relu1_1", "relu2_1")


def images(shape=(16, 16, 3), n=2, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.uniform(size=shape).astype(np.float32) for _ in range(n)]


def make_config(experiment, **kw):
  if experiment == "reconstruct":
    return experiments.ReconstructConfig(layer="relu2_1", **kw)
  if experiment == "synthesize":
    return experiments.SynthesizeConfig(style_layers=SHALLOW, **kw)
  return experiments.StylizeConfig(content_layers=("relu2_1",), style_layers=SHALLOW,
                                   **{"init": "noise", **kw})


def make_inputs(shape=(16, 16, 3)):
  content, style = images(shape)
  return experiments.Inputs(content, (style,))


def make_problem(params, experiment, shape=(16, 16, 3), **kw):
  return make_config(experiment, **kw).build(params, make_inputs(shape))


def single(problem, seed, opt):
  """The independent reference: optimize.run on one state from seed ``seed``'s x0."""
  return optimize.run(problem.objective, problem.x0(jax.random.key(seed)), problem.data, opt)


def assert_matches(batch, k, one):
  np.testing.assert_allclose(batch.loss_history[k], one.loss_history, rtol=RTOL)
  x = np.asarray(one.x)
  np.testing.assert_allclose(batch.x[k], x, rtol=0, atol=RTOL * np.abs(x).max())
  assert batch.evaluations[k] == one.evaluations and batch.steps[k] == one.steps
  assert batch.eval_history[k] == one.eval_history and batch.status[k] == one.status
  for term, value in one.terms.items():
    assert batch.terms[term][k] == pytest.approx(value, rel=RTOL, abs=1e-6)


OPTS = {
    "lbfgs": optimize.OptConfig(steps=4, chunk=2),
    "lbfgs_zoom": optimize.OptConfig(steps=4, chunk=4, linesearch="zoom"),
    "adam": optimize.OptConfig(optimizer="adam", learning_rate=5.0, steps=4, chunk=4),
}


@pytest.mark.parametrize("experiment,opt", [("reconstruct", "lbfgs"),
                                            ("synthesize", "lbfgs_zoom"),
                                            ("stylize", "adam")])
def test_vmapped_seeds_equal_single_runs(random_params, experiment, opt):
  problem, cfg = make_problem(random_params, experiment), OPTS[opt]
  res = batched.run_seeds(problem, [0, 3, 7], cfg)
  assert res.seeds == [0, 3, 7] and res.values is None and res.x.shape == (3, 16, 16, 3)
  assert (res.batch_size, res.num_batches) == (3, 1)  # Auto on CPU, 16 px: all at once.
  for k, s in enumerate(res.seeds):
    assert_matches(res, k, single(problem, s, cfg))
  assert not np.allclose(res.x[0], res.x[1])  # Each member has its own noise.
  # Each experiment has only its own terms.
  assert set(res.terms) == {"reconstruct": {"content"}, "synthesize": {"style"},
                            "stylize": {"content", "style", "tv"}}[experiment]
  if opt == "lbfgs":  # Known evaluations: one per step, the final one included.
    assert res.eval_history[0] == [1, 2, 3, 4, 5]


@dataclasses.dataclass(frozen=True)
class CountingLoss:
  """A loss that counts how often it is traced (= compiled chunk + final loss)."""
  loss: object
  traces: list = dataclasses.field(default_factory=list, compare=False, hash=False)

  @property
  def backbone(self):
    return self.loss.backbone

  def __call__(self, x, data):
    self.traces.append(1)
    return self.loss(x, data)


def test_chunks_pad_and_compile_once(random_params):
  problem = make_problem(random_params, "reconstruct")
  opt = optimize.OptConfig(steps=3, chunk=3)
  counted = dataclasses.replace(problem, objective=CountingLoss(problem.objective))
  optimize.CACHE.clear()
  before = optimize.CACHE.compiles
  chunked = batched.run_seeds(counted, range(5), opt, members_per_batch=2)
  assert (chunked.batch_size, chunked.num_batches) == (2, 3)
  assert chunked.batch_choice == "2 (given)"
  # init, one 3-step chunk and the final loss, compiled once for 3 batches (the last padded).
  assert optimize.CACHE.compiles - before == 3
  assert len(counted.objective.traces) == 2  # One chunk trace and one final-loss trace.
  whole = batched.run_seeds(problem, range(5), opt, members_per_batch=None)
  assert whole.num_batches == 1 and whole.batch_choice == "all (given)"
  np.testing.assert_allclose(chunked.x, whole.x, rtol=0, atol=RTOL * np.abs(whole.x).max())
  np.testing.assert_allclose(chunked.final_loss, whole.final_loss, rtol=RTOL)
  assert chunked.evaluations.tolist() == whole.evaluations.tolist() == [4] * 5
  bigger = batched.run_seeds(problem, range(2), opt, members_per_batch=10)  # > N is fine.
  assert (bigger.batch_size, bigger.num_batches) == (2, 1)
  # A second run of the same shapes compiles nothing.
  before = optimize.CACHE.compiles
  again = batched.run_seeds(counted, range(5, 10), opt, members_per_batch=2)
  assert optimize.CACHE.compiles == before and len(counted.objective.traces) == 2
  assert again.seeds == [5, 6, 7, 8, 9] and not np.allclose(again.x, chunked.x)


def test_weight_sweep_is_one_batch_equal_to_single_runs(random_params):
  opt = OPTS["adam"]
  base = make_problem(random_params, "stylize")
  res = batched.run_sweep(base, "style", [10.0, 1e4], opt, seeds=[1, 2])
  assert res.values == [10.0, 10.0, 1e4, 1e4] and res.seeds == [1, 2, 1, 2]
  assert res.num_batches == 1
  for k, (v, s) in enumerate(zip(res.values, res.seeds)):
    one = single(make_problem(random_params, "stylize", style_weight=v), s, opt)
    assert_matches(res, k, one)
  with pytest.raises(JnstError, match="cannot sweep the weight of 'layer'"):
    batched.run_sweep(base, "layer", [1.0], opt)
  with pytest.raises(JnstError, match="finite numbers >= 0"):
    batched.run_sweep(base, "tv", [-1.0], opt)
  with pytest.raises(JnstError, match="finite numbers >= 0"):
    batched.run_sweep(base, "tv", [], opt)
  # A reconstruction has only a content term: no style weight to sweep.
  with pytest.raises(JnstError, match="terms are content"):
    batched.run_sweep(make_problem(random_params, "reconstruct"), "style", [1.0], opt)


def test_weight_sweep_loss_sets_one_term(random_params):
  problem = make_problem(random_params, "stylize")
  x = problem.x0(jax.random.key(0))
  swept = batched.WeightSweepLoss(problem.objective, "content")
  assert hash(swept) == hash(batched.WeightSweepLoss(problem.objective, "content"))
  loss, terms = swept(x, (problem.data, np.float32(3.0)))
  _, base = problem.objective(x, problem.data)
  alpha = float(problem.data["loss_weights"]["content"])  # The default's (jnst.losses).
  assert float(terms["content"]) == pytest.approx(3.0 * float(base["content"]) / alpha, rel=1e-5)
  assert float(terms["style"]) == pytest.approx(float(base["style"]), rel=1e-6)
  assert float(loss) == pytest.approx(sum(float(v) for v in terms.values()), rel=1e-5)


# ------------------------------------------------------------------ auto batch size


def test_auto_batch_size(random_params, monkeypatch):
  problem = make_problem(random_params, "reconstruct", shape=(32, 32, 3))
  opt = optimize.OptConfig(steps=2, chunk=2)
  cpus = jax.devices()
  assert cpus[0].platform == "cpu"
  size, why = batched.auto_batch_size(problem, opt, 5, cpus)
  assert size == 5 and why.startswith("auto: all 5") and "32x32" in why
  monkeypatch.setattr(batched, "CPU_BATCH_MAX_PIXELS", 32 * 32)  # At the limit: still all.
  assert batched.auto_batch_size(problem, opt, 5, cpus)[0] == 5
  monkeypatch.setattr(batched, "CPU_BATCH_MAX_PIXELS", 32 * 32 - 1)  # Above it: one by one.
  size, why = batched.auto_batch_size(problem, opt, 5, cpus)
  assert size == 1 and why.startswith("auto: 1") and "32x32 > 1023" in why
  res = batched.run_seeds(problem, [0, 1, 2], opt)  # Default: "auto".
  assert (res.batch_size, res.num_batches) == (1, 3) and res.batch_choice == why
  ref = batched.run_seeds(problem, [0, 1, 2], opt, members_per_batch=3)
  assert (ref.batch_size, ref.num_batches) == (3, 1) and ref.batch_choice == "3 (given)"
  np.testing.assert_allclose(res.x, ref.x, rtol=0, atol=RTOL * np.abs(ref.x).max())
  monkeypatch.undo()
  res = batched.run_seeds(problem, [0, 1, 2], opt, members_per_batch="auto")
  assert (res.batch_size, res.num_batches) == (3, 1) and res.batch_choice.startswith("auto: all 3")


def test_working_set_grows_with_image_and_memory(random_params):
  small = make_problem(random_params, "reconstruct", shape=(16, 16, 3))
  big = make_problem(random_params, "reconstruct", shape=(32, 32, 3))
  lbfgs = optimize.OptConfig(lbfgs_memory=10)
  ws = batched.working_set_bytes
  assert 0 < ws(small, lbfgs) < ws(big, lbfgs)
  assert ws(small, lbfgs) < ws(small, optimize.OptConfig(lbfgs_memory=50))
  assert ws(small, optimize.OptConfig(optimizer="adam")) < ws(small, lbfgs)


# ------------------------------------------------------------------ same meaning in a batch


def test_original_colors_same_in_single_run_and_batch(random_params):
  inputs = make_inputs((32, 32, 3))
  opt = optimize.OptConfig(steps=4, chunk=4)
  cfg = make_config("stylize", original_colors=True, opt=opt)
  problem = cfg.build(random_params, inputs)
  seeds = [1, 4]
  res = batched.run_seeds(problem, seeds, opt)
  rgb = problem.rgb(res.x)
  assert rgb.shape == (2, 32, 32, 3)
  plain_problem = dataclasses.replace(cfg, original_colors=False).build(random_params, inputs)
  for k, seed in enumerate(seeds):
    one, one_res = experiments.run(dataclasses.replace(cfg, seed=seed), random_params, inputs)
    np.testing.assert_allclose(rgb[k], one, rtol=0, atol=1e-3)
    # Independently: the clipped result with the content's chroma.
    expect = colour.original_colors(inputs.content, np.clip(np.asarray(
        vgg.VGG19.deprocess(random_params, one_res.x)), 0, 1))
    np.testing.assert_allclose(one, expect, rtol=0, atol=1e-5)
    plain, _ = experiments.run(dataclasses.replace(cfg, seed=seed, original_colors=False),
                               random_params, inputs)
    np.testing.assert_allclose(plain_problem.rgb(res.x[k]), plain, rtol=0, atol=1e-3)
    assert np.abs(plain - one).mean() > 0.02  # Original colours change the result.


# ------------------------------------------------------------------ progress and metrics


def capture(seen):
  """A progress callback keeping each Report and its image (valid only during the call)."""
  def progress(r):
    seen.append((r, r.image()))
  return progress


def test_single_run_metrics_and_reports(random_params):
  cfg = make_config("stylize", opt=optimize.OptConfig(steps=4, chunk=2))
  inputs = make_inputs((32, 32, 3))
  seen = []
  rgb, res = experiments.run(cfg, random_params, inputs, progress=capture(seen))
  m = res.metrics
  assert m["loss"].shape == m["evals"].shape == (4,)
  assert set(m["terms"]) == {"content", "style", "tv"}
  np.testing.assert_allclose(m["loss"], res.loss_history[:-1], rtol=1e-6)
  assert m["evals"].tolist() == res.eval_history[:-1] == [1, 2, 3, 4]
  np.testing.assert_allclose(sum(m["terms"].values()), m["loss"], rtol=1e-5)
  assert [r.step for r, _ in seen] == [2, 4] and all(r.total_steps == 4 for r, _ in seen)
  for r, im in seen:
    assert isinstance(r, optimize.Report) and np.ndim(r.loss) == 0
    assert (r.batch, r.num_batches) == (0, 1) and r.elapsed >= 0
    # Report at step s: the loss of the iterate step s evaluated, s evaluations so far.
    assert float(r.loss) == pytest.approx(res.loss_history[r.step - 1], rel=1e-6)
    assert int(r.evals) == r.step and set(r.terms) == {"content", "style", "tv"}
    assert float(r.terms["style"]) == pytest.approx(float(m["terms"]["style"][r.step - 1]))
    assert im.shape == (32, 32, 3) and im.min() >= 0 and im.max() <= 1
  np.testing.assert_allclose(seen[-1][1], rgb, atol=1e-6)  # The last report: the result.
  assert np.abs(seen[0][1] - rgb).mean() > 1e-4  # An earlier iterate differs.
  # Without a render (plain optimize.run) a report has no image.
  problem = cfg.build(random_params, inputs)
  seen.clear()
  optimize.run(problem.objective, problem.x0(jax.random.key(0)), problem.data, cfg.opt,
               progress=capture(seen))
  assert [im for _, im in seen] == [None, None]


def test_batch_histories_and_reports(random_params):
  cfg = make_config("stylize", opt=optimize.OptConfig(steps=4, chunk=2))
  problem = cfg.build(random_params, make_inputs((32, 32, 3)))
  seen = []
  res = batched.run_seeds(problem, [0, 1, 2], cfg.opt, members_per_batch=2,
                          progress=capture(seen))
  assert len(res.loss_history) == 3 and all(len(h) == 5 for h in res.loss_history)
  assert res.eval_history == [[1, 2, 3, 4, 5]] * 3 and res.steps.tolist() == [4, 4, 4]
  # Per-step metrics are returned, per member, across both batches.
  assert res.metrics["loss"].shape == res.metrics["evals"].shape == (4, 3)
  np.testing.assert_allclose(res.metrics["loss"].T, [h[:4] for h in res.loss_history], rtol=1e-6)
  np.testing.assert_array_equal(res.metrics["evals"].T, [[1, 2, 3, 4]] * 3)
  np.testing.assert_allclose(sum(res.metrics["terms"].values()), res.metrics["loss"], rtol=1e-5)
  assert [(r.step, r.batch, r.num_batches) for r, _ in seen] == [
      (2, 0, 2), (4, 0, 2), (2, 1, 2), (4, 1, 2)]
  final = problem.rgb(res.x)
  for r, im in seen:
    members = [0, 1] if r.batch == 0 else [2]  # Only the batch's real members, not padding.
    assert isinstance(r, optimize.Report) and r.loss.shape == (len(members),)
    assert r.evals.tolist() == [r.step] * len(members)
    np.testing.assert_allclose(r.loss, [res.loss_history[k][r.step - 1] for k in members],
                               rtol=1e-6)
    np.testing.assert_allclose(sum(r.terms.values()), r.loss, rtol=1e-5)
    assert im.shape == (len(members), 32, 32, 3) and im.min() >= 0 and im.max() <= 1
    if r.step == 4:
      np.testing.assert_allclose(im, final[members], atol=1e-6)


# ------------------------------------------------------------------ sharding


# A reconstruct problem at LAYER on random VGG-19 weights, for the subprocess scripts below
# (NumPy random: faster than jax.random here).
RANDOM_PROBLEM = textwrap.dedent("""
    import numpy as np
    from jnst import batched, experiments, optimize
    from jnst.backbones import vgg
    rng = np.random.default_rng(0)
    conv = {n: {"kernel": (rng.normal(size=s) * np.sqrt(2 / np.prod(s[:3]))).astype(np.float32),
                "bias": np.zeros(s[-1:], np.float32)}
            for n, s in vgg.ARCHS["vgg19"].kernel_shapes().items()}
    params = {"conv": conv, "input": vgg.caffe_input()}
    content = np.random.default_rng(0).uniform(size=(16, 16, 3)).astype(np.float32)
    problem = experiments.ReconstructConfig(layer=LAYER).build(params, experiments.Inputs(content))
""")

SHARDED = textwrap.dedent("""
    import json, sys
    import jax
    LAYER = "relu2_1"
""") + RANDOM_PROBLEM + textwrap.dedent("""
    drive, seen = optimize.drive, []
    def spy(*args, **kw):  # The device arrays of each batch's final state.
      out = drive(*args, **kw)
      seen.append(out.state.x)
      return out
    optimize.drive = spy
    for loop in ("step", "scan"):
      # optax's L-BFGS rules: torch's (the default) take the first curvature pair from a
      # step of L1 norm 1, which on this 16 px random problem amplifies the compiles'
      # rounding differences ~1e4x by step 2 (BENCHMARKS.md, "L-BFGS per evaluation").
      opt = optimize.OptConfig(steps=3, chunk=3, loop=loop, lbfgs_rules="optax")
      many = batched.run_seeds(problem, range(6), opt)
      x = seen[-1]
      one = batched.run_seeds(problem, range(6), opt, devices=jax.devices()[:1])
      print(json.dumps({
          "loop": loop, "devices": jax.device_count(), "mesh": many.sharding,
          "batch": many.batch_size, "shards": len({s.device for s in x.addressable_shards}),
          "shard_rows": sorted({s.data.shape[0] for s in x.addressable_shards}),
          "spec": str(x.sharding.spec), "one_mesh": one.sharding, "one_batch": one.batch_size,
          "max_diff": float(np.abs(many.x - one.x).max()), "scale": float(np.abs(one.x).max()),
          "loss_rel": float(np.max(np.abs(many.final_loss / one.final_loss - 1)))}))
""")


def test_member_axis_sharded_over_four_devices():
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
         "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  p = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True,
                     env=env, cwd=REPO, timeout=300)
  assert p.returncode == 0, p.stderr
  runs = [json.loads(l) for l in p.stdout.strip().splitlines()[-2:]]
  assert [r["loop"] for r in runs] == ["step", "scan"]
  for got in runs:  # Both compiled loop designs.
    assert got["devices"] == 4 and got["batch"] == 8  # 6 seeds padded to 2 per device.
    assert got["shards"] == 4 and got["shard_rows"] == [2] and "members" in got["spec"]
    assert got["mesh"].startswith("{'members': 4}")
    assert got["one_mesh"].startswith("{'members': 1}") and got["one_batch"] == 6
    assert got["max_diff"] <= RTOL * got["scale"] and got["loss_rel"] <= RTOL


def test_mesh_and_gather():
  m = batched.mesh()
  assert m.axis_names == ("members",) and m.size == jax.device_count()
  assert batched.mesh(jax.devices()[:1]).size == 1
  tree = {"a": jax.numpy.arange(3), "b": [np.ones(2)]}
  got = batched.gather(tree)
  assert isinstance(got["a"], np.ndarray) and got["a"].tolist() == [0, 1, 2]
  assert isinstance(got["b"][0], np.ndarray)


# ------------------------------------------------------------------ checks and layout


def test_bad_seeds_and_layout():
  with pytest.raises(JnstError, match="no seeds"):
    batched.check_seeds([])
  with pytest.raises(JnstError, match="non-negative"):
    batched.check_seeds([3, -1])
  with pytest.raises(JnstError, match="non-negative"):
    batched.check_seeds([2**32])
  assert batched.check_seeds([np.int64(3), 2**32 - 1]) == [3, 2**32 - 1]
  with pytest.raises(JnstError, match="members per batch"):
    batched.batch_layout(4, -1, 1)
  assert batched.batch_layout(5, 2, 1) == (2, 3)
  assert batched.batch_layout(6, None, 4) == (8, 1)
  assert batched.batch_layout(6, 0, 4) == (8, 1)
  assert batched.batch_layout(6, 2, 4) == (4, 2)
  assert batched.batch_layout(3, 100, 1) == (3, 1)


def test_member_history():
  """Per-step metrics -> (loss per iterate then the final loss, evaluation axis, steps)."""
  metrics_ = {"loss": np.array([9.0, 8.0, 7.0]), "evals": np.array([1, 2, 3]),
              "counted": np.array([True, True, True])}
  assert optimize.member_history(metrics_, 6.0, 4, linesearch=False) == (
      [9.0, 8.0, 7.0, 6.0], [1, 2, 3, 4], 3)
  # Cumulative, line search on: step 0 used 5 evaluations; iterate i > 0 came from step i - 1.
  ls = {**metrics_, "evals": np.array([5, 8, 11])}
  assert optimize.member_history(ls, 6.0, 12, linesearch=True)[1] == [1, 5, 8, 12]
  none = {k: v[:0] for k, v in ls.items()}
  assert optimize.member_history(none, 6.0, 1, linesearch=True) == ([6.0], [1], 0)
  # A batch: member 1 stopped after 2 steps (its third step not counted).
  batch = {"loss": np.array([[9.0, 5.0], [8.0, 4.0], [7.0, 4.0]]),
           "evals": np.array([[1, 1], [2, 2], [3, 2]]),
           "counted": np.array([[True, True], [True, True], [True, False]])}
  final, evals = np.array([6.0, 4.0]), np.array([4, 3])
  assert optimize.member_history(batch, final, int(evals[0]), False, 0) == (
      [9.0, 8.0, 7.0, 6.0], [1, 2, 3, 4], 3)
  assert optimize.member_history(batch, final, int(evals[1]), False, 1) == (
      [5.0, 4.0, 4.0], [1, 2, 3], 2)


def test_stopped_member_history_in_a_batch(random_params):
  """With a tolerance, members stop at different steps; each member's history and steps
  still equal its single run."""
  problem = make_problem(random_params, "reconstruct")
  opt = optimize.OptConfig(optimizer="adam", learning_rate=5.0, steps=12, chunk=4, tol=0.05)
  res = batched.run_seeds(problem, [0, 2], opt)
  assert res.status == ["converged", "converged"]
  assert res.steps[0] != res.steps[1]  # Seed 0 stops a step earlier, mid-chunk.
  for k, s in enumerate(res.seeds):
    one = single(problem, s, opt)
    assert res.steps[k] == one.steps and res.status[k] == one.status
    assert res.eval_history[k] == one.eval_history
    np.testing.assert_allclose(res.loss_history[k], one.loss_history, rtol=RTOL)


# ------------------------------------------------------------------ diversity


def test_diversity_of_known_images():
  a, b = np.zeros((4, 4, 3)), np.ones((4, 4, 3))
  same = metrics.diversity([a, a, a], reference=a)
  assert same["pixel"]["pairwise"]["mean"] == 0 and same["pixel"]["pairwise"]["count"] == 3
  assert same["pixel"]["to_reference"]["per_image"] == [0, 0, 0]
  mixed = metrics.diversity([a, a, b], reference=b)
  # Pairs: (a, a) = 0, (a, b) = 1 twice.
  assert mixed["pixel"]["pairwise"]["mean"] == pytest.approx(2 / 3)
  assert mixed["pixel"]["pairwise"]["std"] == pytest.approx(np.std([0, 1, 1]))
  assert mixed["pixel"]["pairwise"]["min"] == 0 and mixed["pixel"]["pairwise"]["max"] == 1
  assert mixed["pixel"]["to_reference"]["per_image"] == [1, 1, 0]
  half = np.full((4, 4, 3), 0.5)
  assert metrics.rms_distance(a, half) == pytest.approx(0.5)
  np.testing.assert_allclose(metrics.pairwise_distances([a, half, b]),
                             [[0, 0.5, 1], [0.5, 0, 0.5], [1, 0.5, 0]])
  assert metrics.reference_stats([a, b], half)["mean"] == pytest.approx(0.5)
  assert metrics.pairwise_stats([a])["count"] == 0
  assert metrics.diversity([a])["pixel"]["pairwise"]["mean"] is None  # No pairs.
  assert metrics.diversity([a, b], reference=np.zeros((2, 2, 3)))["pixel"]["to_reference"] is None


def test_feature_diversity(random_params):
  ims = images((16, 16, 3), 2)
  bb = vgg.VGG19
  same = metrics.diversity_metrics(bb, random_params, [ims[0], ims[0]], ims[0],
                                   ("relu1_1", "relu2_1"))
  assert same["features"]["layers"] == ["relu1_1", "relu2_1"]
  assert same["features"]["backbone"]["name"] == "vgg19"
  for layer in ("relu1_1", "relu2_1"):
    assert same["features"]["pairwise"][layer]["mean"] == 0
    assert same["features"]["to_reference"][layer]["mean"] == 0
  diff = metrics.diversity_metrics(bb, random_params, ims, ims[0], ("relu1_1",))
  assert diff["features"]["pairwise"]["relu1_1"]["mean"] > 0
  assert diff["features"]["to_reference"]["relu1_1"]["per_image"][0] == 0
  # Independently: the RMS difference of the two images' relu1_1 activations.
  f = [np.asarray(bb.extract(random_params, im[None], ["relu1_1"])["relu1_1"][0]) for im in ims]
  assert diff["features"]["pairwise"]["relu1_1"]["mean"] == pytest.approx(
      float(np.sqrt(np.mean((f[0] - f[1]) ** 2))), rel=1e-4)
  feats = metrics.backbone_features(bb, random_params, ims, ["relu2_1"])
  assert list(feats) == ["relu2_1"] and feats["relu2_1"][0].shape == (8, 8, 128)
  with pytest.raises(JnstError, match="unknown vgg19 layer"):
    metrics.diversity_metrics(bb, random_params, ims, None, ("relu9_1",))


def test_loss_plot_draws():
  curves = [(np.arange(1, 11), 1e5 * np.exp(-np.arange(10) / (3 + k))) for k in range(3)]
  im = plots.loss_plot(curves, "t", width=300, height=200)
  assert im.shape == (200, 300, 3) and im.min() < 0.5 < im.max()
  assert plots.loss_plot([([1], [float("nan")])]).shape == (420, 720, 3)


# ------------------------------------------------------------------ multi-process


MULTIPROCESS = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    LAYER = "relu1_1"
""") + RANDOM_PROBLEM + textwrap.dedent("""
    opt = optimize.OptConfig(steps=3, chunk=3)
    res = batched.run_seeds(problem, range(3), opt)
    print(json.dumps({"devices": len(res.devices), "mesh": res.sharding,
                      "batch": res.batch_size, "loss": res.final_loss.tolist(),
                      "x": float(np.abs(res.x).sum())}))
""")


def test_two_processes_match_one(tmp_path):
  """Multi-host through jax.distributed: 2 processes x 2 CPU devices, 3 seeds padded to 4."""
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  cmd = [sys.executable, "-c", MULTIPROCESS, f"localhost:{port}"]
  procs = [subprocess.Popen(cmd + [str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
  assert got[0] == got[1] and got[0]["devices"] == 4 and got[0]["batch"] == 4
  assert got[0]["mesh"].startswith("{'members': 4}")
  rng = np.random.default_rng(0)  # The same problem in this single process.
  conv = {n: {"kernel": (rng.normal(size=s) * np.sqrt(2 / np.prod(s[:3]))).astype(np.float32),
              "bias": np.zeros(s[-1:], np.float32)}
          for n, s in vgg.ARCHS["vgg19"].kernel_shapes().items()}
  content = np.random.default_rng(0).uniform(size=(16, 16, 3)).astype(np.float32)
  problem = experiments.ReconstructConfig(layer="relu1_1").build(
      {"conv": conv, "input": vgg.caffe_input()}, experiments.Inputs(content))
  one = batched.run_seeds(problem, range(3), optimize.OptConfig(steps=3, chunk=3))
  np.testing.assert_allclose(got[0]["loss"], one.final_loss, rtol=RTOL)
  assert got[0]["x"] == pytest.approx(float(np.abs(one.x).sum()), rel=RTOL)
