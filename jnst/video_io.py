"""Clips in and out, and the on-disk store of finished frames that makes a run resumable.

Input (``read_clip``): a video file (decoded with PyAV, the optional ``video`` extra), an
animated GIF (Pillow), or a directory of frames (PNG/JPEG, sorted by name; every frame the
same size). Frames are RGB float32 in [0, 1], (H, W, 3), resized so the longer side is
``max_side``. ``fps`` resamples in time (keeps the source frame shown at each output time);
``start`` and ``max_frames`` then pick output frames by index.

Output (``write_clip``): by ``output_kind`` — a video file (.mp4/.mkv/.mov: H.264 yuv420p,
CRF 18; .avi: MPEG-4 part 2) at the given frame rate, an animated GIF, or a directory of
PNG frames (``frame_00000.png`` …, a path without a suffix). Every output appears whole or
not at all: a temp file (or directory) beside the target, renamed onto it at the end.

Resume (``FrameStore``, ``run_id``): each finished frame is kept as
``<cache>/<run id>/frame_00012.npz`` (its input-space image, float32, and its record). The
run id is the first 16 hex digits of a SHA-256 over the decoded, resized content frames, the
style (and init) images, every option that changes the result (the experiment config with
its optimiser settings but not the progress chunk, the video config, the seed) and the
weights file's path, size and modification time. Running the same command again finds the
same id and reuses every stored frame.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

import jnst.images as images
from jnst.errors import JnstError
from jnst.records import atomic_path, ensure_writable

INSTALL = "pip install -e '.[video]'"
VIDEO_SUFFIXES = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".avi": "mpeg4"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_DIR_FPS = 25.0


def _av():
  try:
    import av
  except ImportError:
    raise JnstError(f"reading and writing video files needs PyAV, which is not installed: run "
                    f"{INSTALL}") from None
  return av


@dataclasses.dataclass
class Clip:
  """frames: list of (H, W, 3) float32 RGB in [0, 1]; fps: their frame rate; source: the
  input's description; indices: each frame's index in the resampled source."""
  frames: list[np.ndarray]
  fps: float
  source: str
  indices: list[int]


# ------------------------------------------------------------------ reading


def _video_frames(path: Path) -> tuple[Iterator[Image.Image], float, Callable]:
  av = _av()
  try:
    container = av.open(str(path))
    if not container.streams.video:
      container.close()
      raise JnstError(f"{path} has no video stream: give a video file, a GIF or a directory "
                      f"of frames")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
  except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
    raise JnstError(f"{path} is not a readable video ({e}): give a video file (e.g. .mp4), a "
                    f"GIF or a directory of frames") from None

  def gen():
    try:
      for frame in container.decode(stream):
        yield frame.to_image()
    except (av.error.FFmpegError, OSError) as e:
      raise JnstError(f"{path} could not be decoded ({e}): the file is corrupt or truncated; "
                      f"re-encode it (e.g. with ffmpeg)") from None

  return gen(), float(rate) if rate else DEFAULT_DIR_FPS, container.close


def _gif_frames(path: Path) -> tuple[Iterator[Image.Image], float, Callable]:
  try:
    im = Image.open(path)
    durations = []
    for f in ImageSequence.Iterator(im):
      durations.append(f.info.get("duration", 100) or 100)
    im.seek(0)
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    raise JnstError(f"{path} is not a readable GIF ({e}): give a GIF, a video or a directory "
                    f"of frames") from None

  def gen():
    for f in ImageSequence.Iterator(im):
      yield f.convert("RGB")

  return gen(), 1000.0 / float(np.mean(durations)), im.close


def _dir_frames(path: Path, fps: float | None) -> tuple[Iterator[Image.Image], float, Callable]:
  files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
  if not files:
    raise JnstError(f"{path} holds no frames (PNG or JPEG files): give a directory of frames")

  def gen():
    size = None
    for f in files:
      try:
        with Image.open(f) as im:
          im.load()
          rgb = images._to_rgb(im)
      except (OSError, SyntaxError, ValueError) as e:
        raise JnstError(f"{f} is not a readable image ({e}): remove it from {path}") from None
      if size is None:
        size = rgb.size
      elif rgb.size != size:
        raise JnstError(f"frames of different sizes in {path}: {f.name} is "
                        f"{rgb.size[0]}x{rgb.size[1]}, {files[0].name} {size[0]}x{size[1]}: "
                        f"give frames of one size")
      yield rgb

  return gen(), fps or DEFAULT_DIR_FPS, lambda: None


def read_clip(path, max_side: int, start: int = 0, max_frames: int | None = None,
              fps: float | None = None) -> Clip:
  """The frames of a video file, GIF or directory of frames (module docstring). ``start``:
  the first output frame's index; ``max_frames``: at most this many (None: all)."""
  path = Path(path)
  if max_frames is not None and max_frames < 1:
    raise JnstError(f"--max_frames must be at least 1, got {max_frames}")
  if start < 0:
    raise JnstError(f"--start must be >= 0, got {start}")
  if fps is not None and not (math.isfinite(fps) and fps > 0):
    raise JnstError(f"--fps must be a positive number, got {fps}")
  if path.is_dir():
    source, src_fps, close = _dir_frames(path, fps)
  elif not path.is_file():
    raise JnstError(f"input {path} does not exist: give a video file, a GIF or a directory "
                    f"of frames")
  elif path.suffix.lower() == ".gif":
    source, src_fps, close = _gif_frames(path)
  else:
    source, src_fps, close = _video_frames(path)
  try:
    return _select(path, source, src_fps, max_side, start, max_frames, fps)
  finally:
    source.close()
    close()


