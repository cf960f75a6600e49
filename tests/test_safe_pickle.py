"""jnst.safe_pickle: NumPy arrays in dicts come back; any other global is refused before it
runs; truncated pickles are one clear error."""

import builtins
import os
import pickle
import subprocess

import numpy as np
import pytest

from jnst import safe_pickle
from jnst.errors import JnstError

TREE = {"VGG16_0": {"Conv_0": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1),
                               "bias": np.ones(1, np.float32)}},
        "other": [np.zeros((2, 2), np.float64), np.arange(3), np.array([True])],
        "meta": {"name": "x", "n": 3, "f": 1.5, "none": None}}


def assert_same(a, b):
  if isinstance(a, dict):
    assert set(a) == set(b)
    for k in a:
      assert_same(a[k], b[k])
  elif isinstance(a, (list, tuple)):
    assert len(a) == len(b)
    for x, y in zip(a, b):
      assert_same(x, y)
  elif isinstance(a, np.ndarray):
    assert type(b) is np.ndarray and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  else:
    assert a == b


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_arrays_in_dicts_round_trip(protocol, tmp_path):
  data = pickle.dumps(TREE, protocol=protocol)
  assert_same(TREE, safe_pickle.loads(data))
  (tmp_path / "w.ckpt").write_bytes(data)
  assert_same(TREE, safe_pickle.load(tmp_path / "w.ckpt"))
  fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3))
  assert_same(fortran, safe_pickle.loads(pickle.dumps(fortran, protocol=protocol)))


class Shell:
  """A pickle that runs a shell command when loaded by plain pickle."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


class Eval:
  def __reduce__(self):
    return (builtins.eval, ("__import__('os').getpid()",))


class Popen:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (subprocess.Popen, (["touch", str(self.marker)],))


def test_plain_pickle_would_run_the_payload(tmp_path):
  """The payload is real: plain pickle.loads runs it (so the refusals below mean something)."""
  marker = tmp_path / "ran"
  pickle.loads(pickle.dumps(Shell(marker)))
  assert marker.exists()


@pytest.mark.parametrize("make,name", [
    (lambda m: Shell(m), "system"),
    (lambda m: Eval(), "builtins.eval"),
    (lambda m: Popen(m), "subprocess.Popen"),
    (lambda m: {"w": np.ones(2), "x": [Shell(m)]}, "system"),  # Hidden deep in a good tree.
    (lambda m: np.load, "numpy.load"),  # A NumPy global that is not array reconstruction.
    (lambda m: np.ma.masked_array([1.0, 2.0]), "numpy.ma"),  # An ndarray subclass.
    (lambda m: np.array([1, "a"], dtype=object), "only numeric dtypes"),
    (lambda m: np.zeros(2, dtype=[("a", "f4")]), "only numeric dtypes"),
])
def test_other_globals_are_refused_and_nothing_runs(tmp_path, make, name):
  marker = tmp_path / "ran"
  data = pickle.dumps(make(marker), protocol=3)
  with pytest.raises(JnstError, match=f"evil.ckpt is refused: it asks for .*{name}"):
    safe_pickle.loads(data, "evil.ckpt")
  assert not marker.exists()
  (tmp_path / "evil.ckpt").write_bytes(data)
  with pytest.raises(JnstError, match="is refused"):
    safe_pickle.load(tmp_path / "evil.ckpt")
  assert not marker.exists()


def test_protocol5_frombuffer_checks_its_dtype():
  """A protocol-5 reconstruction naming an object dtype by string is refused too."""
  with pytest.raises(safe_pickle.Refused, match="only numeric dtypes"):
    safe_pickle._frombuffer(b"\0" * 8, "O", (1,), "C")
  np.testing.assert_array_equal(safe_pickle._frombuffer(b"\0" * 8, "<f4", (2,), "C"),
                                np.zeros(2, np.float32))


@pytest.mark.parametrize("cut", [1, 10, 0.5, -1])
def test_truncated_pickles(cut):
  data = pickle.dumps(TREE, protocol=3)
  n = int(len(data) * cut) if isinstance(cut, float) else cut % len(data)
  with pytest.raises(JnstError, match="w.ckpt is truncated or not a pickle of NumPy arrays"):
    safe_pickle.loads(data[:n], "w.ckpt")


def test_not_a_pickle_and_missing_file(tmp_path):
  with pytest.raises(JnstError, match="truncated or not a pickle"):
    safe_pickle.loads(b"PK\x03\x04 a zip, not a pickle")
  with pytest.raises(JnstError, match="does not exist"):
    safe_pickle.load(tmp_path / "nope.ckpt")


def test_non_string_keys_are_refused():
  with pytest.raises(JnstError, match="holds more than NumPy arrays"):
    safe_pickle.loads(pickle.dumps({1: np.ones(1)}))
