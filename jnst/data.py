"""Training photos from a folder: scanned once, decoded, random-cropped and flipped on a
background thread, batches in a bounded queue so the accelerator does not wait for the host.

Why not a library: grain (the JAX data loader) is not a dependency here, and what training
needs is small — a deterministic batch per step (so ``--resume`` continues with exactly the
batches an uninterrupted run would have seen), per-process slices of the global batch, and
skipped unreadable files. Decoding runs in a thread pool (Pillow releases the GIL while
decoding), so one process keeps a 2-core CPU or one GPU fed at 256 px; for COCO on a many-core
TPU host, a multi-process loader (grain) would be the next step.

Batch of step s (global, the same whatever the process count): positions s·B … s·B + B − 1
of the endless sequence of epochs, each epoch a permutation of the training files drawn from
(seed, epoch). Item j is decoded, its shorter side resized to ``size`` (bilinear; JPEGs are
drafted at reduced size first), a size×size crop taken at a random offset and flipped
left-right with probability 1/2, both drawn from (seed, s, j). A file that fails to decode is
reported and replaced by a random training file (drawn from (seed, s, j, attempt)).

``demo_photos()``: the colour photos of scikit-image 0.26.0's wheel, enough to show that
training works (not for a good model).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import queue
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

import jnst.fetch as fetch
from jnst.errors import JnstError
from jnst.images import _to_rgb

SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class Photos:
  """train, held: readable image files (held-back photos are never trained on);
  skipped: (file, reason) of the files that could not be read."""
  train: tuple[Path, ...]
  held: tuple[Path, ...]
  skipped: tuple[tuple[str, str], ...]


def _header(path: Path) -> str | None:
  """None if ``path`` opens as an image (header only), else why not."""
  try:
    with Image.open(path) as im:
      if min(im.size) < 1:
        return "empty image"
    return None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    return f"{type(e).__name__}: {e}"[:120]


def scan(data_dir, hold_out: int = 2, log: Callable[[str], None] | None = None) -> Photos:
  """The image files under ``data_dir`` (recursively, by suffix), each header checked;
  ``hold_out`` of them (every k-th of the sorted list) kept back for samples, at least one
  left for training. JnstError if there is no readable image."""
  root = Path(data_dir)
  if not root.is_dir():
    raise JnstError(f"--data_dir={root} is not a directory: give a folder of photos")
  files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
  if not files:
    raise JnstError(f"--data_dir={root} has no image files ({', '.join(SUFFIXES)}): give a "
                    f"folder of photos")
  good, skipped = [], []
  for p in files:
    why = _header(p)
    (skipped.append((str(p), why)) if why else good.append(p))
  if not good:
    raise JnstError(f"none of the {len(files)} image files in {root} is readable (e.g. "
                    f"{skipped[0][0]}: {skipped[0][1]}): give a folder of photos")
  if skipped and log:
    log(f"skipped {len(skipped)} unreadable file(s) of {len(files)} in {root}: "
        + ", ".join(Path(p).name for p, _ in skipped[:5]) + (" …" if len(skipped) > 5 else ""))
  hold = min(hold_out, len(good) - 1)
  held = good[::max(1, len(good) // hold)][:hold] if hold > 0 else []
  train = [p for p in good if p not in held]
  return Photos(tuple(train), tuple(held), tuple(skipped))


def load_crop(path: Path, size: int, rng: np.random.Generator | None) -> np.ndarray:
  """A size×size float32 RGB [0, 1] crop of ``path``: shorter side resized to ``size``, then a
  random crop and flip from ``rng`` (None: centre crop, no flip). Raises OSError and the like
  for an unreadable file."""
  with Image.open(path) as im:
    im.draft("RGB", (size, size))
    im = _to_rgb(ImageOps.exif_transpose(im))
  w, h = im.size
  scale = size / min(w, h)
  im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
  a = np.asarray(im, np.float32) / 255.0
  h, w = a.shape[:2]
  if rng is None:
    y, x, flip = (h - size) // 2, (w - size) // 2, False
  else:
    y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    flip = rng.random() < 0.5
  a = a[y:y + size, x:x + size]
  return a[:, ::-1] if flip else a


class Loader:
  """Batches of steps ``start`` … ``stop - 1`` (module docstring), this process's slice
  [offset, offset + local) of each global batch of ``batch_size``, produced by a background
  thread into a queue of at most ``prefetch`` batches. Iterate for (B_local, size, size, 3)
  float32 arrays; ``skipped`` lists files that failed to decode; ``close()`` stops it."""

  def __init__(self, files, size: int, batch_size: int, seed: int, start: int, stop: int, *,
               offset: int = 0, local: int | None = None, prefetch: int = 4, workers: int = 4,
               log: Callable[[str], None] | None = None):
    self.files, self.size, self.batch_size, self.seed = list(files), size, batch_size, seed
    self.offset, self.local = offset, local or batch_size
    self.skipped: list[tuple[str, str]] = []
    self.log, self._perms, self._lock = log, {}, threading.Lock()
    self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
    self._stop = threading.Event()
    self._pool = concurrent.futures.ThreadPoolExecutor(workers)
    self._thread = threading.Thread(target=self._produce, args=(start, stop), daemon=True)
    self._thread.start()

  def _file(self, pos: int) -> Path:
    n = len(self.files)
    epoch = pos // n
    with self._lock:
      if epoch not in self._perms:
        self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
        self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(n)
      return self.files[self._perms[epoch][pos % n]]

  def item(self, step: int, j: int) -> np.ndarray:
    path = self._file(step * self.batch_size + j)
    for attempt in range(10):
      try:
        return load_crop(path, self.size, np.random.default_rng([self.seed, step, j, attempt]))
      except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        self.skipped.append((str(path), f"{type(e).__name__}: {e}"[:120]))
        if self.log:
          self.log(f"skipped unreadable {path} ({self.skipped[-1][1]})")
        rng = np.random.default_rng([self.seed, step, j, attempt, 1])
        path = self.files[int(rng.integers(len(self.files)))]
    raise JnstError(f"10 files in a row failed to decode at step {step}: check --data_dir")

  def batch(self, step: int) -> np.ndarray:
    """This process's slice of step ``step``'s batch (synchronous)."""
    js = range(self.offset, self.offset + self.local)
    return np.stack(list(self._pool.map(lambda j: self.item(step, j), js)))

  def _produce(self, start, stop):
    try:
      for s in range(start, stop):
        b = self.batch(s)
        while not self._stop.is_set():
          try:
            self._queue.put(b, timeout=0.1)
            break
          except queue.Full:
            pass
        if self._stop.is_set():
          return
    except BaseException as e:  # Handed to the consumer, which raises it.
      self._queue.put(e)

  def __iter__(self):
    return self

  def __next__(self) -> np.ndarray:
    b = self._queue.get()
    if isinstance(b, BaseException):
      raise b
    return b

  def close(self) -> None:
    self._stop.set()
    self._thread.join(timeout=5)
    self._pool.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------- demo data

_WHEEL_ARGS = ("--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64",
               "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312")
DEMO_REQUIREMENT = "scikit-image==0.26.0"
# Colour photos in skimage/data/ of that wheel (public domain or CC0; scikit-image's data
# credits): member name -> sha256.
DEMO_PHOTOS = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    "motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
    "motorcycle_right.png": "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797",
    "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
}


def demo_photos(log=fetch.stderr_log) -> Path:
  """A folder of the demo photos (``fetch.cache_dir()/skimage-photos``), fetched with one
  wheel download the first time, each checksum-verified."""
  out = fetch.cache_dir() / "skimage-photos"
  missing = [n for n, h in DEMO_PHOTOS.items()
             if not (out / n).is_file() or fetch.sha256(out / n) != h]
  if missing:
    with tempfile.TemporaryDirectory(prefix="jnst-pip-") as tmp:
      wheel = fetch.pip_download(DEMO_REQUIREMENT, tmp, _WHEEL_ARGS, log)
      for n in missing:
        fetch.extract_member(wheel, f"skimage/data/{n}", out / n, DEMO_PHOTOS[n])
    log(f"  extracted {len(missing)} demo photos to {out}")
  return out
