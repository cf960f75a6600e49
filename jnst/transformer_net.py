"""The image transformation network of Johnson, Alahi & Fei-Fei, "Perceptual Losses for
Real-Time Style Transfer and Super-Resolution" (ECCV 2016), as a Flax module.

Architecture (the paper's supplementary Table 1, with the instance norm of Ulyanov et al.
2016 and the upsample+conv of the PyTorch examples' ``fast_neural_style`` instead of
fractionally strided convs), for ``width`` w (default 32):

  9x9 conv w, stride 1   → IN → ReLU
  3x3 conv 2w, stride 2  → IN → ReLU
  3x3 conv 4w, stride 2  → IN → ReLU
  ``num_res_blocks`` (5) residual blocks: x + IN(conv3x3(ReLU(IN(conv3x3(x)))))
  nearest ×2, 3x3 conv 2w → IN → ReLU
  nearest ×2, 3x3 conv w  → IN → ReLU
  9x9 conv 3             → sigmoid

Every conv is reflection-padded by ``k // 2`` then VALID (no zero borders); only the last has
a bias (the others' biases would be removed by the instance norm that follows: their gradient
is zero up to rounding, which Adam would blow up to full-size noise steps; for the same reason
the second norm of a residual block has a scale but no shift). Instance norm:
per image and channel over H×W, biased variance, eps 1e-5, a learned scale and shift per
channel (``torch.nn.InstanceNorm2d(affine=True)``).

Input and output are RGB in [0, 1], (N, H, W, 3) float32. The output is a sigmoid of the
last conv: always in (0, 1) and never clipped, so every pixel keeps a gradient (the PyTorch
example emits unbounded 0-255 values and clamps when saving; Johnson's Lua code a scaled
tanh). The input is used as is (no mean subtraction: instance norm after the first conv
removes the per-channel offset anyway).

Any size: a stride-2 conv of a side s gives ceil(s / 2), so the bottleneck is
ceil(ceil(H/2)/2) and the ×4 upsampled output 4·ceil(H/4) ≥ H (and likewise W); the output is
cropped to the input's H×W, keeping its top-left corner (where the strided convs sample
from). Sides that are multiples of 4 are not cropped. Sides of at least 8 px are supported
(``MIN_SIDE``: reflection padding needs the map to be larger than the pad).

Params (``init``): {"conv_in": {"layer": {"conv": {"kernel": (9, 9, 3, w) HWIO}}, "norm":
{"scale", "bias"}}, "down1", "down2", "up1", "up2" (alike), "res0" … "res4" ({"conv1",
"conv2": {"conv": {"kernel"}}, "norm1", "norm2": {"scale"}}), "conv_out": {"conv": {"kernel",
"bias"}}}.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

MIN_SIDE = 8
EPS = 1e-5
_DN = ("NHWC", "HWIO", "NHWC")


def reflect_pad(x: jax.Array, p: int) -> jax.Array:
  """Reflection padding of (N, H, W, C) by ``p`` on every side of H and W (the edge pixel
  is not repeated, as ``torch.nn.ReflectionPad2d``)."""
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect") if p else x


def instance_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = EPS):
  """(x - mean) / sqrt(var + eps) * scale + bias, statistics per image and channel over
  (H, W) of (N, H, W, C); biased variance."""
  mean = jnp.mean(x, axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


class InstanceNorm(nn.Module):
  """``instance_norm`` with learned per-channel scale (init 1) and bias (init 0; none when
  not ``use_bias``)."""
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32) if self.use_bias else 0.0
    return instance_norm(x, scale, bias)


def _lax_conv(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """VALID conv by ``lax.conv_general_dilated``, asked for as a zero-padded conv and cropped:
  XLA:CPU (jaxlib 0.10) sends padded convs to its fast conv kernels and VALID ones to a
  several times slower path (BENCHMARKS.md, "Feed-forward"). Stride 1 pads k // 2
  on each side and crops that ring; stride s pads k − 1 after, which keeps the VALID grid."""
  k, n = kernel.shape[0], x.ndim - 2
  ho, wo = [(d - k) // stride + 1 for d in x.shape[1:3]]
  pad = [(k // 2, k // 2)] * n if stride == 1 else [(0, k - 1)] * n
  y = jax.lax.conv_general_dilated(x, kernel, (stride, stride), pad, dimension_numbers=_DN)
  o = k // 2 if stride == 1 else 0
  return y[:, o:o + ho, o:o + wo]


def conv_blocks(x: jax.Array, kernel: jax.Array, block: int = 4) -> jax.Array:
  """VALID stride-1 conv as a conv over ``block``×``block`` pixel blocks: the input
  space-to-depth by ``block`` (Cin → block²·Cin channels), a kernel of ceil((block + k − 1) /
  block) blocks a side mapping to block²·Cout channels (the k×k kernel placed at every
  output offset inside a block, zeros elsewhere), then depth-to-space. For k = 9, block 4
  that is a 3×3 conv 48 → 512 channels instead of a 9×9 conv 3 → 32: 1.78× the FLOPs, run
  many times faster by XLA:CPU (few-channel convs are its slow case, BENCHMARKS.md), and its
  autodiff is as fast. Inputs not a multiple of ``block`` are zero-padded at the bottom and
  right and the output cropped."""
  n, h, w, cin = x.shape
  k, cout = kernel.shape[0], kernel.shape[-1]
  ho, wo = h - k + 1, w - k + 1
  s, nb = block, -(-(block + k - 1) // block)
  bh, bw = -(-ho // s), -(-wo // s)
  hp, wp = (bh + nb - 1) * s, (bw + nb - 1) * s
  x = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
  x = x.reshape(n, hp // s, s, wp // s, s, cin).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(n, hp // s, wp // s, s * s * cin)
  # Kernel tap of input block b, pixel p in it, for output pixel o of a block: b·s + p − o.
  tap = np.arange(nb)[:, None, None] * s + np.arange(s)[:, None] - np.arange(s) + s - 1
  kp = jnp.pad(kernel, ((s - 1, nb * s - k), (s - 1, nb * s - k), (0, 0), (0, 0)))
  kb = kp[tap[:, :, :, None, None, None], tap[None, None, None]]  # (b, p, o, b', p', o', i, c)
  kb = kb.transpose(0, 3, 1, 4, 6, 2, 5, 7).reshape(nb, nb, s * s * cin, s * s * cout)
  y = _lax_conv(x, kb).reshape(n, bh, bw, s, s, cout).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(n, bh * s, bw * s, cout)[:, :ho, :wo]


@jax.custom_vjp
def _narrowing(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``_lax_conv``'s forward with ``conv_blocks``' gradient (the same linear function of each
  argument): XLA:CPU's own gradient of a conv to 3 channels is the slower one."""
  return _lax_conv(x, kernel)


