"""VGG conv stacks (VGG-19, VGG-16) as a Flax linen module, and feature extraction.

Layer names follow the VGG paper everywhere in jnst:

  conv{B}_{I}  output of the I-th 3x3 conv of block B, before its ReLU
  relu{B}_{I}  the same after the ReLU
  pool{B}      2x2/2 pooling at the end of block B (max or average)

Other namings map onto these as follows (VGG-19; B = block, I = conv index):

  Keras ``block{B}_conv{I}``   -> conv{B}_{I} (Keras' layer output is after the ReLU: relu{B}_{I})
  torchvision ``features.{k}`` -> conv/relu per VGG19_TORCH_INDEX below
  "conv_1 ... conv_5" in the Gatys paper's figures and our research seeds mean the *first*
                                 layer of each block after its ReLU, relu1_1 ... relu5_1;
  ``block3`` in a jnst layer list  every conv of block 3 after its ReLU (relu3_1 ... relu3_4).

Params are a plain pytree::

  {"conv": {"conv1_1": {"kernel": (3, 3, Cin, Cout) HWIO, "bias": (Cout,)}, ...},
   "input": {"mean": (3,), "std": (3,)}}

optionally with ``"grad_kernels": {"conv1_1": (3, 3, Cout, Cin), ...}`` added by
``with_grad_kernels`` (a speed-up for input gradients; see ``conv3x3``).

``input`` holds the weights' own input normalisation, expressed on RGB in [0, 1]:
the network consumes ``x = (rgb - mean) / std`` in RGB channel order. For the Caffe
weights (trained on BGR, 0-255, minus the BGR mean [103.939, 116.779, 123.68]) this
is mean = [123.68, 116.779, 103.939] / 255 and std = 1/255, and the loader flips
conv1_1's input channels so the network takes RGB: numerically the same network as
Caffe's, with the optimised image living in Caffe's 0-255 mean-subtracted scale.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jnst.errors import JnstError


@dataclasses.dataclass(frozen=True)
class Arch:
  """A VGG conv stack: convs per block and channel widths per block."""
  name: str
  convs_per_block: tuple[int, ...]
  widths: tuple[int, ...]

  @property
  def conv_names(self) -> tuple[str, ...]:
    return tuple(f"conv{b}_{i}" for b, n in enumerate(self.convs_per_block, 1)
                 for i in range(1, n + 1))

  @property
  def layer_names(self) -> tuple[str, ...]:
    """Every extractable layer, in forward order."""
    out = []
    for b, n in enumerate(self.convs_per_block, 1):
      for i in range(1, n + 1):
        out += [f"conv{b}_{i}", f"relu{b}_{i}"]
      out.append(f"pool{b}")
    return tuple(out)

  def kernel_shapes(self) -> dict[str, tuple[int, int, int, int]]:
    """conv name -> HWIO kernel shape."""
    shapes, cin = {}, 3
    for b, (n, w) in enumerate(zip(self.convs_per_block, self.widths), 1):
      for i in range(1, n + 1):
        shapes[f"conv{b}_{i}"] = (3, 3, cin, w)
        cin = w
    return shapes


VGG19 = Arch("vgg19", (2, 2, 4, 4, 4), (64, 128, 256, 512, 512))
VGG16 = Arch("vgg16", (2, 2, 3, 3, 3), (64, 128, 256, 512, 512))

# torchvision vgg19().features indices of the convs, in conv_names order.
VGG19_TORCH_INDEX = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)

POOLINGS = ("max", "avg")


def validate_layers(layers: Iterable[str], arch: Arch = VGG19) -> tuple[str, ...]:
  """Returns ``layers`` as a tuple; raises JnstError naming any unknown layer."""
  layers = tuple(layers)
  valid = arch.layer_names
  bad = [l for l in layers if l not in valid]
  if bad:
    raise JnstError(f"unknown layer name(s) {', '.join(map(repr, bad))}; valid names: "
                    f"{', '.join(valid)}")
  return layers


def expand_layers(spec: str | Sequence[str], arch: Arch = VGG19) -> tuple[str, ...]:
  """Parses a layer list: "relu1_1,block3" -> ("relu1_1", "relu3_1", ..., "relu3_4").

  ``blockB`` stands for every conv of block B after its ReLU. Duplicates are dropped,
  order is kept.
  """
  items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
  out: list[str] = []
  for item in items:
    if not item:
      continue
    m = re.fullmatch(r"block(\d+)", item)
    if m and 1 <= int(m.group(1)) <= len(arch.convs_per_block):
      b = int(m.group(1))
      names = [f"relu{b}_{i}" for i in range(1, arch.convs_per_block[b - 1] + 1)]
    else:
      names = [item]
    out += [n for n in validate_layers(names, arch) if n not in out]
  if not out:
    raise JnstError("empty layer list: name at least one layer, e.g. relu4_2")
  return tuple(out)


def _pool(x: jax.Array, pooling: str) -> jax.Array:
  """2x2/2 pooling of (N, H, W, C) -> (N, H//2, W//2, C); an odd last row/column is dropped
  (as VALID pooling does).

  Written as a reshape and a reduction rather than ``reduce_window``: the same values, but
  XLA differentiates a reduction cheaply, while ``reduce_window`` max's gradient
  (select_and_scatter) was ~9x slower on XLA:CPU (BENCHMARKS.md). At exact ties of the max
  the gradient is shared between the tied positions (torch sends it to one of them).
  """
  if pooling not in POOLINGS:
    raise JnstError(f"unknown pooling {pooling!r}: use 'max' or 'avg'")
  n, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
  return x.max(axis=(2, 4)) if pooling == "max" else x.mean(axis=(2, 4))


_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3/1 SAME cross-correlation, (N, H, W, Cin) x (3, 3, Cin, Cout) -> (N, H, W, Cout)."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DN)


def grad_kernel(kernel: jax.Array) -> jax.Array:
  """The kernel whose ``_conv`` is the input gradient of ``_conv(., kernel)``: spatially
  flipped, in/out channels swapped, (3, 3, Cin, Cout) -> (3, 3, Cout, Cin)."""
  return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


def conv3x3(x: jax.Array, kernel: jax.Array, kernel_t: jax.Array | None = None) -> jax.Array:
  """``_conv`` whose input gradient is written as a plain conv with ``kernel_t =
  grad_kernel(kernel)`` (the same numbers as JAX's own rule).

  Inside a ``lax.scan``/``while`` body XLA:CPU otherwise leaves the transposed conv off its
  fast conv path (~3x slower per evaluation, BENCHMARKS.md). Passing ``kernel_t``
  precomputed (``with_grad_kernels``) also saves transposing every kernel on each call
  (~10 % of a CPU evaluation); without it, it is computed here.
  """
  return _conv3x3(x, kernel, grad_kernel(kernel) if kernel_t is None else kernel_t)


@jax.custom_vjp
def _conv3x3(x, kernel, kernel_t):
  return _conv(x, kernel)


def _conv3x3_fwd(x, kernel, kernel_t):
  return _conv(x, kernel), (x, kernel, kernel_t)


def _conv3x3_bwd(res, g):
  x, kernel, kernel_t = res
  dx = _conv(g, kernel_t)
  _, kernel_vjp = jax.vjp(lambda k: _conv(x, k), kernel)  # Dead code unless asked for.
  return dx, kernel_vjp(g)[0], jnp.zeros_like(kernel_t)


_conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def with_grad_kernels(params: Mapping) -> dict:
  """``params`` plus ``"grad_kernels": {conv name: grad_kernel(kernel)}``, which
  ``features`` then uses for input gradients instead of transposing every kernel on every
  call. Numerically identical; costs one more copy of the kernels in memory. The loss
  problems in ``jnst.transfer`` do this once when they are built."""
  kernels = {n: grad_kernel(c["kernel"]) for n, c in params["conv"].items()}
  return {**params, "grad_kernels": kernels}


class Conv3x3(nn.Module):
  """``nn.Conv(features, (3, 3), padding="SAME")`` with the same params ({"kernel": HWIO,
  "bias"}), computed by ``conv3x3``; a ``grad_kernels`` collection entry "kernel", when
  present, is used as its precomputed ``kernel_t``."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (3, 3, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    kernel_t = (self.get_variable("grad_kernels", "kernel")
                if self.has_variable("grad_kernels", "kernel") else None)
    x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
    kernel_t = None if kernel_t is None else kernel_t.astype(self.dtype)
    return conv3x3(x, kernel, kernel_t) + bias


class VGG(nn.Module):
  """VGG conv stack on preprocessed NHWC input; returns the requested activations.

  Attributes:
    layers: names to return (see module docstring); the forward pass stops at the
      deepest of them.
    arch: which VGG.
    pooling: "max" (every common implementation) or "avg" (the Gatys paper's choice).
    dtype: compute dtype (float32 or bfloat16); outputs are cast back to float32.
  """
  layers: tuple[str, ...]
  arch: Arch = VGG19
  pooling: str = "max"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    wanted = set(validate_layers(self.layers, self.arch))
    order = self.arch.layer_names
    last = max(order.index(l) for l in wanted)
    out: dict[str, jax.Array] = {}
    x = x.astype(self.dtype)

    def keep(name, value):
      if name in wanted:
        out[name] = value.astype(jnp.float32)
      return order.index(name) >= last

    for b, (n, w) in enumerate(zip(self.arch.convs_per_block, self.arch.widths), 1):
      for i in range(1, n + 1):
        x = Conv3x3(w, dtype=self.dtype, name=f"conv{b}_{i}")(x)
        if keep(f"conv{b}_{i}", x):
          return out
        x = nn.relu(x)
        if keep(f"relu{b}_{i}", x):
          return out
      x = _pool(x, self.pooling)
      if keep(f"pool{b}", x):
        return out
    return out


def preprocess(params: Mapping, rgb: jax.Array) -> jax.Array:
  """RGB in [0, 1] (..., 3) -> the network's input space (see module docstring)."""
  return (rgb - params["input"]["mean"]) / params["input"]["std"]


def deprocess(params: Mapping, x: jax.Array) -> jax.Array:
  """Inverse of ``preprocess``: network input space -> RGB (not clipped)."""
  return x * params["input"]["std"] + params["input"]["mean"]


def arch_of(params: Mapping) -> Arch:
  """The Arch whose conv names match ``params["conv"]``."""
  names = set(params["conv"])
  for arch in (VGG19, VGG16):
    if names == set(arch.conv_names):
      return arch
  raise JnstError(f"params hold convs {sorted(names)}, which match no known VGG")


def features(params: Mapping, x: jax.Array, layers: Sequence[str],
             pooling: str = "max", dtype=jnp.float32) -> dict[str, jax.Array]:
  """Activations of preprocessed NHWC input ``x``: {layer: (N, H', W', C) float32}."""
  model = VGG(tuple(layers), arch=arch_of(params), pooling=pooling, dtype=dtype)
  variables = {"params": params["conv"]}
  if "grad_kernels" in params:
    variables["grad_kernels"] = {n: {"kernel": k} for n, k in params["grad_kernels"].items()}
  return model.apply(variables, x)


def extract(params: Mapping, images: jax.Array, layers: Sequence[str],
            pooling: str = "max", dtype=jnp.float32) -> dict[str, jax.Array]:
  """Activations of RGB images in [0, 1], NHWC: {layer: (N, H', W', C) float32}.

  Computes only up to the deepest requested layer. Unknown layer names raise a
  ValueError (JnstError) listing the valid names.
  """
  return features(params, preprocess(params, images), layers, pooling, dtype)


def init_random(key: jax.Array, arch: Arch = VGG19, scale: float = 1.0) -> dict:
  """Random params (He-normal kernels times ``scale``, small biases) with the Caffe
  input convention. For tests and benchmarks where the real weights are not the point."""
  conv = {}
  for name, shape in arch.kernel_shapes().items():
    key, k1, k2 = jax.random.split(key, 3)
    fan_in = shape[0] * shape[1] * shape[2]
    conv[name] = {
        "kernel": scale * jax.random.normal(k1, shape) * jnp.sqrt(2.0 / fan_in),
        "bias": 0.1 * jax.random.normal(k2, shape[-1:]),
    }
  return {"conv": conv, "input": caffe_input()}


def caffe_input() -> dict[str, jax.Array]:
  """Caffe's normalisation on RGB [0, 1]: x = 255 * rgb - [123.68, 116.779, 103.939]."""
  return {"mean": jnp.array([123.68, 116.779, 103.939], jnp.float32) / 255.0,
          "std": jnp.full((3,), 1.0 / 255.0, jnp.float32)}


def load_params(path=None, dtype=jnp.float32) -> dict:
  """Loads weights from our HDF5 file (default: ``jnst.weights.ensure_weights()``).

  Returns the params pytree described in the module docstring, cast to ``dtype``.
  """
  from jnst import weights  # I/O lives there; imported lazily to keep this module pure.
  return weights.load_params(path, dtype=dtype)
