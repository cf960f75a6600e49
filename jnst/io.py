"""Files in and out: images, JSON run records, contact sheets, atomic writes.

Images in memory are float32 RGB in [0, 1], shape (H, W, 3) (no batch axis here).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from jnst.errors import JnstError

MIN_SIDE = 16


@contextlib.contextmanager
def atomic_path(dst: str | os.PathLike, suffix: str = ""):
  """Yields a temp path beside ``dst``; renames it onto ``dst`` only if the block succeeds,
  so ``dst`` is never left half-written. Raises JnstError if the directory is unwritable."""
  dst = Path(dst)
  try:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp" + suffix, dir=dst.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions.
  except OSError as e:
    raise JnstError(f"cannot write to {dst.parent} ({e.strerror or e}): choose a writable "
                    f"location") from None
  try:
    yield Path(tmp)
    os.replace(tmp, dst)
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)


class _Abort(Exception):
  pass


def ensure_writable(path: str | os.PathLike) -> None:
  """Raises JnstError now (before any compute) if a file cannot be created at ``path``;
  leaves nothing behind."""
  try:
    with atomic_path(path):
      raise _Abort
  except _Abort:
    pass


def load_image(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
  """Reads an image as float32 RGB in [0, 1], (H, W, 3).

  Greyscale, RGBA (composited on white), palette and 16-bit images are converted. With
  ``max_side``, the image is resized (aspect kept, Lanczos) so its longer side is
  ``max_side``; huge files are decoded at reduced size first (``Image.draft``) so no
  full-resolution buffer is allocated for JPEGs.
  """
  path = Path(path)
  if not path.is_file():
    raise JnstError(f"image {path} does not exist: check the path")
  try:
    with Image.open(path) as im:
      if max_side:
        im.draft("RGB", (max_side, max_side))
      im = ImageOps.exif_transpose(im)
      im.load()
      rgb = _to_rgb(im)
  except JnstError:
    raise
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise JnstError(f"{path} is not a readable image ({e}): give a PNG or JPEG file") from None
  if max_side:
    rgb = resize_max_side(rgb, max_side)
  if min(rgb.size) < MIN_SIDE:
    raise JnstError(f"{path} is {rgb.size[0]}x{rgb.size[1]} px, smaller than {MIN_SIDE} px on "
                    f"a side: use a larger image (or a larger --size)")
  return np.asarray(rgb, np.float32) / 255.0


def _to_rgb(im: Image.Image) -> Image.Image:
  if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit greyscale.
    a = np.asarray(im, np.float64)
    a = a / (65535.0 if a.max() > 255 else 255.0)
    return Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)).convert("RGB")
  if im.mode == "P":
    im = im.convert("RGBA")
  if im.mode in ("RGBA", "LA", "PA"):
    im = im.convert("RGBA")
    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, im).convert("RGB")
  return im.convert("RGB")


def resize_max_side(im: Image.Image, max_side: int) -> Image.Image:
  w, h = im.size
  scale = max_side / max(w, h)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  return im if size == (w, h) else im.resize(size, Image.LANCZOS)


def resize(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """Resizes float RGB (H, W, 3) to (h, w) with Lanczos."""
  im = Image.fromarray(to_uint8(rgb))
  return np.asarray(im.resize((hw[1], hw[0]), Image.LANCZOS), np.float32) / 255.0


def to_uint8(rgb) -> np.ndarray:
  return (np.clip(np.asarray(rgb, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def save_image(path: str | os.PathLike, rgb) -> Path:
  """Writes float RGB in [0, 1] (clipped) as PNG (or by extension), atomically."""
  path = Path(path)
  fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
  with atomic_path(path) as tmp:
    Image.fromarray(to_uint8(rgb)).save(tmp, format=fmt)
  return path


def save_json(path: str | os.PathLike, record: Mapping) -> Path:
  """Writes a JSON record atomically (numpy scalars/arrays converted)."""

  def default(o):
    if isinstance(o, np.ndarray):
      return o.tolist()
    if isinstance(o, np.generic):
      return o.item()
    if isinstance(o, Path):
      return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

  with atomic_path(path) as tmp:
    tmp.write_text(json.dumps(record, indent=2, default=default, allow_nan=True) + "\n")
  return Path(path)


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
