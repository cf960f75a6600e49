"""The experiments: style transfer, content reconstruction, texture synthesis.

Each experiment is a frozen config plus a pure function over arrays (no file I/O): images
are float32 RGB in [0, 1], (H, W, 3). An experiment is first turned into a ``Problem`` —
the hashable loss (``GatysLoss``), the ``data`` pytree it reads (VGG params, targets
computed once here, loss weights) and the initial image — which ``optimize.run`` solves,
and which ``jnst.seeds`` solves for many seeds at once.

Defaults reproduce the classic look with the Caffe VGG-19 weights: content ``relu4_2``,
style ``relu1_1, relu2_1, relu3_1, relu4_1, relu5_1`` with w_l = 1/5, the paper's loss
normalisation (see jnst.losses), α = 1, β = 1e3 (the α/β = 1e-3 of the paper's Fig. 2),
max pooling, L-BFGS for 500 iterations from the content image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jnst import losses, optimize, vgg
from jnst.errors import JnstError

DEFAULT_CONTENT_LAYERS = ("relu4_2",)
DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
INITS = ("content", "noise", "style")


@dataclasses.dataclass(frozen=True)
class GatysLoss:
  """α L_content + β L_style + γ L_tv of an image ``x`` (H, W, 3) in network input space.

  Hashable (it keys the compile caches); everything numeric is in ``data``:
  {"params": vgg params, "targets": {"content": {l: P}, "style": {l: A}}, "weights": ...}.
  """
  layers: tuple[str, ...]
  pooling: str = "max"
  variant: str = "paper"
  dtype: str = "float32"

  def __call__(self, x: jax.Array, data) -> tuple[jax.Array, dict]:
    feats = vgg.features(data["params"], x[None], self.layers, self.pooling, self.dtype)
    return losses.total_loss(feats, x, data["targets"], data["weights"], self.variant)


@dataclasses.dataclass(frozen=True)
class Problem:
  """Everything one optimisation needs. ``x0(key)`` gives the initial image."""
  loss: GatysLoss
  data: dict
  init_x: jax.Array | None  # network space; None = noise
  shape: tuple[int, int, int]

  def x0(self, key: jax.Array) -> jax.Array:
    if self.init_x is not None:
      return self.init_x
    return noise_init(self.data["params"], key, self.shape)


def noise_init(params, key: jax.Array, shape) -> jax.Array:
  """White noise: RGB uniform in [0, 1], in network input space (Gatys' noise init)."""
  return vgg.preprocess(params, jax.random.uniform(key, shape, jnp.float32))


@dataclasses.dataclass(frozen=True)
class StylizeConfig:
  """Style transfer (Gatys et al. 2016). Loss weights: α content, β style, γ TV.

  init: "content", "noise" (seeded), "style" (resized to the output), or "image" with the
  image passed to ``stylize``. style_blend_weights: one per style image (normalised to sum
  1; default equal). Layer weights: per content/style layer (default 1 and 1/n).
  """
  content_layers: tuple[str, ...] = DEFAULT_CONTENT_LAYERS
  style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
  content_weight: float = 1.0
  style_weight: float = 1e3
  tv_weight: float = 0.0
  content_layer_weights: tuple[float, ...] | None = None
  style_layer_weights: tuple[float, ...] | None = None
  style_blend_weights: tuple[float, ...] | None = None
  init: str = "content"
  seed: int = 0
  pooling: str = "max"
  variant: str = "paper"
  dtype: str = "float32"
  original_colors: bool = False
  opt: optimize.OptConfig = optimize.OptConfig()


@dataclasses.dataclass(frozen=True)
class ReconstructConfig:
  """Content reconstruction from white noise at one layer (the paper's Fig. 1)."""
  layer: str = "relu4_2"
  seed: int = 0
  pooling: str = "max"
  variant: str = "paper"
  dtype: str = "float32"
  opt: optimize.OptConfig = optimize.OptConfig()


@dataclasses.dataclass(frozen=True)
class SynthesizeConfig:
  """Texture synthesis from the Grams of ``style_layers`` (Gatys et al. 2015), from noise.
  ``size``: output (H, W); None = the style image's size."""
  style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
  style_layer_weights: tuple[float, ...] | None = None
  size: tuple[int, int] | None = None
  seed: int = 0
  pooling: str = "max"
  variant: str = "paper"
  dtype: str = "float32"
  opt: optimize.OptConfig = optimize.OptConfig()


# ---------------------------------------------------------------- building problems


def _layer_weights(layers, given, default, what) -> dict[str, jax.Array]:
  if given is None:
    given = [default] * len(layers)
  if len(given) != len(layers):
    raise JnstError(f"{len(given)} {what} layer weights for {len(layers)} {what} layers: give "
                    f"one weight per layer")
  if any(w < 0 for w in given):
    raise JnstError(f"{what} layer weights must be >= 0, got {list(given)}")
  return {l: jnp.float32(w) for l, w in zip(layers, given)}


def _check_weights(**named):
  for name, w in named.items():
    if not np.isfinite(w) or w < 0:
      raise JnstError(f"--{name} must be a finite number >= 0, got {w}")


def _check_image(rgb, what) -> jax.Array:
  rgb = jnp.asarray(rgb, jnp.float32)
  if rgb.ndim != 3 or rgb.shape[-1] != 3:
    raise JnstError(f"{what} must be RGB (H, W, 3), got shape {rgb.shape}")
  return rgb


def _weights(content, style, tv, content_layers, style_layers) -> dict:
  return {"content": jnp.float32(content), "style": jnp.float32(style), "tv": jnp.float32(tv),
          "content_layers": content_layers, "style_layers": style_layers}


def _data(params, targets, weights) -> dict:
  """A problem's ``data``; the params get precomputed input-gradient kernels (a ~10 %
  faster evaluation on CPU, ``vgg.with_grad_kernels``)."""
  return {"params": vgg.with_grad_kernels(params), "targets": targets, "weights": weights}


def style_targets(params, styles: Sequence, layers, blend, pooling, dtype) -> dict:
  """Blended raw Grams Σ_s b_s A_s per layer (b normalised to sum 1)."""
  if blend is None:
    blend = [1.0] * len(styles)
  if len(blend) != len(styles):
    raise JnstError(f"{len(blend)} style blend weights for {len(styles)} style images: give "
                    f"one weight per style image")
  if any(b < 0 for b in blend) or sum(blend) <= 0:
    raise JnstError(f"style blend weights must be >= 0 with a positive sum, got {list(blend)}")
  total = float(sum(blend))
  out = {l: 0.0 for l in layers}
  for s, b in zip(styles, blend):
    feats = vgg.extract(params, _check_image(s, "style image")[None], layers, pooling, dtype)
    for l in layers:
      out[l] = out[l] + (b / total) * losses.gram(feats[l][0])
  return out


def stylize_problem(params, content, styles: Sequence, cfg: StylizeConfig,
                    init_image=None) -> Problem:
  """The style-transfer problem; content/style/init images are RGB [0, 1] (H, W, 3)."""
  content = _check_image(content, "content image")
  if not styles:
    raise JnstError("no style image given: pass at least one")
  _check_weights(content_weight=cfg.content_weight, style_weight=cfg.style_weight,
                 tv_weight=cfg.tv_weight)
  c_layers = vgg.expand_layers(cfg.content_layers)
  s_layers = vgg.expand_layers(cfg.style_layers)
  loss = GatysLoss(tuple(dict.fromkeys(c_layers + s_layers)), cfg.pooling, cfg.variant, cfg.dtype)
  c_feats = vgg.extract(params, content[None], c_layers, cfg.pooling, cfg.dtype)
  targets = {"content": {l: c_feats[l][0] for l in c_layers},
             "style": style_targets(params, styles, s_layers, cfg.style_blend_weights,
                                    cfg.pooling, cfg.dtype)}
  weights = _weights(cfg.content_weight, cfg.style_weight, cfg.tv_weight,
                     _layer_weights(c_layers, cfg.content_layer_weights, 1.0, "content"),
                     _layer_weights(s_layers, cfg.style_layer_weights, 1.0 / len(s_layers), "style"))
  if cfg.init == "content":
    init = content
  elif cfg.init == "noise":
    init = None
  elif cfg.init in ("style", "image"):
    src = styles[0] if cfg.init == "style" else init_image
    if src is None:
      raise JnstError("init='image' needs an init image")
    init = jax.image.resize(_check_image(src, f"{cfg.init} image"), content.shape, "lanczos3")
  else:
    raise JnstError(f"unknown init {cfg.init!r}: use content, noise, style or an image file")
  init_x = None if init is None else vgg.preprocess(params, jnp.clip(init, 0, 1))
  return Problem(loss, _data(params, targets, weights),
                 init_x, tuple(content.shape))


def reconstruct_problem(params, content, cfg: ReconstructConfig) -> Problem:
  content = _check_image(content, "content image")
  (layer,) = vgg.validate_layers([cfg.layer])
  loss = GatysLoss((layer,), cfg.pooling, cfg.variant, cfg.dtype)
  feats = vgg.extract(params, content[None], [layer], cfg.pooling, cfg.dtype)
  targets = {"content": {layer: feats[layer][0]}, "style": {}}
  weights = _weights(1.0, 0.0, 0.0, {layer: jnp.float32(1.0)}, {})
  return Problem(loss, _data(params, targets, weights),
                 None, tuple(content.shape))


def synthesize_problem(params, style, cfg: SynthesizeConfig) -> Problem:
  style = _check_image(style, "style image")
  layers = vgg.expand_layers(cfg.style_layers)
  loss = GatysLoss(layers, cfg.pooling, cfg.variant, cfg.dtype)
  targets = {"content": {}, "style": style_targets(params, [style], layers, None, cfg.pooling,
                                                   cfg.dtype)}
  weights = _weights(0.0, 1.0, 0.0, {},
                     _layer_weights(layers, cfg.style_layer_weights, 1.0 / len(layers), "style"))
  shape = (*cfg.size, 3) if cfg.size else tuple(style.shape)
  return Problem(loss, _data(params, targets, weights), None, shape)


# ---------------------------------------------------------------- running


def solve(problem: Problem, params, opt: optimize.OptConfig, seed: int,
          on_chunk: Callable | None = None) -> tuple[np.ndarray, optimize.Result]:
  """Runs one problem; returns (RGB [0, 1] clipped image, optimisation result)."""
  x0 = problem.x0(jax.random.key(seed))
  res = optimize.run(problem.loss, x0, problem.data, opt, on_chunk=on_chunk)
  return to_rgb(params, res.x), res


def to_rgb(params, x) -> np.ndarray:
  """Network-space image(s) -> RGB in [0, 1], clipped, as NumPy."""
  return np.clip(np.asarray(vgg.deprocess(params, x)), 0.0, 1.0)


def stylize(params, content, styles: Sequence, cfg: StylizeConfig = StylizeConfig(),
            init_image=None, on_chunk=None) -> tuple[np.ndarray, optimize.Result]:
  """Style transfer; returns (RGB image, optimisation result)."""
  problem = stylize_problem(params, content, styles, cfg, init_image)
  rgb, res = solve(problem, params, cfg.opt, cfg.seed, on_chunk)
  if cfg.original_colors:
    rgb = original_colors(np.asarray(content), rgb)
  return rgb, res


def reconstruct(params, content, cfg: ReconstructConfig = ReconstructConfig(),
                on_chunk=None) -> tuple[np.ndarray, optimize.Result]:
  return solve(reconstruct_problem(params, content, cfg), params, cfg.opt, cfg.seed, on_chunk)


def synthesize(params, style, cfg: SynthesizeConfig = SynthesizeConfig(),
               on_chunk=None) -> tuple[np.ndarray, optimize.Result]:
  return solve(synthesize_problem(params, style, cfg), params, cfg.opt, cfg.seed, on_chunk)


def psnr(a, b) -> float:
  """Peak signal-to-noise ratio in dB between RGB images in [0, 1]."""
  mse = float(np.mean(np.square(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
  return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


# ---------------------------------------------------------------- colour

# NTSC YIQ (FCC), as in colorsys.
_RGB2YIQ = np.array([[0.299, 0.587, 0.114],
                     [0.596, -0.274, -0.322],
                     [0.211, -0.523, 0.312]], np.float32)


def rgb_to_yiq(rgb):
  return np.asarray(rgb, np.float32) @ _RGB2YIQ.T


def yiq_to_rgb(yiq):
  return np.asarray(yiq, np.float32) @ np.linalg.inv(_RGB2YIQ).T


def original_colors(content, stylized) -> np.ndarray:
  """Keeps the content's colours: the stylised luminance Y with the content's I, Q
  (Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer", luminance-only
  variant applied to the result, as neural-style does). Clipped to [0, 1]."""
  y = rgb_to_yiq(stylized)[..., :1]
  iq = rgb_to_yiq(content)[..., 1:]
  return np.clip(yiq_to_rgb(np.concatenate([y, iq], -1)), 0.0, 1.0)
