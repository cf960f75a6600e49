"""The input convention shared by our backbones: the network sees (RGB − mean) / std, with
``mean`` and ``std`` (3,) per weights file in ``params["input"]`` (VGG: std 1/255, so the
input is Caffe's 0-255 minus mean; ResNet-50: torchvision's ImageNet std or Caffe's)."""

from __future__ import annotations

from collections.abc import Mapping

import jax


class MeanStdInput:
  """Mixin: ``preprocess``/``deprocess``/``pixel_scale`` from ``params["input"]``."""

  def preprocess(self, params: Mapping, rgb: jax.Array) -> jax.Array:
    """RGB in [0, 1] (..., 3) -> the network's input space (module docstring)."""
    return (rgb - params["input"]["mean"]) / params["input"]["std"]

  def deprocess(self, params: Mapping, x: jax.Array) -> jax.Array:
    """Inverse of ``preprocess`` (not clipped)."""
    return x * params["input"]["std"] + params["input"]["mean"]

  def pixel_scale(self, params: Mapping) -> jax.Array:
    """(3,) factors from input-space steps to RGB 0-255 steps (for TV and the image terms)."""
    return 255.0 * params["input"]["std"]
