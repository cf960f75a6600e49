"""Timing helpers: medians over repeats after warm-up, peak memory, matmul peak.

Every timed callable must return only after its device work is done (``jax.block_until_ready``
or ``torch_ref.sync``); these helpers only read the clock.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def timed(fn: Callable[[], object]) -> tuple[float, object]:
  """(seconds, result) of one call."""
  t0 = time.perf_counter()
  out = fn()
  return time.perf_counter() - t0, out


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, list]:
  """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls, and all
  the timed samples."""
  for _ in range(warmup):
    fn()
  samples = [timed(fn)[0] for _ in range(max(1, repeats))]
  return statistics.median(samples), samples


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
  """The fastest of ``repeats`` timed calls of ``fn()`` after one warm-up call."""
  fn()
  return min(timed(fn)[0] for _ in range(max(1, repeats)))


def rss_mb() -> float:
  """Current resident set size of this process, MiB (Linux; NaN elsewhere)."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * _PAGE / 2**20
  except OSError:
    return float("nan")


class PeakRss:
  """Context manager sampling this process's RSS every ``interval`` s in a thread.

  ``peak_mb``: the highest RSS seen; ``delta_mb``: that minus the RSS on entry (the extra
  host memory the block needed — buffers kept from before are not counted).
  """

  def __init__(self, interval: float = 0.005):
    self.interval, self.peak_mb, self.start_mb = interval, 0.0, 0.0
    self._stop = threading.Event()

  def _sample(self):
    while not self._stop.is_set():
      self.peak_mb = max(self.peak_mb, rss_mb())
      self._stop.wait(self.interval)

  def __enter__(self):
    self.start_mb = self.peak_mb = rss_mb()
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak_mb = max(self.peak_mb, rss_mb())

  @property
  def delta_mb(self) -> float:
    return self.peak_mb - self.start_mb


def jax_matmul_peak_gflops(n: int, repeats: int = 3) -> float:
  """Achieved GFLOP/s of an n x n float32 matmul in JAX at default precision (TF32 on
  NVIDIA GPUs, full float32 on CPU): the practical peak the evaluation is compared with."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.dot)
  sec, _ = median_seconds(lambda: f(a, b).block_until_ready(), repeats, warmup=1)
  return 2 * n**3 / sec / 1e9


def first_index_at_most(history, target: float) -> int | None:
  """Index of the first value <= target in a loss history, or None."""
  hits = np.flatnonzero(np.asarray(history, np.float64) <= target)
  return int(hits[0]) if hits.size else None
