"""Colour-coded region masks for guided style transfer (no file I/O).

A mask is an RGB image (H, W, 3) the size of its image, one flat colour per region (e.g. sky
blue, ground green). The content mask says where each region is in the output; each style
image's mask says which of its pixels give that region its style. A region (a colour) may be
styled from one style image or several (blended), and different regions from different style
images. Every colour of the content mask must appear in some style mask and every colour of a
style mask in the content mask, or JnstError.

Colours: those covering at least ``MIN_SHARE`` of a mask's pixels are its regions; stray
pixels of other colours (JPEG artefacts, anti-aliased edges) join the nearest region colour.
PNG masks with flat colours are exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jnst.errors import JnstError

MIN_SHARE = 0.002  # A region colour covers at least 0.2 % of its mask.
MAX_REGIONS = 32


def as_uint8(mask, what: str) -> np.ndarray:
  """A mask as uint8 RGB (H, W, 3): uint8 as is, floats taken in [0, 1]."""
  m = np.asarray(mask)
  if m.ndim != 3 or m.shape[-1] != 3:
    raise JnstError(f"{what} must be an RGB image (H, W, 3), got shape {m.shape}")
  if m.dtype == np.uint8:
    return m
  return (np.clip(m.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def palette(mask: np.ndarray, what: str) -> np.ndarray:
  """The region colours (K, 3) uint8 of a uint8 mask, sorted, each covering >= MIN_SHARE."""
  colours, counts = np.unique(mask.reshape(-1, 3), axis=0, return_counts=True)
  keep = colours[counts >= max(1, MIN_SHARE * counts.sum())]
  if len(keep) > MAX_REGIONS:
    raise JnstError(f"{what} has {len(keep)} colours: a mask needs at most {MAX_REGIONS} flat "
                    f"colours, one per region (save it as a PNG, not a photo or JPEG)")
  return keep


def labels(mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
  """(H, W) int: the index of the nearest colour in ``colours`` for every pixel."""
  d = np.sum(np.square(mask[..., None, :].astype(np.int32) - colours.astype(np.int32)), -1)
  return np.argmin(d, -1)


def _name(c) -> str:
  return "#%02x%02x%02x" % tuple(int(v) for v in c)


def regions(content_mask, style_masks: Sequence) -> tuple[np.ndarray, np.ndarray, list]:
  """(colours (R, 3) uint8, content one-hot (R, H, W) float32, [style s one-hot (R, H_s, W_s)])
  from a content mask and one mask per style image; JnstError if a colour appears on one side
  only."""
  content = as_uint8(content_mask, "the content mask")
  styles = [as_uint8(m, f"style mask {i + 1}") for i, m in enumerate(style_masks)]
  if not styles:
    raise JnstError("a content mask needs style masks: give one --style_mask per style image")
  c_pal = palette(content, "the content mask")
  s_pals = [palette(m, f"style mask {i + 1}") for i, m in enumerate(styles)]
  c_set = {tuple(c) for c in c_pal}
  s_set = {tuple(c) for p in s_pals for c in p}
  only_c, only_s = sorted(c_set - s_set), sorted(s_set - c_set)
  if only_c or only_s:
    where = (f"{', '.join(map(_name, only_c))} only in the content mask" if only_c else "") + (
        "; " if only_c and only_s else "") + (
        f"{', '.join(map(_name, only_s))} only in the style mask(s)" if only_s else "")
    raise JnstError(f"mask colours must match: {where}; use the same colour for a region in "
                    f"the content mask and in a style mask")
  colours = c_pal
  content_1h = (labels(content, colours)[None] == np.arange(len(colours))[:, None, None])
  style_1h = []
  for m, pal in zip(styles, s_pals):
    lab = labels(m, pal)  # Index into this mask's own palette, then into the shared colours.
    idx = np.array([np.where((colours == c).all(1))[0][0] for c in pal])[lab]
    style_1h.append((idx[None] == np.arange(len(colours))[:, None, None]).astype(np.float32))
  return colours, content_1h.astype(np.float32), style_1h


def check_sizes(content_mask, content, style_masks: Sequence, styles: Sequence) -> None:
  """Each mask has its image's (H, W), and there is one style mask per style image."""
  if len(style_masks) != len(styles):
    raise JnstError(f"{len(style_masks)} style masks for {len(styles)} style images: give one "
                    f"--style_mask per --style image")
  pairs = [(content_mask, content, "the content mask", "the content image")] + [
      (m, s, f"style mask {i + 1}", f"style image {i + 1}")
      for i, (m, s) in enumerate(zip(style_masks, styles))]
  for m, im, what, of in pairs:
    if np.shape(m)[:2] != np.shape(im)[:2]:
      raise JnstError(f"{what} is {np.shape(m)[1]}x{np.shape(m)[0]} px but {of} is "
                      f"{np.shape(im)[1]}x{np.shape(im)[0]}: a mask must have its image's size")
