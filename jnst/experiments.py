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
import jnst.losses as losses
import jnst.objective as objective
import jnst.optimize as optimize
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
  """The images an experiment reads: content, style image(s), an init image (or None)."""
  content: np.ndarray | None = None
  styles: tuple[np.ndarray, ...] = ()
  init: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Common:
  """Options every experiment shares: backbone name and options, loss variant, seed
  (noise init), optimiser; remat: rematerialise the backbone's blocks (same loss and
  gradient, less memory, ~1/3 more time)."""
  backbone: str = "vgg19"
  pooling: str = "max"
  compute_dtype: str = "float32"
  variant: str = "paper"
  seed: int = 0
  opt: optimize.OptConfig = optimize.OptConfig()
  remat: bool = False

  def get_backbone(self):
    return backbones.get(self.backbone, self.pooling, self.compute_dtype, self.remat or None)

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
  content's colours (luminance transfer applied to the result)."""
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

  def validate(self) -> StylizeConfig:
    bb = super().validate().get_backbone()
    bb.expand_layers(_or(self.content_layers, bb.default_content_layers))
    bb.expand_layers(_or(self.style_layers, bb.default_style_layers))
    _check_weights(content_weight=self.content_weight, style_weight=self.style_weight,
                   tv_weight=self.tv_weight)
    if self.init not in INITS:
      raise JnstError(f"unknown init {self.init!r}: use content, noise, style or an image file")
    return self

  def build(self, params, inputs: Inputs) -> objective.Problem:
    bb, content = self.validate().get_backbone(), _content(inputs)
    c_layers = bb.expand_layers(_or(self.content_layers, bb.default_content_layers))
    s_layers = bb.expand_layers(_or(self.style_layers, bb.default_style_layers))
    terms = {
        "content": (self.content_weight, objective.layer_weights(
            c_layers, self.content_layer_weights, 1.0, "content"),
            objective.content_target(bb, params, content, c_layers)),
        "style": (self.style_weight, objective.layer_weights(
            s_layers, self.style_layer_weights, 1.0 / len(s_layers), "style"),
            objective.style_target(bb, params, inputs.styles, s_layers, self.style_blend_weights)),
        "tv": (self.tv_weight, {}, None)}
    obj, data = objective.build(bb, params, terms, self.variant)
    init = {"content": content, "noise": None, "style": inputs.styles[0],
            "image": inputs.init}[self.init]
    if self.init == "image" and init is None:
      raise JnstError("init='image' needs an init image")
    if self.init in ("style", "image"):
      init = jax.image.resize(objective.check_image(init, f"{self.init} image"), content.shape,
                              "lanczos3")
    init_x = None if init is None else bb.preprocess(params, jnp.clip(init, 0, 1))
    return objective.Problem(obj, data, params, init_x, tuple(content.shape),
                             np.asarray(content) if self.original_colors else None)


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
  ``size``: output (H, W); None = the style image's size."""
  style_layers: tuple[str, ...] | None = None
  style_layer_weights: tuple[float, ...] | None = None
  size: tuple[int, int] | None = None

  def validate(self) -> SynthesizeConfig:
    bb = super().validate().get_backbone()
    bb.expand_layers(_or(self.style_layers, bb.default_style_layers))
    if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
      raise JnstError(f"size must be (height, width) >= 1, got {self.size}")
    return self

  def build(self, params, inputs: Inputs) -> objective.Problem:
    bb = self.validate().get_backbone()
    if len(inputs.styles) != 1:
      raise JnstError(f"synthesize takes one style image, got {len(inputs.styles)}")
    style = objective.check_image(inputs.styles[0], "style image")
    layers = bb.expand_layers(_or(self.style_layers, bb.default_style_layers))
    terms = {"style": (1.0, objective.layer_weights(layers, self.style_layer_weights,
                                                    1.0 / len(layers), "style"),
                       objective.style_target(bb, params, [style], layers))}
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
