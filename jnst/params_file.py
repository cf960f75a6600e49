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
from jnst.records import atomic_path, check_input_file, describe, ensure_writable

FORMAT_VERSION = 1
STORAGE_DTYPES = ("float32", "float16")

Arrays = Mapping[str, Mapping[str, np.ndarray]]  # layer -> {array name -> array}


def default_path(file_name: str, env: str | None = None) -> Path:
  """Where a converted file lives by default: ``$env`` if set, else the repo's weights/
  folder (a source checkout), else ``<cache_dir>/file_name``.

  ``$env`` must name an existing weights file, or a new ``.h5`` file in a writable place
  (made there once by ``ensure``); anything else (a directory, a FIFO, a path
  under a missing directory) is a JnstError, never a conversion into it."""
  if env and env in os.environ:
    value = os.environ[env]
    path = Path(value)
    kind = describe(path) if value else "empty"
    if kind == "a file":
      return path
    if kind == "missing" and path.suffix == ".h5" and not value.endswith(os.sep):
      ensure_writable(path)  # Made there once by ``ensure``: its directory must be usable.
      return path
    where = (f"is {kind}" if kind not in ("missing", "empty") else "names no existing file "
             "and no new .h5 file" if kind == "missing" else "is set but empty")
    raise JnstError(f"{env}={value!r} {where}: point it at a weights file (e.g. "
                    f"weights/vgg19.h5), or unset it to use the default")
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
  path = check_input_file(path, what, "give an existing file or run "
                          "scripts/fetch_weights.py")
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


_FIX = "re-fetch or re-convert it (scripts/fetch_weights.py --force)"


def check_attrs(attrs: Mapping, spec: Mapping[str, object], where: str) -> None:
  """Raises JnstError naming the first attribute of ``spec`` that is missing or wrong.

  ``spec``: name -> ``str`` (a string), or a shape tuple (a finite numeric array of that
  shape), or a (shape, "positive") pair (finite and > 0)."""
  for name, want in spec.items():
    if name not in attrs:
      raise JnstError(f"{where}: root attribute {name!r} is missing: {_FIX}")
    value = attrs[name]
    if want is str:
      if not isinstance(value, str):
        raise JnstError(f"{where}: attribute {name!r} must be a string, got "
                        f"{type(value).__name__}: {_FIX}")
      continue
    pair = isinstance(want, tuple) and want and isinstance(want[0], tuple)
    shape, positive = want if pair else (want, None)
    a = np.asarray(value)
    if a.dtype.kind not in "fiu" or a.shape != tuple(shape):
      raise JnstError(f"{where}: attribute {name!r} must be numbers of shape {tuple(shape)}, "
                      f"got {a.dtype} {a.shape}: {_FIX}")
    if not np.all(np.isfinite(a)) or (positive and not np.all(a > 0)):
      raise JnstError(f"{where}: attribute {name!r} holds {a.tolist()}, not finite"
                      f"{' positive' if positive else ''} numbers: {_FIX}")


def read(path, expected: Callable[[dict], Mapping[str, Mapping[str, tuple]]] | None = None,
         what: str = "these", attrs_spec: Mapping[str, object] | None = None
         ) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
  """Reads and checks our file: ({layer: {name: array as stored}}, attrs).

  ``expected(attrs)`` gives the layer -> {name: shape} the file must hold (the owning
  backbone's, chosen by the file's ``arch``); every one is checked before any is read.
  ``attrs_spec``: the root attributes the owner needs (``check_attrs``). Every dataset read
  must be floating point and finite; JnstError names the file, the layer and the fix.
  """
  with open_h5(path, "weights file") as f:
    attrs = _attrs(f, path)
    if attrs_spec is not None:
      check_attrs(attrs, attrs_spec, str(path))
    groups = {k: g for k, g in f.items() if isinstance(g, h5py.Group)}
    shapes = {k: {n: d.shape for n, d in g.items() if isinstance(d, h5py.Dataset)}
              for k, g in groups.items()}
    if expected is not None:
      check_shapes(shapes, expected(attrs), str(path), what)
    arrays = {}
    for k, names in shapes.items():
      arrays[k] = {}
      for n in names:
        d = groups[k][n]
        if d.dtype.kind != "f":
          raise JnstError(f"{path}: {k}/{n} holds {d.dtype} data, not floating point: {_FIX}")
        try:
          a = d[()]
        except OSError:
          raise JnstError(f"{path} is truncated or corrupt at {k}/{n}: {_FIX}") from None
        if not np.all(np.isfinite(a)):
          raise JnstError(f"{path}: {k}/{n} holds NaN or infinite values: {_FIX}")
        arrays[k][n] = a
  return arrays, attrs


def ensure(path, default: Path | None, make: Callable[[Path], Path],
           log: Log = stderr_log) -> Path:
  """A usable file: ``path`` if given (it must exist), else ``default``, made once with
  ``make(default)`` if it is missing (``default`` is only looked at without ``path``)."""
  if path is not None:
    return check_input_file(path, "weights file", f"run scripts/fetch_weights.py "
                            f"--output={path}, or omit --weights to use the default")
  if not default.is_file():
    log(f"weights {default} not found; fetching and converting them once")
    make(default)
  return default


def read_torch_state(src, fallback: str = "--keras_h5") -> tuple[Mapping, str]:
  """(state dict, sha256) of a PyTorch ``.pth`` file, read with ``torch.load(weights_only=True)``
  (no arbitrary unpickling). Needs torch; ``fallback`` names what to use without it."""
  try:
    import torch
  except ImportError:
    raise JnstError(f"converting a .pth file needs PyTorch: pip install torch (CPU build is "
                    f"enough), or use {fallback}") from None
  from jnst.fetch import sha256
  src = check_input_file(src, "torch weights file", "give an existing .pth file")
  digest = sha256(src)
  try:
    state = torch.load(src, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for a bad file.
    raise JnstError(f"{src} is not a readable PyTorch state dict ({type(e).__name__}): "
                    f"get a fresh copy") from None
  if not isinstance(state, Mapping):
    raise JnstError(f"{src} holds a {type(state).__name__}, not a state dict: save "
                    f"model.state_dict() instead")
  return state, digest
