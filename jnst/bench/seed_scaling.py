"""Seed scaling (issue 4): N noise seeds vmapped in one ``batched.run_seeds`` call vs the same
N seeds run one by one, per image size; JAX only.

Per (size, N), recorded as framework "jax":

* ``seeds{N}_vmapped_images_per_s``: N / wall seconds of ``run_seeds(problem, range(N))``,
  timed after a warm-up call of the same N (so nothing compiles in the timed call).
* ``seeds{N}_vmapped_compile_s``: compile seconds of that warm-up call.
* ``seeds{N}_sequential_images_per_s``: N / the summed wall seconds of single
  ``optimize.run`` calls from seeds 0 … N-1 (``experiments.solve``'s path; one compile, warmed
  up). The single runs are timed once each for seeds 0 … max(N)-1, and each N sums the
  first N of them: the same N runs, measured once.
* ``seeds{N}_speedup``: vmapped / sequential images per second.
* ``seeds{N}_rss_mb_per_seed``: host RSS growth during the timed vmapped call / N, MiB.
* ``seeds{N}_device_mb_per_seed`` (GPU): (device peak after the warm-up and timed call
  minus bytes in use before) / N, MiB; null when the process had already peaked higher.

Once per size: ``seeds_steps``, ``seeds_sequential_compile_s`` and
``seeds_sequential_run_s`` (median single run; min and max in its note).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

import jnst.batched as batched
import jnst.optimize as optimize
from jnst.bench import timing
from jnst.bench.recorder import opt_config
from jnst.experiments import Inputs, StylizeConfig


def _device_stats() -> dict:
  """Memory stats of the first device (empty on CPU or where unsupported)."""
  if jax.default_backend() == "cpu":
    return {}
  return jax.devices()[0].memory_stats() or {}


def _sequential_seconds(problem, n: int, opt: optimize.OptConfig):
  """(compile s, [wall s of single runs from seeds 0 … n-1]) after one warm-up run."""
  warm = optimize.run(problem.objective, problem.x0(jax.random.key(0)), problem.data, opt)
  jax.block_until_ready(warm.x)
  secs = []
  for s in range(n):
    res = optimize.run(problem.objective, problem.x0(jax.random.key(s)), problem.data, opt)
    jax.block_until_ready(res.x)
    secs.append(res.seconds["total"])
  return warm.seconds["compile"], secs


def seed_scaling(rec, params, content: np.ndarray, style: np.ndarray, size: int,
                 counts: Sequence[int], steps: int, optimizer: str = "lbfgs",
                 scan_chunk: int = 10, backbone: str = "vgg19") -> None:
  """Records the seed-scaling metrics above for one image size.

  Args:
    rec: a ``recorder.Recorder``.
    params: the backbone's parameters (``backbone``: its name, default VGG-19).
    content, style: RGB in [0, 1], (H, W, 3), already at ``size`` (longer side, px).
    counts: numbers of seeds N, each run vmapped and sequentially.
    steps: optimiser steps per seed. optimizer: "lbfgs" or "adam" (the CLI's rates).
    scan_chunk: steps per compiled scan call (the run uses gcd(steps, scan_chunk)).
  """
  problem = StylizeConfig(backbone=backbone, init="noise").build(params,
                                                                 Inputs(content, (style,)))
  opt = opt_config(optimizer, steps, optimize.OptConfig().loop, scan_chunk)
  counts = sorted(set(int(n) for n in counts))
  rec.add("jax", size, "seeds_steps", steps, "steps", f"{optimizer}, noise init")
  compile_s, seq = _sequential_seconds(problem, max(counts), opt)
  rec.add("jax", size, "seeds_sequential_compile_s", compile_s, "s",
          "one compile shared by every single run")
  rec.add("jax", size, "seeds_sequential_run_s", float(np.median(seq)), "s",
          f"median single run of {len(seq)}; min {min(seq):.3g}, max {max(seq):.3g}")
  for n in counts:
    before = _device_stats()
    warm = batched.run_seeds(problem, list(range(n)), opt, members_per_batch=None)
    with timing.PeakRss() as mem:
      res = batched.run_seeds(problem, list(range(n)), opt, members_per_batch=None)
    after = _device_stats()
    vmapped, sequential = res.images_per_second, n / sum(seq[:n])
    rec.add("jax", size, f"seeds{n}_vmapped_images_per_s", vmapped, "images/s",
            f"{n} seeds in one run_seeds call, after a warm-up call")
    rec.add("jax", size, f"seeds{n}_vmapped_compile_s", warm.seconds["compile"], "s",
            "the warm-up call's compile")
    rec.add("jax", size, f"seeds{n}_sequential_images_per_s", sequential, "images/s",
            f"{n} single optimize.run calls, compiled once")
    rec.add("jax", size, f"seeds{n}_speedup", vmapped / sequential, "x",
            "vmapped / sequential images per second")
    rec.add("jax", size, f"seeds{n}_rss_mb_per_seed", mem.delta_mb / n, "MiB",
            "host RSS growth during the timed vmapped call / N")
    if "peak_bytes_in_use" in after:
      rose = after["peak_bytes_in_use"] > before.get("peak_bytes_in_use", 0)
      value = ((after["peak_bytes_in_use"] - before.get("bytes_in_use", 0)) / n / 2**20
               if rose else None)
      rec.add("jax", size, f"seeds{n}_device_mb_per_seed", value, "MiB",
              "device peak minus bytes in use before, / N" if rose else
              "not measured: the process had already peaked higher")
