"""Objectives: a weighted sum of named loss terms on a backbone's features, and the
``Problem`` a runner solves.

``Objective`` is hashable (it keys the compile caches) and holds only what shapes the
computation: the backbone (with its options), the terms and their layers, the loss variant.
Everything numeric lives in the ``data`` pytree built here once, outside any loop::

  {"params": backbone.prepare(params, layers), "targets": {term: target},
   "loss_weights": {term: α | β | γ}, "layer_weights": {term: {layer: w_l}},
   "pixel_scale": (3,)}

so a second problem of the same shape reuses the compiled program, and loss weights can be
vmapped (``jnst.batched.run_sweep``).

Units: α and β weigh terms computed on the backbone's features times its ``term_scales``
(VGG-19 with the Caffe weights: the paper's units, scale 1); γ weighs TV of the image in
RGB 0-255 steps, whatever the backbone's input normalisation.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jnst.colour as colour
import jnst.losses as losses
import jnst.style_stats as style_stats
import jnst.matting as matting
from jnst.backbones import scales_for
from jnst.errors import JnstError


@dataclasses.dataclass(frozen=True)
class Term:
  """One named term: ``losses.TERMS[name]`` on ``layers`` (empty for image terms)."""
  name: str
  layers: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Objective:
  """``objective(x, data) -> (loss, {term: weighted value})`` for one image ``x`` (H, W, 3)
  in the backbone's input space."""
  backbone: Any
  terms: tuple[Term, ...]
  variant: str = "paper"

  @property
  def layers(self) -> tuple[str, ...]:
    """Every feature layer the terms read, in term order."""
    return tuple(dict.fromkeys(l for t in self.terms for l in t.layers))

  def __call__(self, x: jax.Array, data) -> tuple[jax.Array, dict]:
    feats = self.backbone.features(data["params"], x[None], self.layers) if self.layers else {}
    uses_image = any(t.name in losses.IMAGE_TERMS for t in self.terms)
    image = x * data["pixel_scale"] if uses_image else None
    scales = scales_for(self.backbone, self.variant)
    values = {}
    for t in self.terms:
      raw = losses.TERMS[t.name](feats, image, data["targets"].get(t.name),
                                 data["layer_weights"].get(t.name, {}), self.variant)
      if scales.get(t.name, 1.0) != 1.0:
        raw = raw * scales[t.name]
      values[t.name] = data["loss_weights"][t.name] * raw
    return functools.reduce(operator.add, values.values()), values


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
  """Everything one optimisation needs, and how to turn its result into RGB.

  objective, data: the loss and its pytree. params: the plain backbone params.
  init_x: the initial image in input space (None: white noise per seed). shape: (H, W, 3).
  colors_from: an RGB image whose colours the result keeps (original colours), or None.
  """
  objective: Objective
  data: dict
  params: dict
  init_x: jax.Array | None
  shape: tuple[int, int, int]
  colors_from: np.ndarray | None = None
  post: Any = None  # RGB (..., H, W, 3) -> RGB, applied last by ``rgb`` (e.g. a guided filter).

  @property
  def backbone(self):
    return self.objective.backbone

  def x0(self, key: jax.Array) -> jax.Array:
    """The initial image: ``init_x``, or white noise (RGB uniform in [0, 1], Gatys' noise
    init) from ``key``, in input space."""
    if self.init_x is not None:
      return self.init_x
    return self.backbone.preprocess(self.params, jax.random.uniform(key, self.shape, jnp.float32))

  def rgb(self, x) -> np.ndarray:
    """Input-space image(s) (..., H, W, 3) -> RGB in [0, 1] as NumPy: clipped, with
    original colours applied when asked for. The same for a single run and a batch."""
    rgb = np.clip(np.asarray(self.backbone.deprocess(self.params, x)), 0.0, 1.0)
    rgb = rgb if self.colors_from is None else colour.original_colors(self.colors_from, rgb)
    return rgb if self.post is None else self.post(rgb)


# ---------------------------------------------------------------- building


def check_image(rgb, what: str) -> jax.Array:
  """``rgb`` as float32 (H, W, 3), or JnstError naming ``what``."""
  rgb = jnp.asarray(rgb, jnp.float32)
  if rgb.ndim != 3 or rgb.shape[-1] != 3:
    raise JnstError(f"{what} must be RGB (H, W, 3), got shape {rgb.shape}")
  return rgb


