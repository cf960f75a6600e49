"""Gatys et al. loss terms: pure functions over feature maps, the image and plain-pytree targets.

Notation (Gatys, Ecker & Bethge 2016, "Image Style Transfer Using CNNs", eqs. 1-7): a
layer l has N_l channels and M_l = H_l * W_l positions; F^l is its (M_l, N_l) feature
matrix for the image being optimised, P^l the content image's, A^l the style image's Gram.

* content   L_content = 1/2 Σ (F - P)²                                       (eq. 1)
* Gram      G_ij = Σ_k F_ki F_kj                                             (eq. 3)
* style     E_l = 1/(4 N_l² M_l²) Σ (G - A)²,  L_style = Σ_l w_l E_l         (eqs. 4, 5)
* TV        Σ of squared differences between neighbouring pixels (Mahendran & Vedaldi)
* temporal  1/D Σ_k Σ c_k (x − ω_k)², D = H·W·3: the squared difference to warped earlier
            stylised frames ω_k, weighted per pixel by reliability masks c_k (Ruder,
            Dosovitskiy & Brox 2016, eqs. 2 and 4; ``jnst.video``)
* total     L = α L_content + β L_style + γ L_tv                             (eq. 7)

``variant="paper"`` is these normalisations exactly. ``variant="mean"``
instead averages: content mean((F-P)²), style mean((G-A)²)/(N_l M_l)² — the same style term
up to the constant 4, content divided by N_l M_l / 2 — which keeps the terms of similar size
across image sizes (the style of many PyTorch tutorials).

``variant="invariant"`` (the experiments' default, ``DEFAULT_VARIANT``): content
1/(2 N_l M_l) Σ (F - P)² (the paper's per element: its mean), style exactly the paper's, TV
per pixel (Σ of squared neighbour differences / (H W)).
The paper's content term grows with the pixel count (M_l) while its style term does not (G
grows like M_l, and 1/M_l² cancels it), so one α/β is a different picture at 128 px and at
1024 px; here both are per element, and one α/β means the same balance at every size
(BENCHMARKS.md, "The look of the defaults"). The style term and its layer balance are the
paper's, so β and the other terms (matting, temporal) keep their meaning; α and γ are in new
units (``DEFAULT_WEIGHTS``).

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

import jnst.matting as matting_lib
from jnst.errors import JnstError

VARIANTS = ("paper", "mean", "invariant")
DEFAULT_VARIANT = "invariant"
# Default loss weights (α content, β style) per variant: the paper's α/β = 1e-3 for "paper"
# and "mean"; for "invariant" chosen with ``jnst.bench.look`` on three pairs at 128 and 256 px
# (BENCHMARKS.md, "The look of the defaults"). γ (TV) defaults to 0 for every variant.
DEFAULT_WEIGHTS = {"paper": (1.0, 1e3), "mean": (1.0, 1e3), "invariant": (3e5, 1e3)}


def check_variant(variant: str) -> str:
  if variant not in VARIANTS:
    raise JnstError(f"unknown loss variant {variant!r}: use paper, mean or invariant")
  return variant


def default_weights(variant: str) -> tuple[float, float]:
  """(α, β): the default content and style loss weights of ``variant``."""
  return DEFAULT_WEIGHTS[check_variant(variant)]


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
  M Ḡᵀ, each a full pass over the feature map; BENCHMARKS.md) — except where the map has
  at most C / 2 positions (deep layers of small images): there the two matmuls are cheaper
  than forming Ḡ + Ḡᵀ, whose transpose XLA:CPU does slowly for large C.
  """
  return jnp.einsum("...mi,...mj->...ij", m, m, precision=_HIGHEST)


def _gram_fwd(m):
  return _gram(m), m


def _gram_bwd(m, g):
  if 2 * m.shape[-2] <= m.shape[-1]:
    return (jnp.einsum("...mi,...ij->...mj", m, g, precision=_HIGHEST)
            + jnp.einsum("...mi,...ji->...mj", m, g, precision=_HIGHEST),)
  return (jnp.einsum("...mi,...ij->...mj", m, g + jnp.swapaxes(g, -1, -2), precision=_HIGHEST),)


_gram.defvjp(_gram_fwd, _gram_bwd)


def content_layer_loss(f: jax.Array, p: jax.Array, variant: str = "paper") -> jax.Array:
  """Paper: 1/2 Σ (F - P)²; mean: mean((F - P)²); invariant: 1/2 mean((F - P)²)."""
  d = jnp.square(f - p)
  variant = check_variant(variant)
  if variant == "invariant":
    return 0.5 * jnp.mean(d)
  return 0.5 * jnp.sum(d) if variant == "paper" else jnp.mean(d)


def style_layer_loss(f: jax.Array, a: jax.Array, variant: str = "paper") -> jax.Array:
  """E_l for features ``f`` (..., H, W, C) against the target Gram ``a`` (C, C) (raw,
  unnormalised, from ``gram(style_features)``). Paper and invariant: Σ (G - A)² / (4 N² M²);
  mean: Σ (G - A)² / (N² (N M)²)."""
  h, w, c = f.shape[-3:]
  d = jnp.sum(jnp.square(gram(f) - a))
  paper = paper_style(variant)
  return d / (4.0 * c * c * (h * w) ** 2 if paper else float(c * c) * (c * h * w) ** 2)


def paper_style(variant: str) -> bool:
  """Whether ``variant``'s style terms are normalised as the paper's (paper, invariant)."""
  return check_variant(variant) != "mean"


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
  """L_tv of the image in RGB 0-255 steps; no target, no layers. Variant "invariant": per
  pixel, L_tv / (H W), so γ means the same at every size."""
  del feats, target, layer_weights
  if check_variant(variant) == "invariant":
    return tv_loss(image) / (image.shape[-3] * image.shape[-2])
  return tv_loss(image)


def matting(feats: Mapping, image, target, layer_weights: Mapping, variant: str):
  """Luan et al.'s photorealism regulariser Σ_c V_cᵀ L V_c (``jnst.matting``), V the image in
  RGB [0, 1] (the 0-255 steps / 255: ``deprocess`` up to a constant per channel, which L
  ignores); ``target`` from ``matting.target`` (the content's matting Laplacian)."""
  del feats, layer_weights, variant
  return matting_lib.energy(target, image / 255.0)


def temporal_loss(x: jax.Array, warped: jax.Array, mask: jax.Array) -> jax.Array:
  """Ruder et al.'s temporal term 1/D Σ_k Σ_p c_k(p) (x(p) − ω_k(p))², D = H·W·C.

  x: (H, W, C); warped: (K, H, W, C) earlier stylised frames warped to x; mask: (K, H, W, 1)
  per-pixel weights c_k in [0, 1] (all 0: the term vanishes).
  """
  return jnp.sum(mask * jnp.square(x[None] - warped)) / x.size


def temporal(feats: Mapping, image, target: Mapping, layer_weights: Mapping, variant: str):
  """The temporal term of the image in RGB 0-255 steps; ``target`` {"warped": (K, H, W, 3)
  in the same units, "mask": (K, H, W, 1)}. No layers; the same for both variants."""
  del feats, layer_weights, variant
  return temporal_loss(image, target["warped"], target["mask"])


TERMS = {"content": content, "style": style, "tv": tv, "matting": matting, "temporal": temporal}
# Terms that read the image rather than (only) features.
IMAGE_TERMS = frozenset({"tv", "matting", "temporal"})
