"""Image files in and out. Images in memory are float32 RGB in [0, 1], (H, W, 3)."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from jnst.errors import JnstError
from jnst.records import atomic_path, check_input_file

MIN_SIDE = 16
MAX_SIDE = 8192  # The largest --size (and working image side) jnst accepts.
# Images are refused before decoding above this many pixels (after a JPEG's reduced
# decode): a 20 KB paletted 13000x13000 PNG would otherwise cost gigabytes to read.
MAX_PIXELS = 8192 * 8192
UPSCALE_WARN = 4.0  # load_inputs warns when an image is enlarged more than this.


@contextlib.contextmanager
def _no_bomb_warning():
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    yield


def header_size(path: str | os.PathLike) -> tuple[int, int]:
  """(width, height) from the file's header, without decoding the pixels (EXIF rotation
  not applied)."""
  path = check_input_file(path, "image")
  try:
    with _no_bomb_warning(), Image.open(path) as im:
      return im.size
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise JnstError(f"{path} is not a readable image ({e}): give a PNG or JPEG file") from None


def load_image(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
  """Reads an image as float32 RGB in [0, 1], (H, W, 3).

  Greyscale, RGBA (composited on white), palette, 16-bit and 32-bit (integer or float)
  images are converted: 16/32-bit integers are scaled by 65535 (by 255 if no value
  exceeds 255); 32-bit float ("F", e.g. float TIFF) is taken as [0, 1] if no value exceeds
  1, else as 0-255, and clipped (NaN reads as 0). With ``max_side``, the image is resized
  (aspect kept, Lanczos) so its longer side is ``max_side``. Memory: JPEGs are decoded at
  reduced size (``Image.draft``); every format's pixel count is read from the header and
  refused above ``MAX_PIXELS`` before any pixel is decoded, and an image 6x or more larger
  than ``max_side`` is resized right after decoding, before its RGB conversion (Lanczos
  after PIL's box reduction to 3x the target: within 1/255 of a plain Lanczos resize).
  """
  path = check_input_file(path, "image")
  try:
    with _no_bomb_warning(), Image.open(path) as im:  # We check MAX_PIXELS ourselves.
      if max_side:
        im.draft("RGB", (max_side, max_side))
      w, h = im.size
      if w * h > MAX_PIXELS:
        raise JnstError(f"{path} is {w}x{h} px ({w * h / 1e6:.0f} MP), over the "
                        f"{MAX_PIXELS / 1e6:.0f} MP jnst decodes: downscale the file first")
      im.load()
      if max_side and max(im.size) >= 6 * max_side:  # Shrink before the RGB conversion.
        if im.mode == "P":  # Palette images cannot be resized: expand only as far as needed.
          im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
          im = resize_max_side(im, max_side, reducing_gap=3.0)
      im = ImageOps.exif_transpose(im)
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
  if im.mode == "F":  # 32-bit float greyscale: [0, 1], else 0-255 (docstring).
    a = np.nan_to_num(np.asarray(im, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    a = a if a.max(initial=0.0) <= 1.0 else a / 255.0
    return Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)).convert("RGB")
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


def resize_max_side(im: Image.Image, max_side: int, reducing_gap: float | None = None
                    ) -> Image.Image:
  """Lanczos resize to longer side ``max_side``; ``reducing_gap``: PIL's box reduction
  first, to that multiple of the target (3: indistinguishable, much less memory)."""
  w, h = im.size
  scale = max_side / max(w, h)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  return im if size == (w, h) else im.resize(size, Image.LANCZOS, reducing_gap=reducing_gap)


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