def layer_weights(layers: Sequence[str], given, default: float, what: str) -> dict:
  """{layer: w} from one weight per layer (None: ``default`` each)."""
  if given is None:
    given = [default] * len(layers)
  if len(given) != len(layers):
    raise JnstError(f"{len(given)} {what} layer weights for {len(layers)} {what} layers: give "
                    f"one weight per layer")
  if any(not np.isfinite(w) or w < 0 for w in given):
    raise JnstError(f"{what} layer weights must be finite and >= 0, got {list(given)}")
  return {l: jnp.float32(w) for l, w in zip(layers, given)}


def content_target(backbone, params, content, layers: Sequence[str]) -> dict:
  """{layer: P (H', W', C)}: the content image's features."""
  feats = backbone.extract(params, check_image(content, "content image")[None], layers)
  return {l: feats[l][0] for l in layers}


def style_target(backbone, params, styles: Sequence, layers: Sequence[str],
                 blend: Sequence[float] | None = None, kind: str = "gram", masks=None,
                 shape: tuple[int, ...] | None = None) -> dict:
  """{layer: Σ_s b_s A_s}: blended raw Grams of the style images (b normalised to sum 1).

  Another ``kind`` of style loss (wasserstein, mean_std) or region ``masks`` (content (R, H, W),
  [style s (R, H_s, W_s)] one-hot, from ``jnst.masks.regions``; ``shape`` the output's) give
  {layer: ``style_stats.StyleStats``} instead (``jnst.style_stats``)."""
  style_stats.check_kind(kind)
  if not len(styles):
    raise JnstError("no style image given: pass at least one")
  blend = [1.0] * len(styles) if blend is None else list(blend)
  if len(blend) != len(styles):
    raise JnstError(f"{len(blend)} style blend weights for {len(styles)} style images: give "
                    f"one weight per style image")
  if any(not np.isfinite(b) or b < 0 for b in blend) or sum(blend) <= 0:
    raise JnstError(f"style blend weights must be >= 0 with a positive sum, got {blend}")
  total = float(sum(blend))
  if kind != "gram" or masks is not None:
    return style_stats.target(backbone, params, [check_image(s, "style image") for s in styles],
                              layers, [b / total for b in blend], kind, masks, shape)
  out = {l: 0.0 for l in layers}
  for s, b in zip(styles, blend):
    feats = backbone.extract(params, check_image(s, "style image")[None], layers)
    for l in layers:
      out[l] = out[l] + (b / total) * losses.gram(feats[l][0])
  return out


def matting_target(content, eps: float = matting.EPS) -> dict:
  """The content image's matting Laplacian, matrix-free (``matting.target``): its window
  means and inverse regularised covariances, folded into a whitened form, for the "matting"
  term. Depends only on the content; built once per problem."""
  return matting.target(check_image(content, "content image"), eps)


def build(backbone, params, terms: Mapping[str, tuple[float, Mapping, Any]],
          variant: str = "paper") -> tuple[Objective, dict]:
  """(objective, data) from ``terms``: name -> (loss weight, {layer: w_l}, target), in the
  order given; targets come from ``content_target`` / ``style_target`` (None for TV)."""
  losses.check_variant(variant)
  for name, (weight, _, _) in terms.items():
    if name not in losses.TERMS:
      raise JnstError(f"unknown loss term {name!r}: use {', '.join(losses.TERMS)}")
    if not np.isfinite(weight) or weight < 0:
      raise JnstError(f"the {name} loss weight must be a finite number >= 0, got {weight}")
  objective = Objective(backbone, tuple(Term(n, tuple(lw)) for n, (_, lw, _) in terms.items()),
                        variant)
  data = {"params": backbone.prepare(params, objective.layers),
          "targets": {n: t for n, (_, _, t) in terms.items() if t is not None},
          "loss_weights": {n: jnp.float32(w) for n, (w, _, _) in terms.items()},
          "layer_weights": {n: dict(lw) for n, (_, lw, _) in terms.items() if lw},
          "pixel_scale": backbone.pixel_scale(params)}
  return objective, data
