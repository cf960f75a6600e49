"""The benchmark: FLOP formula, the conv/pool rewrites it motivated, and the script in --quick
mode (random weights, tiny images, no ../shared, so it cannot rot)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnst import io, vgg, weights
from jnst.bench import flops, suite, timing

REPO = Path(__file__).resolve().parent.parent


def test_flops_formula_by_hand():
  # relu1_1 at 8x8: conv1_1 3->64 only; Gram of 64 channels over 64 positions.
  conv = 2 * 9 * 3 * 64 * 64
  assert flops.conv_forward_flops(8, 8, ["relu1_1"]) == conv
  assert flops.eval_flops(8, 8, ["relu1_1"], ["relu1_1"]) == 2 * conv + 2 * (2 * 64 * 64 * 64)
  # conv2_1 runs after pool1 at 4x4.
  assert flops.conv_forward_flops(8, 8, ["conv2_1"]) == (
      conv + 2 * 9 * 64 * 64 * 64 + 2 * 9 * 64 * 128 * 16)
  assert flops.gram_flops(8, 8, ["pool1", "relu2_1"]) == 2 * 16 * 64**2 + 2 * 16 * 128**2


def test_conv3x3_gradients_match_lax():
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (2, 7, 9, 5))
  k = jax.random.normal(kk, (3, 3, 5, 4))
  g = jax.random.normal(kg, (2, 7, 9, 4))
  ref = lambda x, k: jnp.sum(g * jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
  ours = lambda x, k: jnp.sum(g * vgg.conv3x3(x, k))
  for a, b in zip(jax.grad(ours, (0, 1))(x, k), jax.grad(ref, (0, 1))(x, k)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_pool_matches_flax(pooling):
  x = jax.random.normal(jax.random.key(0), (1, 9, 6, 3))  # odd side: last row dropped
  ref = (nn.max_pool if pooling == "max" else nn.avg_pool)(x, (2, 2), strides=(2, 2))
  np.testing.assert_allclose(vgg._pool(x, pooling), ref, rtol=1e-6)


def test_speedup_direction():
  assert suite._speedup("eval_ms", 1.0, 2.0) == 2.0
  assert suite._speedup("seed_runs_per_s_adam", 4.0, 2.0) == 2.0
  assert suite._speedup("lbfgs_s_to_common_loss", 1.0, 3.0) == 3.0
  assert suite._speedup("lbfgs_loss", 1.0, 3.0) is None


def test_time_to_common_loss():
  rec = suite.Recorder(log=lambda s: None)
  runs = {"jax": {"lbfgs": (10.0, [9, 5, 3, 2, 1]), "adam": (1.0, [3, 2])},
          "torch": {"lbfgs": (4.0, [9, 4, 3, 2]), "adam": (1.0, [3, 1])}}
  suite.time_to_common_loss(rec, 8, runs)
  got = {(r["framework"], r["metric"]): r["value"] for r in rec.records}
  assert got["jax", "lbfgs_common_loss"] == 2.0
  assert got["jax", "lbfgs_s_to_common_loss"] == pytest.approx(10.0 * 4 / 5)
  assert got["torch", "lbfgs_s_to_common_loss"] == pytest.approx(4.0)


def test_peak_rss_sees_an_allocation():
  import mmap
  with timing.PeakRss() as mem:  # A fresh mapping: no allocator can hand back old pages.
    m = mmap.mmap(-1, 64 * 2**20)
    for i in range(0, len(m), 4096):
      m[i] = 1
  m.close()
  assert mem.delta_mb > 32


def test_bad_config_is_a_jnst_error():
  from jnst.errors import JnstError
  with pytest.raises(JnstError, match="frameworks"):
    suite.BenchConfig(frameworks=("tf",)).validate()
  with pytest.raises(JnstError, match="sizes"):
    suite.BenchConfig(sizes=(4,)).validate()


@pytest.fixture(scope="module")
def random_weights_file(tmp_path_factory):
  params = vgg.init_random(jax.random.key(3))
  kernels = {n: (np.asarray(p["kernel"]), np.asarray(p["bias"])) for n, p in params["conv"].items()}
  path = tmp_path_factory.mktemp("w") / "vgg19_random.h5"
  return weights.write(path, kernels, arch=vgg.VGG19, source="random (test)", source_sha256="-",
                       convention="caffe_bgr", mean=weights.CAFFE_MEAN_BGR, dtype="float16")


def test_quick_benchmark_runs(tmp_path, random_weights_file):
  rng = np.random.default_rng(0)
  for name in ("c.png", "s.png"):
    io.save_image(tmp_path / name, rng.uniform(size=(24, 32, 3)))
  frameworks = "jax,torch" if _has_torch() else "jax"
  out = tmp_path / "out"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--quick",
       f"--weights={random_weights_file}", f"--content={tmp_path / 'c.png'}",
       f"--style={tmp_path / 's.png'}", f"--frameworks={frameworks}", f"--output_dir={out}",
       "--seed_scaling=off"],  # test_quick_seed_scaling covers it.
      capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = json.loads((out / "benchmark.json").read_text())
  assert record["machine"]["cpus"] >= 1
  got = {(r["framework"], r["size"], r["metric"]) for r in record["results"]}
  for fw in frameworks.split(","):
    for metric in ("eval_ms", "eval_gflops", "eval_ms_loop", "eval_gflops_loop", "lbfgs_s",
                   "adam_loss", "seed_runs_per_s_adam"):
      assert (fw, 32, metric) in got
  assert ("jax", 32, "lbfgs_s_scan") in got and ("jax", 32, "adam_s_step") in got
  assert "| eval_ms |" in (out / "benchmark.md").read_text()


def test_quick_seed_scaling(tmp_path, random_weights_file):
  rng = np.random.default_rng(0)
  for name in ("c.png", "s.png"):
    io.save_image(tmp_path / name, rng.uniform(size=(24, 32, 3)))
  out = tmp_path / "out"
  proc = subprocess.run(
      [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--quick", "--seed_scaling=only",
       f"--weights={random_weights_file}", f"--content={tmp_path / 'c.png'}",
       f"--style={tmp_path / 's.png'}", f"--output_dir={out}"],
      capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = {(r["size"], r["metric"]): r["value"]
         for r in json.loads((out / "benchmark.json").read_text())["results"]}
  assert {r[0] for r in got} == {32}  # Nothing but seed scaling ran.
  assert got[32, "seeds_steps"] == 2 and got[32, "seeds_sequential_run_s"] > 0
  for n in (1, 2):
    vmapped = got[32, f"seeds{n}_vmapped_images_per_s"]
    sequential = got[32, f"seeds{n}_sequential_images_per_s"]
    assert vmapped > 0 and sequential > 0
    assert got[32, f"seeds{n}_speedup"] == pytest.approx(vmapped / sequential)
    assert got[32, f"seeds{n}_rss_mb_per_seed"] >= 0
    assert got[32, f"seeds{n}_vmapped_compile_s"] >= 0
  assert "| seeds2_speedup |" in (out / "benchmark.md").read_text()


def test_bad_flag_exits_2(tmp_path):
  proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--quick",
                         "--frameworks=tf", f"--output_dir={tmp_path}"],
                        capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2 and "frameworks" in proc.stderr and "Traceback" not in proc.stderr


def _has_torch():
  from jnst.bench import torch_available
  return torch_available()
