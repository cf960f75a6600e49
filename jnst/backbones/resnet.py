"""ResNet-50 (He et al., CVPR 2016) as a feature extractor: a Flax module in inference mode,
its layer names, input conventions, weights file and converters (torchvision, Keras).

Layer names (torchvision's module names; every jnst layer list uses them), in forward order:

  conv1      the stem's 7x7/2 conv followed by its batch norm, before the ReLU   1/2 res, 64 ch
  relu       the same after the ReLU                                               1/2, 64
  maxpool    the stem's 3x3/2 pooling (see "pooling" below)                        1/4, 64
  layerS.B   output of bottleneck block B (from 0) of stage S, after its ReLU:
             layer1.0-2 (1/4 res, 256 ch), layer2.0-3 (1/8, 512), layer3.0-5 (1/16, 1024),
             layer4.0-2 (1/32, 2048)
  layerS     in a layer list: every block of stage S (layerS.0, layerS.1, ...)

Other namings, accepted in layer lists (``expand_layers``) and translated to ours:

  ours        Caffe (MSRA prototxt)     Keras applications
  conv1       conv1 / bn_conv1          conv1_conv / conv1_bn
  relu        conv1_relu                conv1_relu
  maxpool     pool1                     pool1_pool
  layer1.0    res2a (after res2a_relu)  conv2_block1_out
  layerS.B    res{S+1}{a+B}             conv{S+1}_block{B+1}_out

Variants: ``resnet50`` is torchvision's ResNet-50 "v1.5" (a downsampling block strides in
its 3x3 conv); ``resnet50_v1`` is the original Caffe/Keras ResNet-50 (it strides in the
first 1x1 conv). Same parameter shapes, different graphs, so a weights file records which
one it holds and the other refuses it.

Params, the plain pytree a user holds::

  {"conv": {"conv1": {"kernel": (7, 7, 3, 64) HWIO, "bias": (64,)},
            "layer1.0.conv1": ..., "layer1.0.conv2": ..., "layer1.0.conv3": ...,
            "layer1.0.downsample": ..., ..., "layer4.2.conv3": ...},
   "input": {"mean": (3,), "std": (3,)}}

Batch norm is inference-mode and folded into the preceding conv once, when converting:
``kernel = W·γ/sqrt(var + eps)``, ``bias = β + (b - mean)·γ/sqrt(var + eps)`` (in float64),
so the forward pass is convs, ReLUs, additions and one pooling, and our file holds one kernel
and bias per conv like the VGG files.

Input convention: the network consumes ``x = (rgb - mean) / std`` of RGB in [0, 1].
torchvision weights: ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
Keras weights (Caffe's): BGR 0-255 minus (103.939, 116.779, 123.68); as for VGG, ``load``
flips conv1's input channels so the network takes RGB, mean = that / 255 reversed, std 1/255.

Pooling: the one pooling of the stem, 3x3 stride 2 padding 1. "max" (every ResNet) or "avg"
(mean over the 9 window positions, padding counted as zeros, torch's count_include_pad); the
stride-2 convs are not affected. Its input is post-ReLU (>= 0), so zero padding gives the
same maximum as torch's -inf padding.

Defaults (chosen by resolution, as no ImageNet weights can be fetched here: weights/README.md):
style ``relu, layer1.0, layer2.0, layer3.0, layer4.0`` (the first output at each of the five
resolutions, as VGG's relu1_1 ... relu5_1 are), content ``layer2.3`` (1/8 resolution, like
VGG's relu4_2). ``term_scales`` are 1 until measured on real weights with
scripts/calibrate_backbone.py (``jnst.calibrate``; weights/README.md, "Calibrating
term_scales"): with 1, batch-normed features make the default β far too weak.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jnst.params_file as params_file
from jnst.backbones.input_space import MeanStdInput
from jnst.backbones.vgg import conv3x3, flax_variables, grad_kernel, precomputed_grad_kernel
from jnst.errors import JnstError
from jnst.fetch import Log, sha256, stderr_log

STAGES = (3, 4, 6, 3)  # Bottleneck blocks per stage.
WIDTHS = (64, 128, 256, 512)  # Bottleneck (3x3) widths; block outputs are 4x.
EXPANSION = 4
POOLINGS = ("max", "avg")
COMPUTE_DTYPES = ("float32", "bfloat16")
VARIANTS = {"resnet50": False, "resnet50_v1": True}  # name -> stride in the first 1x1 conv.
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
CONVENTIONS = ("caffe_bgr", "torch_rgb")
TORCH_BN_EPS = 1e-5
KERAS_BN_EPS = 1.001e-5


def block_names() -> tuple[str, ...]:
  return tuple(f"layer{s}.{b}" for s, n in enumerate(STAGES, 1) for b in range(n))


LAYER_NAMES = ("conv1", "relu", "maxpool") + block_names()


def conv_specs() -> dict[str, tuple[int, int, int, int]]:
  """conv name -> HWIO kernel shape, in forward order."""
  specs, cin = {"conv1": (7, 7, 3, 64)}, 64
  for s, (n, w) in enumerate(zip(STAGES, WIDTHS), 1):
    for b in range(n):
      p = f"layer{s}.{b}"
      specs[f"{p}.conv1"] = (1, 1, cin, w)
      specs[f"{p}.conv2"] = (3, 3, w, w)
      specs[f"{p}.conv3"] = (1, 1, w, EXPANSION * w)
      if b == 0:
        specs[f"{p}.downsample"] = (1, 1, cin, EXPANSION * w)
      cin = EXPANSION * w
  return specs


CONV_NAMES = tuple(conv_specs())


def file_shapes() -> dict[str, dict[str, tuple]]:
  """Our weights file's layout: conv -> {"kernel": HWIO, "bias": (Cout,)}."""
  return {n: {"kernel": s, "bias": s[-1:]} for n, s in conv_specs().items()}


