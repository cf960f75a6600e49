"""The experiments: style transfer, content reconstruction, texture synthesis.

Each is a frozen config whose ``build(params, inputs)`` gives the ``objective.Problem`` that
``optimize.run`` (one seed) or ``jnst.batched`` (many seeds, loss-weight sweeps) solves, so
every option means the same in a single run and in a batch. Images are float32 RGB in
[0, 1], (H, W, 3); no file I/O here.

Defaults with the Caffe VGG-19 weights: content ``relu4_2``, style ``relu1_1 … relu5_1``
with w_l = 1/5 (the backbone's defaults), the size-invariant loss normalisation
``variant="invariant"`` (``jnst.losses``: content per element, the paper's style term) with
α = 3e5, β = 1e3 (chosen with ``jnst.bench.look`` for a clearly stylised image at every size,
BENCHMARKS.md "The look of the defaults"), max pooling, L-BFGS for 500 iterations from the
content image.
``variant="paper"`` is the paper's normalisation, with its α = 1, β = 1e3 (the α/β = 1e-3 of
the paper's Fig. 2) by default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jnst.backbones as backbones
import jnst.colour as colour
import jnst.losses as losses
import jnst.masks as masks_
import jnst.matting as matting
import jnst.objective as objective
import jnst.optimize as optimize
import jnst.style_stats as style_stats
from jnst.errors import JnstError

INITS = ("content", "noise", "style", "image")
F32_MAX = float(np.finfo(np.float32).max)


def _check_weights(**named: float) -> None:
  for name, w in named.items():
    if not np.isfinite(w) or w < 0 or w > F32_MAX:
      raise JnstError(f"{name} must be a finite number >= 0 that fits float32 (<= 3.4e38), "
                      f"got {w}")


def _or(layers, default):
  """``layers``, or ``default`` where not given (an empty list is an error, not a default)."""
  return default if layers is None else layers


def _content(inputs) -> jax.Array:
  if inputs.content is None:
    raise JnstError("no content image given: pass one")
  return objective.check_image(inputs.content, "content image")


@dataclasses.dataclass(frozen=True)
class Inputs:
  """The images an experiment reads: content, style image(s), an init image (or None), and
  for guided style transfer a colour-coded content mask and one mask per style image (RGB
  (H, W, 3) of their images' sizes, uint8 or float in [0, 1]; ``jnst.masks``)."""
  content: np.ndarray | None = None
  styles: tuple[np.ndarray, ...] = ()
  init: np.ndarray | None = None
  content_mask: np.ndarray | None = None
  style_masks: tuple[np.ndarray, ...] = ()


def _regions(inputs: Inputs, content, styles):
  """None, or the one-hot region masks (content (R, H, W), [style (R, H_s, W_s)])."""
  if inputs.content_mask is None and not inputs.style_masks:
    return None
  if inputs.content_mask is None:
    raise JnstError("style masks need a content mask: give --content_mask too")
  masks_.check_sizes(inputs.content_mask, content, inputs.style_masks, styles)
  _, c, s = masks_.regions(inputs.content_mask, inputs.style_masks)
  return c, s


@dataclasses.dataclass(frozen=True)
class Common:
  """Options every experiment shares: backbone name and options, loss variant, seed
  (noise init), optimiser; remat: rematerialise the backbone's blocks (same loss and
  gradient, less memory, ~1/3 more time); conv: the VGG convs' algorithm (auto: Winograd
  on CPU; ``jnst.backbones.vgg.VGG``); winograd_channels: the fewest channels of a
  Winograd conv (0: by CPU)."""
  backbone: str = "vgg19"
  pooling: str = "max"
  compute_dtype: str = "float32"
  variant: str = losses.DEFAULT_VARIANT
  seed: int = 0
  opt: optimize.OptConfig = optimize.OptConfig()
  remat: bool = False
  conv: str = "auto"
  winograd_channels: int = 0

  def get_backbone(self):
    return backbones.get(self.backbone, self.pooling, self.compute_dtype, self.remat or None,
                         self.conv, self.winograd_channels)

  def validate(self):
    self.get_backbone()
    losses.check_variant(self.variant)
    self.opt.validate()
    if not 0 <= self.seed < 2**32:
      raise JnstError(f"seed must be in [0, 2**32), got {self.seed}")
    return self


@dataclasses.dataclass(frozen=True)
class StylizeConfig(Common):
  """Style transfer (Gatys et al. 2016). Loss weights: α content (None: the variant's
  default, ``losses.default_weights``; ``alpha`` is the value in effect), β style, γ TV (on
  RGB 0-255 steps; per pixel for the "invariant" variant). Layers: None = the backbone's
  defaults; a string or tuple may name blocks.
  init: "content", "noise" (seeded), "style" (the first style image resized to the output),
  "image" (``Inputs.init``). style_blend_weights: one per style image (normalised to sum 1).
  Layer weights: per content/style layer (default 1 and 1/n). original_colors: keep the
  content's colours (luminance transfer applied to the result). style_loss: gram (the paper),
  wasserstein or mean_std (``jnst.style_stats``). color_transfer: none; original (the same as
  original_colors); histogram (each style image recoloured to the content's colour
  distribution before its statistics are taken, ``colour.match_colors``). Region masks come
  with the inputs (``Inputs.content_mask``, ``Inputs.style_masks``).
  matting_weight: λ of Luan et al.'s photorealism term λ Σ_c V_cᵀ L V_c (``jnst.matting``; V
  the output in RGB [0, 1], L the content's matting Laplacian; 0 = off, the term is not built).
  guided_filter_radius: > 0 filters the result with the content as guide (He et al.'s guided
  filter, ε = guided_filter_eps on [0, 1]); 0 = off."""
  content_layers: tuple[str, ...] | None = None
  style_layers: tuple[str, ...] | None = None
  content_weight: float | None = None
  style_weight: float = 1e3
  tv_weight: float = 0.0
  content_layer_weights: tuple[float, ...] | None = None
  style_layer_weights: tuple[float, ...] | None = None
  style_blend_weights: tuple[float, ...] | None = None
  init: str = "content"
  original_colors: bool = False
  style_loss: str = "gram"
  color_transfer: str = "none"
  matting_weight: float = 0.0
  guided_filter_radius: int = 0
  guided_filter_eps: float = matting.GUIDED_EPS

  @property
  def alpha(self) -> float:
    """α in effect: ``content_weight``, or the variant's default (``losses.DEFAULT_WEIGHTS``)."""
    if self.content_weight is not None:
      return self.content_weight
    return losses.default_weights(self.variant)[0]

  @property
  def colors(self) -> str:
    """The colour transfer in effect (original_colors is color_transfer="original")."""
    return "original" if self.original_colors else self.color_transfer

  def validate(self) -> StylizeConfig:
    bb = super().validate().get_backbone()
    bb.expand_layers(_or(self.content_layers, bb.default_content_layers))
    bb.expand_layers(_or(self.style_layers, bb.default_style_layers))
    _check_weights(content_weight=self.alpha, style_weight=self.style_weight,
                   tv_weight=self.tv_weight, matting_weight=self.matting_weight)
    if not isinstance(self.guided_filter_radius, int) or self.guided_filter_radius < 0:
      raise JnstError(f"guided_filter_radius must be an integer >= 0, got "
                      f"{self.guided_filter_radius!r}")
    if not np.isfinite(self.guided_filter_eps) or self.guided_filter_eps <= 0:
      raise JnstError(f"guided_filter_eps must be a finite number > 0, got "
                      f"{self.guided_filter_eps}")
    if self.init not in INITS:
      raise JnstError(f"unknown init {self.init!r}: use content, noise, style or an image file")
    style_stats.check_kind(self.style_loss)
    if self.color_transfer not in colour.COLOR_TRANSFERS:
      raise JnstError(f"unknown color_transfer {self.color_transfer!r}: use none, original or "
                      f"histogram")
    if self.original_colors and self.color_transfer not in ("none", "original"):
      raise JnstError(f"original_colors is color_transfer=original: it cannot be combined with "
                      f"color_transfer={self.color_transfer}")
    return self

  def build(self, params, inputs: Inputs) -> objective.Problem:
    bb, content = self.validate().get_backbone(), _content(inputs)
    c_layers = bb.expand_layers(_or(self.content_layers, bb.default_content_layers))
    s_layers = bb.expand_layers(_or(self.style_layers, bb.default_style_layers))
    styles = tuple(inputs.styles)
    if self.colors == "histogram":
      styles = tuple(colour.match_colors(objective.check_image(s, "style image"), content)
                     for s in styles)
    regions = _regions(inputs, content, styles)
    terms = {
        "content": (self.alpha, objective.layer_weights(
            c_layers, self.content_layer_weights, 1.0, "content"),
            objective.content_target(bb, params, content, c_layers)),
        "style": (self.style_weight, objective.layer_weights(
            s_layers, self.style_layer_weights, 1.0 / len(s_layers), "style"),
            objective.style_target(bb, params, styles, s_layers, self.style_blend_weights,
                                   self.style_loss, regions, tuple(content.shape))),
        "tv": (self.tv_weight, {}, None)}
    if self.matting_weight > 0:
      terms["matting"] = (self.matting_weight, {}, objective.matting_target(content))
    obj, data = objective.build(bb, params, terms, self.variant)
    init = {"content": content, "noise": None, "style": styles[0] if styles else None,
            "image": inputs.init}[self.init]
    if self.init == "image" and init is None:
      raise JnstError("init='image' needs an init image")
    if self.init in ("style", "image"):
      init = jax.image.resize(objective.check_image(init, f"{self.init} image"), content.shape,
                              "lanczos3")
    init_x = None if init is None else bb.preprocess(params, jnp.clip(init, 0, 1))
    post = None
    if self.guided_filter_radius:
      post = matting.post_filter(content, self.guided_filter_radius, self.guided_filter_eps)
    return objective.Problem(obj, data, params, init_x, tuple(content.shape),
                             np.asarray(content) if self.colors == "original" else None, post)


@dataclasses.dataclass(frozen=True)
class ReconstructConfig(Common):
  """Content reconstruction from white noise at one layer (the paper's Fig. 1)."""
  layer: str = "relu4_2"

  def validate(self) -> ReconstructConfig:
    super().validate().get_backbone().validate_layers([self.layer])
    return self

  def build(self, params, inputs: Inputs) -> objective.Problem:
    bb, content = self.validate().get_backbone(), _content(inputs)
    (layer,) = bb.validate_layers([self.layer])
    terms = {"content": (1.0, {layer: jnp.float32(1.0)},
                         objective.content_target(bb, params, content, [layer]))}
    obj, data = objective.build(bb, params, terms, self.variant)
    return objective.Problem(obj, data, params, None, tuple(content.shape))


@dataclasses.dataclass(frozen=True)
class SynthesizeConfig(Common):
  """Texture synthesis from the Grams of ``style_layers`` (Gatys et al. 2015), from noise.
  ``size``: output (H, W); None = the style image's size. style_loss: gram, wasserstein or
  mean_std (``jnst.style_stats``)."""
  style_layers: tuple[str, ...] | None = None
  style_layer_weights: tuple[float, ...] | None = None
  size: tuple[int, int] | None = None
  style_loss: str = "gram"

  def validate(self) -> SynthesizeConfig:
    bb = super().validate().get_backbone()
    bb.expand_layers(_or(self.style_layers, bb.default_style_layers))
    if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
      raise JnstError(f"size must be (height, width) >= 1, got {self.size}")
    style_stats.check_kind(self.style_loss)
    return self

  def build(self, params, inputs: Inputs) -> objective.Problem:
    bb = self.validate().get_backbone()
    if len(inputs.styles) != 1:
      raise JnstError(f"synthesize takes one style image, got {len(inputs.styles)}")
    style = objective.check_image(inputs.styles[0], "style image")
    layers = bb.expand_layers(_or(self.style_layers, bb.default_style_layers))
    terms = {"style": (1.0, objective.layer_weights(layers, self.style_layer_weights,
                                                    1.0 / len(layers), "style"),
                       objective.style_target(bb, params, [style], layers,
                                              kind=self.style_loss))}
    obj, data = objective.build(bb, params, terms, self.variant)
    shape = (*self.size, 3) if self.size else tuple(style.shape)
    return objective.Problem(obj, data, params, None, shape)


Config = StylizeConfig | ReconstructConfig | SynthesizeConfig


def solve(problem: objective.Problem, opt: optimize.OptConfig, seed: int = 0,
          progress: optimize.Progress | None = None,
          x0=None) -> tuple[np.ndarray, optimize.RunResult]:
  """One run from ``problem.x0(key(seed))`` (or from ``x0``, an iterate in the backbone's
  input space, e.g. a resumed snapshot): (RGB [0, 1] image, result)."""
  if x0 is None:
    x0 = problem.x0(jax.random.key(seed))
  elif tuple(np.shape(x0)) != tuple(problem.shape):
    raise JnstError(f"the start image is {tuple(np.shape(x0))}, the problem {problem.shape}")
  res = optimize.run(problem.objective, jnp.asarray(x0, jnp.float32), problem.data, opt,
                     progress=progress, render=problem.rgb)
  return problem.rgb(res.x), res


def run(cfg: Config, params, inputs: Inputs,
        progress: optimize.Progress | None = None) -> tuple[np.ndarray, optimize.RunResult]:
  """Builds ``cfg``'s problem and solves it once: (RGB image, result)."""
  return solve(cfg.build(params, inputs), cfg.opt, cfg.seed, progress)


def stylize(params, content, styles: Sequence, cfg: StylizeConfig = StylizeConfig(),
            init_image=None, progress=None) -> tuple[np.ndarray, optimize.RunResult]:
  return run(cfg, params, Inputs(content, tuple(styles), init_image), progress)


def reconstruct(params, content, cfg: ReconstructConfig = ReconstructConfig(),
                progress=None) -> tuple[np.ndarray, optimize.RunResult]:
  return run(cfg, params, Inputs(content=content), progress)


def synthesize(params, style, cfg: SynthesizeConfig = SynthesizeConfig(),
               progress=None) -> tuple[np.ndarray, optimize.RunResult]:
  return run(cfg, params, Inputs(styles=(style,)), progress)
