"""jnst.vgg against an independent float64 NumPy forward pass."""

import jax
import numpy as np
import pytest

from jnst import vgg
from jnst.errors import JnstError
from tests import numpy_vgg

ALL_LAYERS = vgg.VGG19.layer_names


def rel_err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / (np.max(np.abs(b)) + 1e-30))


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_extract_matches_numpy_reference(random_params, pooling):
  rgb = np.random.default_rng(1).uniform(size=(1, 32, 32, 3)).astype(np.float32)
  ref = numpy_vgg.forward(random_params, rgb, pooling)
  got = vgg.extract(random_params, rgb, ALL_LAYERS, pooling=pooling)
  assert set(got) == set(ALL_LAYERS)
  for name in ALL_LAYERS:
    assert got[name].shape == ref[name].shape, name
    assert rel_err(got[name], ref[name]) < 1e-5, name


def test_extract_stops_at_deepest_requested_layer(random_params):
  x = np.zeros((1, 16, 16, 3), np.float32)
  jaxpr = jax.make_jaxpr(lambda im: vgg.extract(random_params, im, ["relu2_1"]))(x)
  n_convs = str(jaxpr).count("conv_general_dilated")
  assert n_convs == 3  # conv1_1, conv1_2, conv2_1


def test_real_weights_match_numpy_reference(real_params):
  rgb = np.random.default_rng(2).uniform(size=(1, 64, 64, 3)).astype(np.float32)
  layers = [f"relu{b}_1" for b in range(1, 6)]
  ref = numpy_vgg.forward(real_params, rgb)
  got = vgg.extract(real_params, rgb, layers)
  for name in layers:
    assert rel_err(got[name], ref[name]) < 1e-5, name


def test_real_weights_respond_to_images(real_params):
  """Real ImageNet filters: relu5_1 differs between a structured image and flat grey."""
  yy, xx = np.mgrid[:64, :64] / 64.0
  stripes = np.stack([np.sin(20 * xx), np.cos(13 * yy), xx * yy], -1)[None] * 0.5 + 0.5
  grey = np.full((1, 64, 64, 3), 0.5)
  a = vgg.extract(real_params, stripes, ["relu5_1"])["relu5_1"]
  b = vgg.extract(real_params, grey, ["relu5_1"])["relu5_1"]
  assert float(np.abs(a - b).mean()) > 0.1 * float(np.abs(a).mean())


def test_preprocess_roundtrip_and_caffe_convention(random_params):
  rgb = np.random.default_rng(3).uniform(size=(2, 4, 4, 3)).astype(np.float32)
  x = vgg.preprocess(random_params, rgb)
  np.testing.assert_allclose(x, rgb * 255 - np.array([123.68, 116.779, 103.939]), atol=1e-3)
  np.testing.assert_allclose(vgg.deprocess(random_params, x), rgb, atol=1e-5)


def test_unknown_layer_lists_valid_names(random_params):
  with pytest.raises(ValueError, match=r"'relu9_9'.*valid names: conv1_1, relu1_1"):
    vgg.extract(random_params, np.zeros((1, 8, 8, 3)), ["relu9_9"])


@pytest.mark.parametrize("spec,expected", [
    ("relu4_2", ("relu4_2",)),
    ("block3", ("relu3_1", "relu3_2", "relu3_3", "relu3_4")),
    ("relu1_1, block2,relu1_1", ("relu1_1", "relu2_1", "relu2_2")),
    (["pool5", "conv1_1"], ("pool5", "conv1_1")),
])
def test_expand_layers(spec, expected):
  assert vgg.expand_layers(spec) == expected


@pytest.mark.parametrize("spec", ["block6", "relu1_3", "", " , "])
def test_expand_layers_rejects(spec):
  with pytest.raises(JnstError):
    vgg.expand_layers(spec)


def test_vgg16_is_a_config(random_params):
  params = vgg.init_random(jax.random.key(1), vgg.VGG16)
  rgb = np.random.default_rng(4).uniform(size=(1, 32, 32, 3)).astype(np.float32)
  ref = numpy_vgg.forward(params, rgb, convs_per_block=(2, 2, 3, 3, 3))
  got = vgg.extract(params, rgb, vgg.VGG16.layer_names)
  for name in vgg.VGG16.layer_names:
    assert rel_err(got[name], ref[name]) < 1e-5, name
  assert "conv3_4" not in vgg.VGG16.layer_names


def test_bfloat16_compute_is_close(random_params):
  rgb = np.random.default_rng(5).uniform(size=(1, 32, 32, 3)).astype(np.float32)
  a = vgg.extract(random_params, rgb, ["relu3_1"])["relu3_1"]
  b = vgg.extract(random_params, rgb, ["relu3_1"], dtype="bfloat16")["relu3_1"]
  assert b.dtype == np.float32
  assert rel_err(b, np.asarray(a, np.float64)) < 0.05


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_precomputed_grad_kernels_give_the_same_gradient(random_params, dtype):
  prepared = vgg.with_grad_kernels(random_params)
  assert set(prepared["grad_kernels"]) == set(random_params["conv"])
  k = random_params["conv"]["conv2_1"]["kernel"]
  assert prepared["grad_kernels"]["conv2_1"].shape == (3, 3, k.shape[3], k.shape[2])
  x = vgg.preprocess(random_params, np.random.default_rng(0).uniform(size=(1, 16, 20, 3)))
  x = np.asarray(x, np.float32)

  def loss(p, x):
    f = vgg.features(p, x, ["relu1_2", "relu3_1"], dtype=dtype)
    return sum(np.float32(i + 1) * jax.numpy.sum(v ** 2) for i, v in enumerate(f.values()))

  a = jax.grad(loss, argnums=1)(random_params, x)
  b = jax.grad(loss, argnums=1)(prepared, x)
  assert np.abs(np.asarray(a)).max() > 0
  np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * np.abs(np.asarray(a)).max())
  # A wrong grad kernel must show up in the gradient (the test can fail).
  broken = {**prepared, "grad_kernels": {**prepared["grad_kernels"],
                                         "conv1_1": 2 * prepared["grad_kernels"]["conv1_1"]}}
  c = jax.grad(loss, argnums=1)(broken, x)
  np.testing.assert_allclose(c, 2 * np.asarray(a), rtol=1e-4,
                             atol=1e-6 * np.abs(np.asarray(a)).max())