def _aliases() -> dict[str, str]:
  """Caffe and Keras layer names -> ours (module docstring)."""
  out = {"bn_conv1": "conv1", "conv1_conv": "conv1", "conv1_bn": "conv1",
         "conv1_relu": "relu", "pool1": "maxpool", "pool1_pool": "maxpool"}
  for s, n in enumerate(STAGES, 1):
    for b in range(n):
      out[f"res{s + 1}{'abcdef'[b]}"] = f"layer{s}.{b}"
      out[f"conv{s + 1}_block{b + 1}_out"] = f"layer{s}.{b}"
  return out


ALIASES = _aliases()

# ---------------------------------------------------------------------------- the network

_DN = ("NHWC", "HWIO", "NHWC")


def strided_conv(x: jax.Array, kernel: jax.Array, stride: int, pad: int,
                 kernel_t: jax.Array | None = None) -> jax.Array:
  """Cross-correlation with ``stride`` and ``pad`` zeros on every side, (N, H, W, Cin) x
  (k, k, Cin, Cout) -> (N, (H + 2 pad - k) // stride + 1, ..., Cout), whose input gradient
  is written as a plain input-dilated conv with ``kernel_t = vgg.grad_kernel(kernel)`` (the
  same numbers as JAX's own rule; see ``vgg.conv3x3`` for why; computed here unless given)."""
  return _strided(x, kernel, grad_kernel(kernel) if kernel_t is None else kernel_t, stride, pad)


def _strided_fwd_only(x, kernel, stride, pad):
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                      dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _strided(x, kernel, kernel_t, stride, pad):
  return _strided_fwd_only(x, kernel, stride, pad)


def _strided_fwd(x, kernel, kernel_t, stride, pad):
  return _strided_fwd_only(x, kernel, stride, pad), (x, kernel, kernel_t)


def _strided_bwd(stride, pad, res, g):
  x, kernel, kernel_t = res
  k = kernel.shape[0]
  # The input positions the last output window did not reach get a zero gradient.
  pads = [(k - 1 - pad, k - 1 - pad + (n + 2 * pad - k) % stride) for n in x.shape[1:3]]
  dx = jax.lax.conv_general_dilated(g, kernel_t, (1, 1), pads, lhs_dilation=(stride, stride),
                                    dimension_numbers=_DN)
  _, kernel_vjp = jax.vjp(lambda w: _strided_fwd_only(x, w, stride, pad), kernel)
  return dx, kernel_vjp(g)[0], jnp.zeros_like(kernel_t)


