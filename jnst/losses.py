"""Gatys et al. losses: pure functions over feature maps and plain-pytree targets.

Notation (Gatys, Ecker & Bethge 2016, "Image Style Transfer Using CNNs", eqs. 1-7): a
layer l has N_l channels and M_l = H_l * W_l positions; F^l is its (M_l, N_l) feature
matrix for the image being optimised, P^l the content image's, A^l the style image's Gram.

* content   L_content = 1/2 Σ (F - P)²                                       (eq. 1)
* Gram      G_ij = Σ_k F_ki F_kj                                             (eq. 3)
* style     E_l = 1/(4 N_l² M_l²) Σ (G - A)²,  L_style = Σ_l w_l E_l         (eqs. 4, 5)
* total     L = α L_content + β L_style (+ γ L_tv)                           (eq. 7)

These paper normalisations are the defaults (``variant="paper"``). ``variant="mean"``
instead averages: content mean((F-P)²), style mean((G-A)²)/(N_l M_l)² — i.e. the same
style term up to the constant 4 and content divided by N_l M_l / 2 — which keeps the terms
of similar size across image sizes (the style of many PyTorch tutorials).

Shapes: a feature map is (H, W, C) or batched (B, H, W, C); losses sum over the batch.
Loss weights (α, β, γ, per-layer w_l) live in a pytree of scalars so they can be traced,
and vmapped for sweeps.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

VARIANTS = ("paper", "mean")


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
  raise ValueError(f"unknown Gram normalisation {norm!r}: use none, hw or chw")


_HIGHEST = jax.lax.Precision.HIGHEST


@jax.custom_vjp
def _gram(m: jax.Array) -> jax.Array:
  """Mᵀ M of (..., M, C) -> (..., C, C).

  Its VJP is one matmul, M (Ḡ + Ḡᵀ), where autodiff of the einsum would emit two (M Ḡ and
  M Ḡᵀ, each a full pass over the feature map): ~10 % of a CPU evaluation (BENCHMARKS.md).
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
  return 0.5 * jnp.sum(d) if variant == "paper" else jnp.mean(d)


def style_layer_loss(f: jax.Array, a: jax.Array, variant: str = "paper") -> jax.Array:
  """E_l for features ``f`` (..., H, W, C) against the target Gram ``a`` (C, C) (raw,
  unnormalised, from ``gram(style_features)``). Paper: Σ (G - A)² / (4 N² M²)."""
  h, w, c = f.shape[-3:]
  d = jnp.sum(jnp.square(gram(f) - a))
  scale = 4.0 * c * c * (h * w) ** 2 if variant == "paper" else float(c * c) * (c * h * w) ** 2
  return d / scale


def content_loss(feats: Mapping[str, jax.Array], targets: Mapping[str, jax.Array],
                 layer_weights: Mapping[str, jax.Array], variant: str = "paper") -> jax.Array:
  """Σ_l w_l · content_layer_loss over the target layers."""
  return sum(layer_weights[l] * content_layer_loss(feats[l], targets[l], variant) for l in targets)


def style_loss(feats: Mapping[str, jax.Array], targets: Mapping[str, jax.Array],
               layer_weights: Mapping[str, jax.Array], variant: str = "paper") -> jax.Array:
  """L_style = Σ_l w_l E_l over the target layers (targets are raw Grams)."""
  return sum(layer_weights[l] * style_layer_loss(feats[l], targets[l], variant) for l in targets)


def tv_loss(x: jax.Array) -> jax.Array:
  """Total variation of an image (..., H, W, C): Σ of squared differences between
  vertical and horizontal neighbours (smooth, so it suits L-BFGS)."""
  dy = x[..., 1:, :, :] - x[..., :-1, :, :]
  dx = x[..., :, 1:, :] - x[..., :, :-1, :]
  return jnp.sum(jnp.square(dy)) + jnp.sum(jnp.square(dx))


def total_loss(feats: Mapping[str, jax.Array], x: jax.Array, targets: Mapping,
               weights: Mapping, variant: str = "paper") -> tuple[jax.Array, dict]:
  """α L_content + β L_style + γ L_tv, and the weighted terms.

  Args:
    feats: {layer: features of x}, covering every target layer.
    x: the image in the network's input space (for TV).
    targets: {"content": {layer: P}, "style": {layer: A}}; either may be empty.
    weights: {"content": α, "style": β, "tv": γ, "content_layers": {layer: w},
      "style_layers": {layer: w_l}} (scalars; arrays so they can be traced).
  Returns:
    (loss, {"content": α·Lc, "style": β·Ls, "tv": γ·Ltv}).
  """
  zero = jnp.zeros((), jnp.float32)
  terms = {
      "content": weights["content"] * content_loss(
          feats, targets["content"], weights["content_layers"], variant) if targets["content"] else zero,
      "style": weights["style"] * style_loss(
          feats, targets["style"], weights["style_layers"], variant) if targets["style"] else zero,
      "tv": weights["tv"] * tv_loss(x),
  }
  return terms["content"] + terms["style"] + terms["tv"], terms
