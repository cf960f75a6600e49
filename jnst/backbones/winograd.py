"""Winograd F(4x4, 3x3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", CVPR 2016): a 3x3/1 SAME cross-correlation with 36 multiplications per
4x4 output tile instead of 144.

Each 6x6 input tile d (stride 4, overlapping by 2) becomes V = Bᵀ d B, each kernel
g (3x3) becomes U = G g Gᵀ (once per problem: ``transform_kernel``), the 36 positions of
the tiles are 36 batched matmuls M = V U over the channels, and each output tile is
Y = Aᵀ M A. The tile transforms are written as matmuls with the 36x36 / 16x36 Kronecker
matrices, which XLA:CPU runs far faster than the equivalent shifted adds (BENCHMARKS.md,
"Winograd convolutions"). Interpolation points 0, ±1, ±2, ∞. In float32 the result
differs from a direct conv by about 1e-5 of the output's largest magnitude.

Shapes: x (N, H, W, Cin) NHWC, any H, W (padded to whole tiles, cropped back); kernels
HWIO (3, 3, Cin, Cout); transformed kernels (36, Cin, Cout).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

# Convs with at least this many input and output channels run as Winograd convs where a
# backbone enables them (smaller ones are faster direct on XLA:CPU with AVX-512; BENCHMARKS.md).
MIN_CHANNELS = 256
# ... on x86 CPUs with AVX2 but no AVX-512 (AMD Zen 3 measured), where XLA:CPU's direct convs
# are slower: from conv2_2 on. From 64 (block 1 too) was no faster and compiles slower.
AVX2_MIN_CHANNELS = 128
# ... and, with VGG's conv="auto", at least this many input positions (H·W): from 12x16
# (block 5 at 256 px) Winograd is as fast or faster (BENCHMARKS.md); the smaller maps of
# tiny images (tests, thumbnails) compile and run the direct convs.
MIN_PIXELS = 12 * 16

_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)
_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)
_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], np.float64)
_KB = np.kron(_BT, _BT)  # (36, 36): tile position (i, j) from input position (a, b).
_KA = np.kron(_AT, _AT)  # (16, 36): output position (p, q) from tile position (i, j).
_KG = np.kron(_G, _G)  # (36, 9): tile position (i, j) from kernel tap (a, b).
_HIGHEST = jax.lax.Precision.HIGHEST


def auto_min_channels(cpu: Mapping) -> int:
  """The channel threshold for a CPU described by ``records.cpu_arch()``'s dict:
  ``AVX2_MIN_CHANNELS`` where its flags have avx2 but not avx512f, else ``MIN_CHANNELS``
  (also for {}: not x86, or no /proc/cpuinfo)."""
  flags = set(cpu.get("flags", ()))
  return AVX2_MIN_CHANNELS if "avx2" in flags and "avx512f" not in flags else MIN_CHANNELS


def eligible(kernel_shape, min_channels: int = MIN_CHANNELS) -> bool:
  """Whether a (3, 3, Cin, Cout) conv has at least ``min_channels`` channels in and out."""
  kh, kw, cin, cout = kernel_shape
  return (kh, kw) == (3, 3) and min(cin, cout) >= min_channels


def transform_kernel(kernel: jax.Array) -> jax.Array:
  """U = G g Gᵀ of every (Cin, Cout) pair: (3, 3, Cin, Cout) -> (36, Cin, Cout), in the
  kernel's dtype."""
  k = jnp.asarray(kernel)
  u = jnp.matmul(_KG.astype(k.dtype), k.reshape(9, -1), precision=_HIGHEST)
  return u.reshape(36, *k.shape[2:])


def conv(x: jax.Array, u: jax.Array) -> jax.Array:
  """3x3/1 SAME cross-correlation of ``x`` (N, H, W, Cin) with the kernel whose
  ``transform_kernel`` is ``u`` (36, Cin, Cout) -> (N, H, W, Cout), in x's dtype. Its ops
  are named ``winograd/…`` (``jnst.bench.op_profile`` classes them as convs)."""
  with jax.named_scope("winograd"):
    return _conv(x, u)


def _conv(x: jax.Array, u: jax.Array) -> jax.Array:
  n, h, w, c = x.shape
  th, tw = -(-h // 4), -(-w // 4)
  # One zero row/column before (SAME), enough after for whole 6x6 tiles at stride 4.
  xp = jnp.pad(x, ((0, 0), (1, 4 * th + 3 - h), (1, 4 * tw + 3 - w), (0, 0)))
  d = jnp.stack([xp[:, a:a + 4 * th:4, b:b + 4 * tw:4] for a in range(6) for b in range(6)])
  t = n * th * tw
  v = jnp.matmul(_KB.astype(x.dtype), d.reshape(36, t * c), precision=_HIGHEST)
  m = jnp.einsum("kpc,kcd->kpd", v.reshape(36, t, c), u.astype(x.dtype), precision=_HIGHEST)
  cout = u.shape[-1]
  y = jnp.matmul(_KA.astype(x.dtype), m.reshape(36, t * cout), precision=_HIGHEST)
  y = y.reshape(4, 4, n, th, tw, cout).transpose(2, 3, 0, 4, 1, 5)
  return y.reshape(n, 4 * th, 4 * tw, cout)[:, :h, :w]