_strided.defvjp(_strided_fwd, _strided_bwd)


class ConvBias(nn.Module):
  """A conv with a bias (batch norm folded in): {"kernel": HWIO, "bias"}; ``pad`` zeros on
  every side; initialised He-normal and zeros (``ResNet.init_random`` re-draws them). A
  ``grad_kernels`` collection entry "kernel", when present, is its precomputed
  ``grad_kernel(kernel)`` (``ResNet.prepare``; convs larger than 1x1)."""
  features: int
  size: int
  stride: int = 1
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.he_normal(),
                        (self.size, self.size, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    pad = self.size // 2
    # XLA:CPU leaves autodiff's transposed convs off its fast conv path inside a compiled
    # loop (BENCHMARKS.md, issue 16): every conv here has an explicit input gradient.
    kernel = kernel.astype(self.dtype)
    kernel_t = precomputed_grad_kernel(self, self.dtype)
    if self.size == 3 and self.stride == 1:
      y = conv3x3(x, kernel, kernel_t)
    elif self.size == 1:
      y = jnp.einsum("nhwc,cd->nhwd", x[:, ::self.stride, ::self.stride], kernel[0, 0])
    else:
      y = strided_conv(x, kernel, self.stride, pad, kernel_t)
    return y + bias.astype(self.dtype)


def stem_pool(x: jax.Array, pooling: str) -> jax.Array:
  """3x3/2 pooling with 1 zero of padding: (N, H, W, C) -> (N, (H-1)//2+1, (W-1)//2+1, C).

  Strided slices, which XLA differentiates cheaply (unlike ``reduce_window``'s
  select_and_scatter on XLA:CPU): the max of 3 row slices, then of 3 column slices of that
  (separable, a quarter of the 9-slice form's backward); the mean of the 9 slices. For "max"
  the input must be >= 0 (post-ReLU), where zero padding equals -inf padding; ties share
  the gradient (at zeros the ReLU's backward drops it); "avg" divides by 9 everywhere."""
  if pooling not in POOLINGS:
    raise JnstError(f"unknown pooling {pooling!r}: use 'max' or 'avg'")
  n, h, w, c = x.shape
  ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  if pooling == "max":
    rows = functools.reduce(jnp.maximum, [xp[:, i:i + 2 * ho - 1:2] for i in range(3)])
    return functools.reduce(jnp.maximum, [rows[:, :, j:j + 2 * wo - 1:2] for j in range(3)])
  views = [xp[:, i:i + 2 * ho - 1:2, j:j + 2 * wo - 1:2] for i in range(3) for j in range(3)]
  return sum(views[1:], views[0]) / 9.0


class ResNetNet(nn.Module):
  """ResNet-50 on preprocessed NHWC input; returns the requested activations
  {layer: (N, H', W', C) float32}, stopping at the deepest of them.

  Attributes: layers (names, module docstring); stride_in_1x1 (True: v1, Caffe/Keras;
  False: v1.5, torchvision); pooling of the stem "max" | "avg"; dtype: compute dtype.
  """
  layers: tuple[str, ...]
  stride_in_1x1: bool = False
  pooling: str = "max"
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    wanted = set(self.layers)
    last = max(LAYER_NAMES.index(l) for l in wanted)
    out: dict[str, jax.Array] = {}
    dt = self.dtype

    def keep(name, value):
      if name in wanted:
        out[name] = value.astype(jnp.float32)
      return LAYER_NAMES.index(name) >= last

    x = ConvBias(64, 7, 2, dt, name="conv1")(x.astype(dt))
    if keep("conv1", x):
      return out
    x = nn.relu(x)
    if keep("relu", x):
      return out
    x = stem_pool(x, self.pooling)
    if keep("maxpool", x):
      return out
    for s, (n, w) in enumerate(zip(STAGES, WIDTHS), 1):
      for b in range(n):
        p, stride = f"layer{s}.{b}", (2 if s > 1 and b == 0 else 1)
        s1, s2 = (stride, 1) if self.stride_in_1x1 else (1, stride)
        h = nn.relu(ConvBias(w, 1, s1, dt, name=f"{p}.conv1")(x))
        h = nn.relu(ConvBias(w, 3, s2, dt, name=f"{p}.conv2")(h))
        h = ConvBias(EXPANSION * w, 1, 1, dt, name=f"{p}.conv3")(h)
        if b == 0:
          x = ConvBias(EXPANSION * w, 1, stride, dt, name=f"{p}.downsample")(x)
        x = nn.relu(h + x)
        if keep(p, x):
          return out
    return out


# ---------------------------------------------------------------------------- the backbone


@dataclasses.dataclass(frozen=True)
class ResNet(MeanStdInput):
  """The ResNet-50 backbone: hashable (part of an objective's compile-cache key).

  Attributes: name "resnet50" (torchvision, v1.5) | "resnet50_v1" (Caffe/Keras);
  pooling of the stem "max" | "avg"; compute_dtype "float32" | "bfloat16" (outputs float32);
  term_scales: multipliers of the raw loss terms into VGG-19 Caffe units (module docstring).
  """
  name: str = "resnet50"
  pooling: str = "max"
  compute_dtype: str = "float32"
  term_scales: tuple[tuple[str, float], ...] = ()
  variant_term_scales: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()

  default_content_layers = ("layer2.3",)
  default_style_layers = ("relu", "layer1.0", "layer2.0", "layer3.0", "layer4.0")
  diversity_layers = ("relu", "layer1.0", "layer2.0", "layer3.0", "layer4.0")
  block_layers = ("relu", "layer1.2", "layer2.3", "layer3.5", "layer4.2")  # Stage outputs.

  @property
  def stride_in_1x1(self) -> bool:
    return VARIANTS[self.name]

  def describe(self) -> dict:
    return {"name": self.name, "pooling": self.pooling, "compute_dtype": self.compute_dtype}

  def with_options(self, pooling: str | None = None, compute_dtype: str | None = None) -> ResNet:
    """This backbone with other options; raises JnstError on an unknown value."""
    new = dataclasses.replace(self, pooling=pooling or self.pooling,
                              compute_dtype=compute_dtype or self.compute_dtype)
    if new.pooling not in POOLINGS:
      raise JnstError(f"unknown pooling {new.pooling!r}: use 'max' or 'avg' (ResNet: the "
                      f"stem's pooling)")
    if new.compute_dtype not in COMPUTE_DTYPES:
      raise JnstError(f"unknown compute dtype {new.compute_dtype!r}: use float32 or bfloat16")
    return new

  # -------------------------------------------------------------- layers

  @property
  def layer_names(self) -> tuple[str, ...]:
    return LAYER_NAMES

  def validate_layers(self, layers: Iterable[str]) -> tuple[str, ...]:
    """Returns ``layers`` as a tuple; raises JnstError naming any unknown layer."""
    layers = tuple(layers)
    bad = [l for l in layers if l not in LAYER_NAMES]
    if bad:
      raise JnstError(f"unknown {self.name} layer name(s) {', '.join(map(repr, bad))}; valid "
                      f"names: {', '.join(LAYER_NAMES)}, or layer1 ... layer4 (Caffe res2a... "
                      f"and Keras conv2_block1_out... names are accepted in layer lists)")
    return layers

  def expand_layers(self, spec: str | Sequence[str]) -> tuple[str, ...]:
    """Parses a layer list: "relu,layer2,res4a" -> ("relu", "layer2.0", ..., "layer2.3",
    "layer3.0"). Stage names expand, Caffe/Keras names translate; duplicates are dropped."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
      m = re.fullmatch(r"layer(\d)", item or "")
      if m and 1 <= int(m.group(1)) <= len(STAGES):
        s = int(m.group(1))
        names = [f"layer{s}.{b}" for b in range(STAGES[s - 1])]
      else:
        names = [ALIASES.get(item, item)] if item else []
      out += [n for n in self.validate_layers(names) if n not in out]
    if not out:
      raise JnstError("empty layer list: name at least one layer, e.g. layer2.3")
    return tuple(out)

  # -------------------------------------------------------------- computing

  def features(self, params: Mapping, x: jax.Array, layers: Sequence[str]) -> dict:
    """Activations of input-space NHWC ``x``: {layer: (N, H', W', C) float32}."""
    if set(params["conv"]) != set(CONV_NAMES):
      raise JnstError(f"these params are not ResNet-50's (convs {sorted(params['conv'])[:3]}"
                      f"...): pass the backbone they were made for (--backbone)")
    model = ResNetNet(self.validate_layers(layers), self.stride_in_1x1, self.pooling,
                      self.compute_dtype)
    return model.apply(flax_variables(params), x)

  def extract(self, params: Mapping, rgb: jax.Array, layers: Sequence[str]) -> dict:
    """``features`` of RGB images in [0, 1], NHWC."""
    return self.features(params, self.preprocess(params, rgb), layers)

  def prepare(self, params: Mapping, layers: Sequence[str] | None = None) -> dict:
    """``params`` plus ``"grad_kernels"``: the input-gradient kernel of each conv larger than
    1x1, computed once here instead of on every call (numerically identical; batch norm is
    already folded into the convs when converting). ``layers``: unused (every kernel is
    small next to VGG's)."""
    del layers
    return {**params, "grad_kernels": {n: grad_kernel(c["kernel"])
                                       for n, c in params["conv"].items()
                                       if c["kernel"].shape[0] > 1}}

  def init_random(self, key: jax.Array, scale: float = 1.0) -> dict:
    """Random folded params with the torchvision input convention, for tests and
    benchmarks: kernels N(0, 2/fan_in) (He) times ``scale`` (each block's conv3 times a
    further 0.2, so activations grow slowly along the residual path), biases N(0, 0.1²)."""
    return {"conv": _random_convs(key, scale), "input": torch_input()}

  # -------------------------------------------------------------- files

  def load(self, path=None, dtype=jnp.float32, log: Log = stderr_log) -> dict:
    """Params from our weights file (there is no default file: weights/README.md)."""
    del log
    self.check_file(path)  # The arch, from the header: load_params need not read it again.
    return load_params(path, dtype)

  def check_file(self, path) -> None:
    """Refuses a missing ``path`` (there is no default file) or one of another arch, from its
    header alone (scripts call this before fetching inputs)."""
    if path is None:
      raise JnstError(f"no default {self.name} weights can be fetched: convert a file you "
                      f"have with scripts/fetch_weights.py --backbone={self.name} "
                      f"--torch_pth=... or --keras_h5=..., then pass --weights=PATH")
    check_arch(path, self.name)


def _random_convs(key: jax.Array, scale: float) -> dict:
  """NumPy draws (seeded by ``key``'s bits; fast where 53 jax.random calls compile slowly)."""
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
  conv = {}
  for name, shape in conv_specs().items():
    std = scale * np.sqrt(2.0 / np.prod(shape[:3])) * (0.2 if name.endswith("conv3") else 1.0)
    conv[name] = {"kernel": jnp.asarray(rng.normal(0.0, std, shape), jnp.float32),
                  "bias": jnp.asarray(rng.normal(0.0, 0.1, shape[-1:]), jnp.float32)}
  return conv


RESNET50 = ResNet("resnet50")
RESNET50_V1 = ResNet("resnet50_v1")


def torch_input() -> dict[str, jax.Array]:
  return {"mean": jnp.array(TORCH_MEAN, jnp.float32), "std": jnp.array(TORCH_STD, jnp.float32)}


# ---------------------------------------------------------------------------- weights files

CREDIT = ("ResNet-50: K. He, X. Zhang, S. Ren and J. Sun, 'Deep Residual Learning for Image "
          "Recognition', CVPR 2016; weights converted by the user from their own file.")


def fold_bn(kernel: np.ndarray, bias: np.ndarray | None, gamma, beta, mean, var,
            eps: float) -> tuple[np.ndarray, np.ndarray]:
  """An HWIO conv followed by inference batch norm -> one conv (float64 arithmetic):
  kernel·γ/sqrt(var + eps), β + (bias - mean)·γ/sqrt(var + eps)."""
  k = np.asarray(kernel, np.float64)
  b = np.zeros(k.shape[-1]) if bias is None else np.asarray(bias, np.float64)
  s = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
  return (k * s).astype(np.float32), (np.asarray(beta, np.float64)
                                      + (b - np.asarray(mean, np.float64)) * s).astype(np.float32)


def write(dst, kernels: Mapping[str, tuple[np.ndarray, np.ndarray]], *, name: str,
          source: str, source_sha256: str, convention: str, mean, std=(1.0, 1.0, 1.0),
          storage_dtype: str = "float32") -> Path:
  """Our file from folded ``kernels`` conv name -> (HWIO kernel, bias), for backbone
  ``name`` ("resnet50" | "resnet50_v1"). convention: "torch_rgb" or "caffe_bgr" (as VGG's)."""
  if name not in VARIANTS:
    raise JnstError(f"unknown ResNet variant {name!r}: use {' or '.join(VARIANTS)}")
  if convention not in CONVENTIONS:
    raise JnstError(f"unknown input convention {convention!r}: use {' or '.join(CONVENTIONS)}")
  arrays = {n: {"kernel": kernels[n][0], "bias": kernels[n][1]} if n in kernels else {}
            for n in CONV_NAMES}
  params_file.check_shapes({n: {k: np.shape(v) for k, v in a.items()} for n, a in arrays.items()},
                           file_shapes(), source, name)
  return params_file.write(dst, arrays, {
      "arch": name, "source": source, "source_sha256": source_sha256,
      "input_convention": convention, "input_mean": np.asarray(mean, np.float64),
      "input_std": np.asarray(std, np.float64), "batch_norm": "folded", "credit": CREDIT},
      storage_dtype=storage_dtype)


def _expected(attrs: dict) -> dict:
  if attrs.get("arch") not in VARIANTS:
    raise JnstError(f"weights file holds {attrs.get('arch')!r} weights, not ResNet-50's "
                    f"({' or '.join(VARIANTS)}): pass --backbone={attrs.get('arch')}")
  return file_shapes()


def read(path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
  """Reads and checks one of our ResNet-50 files: ({conv: (kernel, bias)} as stored, attrs)."""
  arrays, attrs = params_file.read(path, _expected, "ResNet-50")
  return {n: (arrays[n]["kernel"], arrays[n]["bias"]) for n in CONV_NAMES}, attrs


def check_arch(path, expect: str) -> None:
  """Refuses a file whose header names another arch than ``expect``."""
  arch = params_file.read_attrs(path).get("arch")
  if arch != expect:
    raise JnstError(f"{path} holds {arch} weights, not {expect}: pass --backbone={arch} "
                    f"(or backbone='{arch}')")


def load_params(path, dtype=jnp.float32, expect: str | None = None) -> dict:
  """Our file -> the params pytree (module docstring), in ``dtype``. For caffe_bgr files
  conv1's input channels are flipped so the network takes RGB."""
  if expect is not None:
    check_arch(path, expect)
  kernels, attrs = read(path)
  conv = {n: {"kernel": jnp.asarray(k, dtype), "bias": jnp.asarray(b, dtype)}
          for n, (k, b) in kernels.items()}
  mean = np.asarray(attrs["input_mean"], np.float64)
  std = np.asarray(attrs["input_std"], np.float64)
  if attrs["input_convention"] == "caffe_bgr":
    conv["conv1"]["kernel"] = conv["conv1"]["kernel"][:, :, ::-1, :]
    mean, std = mean[::-1] / 255.0, std[::-1] / 255.0
  elif attrs["input_convention"] != "torch_rgb":
    raise JnstError(f"{path}: unknown input_convention {attrs['input_convention']!r}")
  return {"conv": conv, "input": {"mean": jnp.asarray(mean, jnp.float32),
                                  "std": jnp.asarray(std, jnp.float32)}}


def rewrite(src, dst, storage_dtype: str = "float32", log: Log = stderr_log) -> Path:
  """Re-writes one of our ResNet-50 files (e.g. to float16: 51 MB instead of 102)."""
  kernels, attrs = read(src)
  log(f"re-writing {src} -> {dst} [{storage_dtype}]")
  return write(dst, kernels, name=attrs["arch"], source=attrs["source"],
               source_sha256=attrs["source_sha256"], convention=attrs["input_convention"],
               mean=attrs["input_mean"], std=attrs["input_std"], storage_dtype=storage_dtype)


def _torch_key(name: str) -> tuple[str, str]:
  """Our conv name -> torchvision's (conv, bn) module paths."""
  if name == "conv1":
    return "conv1", "bn1"
  if name.endswith("downsample"):
    return f"{name}.0", f"{name}.1"
  stem, i = name[:-1], name[-1]
  return name, f"{stem[:-4]}bn{i}"


def from_torch_state(state: Mapping, src: str = "state dict") -> dict[str, tuple]:
  """A torchvision ``resnet50`` state dict (tensors or arrays: ``conv1.weight`` OIHW,
  ``bn1.{weight,bias,running_mean,running_var}``, ``layer1.0.conv1.weight``, ...,
  ``layer1.0.downsample.{0,1}.*``; ``fc.*`` ignored) -> {conv: (folded HWIO kernel, bias)}."""
  def arr(key):
    v = state.get(key)
    if v is None:
      raise JnstError(f"{src}: {key} is missing: this is not a torchvision resnet50 state dict")
    v = v.detach().cpu().double().numpy() if hasattr(v, "detach") else np.asarray(v)
    return v

  out = {}
  for name, shape in conv_specs().items():
    conv, bn = _torch_key(name)
    w = arr(f"{conv}.weight")
    if w.shape != (shape[3], shape[2], shape[0], shape[1]):
      raise JnstError(f"{src}: {conv}.weight has shape {w.shape}, expected "
                      f"{(shape[3], shape[2], shape[0], shape[1])}: not a resnet50 state dict")
    out[name] = fold_bn(w.transpose(2, 3, 1, 0), None, arr(f"{bn}.weight"), arr(f"{bn}.bias"),
                        arr(f"{bn}.running_mean"), arr(f"{bn}.running_var"), TORCH_BN_EPS)
  return out


def convert_torch_pth(src, dst, storage_dtype: str = "float32", log: Log = stderr_log) -> Path:
  """torchvision ``resnet50`` state dict file -> our ``resnet50`` file. Needs torch; read
  with ``torch.load(weights_only=True)`` (no arbitrary unpickling)."""
  state, digest = params_file.read_torch_state(src, "--keras_h5")
  kernels = from_torch_state(state, str(src))
  log(f"converting {Path(src).name} (torchvision resnet50, RGB ImageNet mean/std, batch norm "
      f"folded) -> {dst} [{storage_dtype}]")
  return write(dst, kernels, name="resnet50", source=Path(src).name, source_sha256=digest,
               convention="torch_rgb", mean=TORCH_MEAN, std=TORCH_STD,
               storage_dtype=storage_dtype)


def keras_name(name: str) -> str:
  """Our conv name -> the Keras applications layer prefix (``conv1``, ``conv2_block1_1``,
  ``conv2_block1_0`` for the shortcut); the layers are ``<prefix>_conv`` and ``<prefix>_bn``."""
  if name == "conv1":
    return "conv1"
  m = re.fullmatch(r"layer(\d)\.(\d)\.(conv(\d)|downsample)", name)
  s, b, which = int(m.group(1)), int(m.group(2)), m.group(4) or "0"
  return f"conv{s + 1}_block{b + 1}_{which}"


def _keras_arrays(f, layer: str, src) -> dict[str, np.ndarray]:
  """{"kernel"|"bias"|"gamma"|"beta"|"moving_mean"|"moving_variance": array} of one layer
  group of a Keras weights file (``layer/layer/kernel:0`` or any nesting)."""
  import h5py

  if layer not in f:
    raise JnstError(f"{src}: layer {layer} is missing: this is not a Keras ResNet-50 notop "
                    f"weights file")
  out = {}

  def visit(path, obj):
    if isinstance(obj, h5py.Dataset):
      out[path.rsplit("/", 1)[-1].split(":")[0]] = obj[()]

  try:
    f[layer].visititems(visit)
  except OSError:
    raise JnstError(f"{src} is truncated or corrupt at layer {layer}: get a fresh copy") from None
  return out


def from_keras_h5(src) -> dict[str, tuple]:
  """Keras' ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`` (layers
  ``conv1_conv``/``conv1_bn``, ``conv2_block1_{0,1,2,3}_conv``/``_bn``, ...; kernels HWIO,
  convs with biases, BN eps 1.001e-5) -> {conv: (folded HWIO kernel, bias)}."""
  out = {}
  with params_file.open_h5(src, "Keras weights file") as f:
    for name, shape in conv_specs().items():
      prefix = keras_name(name)
      c, bn = _keras_arrays(f, f"{prefix}_conv", src), _keras_arrays(f, f"{prefix}_bn", src)
      try:
        k = c["kernel"]
        out[name] = fold_bn(k, c.get("bias"), bn["gamma"], bn["beta"], bn["moving_mean"],
                            bn["moving_variance"], KERAS_BN_EPS)
      except KeyError as e:
        raise JnstError(f"{src}: layer {prefix} has no {e.args[0]}: this is not a Keras "
                        f"ResNet-50 notop weights file") from None
      if tuple(k.shape) != shape:
        raise JnstError(f"{src}: {prefix}_conv kernel has shape {tuple(k.shape)}, expected "
                        f"{shape}: this is not a Keras ResNet-50 file")
  return out


def convert_keras_h5(src, dst, storage_dtype: str = "float32", log: Log = stderr_log) -> Path:
  """Keras ResNet-50 notop file -> our ``resnet50_v1`` file (Caffe BGR input)."""
  digest = sha256(src) if Path(src).is_file() else ""
  kernels = from_keras_h5(src)
  log(f"converting {Path(src).name} (Keras ResNet-50 v1, Caffe BGR input, batch norm folded) "
      f"-> {dst} [{storage_dtype}]")
  return write(dst, kernels, name="resnet50_v1", source=Path(src).name, source_sha256=digest,
               convention="caffe_bgr", mean=CAFFE_MEAN_BGR, storage_dtype=storage_dtype)


def default_path(name: str = "resnet50") -> Path:
  """Where ``scripts/fetch_weights.py --backbone=NAME`` writes by default: weights/NAME.h5 in
  a checkout, else <cache>/NAME.h5."""
  return params_file.default_path(f"{name}.h5")


def fetch_and_convert(dst=None, *, keras_h5=None, torch_pth=None, storage_dtype="float32",
                      name: str | None = None, log: Log = stderr_log) -> Path:
  """Our ResNet-50 file from a local torchvision state dict (-> ``resnet50``) or Keras
  notop file (-> ``resnet50_v1``); default ``dst``: ``default_path`` of that variant.
  ``name``, if given, is the variant the caller asked for; the other source is refused."""
  params_file.check_storage_dtype(storage_dtype)
  if bool(keras_h5) == bool(torch_pth):
    raise JnstError("ResNet-50 weights cannot be downloaded here (weights/README.md): give "
                    "exactly one of --torch_pth (torchvision resnet50) or --keras_h5 (Keras "
                    "ResNet-50 notop)")
  made = "resnet50" if torch_pth else "resnet50_v1"
  if name is not None and name != made:
    raise JnstError(f"{'a torchvision' if torch_pth else 'a Keras'} ResNet-50 file makes "
                    f"{made} weights (module docstring: v1.5 vs v1), not {name}: pass "
                    f"--backbone={made}")
  t0 = time.perf_counter()
  if torch_pth:
    out = convert_torch_pth(torch_pth, dst or default_path("resnet50"), storage_dtype, log)
  else:
    out = convert_keras_h5(keras_h5, dst or default_path("resnet50_v1"), storage_dtype, log)
  read(out)  # Validate what we wrote.
  log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
  return out
