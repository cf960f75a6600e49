"""What this CPU (or GPU) does at its best, per dtype: a square matmul and one padded 3×3 conv,
float32 and bfloat16, JAX and (if importable) PyTorch — the ceilings BENCHMARKS.md compares
whole evaluations and networks with.

  python -m jnst.bench.peaks [--n=4096] [--conv=128,128] [--repeats=5]

Rows: (framework, op, dtype, seconds (the fastest of ``repeats`` calls after a warm-up),
GFLOP/s with a multiply-add counted as 2). The conv is NHWC, ``side``² pixels, ``channels`` in
and out, zero-padded ("SAME"; XLA:CPU's fast conv path), accumulating in float32.
"""

from __future__ import annotations

import argparse
import time


def _best(fn, repeats: int) -> float:
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return min(times)


def jax_rows(n: int, side: int, channels: int, repeats: int) -> list[tuple]:
  import jax
  import jax.numpy as jnp
  rows = []
  for dt in (jnp.float32, jnp.bfloat16):
    a = jax.random.normal(jax.random.key(0), (n, n)).astype(dt)
    mm = jax.jit(lambda a: jnp.dot(a, a, preferred_element_type=jnp.float32))
    sec = _best(lambda: mm(a).block_until_ready(), repeats)
    rows.append(("jax", "matmul", jnp.dtype(dt).name, sec, 2 * n**3 / sec / 1e9))
    x = jax.random.normal(jax.random.key(1), (1, side, side, channels)).astype(dt)
    k = jax.random.normal(jax.random.key(2), (3, 3, channels, channels)).astype(dt)
    conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        preferred_element_type=jnp.float32))
    sec = _best(lambda: conv(x, k).block_until_ready(), repeats)
    rate = conv_flops(side, channels) / sec / 1e9
    rows.append(("jax", "conv3x3", jnp.dtype(dt).name, sec, rate))
  return rows


def torch_rows(n: int, side: int, channels: int, repeats: int) -> list[tuple]:
  import torch
  rows = []
  with torch.no_grad():
    for dt in (torch.float32, torch.bfloat16):
      a = torch.randn(n, n).to(dt)
      sec = _best(lambda: a @ a, repeats)
      rows.append(("torch", "matmul", str(dt).split(".")[-1], sec, 2 * n**3 / sec / 1e9))
      x = torch.randn(1, channels, side, side).to(dt)
      k = torch.randn(channels, channels, 3, 3).to(dt)
      sec = _best(lambda: torch.nn.functional.conv2d(x, k, padding=1), repeats)
      rows.append(("torch", "conv3x3", str(dt).split(".")[-1], sec,
                   conv_flops(side, channels) / sec / 1e9))
  return rows


def conv_flops(side: int, channels: int) -> int:
  """FLOPs of the 3×3 conv: side² outputs × 9 taps × channels² multiply-adds × 2."""
  return side * side * 9 * channels * channels * 2


def main(argv=None) -> list[tuple]:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--n", type=int, default=4096, help="matmul size n (n×n @ n×n)")
  ap.add_argument("--conv", default="128,128", help="conv side,channels")
  ap.add_argument("--repeats", type=int, default=5)
  args = ap.parse_args(argv)
  side, channels = (int(v) for v in args.conv.split(","))
  rows = jax_rows(args.n, side, channels, args.repeats)
  from jnst.bench import torch_available
  if torch_available():
    rows += torch_rows(args.n, side, channels, args.repeats)
  print(f"| framework | op (matmul {args.n}², conv 3×3 {channels} ch at {side}²) | dtype | ms | "
        f"GFLOP/s |")
  print("|---|---|---|---:|---:|")
  for fw, op, dt, sec, rate in rows:
    print(f"| {fw} | {op} | {dt} | {sec * 1e3:.1f} | {rate:.0f} |")
  return rows


if __name__ == "__main__":
  main()
