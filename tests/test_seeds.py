"""jnst.seeds: vmapped members equal single runs, chunking reuses one compilation, the
seed axis is sharded over a device mesh, weight sweeps, and the diversity metrics."""

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

from jnst import io, optimize, seeds, transfer, vgg
from jnst.errors import JnstError

REPO = Path(__file__).resolve().parent.parent
RTOL = 1e-4  # Member k vs a single run with seed k (jnst/seeds.py docstring).


def images(shape=(16, 16, 3), n=2, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.uniform(size=shape).astype(np.float32) for _ in range(n)]


def make_problem(params, experiment, **kw):
  content, style = images()
  if experiment == "reconstruct":
    return transfer.reconstruct_problem(params, content, transfer.ReconstructConfig(
        layer="relu2_1", **kw))
  if experiment == "synthesize":
    return transfer.synthesize_problem(params, style, transfer.SynthesizeConfig(
        style_layers=("relu1_1", "relu2_1"), **kw))
  return transfer.stylize_problem(params, content, [style], transfer.StylizeConfig(
      content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"), init="noise", **kw))


def single(problem, seed, opt):
  return optimize.run(problem.loss, problem.x0(jax.random.key(seed)), problem.data, opt)


def assert_matches(batch, k, one):
  np.testing.assert_allclose(batch.loss_history[k], one.loss_history, rtol=RTOL)
  x = np.asarray(one.x)
  np.testing.assert_allclose(batch.x[k], x, rtol=0, atol=RTOL * np.abs(x).max())
  assert batch.evaluations[k] == one.evaluations and batch.steps[k] == one.steps


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
  res = seeds.run_seeds(problem, [0, 3, 7], cfg)
  assert res.seeds == [0, 3, 7] and res.x.shape == (3, 16, 16, 3)
  for k, s in enumerate(res.seeds):
    assert_matches(res, k, single(problem, s, cfg))
  assert not np.allclose(res.x[0], res.x[1])  # Each member has its own noise.
  if opt == "lbfgs":  # Known evaluations: one per step, the final one included.
    assert res.eval_history[0] == [1, 2, 3, 4, 5]


@dataclasses.dataclass(frozen=True)
class CountingLoss:
  """A loss that counts how often it is traced (= compiled step + final loss)."""
  loss: object
  traces: list = dataclasses.field(default_factory=list, compare=False, hash=False)

  def __call__(self, x, data):
    self.traces.append(1)
    return self.loss(x, data)


def test_chunks_pad_and_compile_once(random_params):
  problem = make_problem(random_params, "reconstruct")
  opt = optimize.OptConfig(steps=3, chunk=3)
  counted = dataclasses.replace(problem, loss=CountingLoss(problem.loss))
  chunked = seeds.run_seeds(counted, range(5), opt, seeds_per_batch=2)
  assert (chunked.batch_size, chunked.num_batches) == (2, 3)
  assert len(counted.loss.traces) == 2  # One step and one final-loss trace, for 3 batches.
  whole = seeds.run_seeds(problem, range(5), opt)
  assert whole.num_batches == 1
  np.testing.assert_allclose(chunked.x, whole.x, rtol=0, atol=RTOL * np.abs(whole.x).max())
  np.testing.assert_allclose(chunked.final_loss, whole.final_loss, rtol=RTOL)
  bigger = seeds.run_seeds(problem, range(2), opt, seeds_per_batch=10)  # > N is fine.
  assert (bigger.batch_size, bigger.num_batches) == (2, 1)


def test_weight_sweep_is_one_batch_equal_to_single_runs(random_params):
  opt = OPTS["adam"]
  base = make_problem(random_params, "stylize")
  res = seeds.run_sweep(base, "style_weight", [10.0, 1e4], opt, seeds=[1, 2])
  assert res.values == [10.0, 10.0, 1e4, 1e4] and res.seeds == [1, 2, 1, 2]
  assert res.num_batches == 1
  for k, (v, s) in enumerate(zip(res.values, res.seeds)):
    one = single(make_problem(random_params, "stylize", style_weight=v), s, opt)
    assert_matches(res, k, one)
  with pytest.raises(JnstError, match="cannot batch over"):
    seeds.run_sweep(base, "layer", [1.0], opt)
  with pytest.raises(JnstError, match="finite numbers >= 0"):
    seeds.run_sweep(base, "tv_weight", [-1.0], opt)


# A reconstruct problem at LAYER on random VGG-19 weights, for the subprocess scripts below
# (NumPy random: faster than jax.random here).
RANDOM_PROBLEM = textwrap.dedent("""
    import numpy as np
    from jnst import optimize, seeds, transfer, vgg
    rng = np.random.default_rng(0)
    conv = {n: {"kernel": (rng.normal(size=s) * np.sqrt(2 / np.prod(s[:3]))).astype(np.float32),
                "bias": np.zeros(s[-1:], np.float32)} for n, s in vgg.VGG19.kernel_shapes().items()}
    params = {"conv": conv, "input": vgg.caffe_input()}
    content = np.random.default_rng(0).uniform(size=(16, 16, 3)).astype(np.float32)
    problem = transfer.reconstruct_problem(params, content, transfer.ReconstructConfig(layer=LAYER))
""")

SHARDED = textwrap.dedent("""
    import json, sys
    import jax
    LAYER = "relu2_1"
""") + RANDOM_PROBLEM + textwrap.dedent("""
    for loop in ("step", "scan"):
      opt = optimize.OptConfig(steps=3, chunk=3, loop=loop)
      seen = []
      many = seeds.run_seeds(problem, range(6), opt,
                             on_chunk=lambda b, n, step, state, host: seen.append(state.x))
      one = seeds.run_seeds(problem, range(6), opt, devices=jax.devices()[:1])
      x = seen[-1]
      print(json.dumps({
          "loop": loop, "devices": jax.device_count(), "mesh": many.sharding,
          "batch": many.batch_size, "shards": len({s.device for s in x.addressable_shards}),
          "shard_rows": sorted({s.data.shape[0] for s in x.addressable_shards}),
          "spec": str(x.sharding.spec), "one_mesh": one.sharding,
          "max_diff": float(np.abs(many.x - one.x).max()), "scale": float(np.abs(one.x).max()),
          "loss_rel": float(np.max(np.abs(many.final_loss / one.final_loss - 1)))}))
""")


def test_seed_axis_sharded_over_four_devices():
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  p = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True,
                     env=env, cwd=REPO, timeout=300)
  assert p.returncode == 0, p.stderr
  runs = [json.loads(l) for l in p.stdout.strip().splitlines()[-2:]]
  assert [r["loop"] for r in runs] == ["step", "scan"]
  for got in runs:  # Both compiled loop designs.
    assert got["devices"] == 4 and got["batch"] == 8  # 6 seeds padded to 2 per device.
    assert got["shards"] == 4 and got["shard_rows"] == [2] and "seeds" in got["spec"]
    assert got["mesh"].startswith("{'seeds': 4}") and got["one_mesh"].startswith("{'seeds': 1}")
    assert got["max_diff"] <= RTOL * got["scale"] and got["loss_rel"] <= RTOL


# ------------------------------------------------------------------ checks and layout


def test_bad_seeds_and_layout():
  with pytest.raises(JnstError, match="no seeds"):
    seeds.check_seeds([])
  with pytest.raises(JnstError, match="non-negative"):
    seeds.check_seeds([3, -1])
  with pytest.raises(JnstError, match="seeds_per_batch"):
    seeds.batch_layout(4, -1, 1)
  assert seeds.batch_layout(5, 2, 1) == (2, 3)
  assert seeds.batch_layout(6, None, 4) == (8, 1)
  assert seeds.batch_layout(6, 2, 4) == (4, 2)
  assert seeds.batch_layout(3, 100, 1) == (3, 1)


def test_eval_axis():
  evals = np.array([1, 2, 3])
  assert seeds.eval_axis(evals, 3, 4, linesearch=False) == [1, 2, 3, 4]
  ls = np.array([5, 8, 11])  # Cumulative, line search on: step 0 used 5 evaluations.
  assert seeds.eval_axis(ls, 3, 12, linesearch=True) == [1, 5, 8, 12]
  assert seeds.eval_axis(ls, 0, 1, linesearch=True) == [1]


# ------------------------------------------------------------------ diversity


def test_diversity_of_known_images():
  a, b = np.zeros((4, 4, 3)), np.ones((4, 4, 3))
  same = seeds.diversity([a, a, a], reference=a)
  assert same["pixel"]["pairwise"]["mean"] == 0 and same["pixel"]["pairwise"]["count"] == 3
  assert same["pixel"]["to_reference"]["per_image"] == [0, 0, 0]
  mixed = seeds.diversity([a, a, b], reference=b)
  # Pairs: (a, a) = 0, (a, b) = 1 twice.
  assert mixed["pixel"]["pairwise"]["mean"] == pytest.approx(2 / 3)
  assert mixed["pixel"]["pairwise"]["std"] == pytest.approx(np.std([0, 1, 1]))
  assert mixed["pixel"]["to_reference"]["per_image"] == [1, 1, 0]
  half = np.full((4, 4, 3), 0.5)
  assert seeds.rms_distance(a, half) == pytest.approx(0.5)
  assert seeds.diversity([a])["pixel"]["pairwise"]["mean"] is None  # No pairs.
  assert seeds.diversity([a, b], reference=np.zeros((2, 2, 3)))["pixel"]["to_reference"] is None


def test_feature_diversity(random_params):
  ims = images((16, 16, 3), 2)
  same = seeds.diversity_metrics(random_params, [ims[0], ims[0]], ims[0], ("relu1_1", "relu2_1"))
  assert same["features"]["layers"] == ["relu1_1", "relu2_1"]
  for layer in ("relu1_1", "relu2_1"):
    assert same["features"]["pairwise"][layer]["mean"] == 0
    assert same["features"]["to_reference"][layer]["mean"] == 0
  diff = seeds.diversity_metrics(random_params, ims, ims[0], ("relu1_1",))
  assert diff["features"]["pairwise"]["relu1_1"]["mean"] > 0
  assert diff["features"]["to_reference"]["relu1_1"]["per_image"][0] == 0


def test_loss_plot_draws():
  curves = [(np.arange(1, 11), 1e5 * np.exp(-np.arange(10) / (3 + k))) for k in range(3)]
  im = io.loss_plot(curves, "t", width=300, height=200)
  assert im.shape == (200, 300, 3) and im.min() < 0.5 < im.max()
  assert io.loss_plot([([1], [float("nan")])]).shape == (420, 720, 3)


MULTIPROCESS = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    LAYER = "relu1_1"
""") + RANDOM_PROBLEM + textwrap.dedent("""
    opt = optimize.OptConfig(steps=3, chunk=3)
    res = seeds.run_seeds(problem, range(3), opt)
    print(json.dumps({"devices": len(res.devices), "mesh": res.sharding,
                      "loss": res.final_loss.tolist(), "x": float(np.abs(res.x).sum())}))
""")


def test_two_processes_match_one(tmp_path):
  """Multi-host through jax.distributed: 2 processes x 2 CPU devices, 3 seeds padded to 4."""
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  cmd = [sys.executable, "-c", MULTIPROCESS, f"localhost:{port}"]
  procs = [subprocess.Popen(cmd + [str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
  assert got[0] == got[1] and got[0]["devices"] == 4 and got[0]["mesh"].startswith("{'seeds': 4}")
  rng = np.random.default_rng(0)  # The same problem in this single process.
  conv = {n: {"kernel": (rng.normal(size=s) * np.sqrt(2 / np.prod(s[:3]))).astype(np.float32),
              "bias": np.zeros(s[-1:], np.float32)} for n, s in vgg.VGG19.kernel_shapes().items()}
  content = np.random.default_rng(0).uniform(size=(16, 16, 3)).astype(np.float32)
  problem = transfer.reconstruct_problem({"conv": conv, "input": vgg.caffe_input()}, content,
                                         transfer.ReconstructConfig(layer="relu1_1"))
  one = seeds.run_seeds(problem, range(3), optimize.OptConfig(steps=3, chunk=3))
  np.testing.assert_allclose(got[0]["loss"], one.final_loss, rtol=RTOL)
  assert got[0]["x"] == pytest.approx(float(np.abs(one.x).sum()), rel=RTOL)
