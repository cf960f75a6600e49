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


COLOR_TRANSFERS = ("none", "original", "histogram")


def _sym_pow(cov: np.ndarray, p: float) -> np.ndarray:
  vals, vecs = np.linalg.eigh(cov)
  return (vecs * np.clip(vals, 1e-10, None) ** p) @ vecs.T


def match_moments(source, target) -> np.ndarray:
  """``source`` (H, W, 3) recoloured so its RGB mean and 3×3 covariance match ``target``'s:
  x' = Σ_t^½ Σ_s^-½ (x − μ_s) + μ_t, the symmetric ("image analogies") colour histogram
  matching of Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer", §2.1
  (a linear map, so textures and edges are kept). Not clipped."""
  src = np.asarray(source, np.float64)
  tgt = np.asarray(target, np.float64).reshape(-1, 3)
  flat = src.reshape(-1, 3)
  mu_s, mu_t = flat.mean(0), tgt.mean(0)
  eps = 1e-5 * np.eye(3)
  a = (_sym_pow(np.cov(tgt.T, bias=True) + eps, 0.5)
       @ _sym_pow(np.cov(flat.T, bias=True) + eps, -0.5))
  return ((flat - mu_s) @ a.T + mu_t).reshape(src.shape)


def match_cdf(source, target) -> np.ndarray:
  """Each channel of ``source`` mapped through its CDF onto ``target``'s quantiles, so the
  per-channel histograms match (ranks, hence edges, are kept within a channel)."""
  src = np.asarray(source, np.float64)
  tgt = np.sort(np.asarray(target, np.float64).reshape(-1, 3), axis=0)
  flat = src.reshape(-1, 3)
  out = np.empty_like(flat)
  q = np.linspace(0, 1, len(tgt))
  for ch in range(3):
    ranks = np.argsort(np.argsort(flat[:, ch], kind="stable"), kind="stable")
    out[:, ch] = np.interp((ranks + 0.5) / len(flat), q, tgt[:, ch])
  return out.reshape(src.shape)


def match_colors(source, target) -> np.ndarray:
  """``--color_transfer=histogram``: ``source`` (H, W, 3) recoloured to ``target``'s colour
  distribution. First ``match_moments`` (Gatys et al.'s linear mean/covariance match, which
  aligns the colour correlations), then ``match_cdf`` per channel, which makes each channel's
  histogram match exactly where the linear map alone leaves differences (non-Gaussian shapes,
  and values pushed outside [0, 1], e.g. a dark, low-contrast painting stretched to a
  photo's range: BENCHMARKS.md, "Colour transfer"). float32 in [0, 1]."""
  out = match_cdf(match_moments(source, target), target)
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def histogram_distance(a, b, bins: int = 64) -> float:
  """Mean over R, G, B of the 1-Wasserstein distance between the two images' channel
  histograms, in RGB 0-255 steps (0: same histograms)."""
  a, b = np.asarray(a, np.float64).reshape(-1, 3), np.asarray(b, np.float64).reshape(-1, 3)
  edges = np.linspace(0, 1, bins + 1)
  out = 0.0
  for ch in range(3):
    ca = np.cumsum(np.histogram(a[:, ch], edges)[0]) / len(a)
    cb = np.cumsum(np.histogram(b[:, ch], edges)[0]) / len(b)
    out += np.sum(np.abs(ca - cb)) * 255.0 / bins
  return out / 3
