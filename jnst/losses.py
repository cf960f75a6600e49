"""Gatys et al. loss terms: pure functions over feature maps, the image and plain-pytree targets.

Notation (Gatys, Ecker & Bethge 2016, "Image Style Transfer Using CNNs", eqs. 1-7): a
layer l has N_l channels and M_l = H_l * W_l positions; F^l is its (M_l, N_l) feature
matrix for the image being optimised, P^l the content image's, A^l the style image's Gram.

* content   L_content = 1/2 Σ (F - P)²                                       (eq. 1)
* Gram      G_ij = Σ_k F_ki F_kj                                             (eq. 3)
* style     E_l = 1/(4 N_l² M_l²) Σ (G - A)²,  L_style = Σ_l w_l E_l         (eqs. 4, 5)
* TV        Σ of squared differences between neighbouring pixels (Mahendran & Vedaldi)
* total     L = α L_content + β L_style + γ L_tv                             (eq. 7)

These paper normalisations are the defaults (``variant="paper"``). ``variant="mean"``
instead averages: content mean((F-P)²), style mean((G-A)²)/(N_l M_l)² — the same style term
up to the constant 4, content divided by N_l M_l / 2 — which keeps the terms of similar size
across image sizes (the style of many PyTorch tutorials).

A *term* is ``term(feats, image, target, layer_weights, variant) -> scalar``: ``feats`` the
backbone's {layer: (1, H, W, C)} of the image, ``image`` the image (H, W, 3) in RGB 0-255
steps (``Backbone.pixel_scale``), ``target`` what the term compares against (built once,
outside the loop), ``layer_weights`` {layer: w_l}. ``TERMS`` names them; a new term is one
function here and one entry there. Loss weights (α, β, γ, w_l) are traced scalars, so they
can be vmapped for sweeps.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from jnst.errors import JnstError

VARIANTS = ("paper", "mean")


def check_variant(variant: str) -> str:
  if variant not in VARIANTS:
    raise JnstError(f"unknown loss variant {variant!r}: use paper or mean")
  return variant


def gram(f: jax.Array, norm: str = "none") -> jax.Array:
  """Gram matrix of a feature map (..., H, W, C) -> (..., C, C), float32.

  norm: "none" (paper eq. 3: G = Fᵀ F, the default), "hw" (divided by M = H·W), or "chw"
  (divided by C·H·W, as in neural-style).
  """
  *lead, h, w, c = f.shape
  g = _gram(f.reshape(*lead, h * w, c))
  if norm == "none":
    return g
  if norm == "hw":
    return g / (h * w)
  if norm == "chw":
    return g / (c * h * w)
  raise JnstError(f"unknown Gram normalisation {norm!r}: use none, hw or chw")


_HIGHEST = jax.lax.Precision.HIGHEST


@jax.custom_vjp
def _gram(m: jax.Array) -> jax.Array:
  """Mᵀ M of (..., M, C) -> (..., C, C).

  Its VJP is one matmul, M (Ḡ + Ḡᵀ), where autodiff of the einsum would emit two (M Ḡ and
  M Ḡᵀ, each a full pass over the feature map; BENCHMARKS.md).
  """
  return jnp.einsum("...mi,...mj->...ij", m, m, precision=_HIGHEST)


def _gram_fwd(m):
  return _gram(m), m


def _gram_bwd(m, g):
  return (jnp.einsum("...mi,...ij->...mj", m, g + jnp.swapaxes(g, -1, -2), precision=_HIGHEST),)


_gram.defvjp(_gram_fwd, _gram_bwd)


def content_layer_loss(f: jax.Array, p: jax.Array, variant: str = "paper") -> jax.Array:
  """Paper: 1/2 Σ (F - P)²; mean: mean((F - P)²)."""
  d = jnp.square(f - p)
  return 0.5 * jnp.sum(d) if check_variant(variant) == "paper" else jnp.mean(d)


def style_layer_loss(f: jax.Array, a: jax.Array, variant: str = "paper") -> jax.Array:
  """E_l for features ``f`` (..., H, W, C) against the target Gram ``a`` (C, C) (raw,
  unnormalised, from ``gram(style_features)``). Paper: Σ (G - A)² / (4 N² M²)."""
  h, w, c = f.shape[-3:]
  d = jnp.sum(jnp.square(gram(f) - a))
  paper = check_variant(variant) == "paper"
  return d / (4.0 * c * c * (h * w) ** 2 if paper else float(c * c) * (c * h * w) ** 2)


def tv_loss(x: jax.Array) -> jax.Array:
  """Total variation of an image (..., H, W, C): Σ of squared differences between
  vertical and horizontal neighbours (smooth, so it suits L-BFGS)."""
  dy = x[..., 1:, :, :] - x[..., :-1, :, :]
  dx = x[..., :, 1:, :] - x[..., :, :-1, :]
  return jnp.sum(jnp.square(dy)) + jnp.sum(jnp.square(dx))


# ---------------------------------------------------------------- terms


def content(feats: Mapping, image, target: Mapping, layer_weights: Mapping, variant: str):
  """L_content = Σ_l w_l content_layer_loss(F_l, P_l); ``target`` {layer: P (H, W, C)}."""
  del image
  return sum(layer_weights[l] * content_layer_loss(feats[l], target[l], variant) for l in target)


def style(feats: Mapping, image, target: Mapping, layer_weights: Mapping, variant: str):
  """L_style = Σ_l w_l E_l; ``target`` {layer: raw Gram A (C, C)}, or {layer: a statistics
  target with a ``loss(features, variant)`` method} (``jnst.style_stats``: Wasserstein,
  mean/std, masked Grams)."""
  del image
  return sum(layer_weights[l] * (target[l].loss(feats[l], variant) if hasattr(target[l], "loss")
                                 else style_layer_loss(feats[l], target[l], variant))
             for l in target)


def tv(feats: Mapping, image, target, layer_weights: Mapping, variant: str):
  """L_tv of the image in RGB 0-255 steps; no target, no layers."""
  del feats, target, layer_weights, variant
  return tv_loss(image)


TERMS = {"content": content, "style": style, "tv": tv}
# Terms that read the image rather than (only) features.
IMAGE_TERMS = frozenset({"tv"})
