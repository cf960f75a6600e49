"""Image files in and out. Images in memory are float32 RGB in [0, 1], (H, W, 3)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from jnst.errors import JnstError
from jnst.records import atomic_path

MIN_SIDE = 16


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


def to_uint8(rgb) -> np.ndarray:
  return (np.clip(np.asarray(rgb, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def save_image(path: str | os.PathLike, rgb) -> Path:
  """Writes float RGB in [0, 1] (clipped) as PNG (or by extension), atomically."""
  path = Path(path)
  fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
  with atomic_path(path) as tmp:
    Image.fromarray(to_uint8(rgb)).save(tmp, format=fmt)
  return path


def image_size(path: str | os.PathLike) -> tuple[int, int]:
  """(width, height) of an image file as ``load_image`` orients it (EXIF), before resizing."""
  path = Path(path)
  if not path.is_file():
    raise JnstError(f"image {path} does not exist: check the path")
  try:
    with Image.open(path) as im:
      w, h = im.size
      if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # Rotated by 90 degrees.
        w, h = h, w
      return w, h
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise JnstError(f"{path} is not a readable image ({e}): give a PNG or JPEG file") from None


def load_mask(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
  """A colour-coded mask as uint8 RGB (H, W, 3), resized to ``shape`` (H, W) by nearest
  neighbour so that no new colours appear (``jnst.masks``)."""
  path = Path(path)
  if not path.is_file():
    raise JnstError(f"mask {path} does not exist: check the path")
  try:
    with Image.open(path) as im:
      im = ImageOps.exif_transpose(im)
      im.load()
      rgb = _to_rgb(im)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise JnstError(f"{path} is not a readable image ({e}): give a PNG file") from None
  if rgb.size != (shape[1], shape[0]):
    rgb = rgb.resize((shape[1], shape[0]), Image.NEAREST)
  return np.asarray(rgb, np.uint8)
