"""Colour spaces and colour transfer on RGB in [0, 1] (NumPy, any leading axes)."""

from __future__ import annotations

import numpy as np

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
  variant applied to the result, as neural-style does). ``content`` (H, W, 3);
  ``stylized`` (..., H, W, 3). Clipped to [0, 1]."""
  y = rgb_to_yiq(stylized)[..., :1]
  iq = np.broadcast_to(rgb_to_yiq(content)[..., 1:], (*y.shape[:-1], 2))
  return np.clip(yiq_to_rgb(np.concatenate([y, iq], -1)), 0.0, 1.0)
