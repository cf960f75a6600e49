"""The benchmark: FLOP formula, the conv/pool rewrites it motivated, the records and report,
and the script in --quick mode (random weights, tiny images, no ../shared, so it cannot rot)."""

import json
import os
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnst import images, optimize, records
from jnst.backbones import vgg
from jnst.bench import flops, recorder, suite, timing
from jnst.errors import JnstError
from tests import script_runner

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
  # VGG-16 has no conv3_4: block 4 starts one conv earlier.
  arch16 = vgg.ARCHS["vgg16"]
  assert flops.conv_forward_flops(8, 8, ["relu4_1"], arch16) < flops.conv_forward_flops(
      8, 8, ["relu4_1"])
  with pytest.raises(JnstError):
    flops.conv_forward_flops(8, 8, ["conv3_4"], arch16)


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
  # With the precomputed grad kernel: the same gradients.
  kt = vgg.grad_kernel(k)
  assert kt.shape == (3, 3, 4, 5)
  pre = lambda x, k: jnp.sum(g * vgg.conv3x3(x, k, kt))
  for a, b in zip(jax.grad(pre, (0, 1))(x, k), jax.grad(ref, (0, 1))(x, k)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_pool_matches_flax(pooling):
  x = jax.random.normal(jax.random.key(0), (1, 9, 6, 3))  # odd side: last row dropped
  ref = (nn.max_pool if pooling == "max" else nn.avg_pool)(x, (2, 2), strides=(2, 2))
  np.testing.assert_allclose(vgg._pool(x, pooling), ref, rtol=1e-6)


def test_pool_rejects_unknown_mode():
  with pytest.raises(JnstError, match="unknown pooling"):
    vgg._pool(jnp.zeros((1, 4, 4, 1)), "min")


def test_speedup_direction():
  assert suite._speedup("eval_ms", 1.0, 2.0) == 2.0
  assert suite._speedup("seed_runs_per_s_adam", 4.0, 2.0) == 2.0
  assert suite._speedup("lbfgs_s_to_common_loss", 1.0, 3.0) == 3.0
  assert suite._speedup("lbfgs_loss", 1.0, 3.0) is None
  assert suite._speedup("eval_gflops", 4.0, 2.0) == 2.0
  assert suite._speedup("gflop_per_eval", 4.0, 4.0) is None
  assert suite._speedup("eval_ms", None, 2.0) is None


def test_time_to_common_loss():
  rec = recorder.Recorder(log=lambda s: None)
  runs = {"jax": {"lbfgs": (10.0, [9, 5, 3, 2, 1]), "adam": (1.0, [3, 2])},
          "torch": {"lbfgs": (4.0, [9, 4, 3, 2]), "adam": (1.0, [3, 1])}}
  suite.time_to_common_loss(rec, 8, runs)
  got = {(r["framework"], r["metric"]): r["value"] for r in rec.records}
  assert got["jax", "lbfgs_common_loss"] == 2.0
  assert got["jax", "lbfgs_s_to_common_loss"] == pytest.approx(10.0 * 4 / 5)
  assert got["torch", "lbfgs_s_to_common_loss"] == pytest.approx(4.0)
  assert got["jax", "adam_common_loss"] == 2.0
  assert got["torch", "adam_s_to_common_loss"] == pytest.approx(1.0 * 2 / 2)
  assert {r["size"] for r in rec.records} == {8}
  # One framework alone: nothing to compare.
  alone = recorder.Recorder(log=lambda s: None)
  suite.time_to_common_loss(alone, 8, {"jax": runs["jax"]})
  assert alone.records == []


def test_recorder_logs_and_keeps_records():
  lines = []
  rec = recorder.Recorder(log=lines.append)
  rec.add("jax", 32, "eval_ms", np.float32(1.5), "ms", "a note")
  rec.add("torch", 32, "eval_ms_compiled", None, "ms")
  assert rec.records == [
      {"framework": "jax", "size": 32, "metric": "eval_ms", "value": 1.5, "unit": "ms",
       "note": "a note"},
      {"framework": "torch", "size": 32, "metric": "eval_ms_compiled", "value": None,
       "unit": "ms"}]
  assert type(rec.records[0]["value"]) is float
  assert len(lines) == 2 and "eval_ms" in lines[0] and "1.5" in lines[0] and "n/a" in lines[1]


@pytest.mark.parametrize("optimizer,steps,loop,scan_chunk,chunk", [
    ("lbfgs", 50, "scan", 10, 10),
    ("adam", 4, "scan", 10, 2),     # gcd(4, 10): every chunk the same length
    ("adam", 7, "scan", 10, 1),
    ("lbfgs", 50, "step", 10, 50),
])
def test_opt_config(optimizer, steps, loop, scan_chunk, chunk):
  cfg = recorder.opt_config(optimizer, steps, loop, scan_chunk)
  assert isinstance(cfg, optimize.OptConfig)
  assert (cfg.optimizer, cfg.steps, cfg.loop, cfg.chunk) == (optimizer, steps, loop, chunk)
  assert cfg.learning_rate == recorder.OPTIMIZERS[optimizer]
  assert cfg.steps % cfg.chunk == 0
  with pytest.raises(JnstError, match="unknown loop"):
    recorder.opt_config(optimizer, steps, "auto", scan_chunk)


def test_peak_rss_sees_an_allocation():
  import mmap
  with timing.PeakRss() as mem:  # A fresh mapping: no allocator can hand back old pages.
    m = mmap.mmap(-1, 64 * 2**20)
    for i in range(0, len(m), 4096):
      m[i] = 1
  m.close()
  assert mem.delta_mb > 32


def test_timing_helpers():
  calls = []
  sec, samples = timing.median_seconds(lambda: calls.append(1), repeats=3, warmup=2)
  assert len(calls) == 5 and len(samples) == 3 and sec >= 0
  assert timing.first_index_at_most([5, 4, 3, 2], 3.5) == 2
  assert timing.first_index_at_most([5, 4], 1) is None


def test_bad_config_is_a_jnst_error():
  with pytest.raises(JnstError, match="frameworks"):
    suite.BenchConfig(frameworks=("tf",)).validate()
  with pytest.raises(JnstError, match="sizes"):
    suite.BenchConfig(sizes=(4,)).validate()
  with pytest.raises(JnstError, match="loop"):
    suite.BenchConfig(loops=("auto",)).validate()
  with pytest.raises(JnstError, match="seed_scaling"):
    suite.BenchConfig(seed_scaling="sometimes").validate()
  with pytest.raises(JnstError, match="seed_sizes"):
    suite.BenchConfig(seed_scaling="on", seed_sizes=(8,)).validate()
  assert suite.BenchConfig().validate() == suite.BenchConfig()


def test_machine_info():
  assert records.cpu_count() >= 1 and isinstance(records.cpu_model(), str)
  cfg = suite.BenchConfig(frameworks=("jax",))
  info = suite.machine_info(cfg)
  assert info["cpus"] == records.cpu_count() and info["cpu"] == records.cpu_model()
  assert info["cpu_arch"] == records.cpu_arch()
  assert info["jax_backend"] == jax.default_backend() and info["jax_devices"]
  assert info["config"]["frameworks"] == ("jax",) and "torch" not in info
  assert len(info["load_average_1_5_15"]) == 3


_CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
cpu family\t: {family}
model\t\t: {model}
model name\t: {name}
flags\t\t: fpu sse2 avx2 fma avx512f {extra}

processor\t: 1
vendor_id\t: SomeoneElse
cpu family\t: 1
model\t\t: 1
"""


@pytest.mark.parametrize("vendor,family,model,extra,arch,flags", [
    ("AuthenticAMD", 26, 2, "avx512_bf16 avx512_vp2intersect", "Zen 5",
     ["avx2", "fma", "avx512f", "avx512_bf16"]),
    ("AuthenticAMD", 25, 17, "avx512_bf16", "Zen 4", ["avx2", "fma", "avx512f", "avx512_bf16"]),
    ("AuthenticAMD", 25, 1, "", "Zen 3", ["avx2", "fma", "avx512f"]),
    ("AuthenticAMD", 23, 49, "", "Zen 2", ["avx2", "fma", "avx512f"]),
    ("GenuineIntel", 6, 143, "amx_bf16 amx_tile avx512_fp16", "Sapphire Rapids",
     ["avx2", "fma", "avx512f", "avx512_fp16", "amx_tile", "amx_bf16"]),
    ("GenuineIntel", 6, 42, "", None, ["avx2", "fma", "avx512f"]),
])
def test_cpu_arch_from_cpuinfo(vendor, family, model, extra, arch, flags):
  text = _CPUINFO.format(vendor=vendor, family=family, model=model, name="Some CPU", extra=extra)
  got = records.cpu_arch(text)
  assert got == {"vendor": vendor, "family": family, "model": model, "arch": arch,
                 "flags": flags}
  label = records.cpu_label("Some CPU", got)
  assert label.startswith("Some CPU (") and f"family {family}, model {model})" in label
  assert (arch or "Some CPU (family") in label
  assert records.cpu_arch("") == {} and records.cpu_label("X", {}) == "X"


def test_markdown_names_the_microarchitecture():
  machine = {"cpu": "AMD EPYC", "cpus": 2, "cpu_arch": records.cpu_arch(_CPUINFO.format(
      vendor="AuthenticAMD", family=26, model=2, name="AMD EPYC", extra=""))}
  assert "Machine: AMD EPYC (Zen 5; family 26, model 2) (2 CPUs)" in suite.markdown(machine, [])
  assert "Machine: AMD EPYC (2 CPUs)" in suite.markdown({"cpu": "AMD EPYC", "cpus": 2}, [])


def _example_report():
  machine = {"cpu": "Test CPU", "cpus": 2, "jax_backend": "cpu", "jax": "0.x",
             "image_shapes_hw": {"32": [24, 32]}, "load_average_1_5_15": [0, 0, 0]}
  rec = recorder.Recorder(log=lambda s: None)
  rec.add("jax", 0, "matmul_peak_gflops", 100.0, "GFLOP/s")
  rec.add("jax", 32, "eval_ms", 1.0, "ms")
  rec.add("torch", 32, "eval_ms", 2.0, "ms")
  rec.add("jax", 32, "adam_loss", 3.0)
  rec.add("torch", 32, "eval_ms_compiled", None, "ms")
  return machine, rec.records


def test_markdown():
  machine, recs = _example_report()
  md = suite.markdown(machine, recs)
  assert "Machine: Test CPU (2 CPUs)" in md
  assert "### machine-wide" in md and "### size 32 ([24, 32] HxW)" in md
  assert "| eval_ms | ms | 1 | 2 | 2.00× |" in md
  assert "| adam_loss |  | 3 | – |  |" in md
  assert "| eval_ms_compiled | ms | – | – |  |" in md
  assert md.index("### machine-wide") < md.index("### size 32")


def test_write(tmp_path):
  machine, recs = _example_report()
  js, md = suite.write(tmp_path / "out", machine, recs)
  assert json.loads(js.read_text()) == {"machine": machine, "results": recs}
  assert md.read_text() == suite.markdown(machine, recs) + "\n"
  assert [p for p in os.listdir(tmp_path / "out") if ".tmp" in p] == []


# ---------------------------------------------------------------- the suite and the script

# scripts/benchmark.py --quick's settings (jnst.cli.benchmark_config).
QUICK = dict(sizes=(32,), steps=4, repeats=1, warmup=1, num_seeds=2, torch_compile=False,
             matmul_n=256, seed_sizes=(32,), seed_counts=(1, 2), seed_steps=2)


def _pair(tmp_path):
  rng = np.random.default_rng(0)
  for name in ("c.png", "s.png"):
    images.save_image(tmp_path / name, rng.uniform(size=(24, 32, 3)))
  return tmp_path / "c.png", tmp_path / "s.png"


def test_suite_quick(tmp_path, random_weights_file):
  """suite.run at --quick's settings, in process: every metric of both frameworks."""
  frameworks = ("jax", "torch") if _has_torch() else ("jax",)
  cfg = suite.BenchConfig(**QUICK, frameworks=frameworks)
  params = vgg.VGG19.load(random_weights_file)
  lines = []
  machine, results = suite.run(params, *_pair(tmp_path), cfg, log=lines.append)
  assert len(lines) >= len(results) and any("GFLOP per evaluation" in l for l in lines)
  got = {(r["framework"], r["size"], r["metric"]): r["value"] for r in results}
  for fw in frameworks:
    for metric in ("eval_ms", "eval_gflops", "eval_ms_loop", "eval_gflops_loop", "lbfgs_s",
                   "adam_loss", "seed_runs_per_s_adam", "gflop_per_eval", "lbfgs_loss",
                   "first_call_s", "seed_runs_per_s_lbfgs"):
      assert (fw, 32, metric) in got, (fw, metric)
      if metric != "adam_loss":
        assert got[fw, 32, metric] > 0, (fw, metric)
  for opt in recorder.OPTIMIZERS:
    for loop in suite.LOOPS:
      assert got["jax", 32, f"{opt}_s_{loop}"] > 0
      assert got["jax", 32, f"{opt}_compile_s_{loop}"] >= 0
  assert got["jax", 0, "matmul_peak_gflops"] > 0
  if "torch" in frameworks:
    assert ("torch", 32, "seed_runs_per_s_adam_stacked") in got
    assert got["jax", 32, "lbfgs_common_loss"] == got["torch", 32, "lbfgs_common_loss"]
    assert ("jax", 32, "lbfgs_s_to_common_loss") in got
    # Same problem, weights and Adam: the frameworks' losses agree. (L-BFGS need not: optax
    # and torch scale the first step differently, hence the *_common_loss metrics.)
    assert got["jax", 32, "adam_loss"] == pytest.approx(got["torch", 32, "adam_loss"], rel=1e-3)
  # The analytic FLOPs are those of the stylize defaults at 24x32.
  layers = ("relu4_2",) + vgg.VGG19.default_style_layers
  expected = flops.eval_flops(24, 32, layers, vgg.VGG19.default_style_layers) / 1e9
  assert got["jax", 32, "gflop_per_eval"] == pytest.approx(expected, rel=1e-6)
  assert not any(re.match(r"seeds(\d|_steps|_sequential)", k[2]) for k in got)  # seed_scaling off
  assert machine["image_shapes_hw"] == {"32": [24, 32]} and machine["cpus"] >= 1
  assert "| eval_ms |" in suite.markdown(machine, results)


def test_suite_seed_scaling(tmp_path):
  cfg = suite.BenchConfig(**QUICK, frameworks=("jax",), seed_scaling="only")
  params = vgg.VGG19.init_random(jax.random.key(3))
  machine, results = suite.run(params, *_pair(tmp_path), cfg, log=lambda s: None)
  got = {(r["size"], r["metric"]): r["value"] for r in results}
  assert {r["framework"] for r in results} == {"jax"}
  assert {r[0] for r in got} == {32}  # Nothing but seed scaling ran.
  assert got[32, "seeds_steps"] == 2 and got[32, "seeds_sequential_run_s"] > 0
  for n in (1, 2):
    vmapped = got[32, f"seeds{n}_vmapped_images_per_s"]
    sequential = got[32, f"seeds{n}_sequential_images_per_s"]
    assert vmapped > 0 and sequential > 0
    assert got[32, f"seeds{n}_speedup"] == pytest.approx(vmapped / sequential)
    assert got[32, f"seeds{n}_rss_mb_per_seed"] >= 0
    assert got[32, f"seeds{n}_vmapped_compile_s"] >= 0
  assert machine["image_shapes_hw"] == {"32": [24, 32]}
  assert "| seeds2_speedup |" in suite.markdown(machine, results)


def _run_script(tmp_path, *flags, timeout):
  """scripts/benchmark.py --quick on two random 24x32 images -> (benchmark.json, .md text)."""
  content, style = _pair(tmp_path)
  out = tmp_path / "out"
  proc = script_runner.run_script(  # In a reused worker process: tests/script_runner.py.
      "benchmark", "--quick", f"--content={content}", f"--style={style}", f"--output_dir={out}",
      *flags, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert [p for p in os.listdir(out) if ".tmp" in p] == []
  return json.loads((out / "benchmark.json").read_text()), (out / "benchmark.md").read_text()


def test_quick_benchmark_script(tmp_path, random_weights_file):
  """The script's wiring: flags -> BenchConfig, the weights file, benchmark.json/.md. (What
  it measures: test_suite_quick.)"""
  record, md = _run_script(
      tmp_path, f"--weights={random_weights_file}", "--frameworks=jax", "--loops=scan",
      "--seed_size=0", "--seed_scaling=off", timeout=300)
  machine = record["machine"]
  assert machine["cpus"] >= 1 and machine["image_shapes_hw"] == {"32": [24, 32]}
  assert machine["weights"] == str(random_weights_file)
  cfg = machine["config"]
  assert (cfg["sizes"], cfg["steps"], cfg["repeats"], cfg["num_seeds"]) == ([32], 4, 1, 2)
  assert (cfg["frameworks"], cfg["loops"], cfg["seed_size"]) == (["jax"], ["scan"], 0)
  assert cfg["seed_scaling"] == "off" and cfg["torch_compile"] is False
  got = {(r["framework"], r["size"], r["metric"]) for r in record["results"]}
  for metric in ("eval_ms", "eval_ms_loop", "lbfgs_s", "lbfgs_s_scan", "adam_loss"):
    assert ("jax", 32, metric) in got, metric
  assert ("jax", 32, "lbfgs_s_step") not in got and ("jax", 32, "seed_runs_per_s_adam") not in got
  assert "| eval_ms |" in md


def test_quick_seed_scaling_script(tmp_path):
  record, md = _run_script(tmp_path, "--seed_scaling=only", "--random_weights", timeout=120)
  cfg = record["machine"]["config"]
  assert cfg["seed_counts"] == [1, 2] and cfg["seed_sizes"] == [32] and cfg["seed_steps"] == 2
  assert cfg["frameworks"] == ["jax"]  # --seed_scaling=only measures JAX alone.
  assert record["machine"]["weights"] == "random"
  got = {(r["size"], r["metric"]) for r in record["results"]}
  assert {r[0] for r in got} == {32} and (32, "seeds2_speedup") in got
  assert "| seeds2_speedup |" in md


def test_bad_flag_exits_2(tmp_path):
  proc = script_runner.run_script("benchmark", "--quick", "--frameworks=tf",
                                  f"--output_dir={tmp_path}", timeout=120)
  assert proc.returncode == 2 and "frameworks" in proc.stderr and "Traceback" not in proc.stderr
  assert os.listdir(tmp_path) == []  # Nothing written, nothing left behind.


def _has_torch():
  from jnst.bench import torch_available
  return torch_available()


def test_peaks_measures_matmul_and_conv_per_dtype(capsys):
  from jnst.bench import peaks
  rows = peaks.main(["--n=32", "--conv=8,4", "--repeats=1"])
  assert list(rows) == ["matmul 32²", "conv 3×3, 4 ch, 8²"]
  for rates in rows.values():
    assert {"jax_float32", "jax_bfloat16"} <= set(rates)
    assert all(np.isfinite(r) and r > 0 for r in rates.values())
  out = capsys.readouterr().out
  assert "| op (GFLOP/s) | jax float32 | jax bfloat16" in out and "| conv 3×3, 4 ch, 8² |" in out
