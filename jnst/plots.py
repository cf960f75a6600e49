"""Pictures of results, drawn with Pillow: contact sheets and loss curves (float RGB arrays;
writing them is ``images.save_image``'s job)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from jnst.images import to_uint8
def contact_sheet(images: Sequence[np.ndarray], labels: Sequence[str] | None = None,
                  columns: int | None = None, cell: int = 256, pad: int = 4) -> np.ndarray:
  """Tiles images (each float RGB, any size) into one float RGB sheet with labels below."""
  n = len(images)
  columns = columns or min(n, 6)
  rows = math.ceil(n / columns)
  label_h = 14 if labels else 0
  sheet = Image.new("RGB", (columns * (cell + pad) + pad, rows * (cell + pad + label_h) + pad),
                    (255, 255, 255))
  draw = ImageDraw.Draw(sheet)
  for k, img in enumerate(images):
    r, c = divmod(k, columns)
    im = Image.fromarray(to_uint8(img))
    im.thumbnail((cell, cell), Image.LANCZOS)
    x0, y0 = pad + c * (cell + pad), pad + r * (cell + pad + label_h)
    sheet.paste(im, (x0 + (cell - im.width) // 2, y0 + (cell - im.height) // 2))
    if labels:
      draw.text((x0 + 2, y0 + cell + 1), str(labels[k]), fill=(0, 0, 0))
  return np.asarray(sheet, np.float32) / 255.0


def loss_plot(curves: Sequence[tuple[Sequence[float], Sequence[float]]], title: str = "",
              xlabel: str = "evaluation", width: int = 720, height: int = 420) -> np.ndarray:
  """Draws loss curves as float RGB (height, width, 3) with Pillow; no matplotlib.

  ``curves``: one (xs, losses) per run. Each run is a thin grey line; the band is the
  min..max over runs and the thick line their geometric mean, both on a common x grid
  (a run that stopped early holds its last value). Log y axis when every loss is > 0.
  """
  curves = [(np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in curves]
  curves = [(x[np.isfinite(y)], y[np.isfinite(y)]) for x, y in curves]
  curves = [c for c in curves if len(c[0])]
  im = Image.new("RGB", (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(im)
  left, right, top, bottom = 70, 15, 25, 40
  draw.text((left, 6), title, fill=(0, 0, 0))
  if not curves:
    draw.text((left, height // 2), "no finite losses", fill=(0, 0, 0))
    return np.asarray(im, np.float32) / 255.0
  log = all(np.all(y > 0) for _, y in curves)
  f = np.log10 if log else (lambda v: v)
  x_lo = min(x.min() for x, _ in curves)
  x_hi = max(max(x.max() for x, _ in curves), x_lo + 1)
  ys = np.concatenate([f(y) for _, y in curves])
  y_lo, y_hi = float(ys.min()), float(ys.max())
  if y_hi - y_lo < 1e-12:
    y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
  pw, ph = width - left - right, height - top - bottom

  def px(x, y):
    return (left + (x - x_lo) / (x_hi - x_lo) * pw, top + (y_hi - y) / (y_hi - y_lo) * ph)

  grid = np.linspace(x_lo, x_hi, min(pw, 400))
  on_grid = np.stack([np.interp(grid, x, f(y)) for x, y in curves])
  lo, hi = on_grid.min(0), on_grid.max(0)
  band = [px(x, y) for x, y in zip(grid, hi)] + [px(x, y) for x, y in zip(grid[::-1], lo[::-1])]
  draw.polygon(band, fill=(200, 215, 240))
  for x, y in curves:
    if len(x) > 1:
      draw.line([px(a, b) for a, b in zip(x, f(y))], fill=(150, 150, 150), width=1)
  draw.line([px(x, y) for x, y in zip(grid, on_grid.mean(0))], fill=(20, 60, 160), width=3)
  draw.rectangle([left, top, left + pw, top + ph], outline=(0, 0, 0))
  for t in np.linspace(y_lo, y_hi, 5):
    _, yy = px(x_lo, t)
    draw.line([(left - 4, yy), (left, yy)], fill=(0, 0, 0))
    draw.text((4, yy - 6), f"{10 ** t:.3g}" if log else f"{t:.3g}", fill=(0, 0, 0))
  for t in np.unique(np.round(np.linspace(x_lo, x_hi, 6))):
    xx, _ = px(t, y_lo)
    draw.line([(xx, top + ph), (xx, top + ph + 4)], fill=(0, 0, 0))
    draw.text((xx - 10, top + ph + 6), f"{t:.0f}", fill=(0, 0, 0))
  draw.text((left + pw // 2 - 30, height - 14), xlabel, fill=(0, 0, 0))
  draw.text((width - right - 260, 6), f"{len(curves)} runs: grey each, blue geometric mean, "
            "band min..max" if log else f"{len(curves)} runs: grey each, blue mean, band "
            "min..max", fill=(20, 60, 160))
  return np.asarray(im, np.float32) / 255.0