def _select(path, source, src_fps, max_side, start, max_frames, fps) -> Clip:
  rate = fps or src_fps
  if rate > src_fps * (1 + 1e-6):
    raise JnstError(f"--fps={fps:g} is above the input's {src_fps:g} frames per second: give "
                    f"at most {src_fps:g}")
  frames, indices, k = [], [], 0  # k: the next output frame (time k / rate).
  for i, im in enumerate(source):
    if max_frames is not None and len(frames) >= max_frames:
      break
    if math.floor(k * src_fps / rate + 1e-6) != i:
      continue
    if k >= start:
      im = images.resize_max_side(im, max_side)
      if min(im.size) < images.MIN_SIDE:
        raise JnstError(f"frames of {path} are {im.size[0]}x{im.size[1]} px at --size="
                        f"{max_side}, smaller than {images.MIN_SIDE} px: use a larger --size")
      frames.append(np.asarray(im.convert("RGB"), np.float32) / 255.0)
      indices.append(k)
    k += 1
  if not frames:
    raise JnstError(f"{path} gave no frames (from frame {start} at {rate:g} fps): check the "
                    f"file and --start")
  return Clip(frames, float(rate), str(path), indices)


# ------------------------------------------------------------------ writing


def output_kind(path) -> str:
  """"video", "gif" or "dir" for an output path, or JnstError naming the choices."""
  suffix = Path(path).suffix.lower()
  if suffix in VIDEO_SUFFIXES:
    return "video"
  if suffix == ".gif":
    return "gif"
  if suffix == "":
    return "dir"
  raise JnstError(f"--output={path}: end it in {', '.join(VIDEO_SUFFIXES)} or .gif, or give a "
                  f"directory (no suffix) for PNG frames")


def check_output(path) -> str:
  """Checks now, before any compute, that ``path`` can be written; returns its kind."""
  path = Path(path)
  kind = output_kind(path)
  if kind == "video":
    _av()
  if kind == "dir":
    if path.exists() and (not path.is_dir() or any(
        not (p.name.startswith("frame_") and p.suffix == ".png") for p in path.iterdir())):
      raise JnstError(f"--output={path} exists and is not a directory of frame_*.png: choose "
                      f"another output")
    ensure_writable(path.parent / f".{path.name}.probe")
  else:
    ensure_writable(path)
  return kind


