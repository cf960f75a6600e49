"""Calibrating a backbone's ``term_scales``: the multipliers that put its raw content and
style terms in a reference backbone's units (VGG-19 with the Caffe weights), so that the
default loss weights α = 1, β = 1e3 strike a comparable balance on any backbone.

Method (one image pair, each backbone with its own default layers and layer weights, the
given loss variant): the content term is measured between the style image's and the content
image's features, the style term between the content image's Grams and the style image's,
i.e. each term at the opposite end of the optimisation path, where it is largest. The scale
of a term is reference value / backbone value, so after scaling both backbones see the same
content/style ratio at both ends. Pure computation on arrays; no file I/O.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import jnst.losses as losses
import jnst.objective as objective


def raw_terms(backbone, params, content, style, variant: str = "paper") -> dict[str, float]:
  """{"content": content term of ``style`` (resized to the content's shape, as
  ``init="style"`` does) vs ``content``, "style": style term of ``content`` vs ``style``},
  unscaled, on ``backbone``'s default layers (content w_l = 1, style 1/n). Images: RGB
  [0, 1], (H, W, 3), any sizes."""
  c_layers = backbone.expand_layers(backbone.default_content_layers)
  s_layers = backbone.expand_layers(backbone.default_style_layers)
  content, style = objective.check_image(content, "content"), objective.check_image(style, "style")
  p = objective.content_target(backbone, params, content, c_layers)
  a = objective.style_target(backbone, params, [style], s_layers)
  style_x = jnp.clip(jax.image.resize(style, content.shape, "lanczos3"), 0.0, 1.0)
  f_style = backbone.extract(params, style_x[None], c_layers)
  f_content = backbone.extract(params, content[None], s_layers)
  cw = {l: jnp.float32(1.0) for l in c_layers}
  sw = {l: jnp.float32(1.0 / len(s_layers)) for l in s_layers}
  return {"content": float(losses.content(f_style, None, p, cw, variant)),
          "style": float(losses.style(f_content, None, a, sw, variant))}


def term_scales(reference, ref_params, backbone, params, content, style,
                variant: str = "paper") -> tuple[tuple[str, float], ...]:
  """``backbone``'s term_scales against ``reference`` on one pair (module docstring), as the
  backbone dataclass stores them: (("content", s_c), ("style", s_s))."""
  ref = raw_terms(reference, ref_params, content, style, variant)
  own = raw_terms(backbone, params, content, style, variant)
  return tuple((t, ref[t] / own[t]) for t in ("content", "style"))
