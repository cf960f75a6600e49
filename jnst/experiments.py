"""The experiments: style transfer, content reconstruction, texture synthesis.

Each is a frozen config whose ``build(params, inputs)`` gives the ``objective.Problem`` that
``optimize.run`` (one seed) or ``jnst.batched`` (many seeds, loss-weight sweeps) solves, so
every option means the same in a single run and in a batch. Images are float32 RGB in
[0, 1], (H, W, 3); no file I/O here.

Defaults reproduce the classic look with the Caffe VGG-19 weights: content ``relu4_2``,
style ``relu1_1 … relu5_1`` with w_l = 1/5 (the backbone's defaults), the paper's loss
normalisation (``jnst.losses``), α = 1, β = 1e3 (the α/β = 1e-3 of the paper's Fig. 2),
max pooling, L-BFGS for 500 iterations from the content image.
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
import jnst.objective as objective
import jnst.optimize as optimize
import jnst.style_stats as style_stats
from jnst.errors import JnstError

INITS = ("content", "noise", "style", "image")


def _check_weights(**named: float) -> None:
  for name, w in named.items():
    if not np.isfinite(w) or w < 0:
      raise JnstError(f"{name} must be a finite number >= 0, got {w}")


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
  (noise init), optimiser."""
  backbone: str = "vgg19"
  pooling: str = "max"
  compute_dtype: str = "float32"
  variant: str = "paper"
  seed: int = 0
  opt: optimize.OptConfig = optimize.OptConfig()

  def get_backbone(self):
    return backbones.get(self.backbone, self.pooling, self.compute_dtype)

  def validate(self):
    self.get_backbone()
    losses.check_variant(self.variant)
    self.opt.validate()
    if not 0 <= self.seed < 2**32:
      raise JnstError(f"seed must be in [0, 2**32), got {self.seed}")
    return self


@dataclasses.dataclass(frozen=True)
class StylizeConfig(Common):
  """Style transfer (Gatys et al. 2016). Loss weights: α content, β style, γ TV (on RGB
  0-255 steps). Layers: None = the backbone's defaults; a string or tuple may name blocks.
  init: "content", "noise" (seeded), "style" (the first style image resized to the output),
  "image" (``Inputs.init``). style_blend_weights: one per style image (normalised to sum 1).
  Layer weights: per content/style layer (default 1 and 1/n). original_colors: keep the
  content's colours (luminance transfer applied to the result). style_loss: gram (the paper),
  wasserstein or mean_std (``jnst.style_stats``). color_transfer: none; original (the same as
  original_colors); histogram (each style image recoloured to the content's colour
  distribution before its statistics are taken, ``colour.match_colors``). Region masks come
  with the inputs (``Inputs.content_mask``, ``Inputs.style_masks``)."""
  content_layers: tuple[str, ...] | None = None
  style_layers: tuple[str, ...] | None = None
  content_weight: float = 1.0
  style_weight: float = 1e3
  tv_weight: float = 0.0
  content_layer_weights: tuple[float, ...] | None = None
  style_layer_weights: tuple[float, ...] | None = None
  style_blend_weights: tuple[float, ...] | None = None
  init: str = "content"
  original_colors: bool = False
  style_loss: str = "gram"
  color_transfer: str = "none"

  @property
  def colors(self) -> str:
    """The colour transfer in effect (original_colors is color_transfer="original")."""
    return "original" if self.original_colors else self.color_transfer

  def validate(self) -> StylizeConfig:
    bb = super().validate().get_backbone()
    bb.expand_layers(_or(self.content_layers, bb.default_content_layers))
    bb.expand_layers(_or(self.style_layers, bb.default_style_layers))
    _check_weights(content_weight=self.content_weight, style_weight=self.style_weight,
                   tv_weight=self.tv_weight)
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
        "content": (self.content_weight, objective.layer_weights(
            c_layers, self.content_layer_weights, 1.0, "content"),
            objective.content_target(bb, params, content, c_layers)),
        "style": (self.style_weight, objective.layer_weights(
            s_layers, self.style_layer_weights, 1.0 / len(s_layers), "style"),
            objective.style_target(bb, params, styles, s_layers, self.style_blend_weights,
                                   self.style_loss, regions, tuple(content.shape))),
        "tv": (self.tv_weight, {}, None)}
    obj, data = objective.build(bb, params, terms, self.variant)
    init = {"content": content, "noise": None, "style": styles[0] if styles else None,
            "image": inputs.init}[self.init]
    if self.init == "image" and init is None:
      raise JnstError("init='image' needs an init image")
    if self.init in ("style", "image"):
      init = jax.image.resize(objective.check_image(init, f"{self.init} image"), content.shape,
                              "lanczos3")
    init_x = None if init is None else bb.preprocess(params, jnp.clip(init, 0, 1))
    return objective.Problem(obj, data, params, init_x, tuple(content.shape),
                             np.asarray(content) if self.colors == "original" else None)


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
          progress: optimize.Progress | None = None) -> tuple[np.ndarray, optimize.RunResult]:
  """One run from ``problem.x0(key(seed))``: (RGB [0, 1] image, result)."""
  res = optimize.run(problem.objective, problem.x0(jax.random.key(seed)), problem.data, opt,
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
