"""Our network-weights file: HDF5, one group per layer, written atomically; knows no backbone.

Layout (``jnst_format = 1``; weights/README.md)::

  /<layer>/<array>   e.g. /conv1_1/kernel (3, 3, Cin, Cout), /conv1_1/bias (Cout,)
  root attributes:   jnst_format = 1, arch (the backbone's name), source, source_sha256,
                     input_convention, input_mean, input_std, credit, ...

The backbone that owns a file (``jnst.backbones.get(attrs["arch"])``) says which layers and
shapes it needs (``read(..., expected=...)``) and what the attributes mean; this module
only writes, reads and checks. ``ensure`` makes a default file once with a backbone's
fetch-and-convert function.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import h5py
import numpy as np

from jnst.errors import JnstError
from jnst.fetch import Log, cache_dir, stderr_log
from jnst.records import atomic_path

FORMAT_VERSION = 1
STORAGE_DTYPES = ("float32", "float16")

Arrays = Mapping[str, Mapping[str, np.ndarray]]  # layer -> {array name -> array}


def default_path(file_name: str, env: str | None = None) -> Path:
  """Where a converted file lives by default: ``$env`` if set, else the repo's weights/
  folder (a source checkout), else ``<cache_dir>/file_name``."""
  if env and os.environ.get(env):
    return Path(os.environ[env])
  repo_weights = Path(__file__).resolve().parent.parent / "weights"
  if (repo_weights / "README.md").is_file():
    return repo_weights / file_name
  return cache_dir() / file_name


def check_storage_dtype(dtype: str) -> str:
  if dtype not in STORAGE_DTYPES:
    raise JnstError(f"unsupported storage dtype {dtype!r}: use float32 or float16")
  return dtype


def check_shapes(shapes: Mapping[str, Mapping[str, tuple]],
                 expected: Mapping[str, Mapping[str, tuple]], where: str, what: str) -> None:
  """Raises JnstError naming the first missing layer/array or wrong shape."""
  for layer, arrays in expected.items():
    for name, shape in arrays.items():
      got = shapes.get(layer, {}).get(name)
      if got is None:
        raise JnstError(f"{where}: layer {layer} ({name}) is missing; the file is incomplete "
                        f"or not {what} weights — re-fetch or re-convert it")
      if tuple(got) != tuple(shape):
        raise JnstError(f"{where}: layer {layer} has {name} {tuple(got)}, expected "
                        f"{tuple(shape)}; re-fetch or re-convert the weights")


def write(dst, arrays: Arrays, attrs: Mapping, *, storage_dtype: str = "float32") -> Path:
  """Writes our file atomically: ``arrays`` layer -> {name: array} (cast to
  ``storage_dtype``), ``attrs`` as root attributes (``jnst_format`` is added)."""
  check_storage_dtype(storage_dtype)
  with atomic_path(dst) as tmp:
    with h5py.File(tmp, "w") as f:
      f.attrs.update({"jnst_format": FORMAT_VERSION, **attrs})
      for layer, named in arrays.items():
        g = f.create_group(layer)
        for name, a in named.items():
          g.create_dataset(name, data=np.asarray(a, storage_dtype))
  return Path(dst)


def open_h5(path, what: str) -> h5py.File:
  """Opens any HDF5 file for reading, or raises JnstError saying what to do."""
  path = Path(path)
  if not path.is_file():
    raise JnstError(f"{what} {path} does not exist: give an existing file or run "
                    f"scripts/fetch_weights.py")
  try:
    return h5py.File(path, "r")
  except OSError:
    raise JnstError(f"{what} {path} is not a readable HDF5 file (truncated or wrong "
                    f"format): delete it and fetch or convert it again") from None


def read_attrs(path) -> dict:
  """The root attributes of one of our files (strings decoded); checks ``jnst_format``."""
  with open_h5(path, "weights file") as f:
    return _attrs(f, path)


def _attrs(f: h5py.File, path) -> dict:
  attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
  if attrs.get("jnst_format") != FORMAT_VERSION:
    raise JnstError(f"{path} is not a jnst weights file (no jnst_format={FORMAT_VERSION} "
                    f"attribute): convert it with scripts/fetch_weights.py")
  return attrs


def read(path, expected: Callable[[dict], Mapping[str, Mapping[str, tuple]]] | None = None,
         what: str = "these") -> tuple[dict[str, dict[str, np.ndarray]], dict]:
  """Reads and checks our file: ({layer: {name: array as stored}}, attrs).

  ``expected(attrs)`` gives the layer -> {name: shape} the file must hold (the owning
  backbone's, chosen by the file's ``arch``); every one is checked before any is read.
  """
  with open_h5(path, "weights file") as f:
    attrs = _attrs(f, path)
    shapes = {k: {n: d.shape for n, d in g.items() if isinstance(d, h5py.Dataset)}
              for k, g in f.items() if isinstance(g, h5py.Group)}
    if expected is not None:
      check_shapes(shapes, expected(attrs), str(path), what)
    try:
      arrays = {k: {n: f[k][n][()] for n in names} for k, names in shapes.items()}
    except OSError:
      raise JnstError(f"{path} is truncated or corrupt: delete it and fetch or convert it "
                      f"again") from None
  return arrays, attrs


def ensure(path, default: Path, make: Callable[[Path], Path], log: Log = stderr_log) -> Path:
  """A usable file: ``path`` if given (it must exist), else ``default``, made once with
  ``make(default)`` if it is missing."""
  if path is not None:
    path = Path(path)
    if not path.is_file():
      raise JnstError(f"weights file {path} does not exist: run scripts/fetch_weights.py "
                      f"--output={path}, or omit --weights to use the default")
    return path
  if not default.is_file():
    log(f"weights {default} not found; fetching and converting them once")
    make(default)
  return default
