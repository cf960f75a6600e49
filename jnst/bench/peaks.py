"""What this machine does at its best, per dtype: a square matmul and one padded 3×3 conv,
float32 and bfloat16, JAX (on its default device) and, if importable, PyTorch (on the CPU) —
the ceilings BENCHMARKS.md compares whole evaluations and networks with.

  python -m jnst.bench.peaks [--n=4096] [--conv=128,128] [--repeats=5]

GFLOP/s (a multiply-add counted as 2) of the fastest of ``repeats`` calls after a warm-up.
The matmul accumulates in float32; the conv is ``op_profile.single_conv`` (NHWC, ``side``²
pixels, ``channels`` in and out, zero-padded "SAME": XLA:CPU's fast conv path).
"""

from __future__ import annotations

import argparse

from jnst.bench import op_profile, timing, torch_available


def matmul(frameworks=("jax", "torch"), n: int = 4096, repeats: int = 5) -> dict[str, float]:
  """GFLOP/s of an n×n @ n×n matmul in float32 and bfloat16 (float32 accumulation):
  {"jax_float32", "jax_bfloat16", "torch_float32", "torch_bfloat16"} for ``frameworks``."""
  out = {}
  if "jax" in frameworks:
    import jax
    import jax.numpy as jnp
    mm = jax.jit(lambda a: jnp.dot(a, a, preferred_element_type=jnp.float32))
    for dt in (jnp.float32, jnp.bfloat16):
      a = jax.random.normal(jax.random.key(0), (n, n)).astype(dt)
      sec = timing.best_seconds(lambda: mm(a).block_until_ready(), repeats)
      out[f"jax_{jnp.dtype(dt).name}"] = 2 * n**3 / sec / 1e9
  if "torch" in frameworks:
    from jnst.bench import torch_ref
    t = torch_ref.torch()
    for dt in (t.float32, t.bfloat16):
      a = t.randn(n, n).to(dt)
      sec = timing.best_seconds(lambda: a @ a, repeats)
      out[f"torch_{str(dt).split('.')[-1]}"] = 2 * n**3 / sec / 1e9
  return out


def main(argv=None) -> dict[str, dict[str, float]]:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--n", type=int, default=4096, help="matmul size n (n×n @ n×n)")
  ap.add_argument("--conv", default="128,128", help="conv side,channels")
  ap.add_argument("--repeats", type=int, default=5)
  args = ap.parse_args(argv)
  side, channels = (int(v) for v in args.conv.split(","))
  frameworks = ("jax", "torch") if torch_available() else ("jax",)
  rows = {f"matmul {args.n}²": matmul(frameworks, args.n, args.repeats),
          f"conv 3×3, {channels} ch, {side}²": op_profile.single_conv(
              frameworks, side, channels, args.repeats)}
  cols = list(rows[f"matmul {args.n}²"])
  print("| op (GFLOP/s) | " + " | ".join(c.replace("_", " ") for c in cols) + " |")
  print("|---|" + "---:|" * len(cols))
  for op, rates in rows.items():
    print(f"| {op} | " + " | ".join(f"{rates[c]:.0f}" for c in cols) + " |")
  return rows


if __name__ == "__main__":
  main()