def _even(frame: np.ndarray) -> np.ndarray:
  """Pads (edge rows/columns) to even height and width, as yuv420p needs."""
  h, w = frame.shape[:2]
  return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_clip(path, frames, fps: float) -> Path:
  """Writes RGB frames (T, H, W, 3) in [0, 1] to ``path`` (``output_kind``), atomically."""
  path = Path(path)
  kind = check_output(path)
  u8 = [images.to_uint8(f) for f in frames]
  if kind == "dir":
    return _write_dir(path, u8)
  with atomic_path(path, suffix=path.suffix) as tmp:
    if kind == "gif":
      ims = [Image.fromarray(f) for f in u8]
      ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:],
                  duration=round(1000 / fps), loop=0, optimize=True)
    else:
      _write_video(tmp, u8, fps, VIDEO_SUFFIXES[path.suffix.lower()], path.suffix.lower()[1:])
  return path


def _write_video(tmp: Path, frames, fps: float, codec: str, fmt: str) -> None:
  av = _av()
  fmt = {"mkv": "matroska"}.get(fmt, fmt)
  frames = [_even(f) for f in frames]
  with av.open(str(tmp), "w", format=fmt) as c:
    stream = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = "yuv420p"
    if codec == "libx264":
      stream.options = {"crf": "18"}
    for f in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        c.mux(packet)
    for packet in stream.encode():
      c.mux(packet)


def _write_dir(path: Path, frames) -> Path:
  tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
  try:
    for t, f in enumerate(frames):
      Image.fromarray(f).save(tmp / f"frame_{t:05d}.png", format="PNG")
    old = None
    if path.exists():
      old = path.parent / f".{path.name}.old.{os.getpid()}"
      os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return path


# ------------------------------------------------------------------ resume


def _sha(h, a) -> None:
  a = np.ascontiguousarray(np.asarray(a, np.float32))
  h.update(repr(a.shape).encode())
  h.update(a.tobytes())


def run_id(frames, styles, options: dict, weights: str | None = None, init=None) -> str:
  """16 hex digits naming a run (module docstring): ``options`` are the reprs of every
  setting that changes the result."""
  h = hashlib.sha256(b"jnst-video-1")
  for group in (frames, styles, [] if init is None else [init]):
    h.update(f"{len(group)}".encode())
    for a in group:
      _sha(h, a)
  h.update(json.dumps(options, sort_keys=True, default=str).encode())
  if weights:
    p = Path(weights)
    stat = p.stat() if p.is_file() else None
    h.update(f"{p.resolve()}:{stat and stat.st_size}:{stat and stat.st_mtime_ns}".encode())
  return h.hexdigest()[:16]


class FrameStore:
  """Finished frames under ``root`` (created at the first save): ``load(t)`` -> (x, info) or
  None, ``save(t, x, info)``; every file written atomically."""

  def __init__(self, root):
    self.root = Path(root)

  def _path(self, t: int) -> Path:
    return self.root / f"frame_{t:05d}.npz"

  def load(self, t: int):
    p = self._path(t)
    if not p.is_file():
      return None
    try:
      with np.load(p, allow_pickle=False) as z:
        return np.asarray(z["x"], np.float32), json.loads(str(z["info"]))
    except (OSError, ValueError, KeyError):
      return None  # A damaged entry is computed again.

  def save(self, t: int, x, info: dict) -> None:
    with atomic_path(self._path(t), suffix=".npz") as tmp, open(tmp, "wb") as f:
      np.savez(f, x=np.asarray(x, np.float32), info=np.array(json.dumps(info, default=float)))

  def __len__(self) -> int:
    return len(list(self.root.glob("frame_*.npz"))) if self.root.is_dir() else 0