_narrowing.defvjp(lambda x, kernel: (_lax_conv(x, kernel), (x, kernel)),
                  lambda res, g: jax.vjp(conv_blocks, *res)[1](g))


def conv_valid(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """VALID cross-correlation, (N, H, W, Cin) x (k, k, Cin, Cout) -> (N, H', W', Cout).

  XLA:CPU's conv kernels run few-channel convs slowly (BENCHMARKS.md, "Feed-forward"), so
  two stride-1 cases take other forms: the RGB input conv (Cin <= 4) is ``conv_blocks``; a
  large conv that narrows the channels (Cout < Cin, k >= 5: the output conv) keeps lax's
  forward but takes ``conv_blocks``' gradient. Same numbers up to float32 summation order."""
  kh, _, cin, cout = kernel.shape
  if stride == 1 and cin <= 4 < cout:
    return conv_blocks(x, kernel)
  if stride == 1 and cout < cin and kh >= 5:
    return _narrowing(x, kernel)
  return _lax_conv(x, kernel, stride)


# Nearest ×2 then a 3-tap conv, per output phase a (even / odd row) and tap offset u into the
# edge-padded input: which of the kernel's 3 taps land there (``upsample_conv3``).
_PHASE_TAPS = ((1, 0, 0), (0, 1, 1)), ((1, 1, 0), (0, 0, 1))


def _phase_kernels(kernel: jax.Array) -> jax.Array:
  """(3, 3, Cin, Cout) -> (2, 2, 2, 2, Cin, Cout): [row phase a, column phase b, row offset
  u, column offset v] (offsets a + u, b + v into the edge-padded input)."""
  taps = jnp.asarray(_PHASE_TAPS, kernel.dtype)
  return jnp.einsum("aut,bvs,tsio->abuvio", taps, taps, kernel)


def _interleave(y: jax.Array) -> jax.Array:
  """(N, H, W, 2, 2, C) [.., row phase, column phase, ..] -> (N, 2H, 2W, C)."""
  n, h, w, _, _, c = y.shape
  return y.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, c)


def upsample_conv3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``conv_valid(reflect_pad(nearest_x2(x), 1), kernel)`` for a 3×3 ``kernel``,
  (N, H, W, Cin) -> (N, 2H, 2W, Cout), without building the upsampled map.

  Reflecting a nearest-upsampled map by 1 is upsampling the edge-padded map (then cropping
  1), so output row 2i+a (phase a) reads padded input rows i+a and i+a+1 only, through 2
  sums of the kernel's 3 row taps (``_PHASE_TAPS``), and likewise for columns: 4 phases × 4
  taps instead of 4 × 9 per input pixel: 4 lax convs with 2×2 kernels (zero-padded after and
  cropped: XLA:CPU's fast path, as ``_lax_conv``). Same numbers up to float32
  summation order."""
  _, h, w, _ = x.shape
  ke = _phase_kernels(kernel)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  y = [[jax.lax.conv_general_dilated(xp[:, a:a + h + 1, b:b + w + 1], ke[a, b], (1, 1),
                                     ((0, 1), (0, 1)), dimension_numbers=_DN)[:, :h, :w]
        for b in (0, 1)] for a in (0, 1)]
  return _interleave(jnp.stack([jnp.stack(row, axis=3) for row in y], axis=3))


class _Conv(nn.Module):
  """``nn.Conv(features, (k, k), stride, padding="VALID")``'s params (kernel HWIO,
  LeCun-normal; bias zeros when ``use_bias``), computed by ``conv_valid`` — or, with
  ``upsample``, by ``upsample_conv3`` on the unpadded map before its nearest ×2."""
  features: int
  kernel: int
  stride: int = 1
  use_bias: bool = False
  upsample: bool = False

  @nn.compact
  def __call__(self, x):
    k = self.param("kernel", nn.initializers.lecun_normal(),
                   (self.kernel, self.kernel, x.shape[-1], self.features))
    if self.upsample:
      y = upsample_conv3(x, k.astype(x.dtype))
    else:
      y = conv_valid(x, k.astype(x.dtype), self.stride)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(y.dtype)
    return y


class ConvLayer(nn.Module):
  """Nearest ×``upsample`` when asked, reflection pad k // 2, then a k×k conv with ``stride``
  (VALID); with a bias only when ``use_bias`` (a conv followed by instance norm has none: the
  norm subtracts it again)."""
  features: int
  kernel: int
  stride: int = 1
  use_bias: bool = False
  upsample: int = 1

  @nn.compact
  def __call__(self, x):
    if self.upsample == 2 and self.kernel == 3 and self.stride == 1:
      return _Conv(self.features, 3, 1, self.use_bias, upsample=True, name="conv")(x)
    if self.upsample > 1:
      x = jnp.repeat(jnp.repeat(x, self.upsample, axis=1), self.upsample, axis=2)
    x = reflect_pad(x, self.kernel // 2)
    return _Conv(self.features, self.kernel, self.stride, self.use_bias, name="conv")(x)


class ConvNormRelu(nn.Module):
  """ConvLayer → InstanceNorm → ReLU, after a nearest ×``upsample`` when asked."""
  features: int
  kernel: int
  stride: int = 1
  upsample: int = 1

  @nn.compact
  def __call__(self, x):
    x = ConvLayer(self.features, self.kernel, self.stride, upsample=self.upsample,
                  name="layer")(x)
    return nn.relu(InstanceNorm(name="norm")(x))


class ResidualBlock(nn.Module):
  """x + IN(conv(ReLU(IN(conv(x))))), 3×3 convs of the input's width (no ReLU after the sum,
  as in the PyTorch example and Gross & Wilber's residual blocks). The second norm has no
  bias: a per-channel constant added there is removed by the next block's (and up1's)
  instance norm, so its gradient is zero up to rounding."""

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    y = nn.relu(InstanceNorm(name="norm1")(ConvLayer(c, 3, name="conv1")(x)))
    y = InstanceNorm(use_bias=False, name="norm2")(ConvLayer(c, 3, name="conv2")(y))
    return x + y


class TransformerNet(nn.Module):
  """RGB [0, 1] (N, H, W, 3) -> stylised RGB in (0, 1), the same shape (module docstring)."""
  width: int = 32
  num_res_blocks: int = 5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h, w = x.shape[1:3]
    c = self.width
    y = ConvNormRelu(c, 9, name="conv_in")(x)
    y = ConvNormRelu(2 * c, 3, 2, name="down1")(y)
    y = ConvNormRelu(4 * c, 3, 2, name="down2")(y)
    for i in range(self.num_res_blocks):
      y = ResidualBlock(name=f"res{i}")(y)
    y = ConvNormRelu(2 * c, 3, upsample=2, name="up1")(y)
    y = ConvNormRelu(c, 3, upsample=2, name="up2")(y)
    y = ConvLayer(3, 9, use_bias=True, name="conv_out")(y)
    return jax.nn.sigmoid(y[:, :h, :w, :])


def output_size(h: int, w: int) -> tuple[int, int]:
  """The uncropped output size for an (h, w) input: 4·ceil(h/4), 4·ceil(w/4)."""
  return 4 * -(-h // 4), 4 * -(-w // 4)


def init(key: jax.Array, width: int = 32, num_res_blocks: int = 5) -> dict:
  """Fresh params of ``TransformerNet(width, num_res_blocks)`` (Flax default initialisers:
  LeCun-normal kernels, zero biases; instance norm scale 1, bias 0). Size independent."""
  return _init(key, width, num_res_blocks)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _init(key, width, num_res_blocks):
  net = TransformerNet(width, num_res_blocks)
  return net.init(key, jnp.zeros((1, 16, 16, 3), jnp.float32))["params"]


def apply(params, x: jax.Array, width: int = 32, num_res_blocks: int = 5) -> jax.Array:
  """``TransformerNet(width, num_res_blocks)`` on RGB (N, H, W, 3) or (H, W, 3)."""
  single = x.ndim == 3
  y = TransformerNet(width, num_res_blocks).apply({"params": params}, x[None] if single else x)
  return y[0] if single else y


def num_params(params) -> int:
  return sum(int(a.size) for a in jax.tree.leaves(params))
