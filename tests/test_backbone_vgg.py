"""jnst.backbones.vgg against an independent float64 NumPy forward pass, and the backbone
registry (jnst.backbones.get)."""

import dataclasses

import jax
import numpy as np
import pytest

import jnst.backbones as backbones
from jnst import records
from jnst.backbones import vgg, winograd
from jnst.errors import JnstError
from tests import numpy_vgg

ALL_LAYERS = vgg.VGG19.layer_names


def rel_err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / (np.max(np.abs(b)) + 1e-30))


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_extract_matches_numpy_reference(random_params, pooling):
  rgb = np.random.default_rng(1).uniform(size=(1, 32, 32, 3)).astype(np.float32)
  ref = numpy_vgg.forward(random_params, rgb, pooling)
  got = vgg.VGG19.with_options(pooling=pooling).extract(random_params, rgb, ALL_LAYERS)
  assert set(got) == set(ALL_LAYERS)
  for name in ALL_LAYERS:
    assert got[name].shape == ref[name].shape, name
    assert rel_err(got[name], ref[name]) < 1e-5, name


def test_features_take_preprocessed_input(random_params):
  """features(x) is the network on input-space x: extract(rgb) = features(preprocess(rgb))."""
  rgb = np.random.default_rng(6).uniform(size=(1, 16, 16, 3)).astype(np.float32)
  ref = numpy_vgg.forward(random_params, rgb)
  x = vgg.VGG19.preprocess(random_params, rgb)
  got = vgg.VGG19.features(random_params, x, ["relu2_1"])
  assert rel_err(got["relu2_1"], ref["relu2_1"]) < 1e-5
  # The Flax module on its own computes the same.
  net = vgg.VGGNet(("relu2_1",), vgg.ARCHS["vgg19"], "max", "float32")
  direct = net.apply({"params": random_params["conv"]}, x)
  np.testing.assert_array_equal(direct["relu2_1"], got["relu2_1"])


def test_extract_stops_at_deepest_requested_layer(random_params):
  x = np.zeros((1, 16, 16, 3), np.float32)
  jaxpr = jax.make_jaxpr(lambda im: vgg.VGG19.extract(random_params, im, ["relu2_1"]))(x)
  n_convs = str(jaxpr).count("conv_general_dilated")
  assert n_convs == 3  # conv1_1, conv1_2, conv2_1


def test_real_weights_match_numpy_reference(real_params):
  rgb = np.random.default_rng(2).uniform(size=(1, 64, 64, 3)).astype(np.float32)
  layers = [f"relu{b}_1" for b in range(1, 6)]
  ref = numpy_vgg.forward(real_params, rgb)
  got = vgg.VGG19.extract(real_params, rgb, layers)
  for name in layers:
    assert rel_err(got[name], ref[name]) < 1e-5, name


def test_real_weights_respond_to_images(real_params):
  """Real ImageNet filters: relu5_1 differs between a structured image and flat grey."""
  yy, xx = np.mgrid[:64, :64] / 64.0
  stripes = np.stack([np.sin(20 * xx), np.cos(13 * yy), xx * yy], -1)[None] * 0.5 + 0.5
  grey = np.full((1, 64, 64, 3), 0.5)
  a = vgg.VGG19.extract(real_params, stripes, ["relu5_1"])["relu5_1"]
  b = vgg.VGG19.extract(real_params, grey, ["relu5_1"])["relu5_1"]
  assert float(np.abs(a - b).mean()) > 0.1 * float(np.abs(a).mean())


def test_preprocess_roundtrip_and_caffe_convention(random_params):
  rgb = np.random.default_rng(3).uniform(size=(2, 4, 4, 3)).astype(np.float32)
  x = vgg.VGG19.preprocess(random_params, rgb)
  np.testing.assert_allclose(x, rgb * 255 - np.array([123.68, 116.779, 103.939]), atol=1e-3)
  np.testing.assert_allclose(vgg.VGG19.deprocess(random_params, x), rgb, atol=1e-5)
  # Caffe input: one input-space step is one 0-255 RGB step.
  np.testing.assert_allclose(vgg.VGG19.pixel_scale(random_params), np.ones(3), rtol=1e-6)


def test_unknown_layer_lists_valid_names(random_params):
  with pytest.raises(ValueError, match=r"'relu9_9'.*valid names: conv1_1, relu1_1"):
    vgg.VGG19.extract(random_params, np.zeros((1, 8, 8, 3)), ["relu9_9"])
  with pytest.raises(JnstError, match=r"'conv3_4'"):
    vgg.VGG16.validate_layers(["relu1_1", "conv3_4"])
  assert vgg.VGG19.validate_layers(["pool5", "conv1_1"]) == ("pool5", "conv1_1")


@pytest.mark.parametrize("spec,expected", [
    ("relu4_2", ("relu4_2",)),
    ("block3", ("relu3_1", "relu3_2", "relu3_3", "relu3_4")),
    ("relu1_1, block2,relu1_1", ("relu1_1", "relu2_1", "relu2_2")),
    (["pool5", "conv1_1"], ("pool5", "conv1_1")),
])
def test_expand_layers(spec, expected):
  assert vgg.VGG19.expand_layers(spec) == expected


@pytest.mark.parametrize("spec", ["block6", "relu1_3", "", " , "])
def test_expand_layers_rejects(spec):
  with pytest.raises(JnstError):
    vgg.VGG19.expand_layers(spec)


def test_expand_layers_per_arch():
  """blockN expands to the convs of that arch's block."""
  assert vgg.VGG16.expand_layers("block3") == ("relu3_1", "relu3_2", "relu3_3")
  with pytest.raises(JnstError):
    vgg.VGG16.expand_layers("relu4_4")


def test_vgg16_is_a_config():
  params = vgg.VGG16.init_random(jax.random.key(1))
  assert vgg.arch_of(params) is vgg.ARCHS["vgg16"]
  rgb = np.random.default_rng(4).uniform(size=(1, 32, 32, 3)).astype(np.float32)
  ref = numpy_vgg.forward(params, rgb, convs_per_block=(2, 2, 3, 3, 3))
  got = vgg.VGG16.extract(params, rgb, vgg.VGG16.layer_names)
  for name in vgg.VGG16.layer_names:
    assert rel_err(got[name], ref[name]) < 1e-5, name
  assert "conv3_4" not in vgg.VGG16.layer_names


@pytest.mark.parametrize("name", ["vgg19", "vgg16"])
def test_init_random_has_the_file_layout(name):
  """Flax-initialised params have exactly the arch's kernel/bias shapes, He-scaled kernels,
  and ``scale`` multiplies the kernels only."""
  bb = backbones.get(name)
  key = jax.random.key(2)
  params = bb.init_random(key)
  shapes = {n: {k: tuple(v.shape) for k, v in c.items()} for n, c in params["conv"].items()}
  assert shapes == bb.arch.file_shapes()
  assert vgg.arch_of(params) is bb.arch
  k = np.asarray(params["conv"]["conv3_1"]["kernel"])
  assert 0.5 < k.std() / np.sqrt(2.0 / (9 * 128)) < 1.5  # He-normal: var 2 / fan_in
  half = bb.init_random(key, scale=0.5)
  for n, c in params["conv"].items():
    np.testing.assert_allclose(half["conv"][n]["kernel"], 0.5 * np.asarray(c["kernel"]),
                               rtol=1e-6)
    np.testing.assert_array_equal(half["conv"][n]["bias"], c["bias"])
  np.testing.assert_array_equal(params["input"]["mean"], vgg.caffe_input()["mean"])


def test_bfloat16_compute_is_close(random_params):
  rgb = np.random.default_rng(5).uniform(size=(1, 32, 32, 3)).astype(np.float32)
  a = vgg.VGG19.extract(random_params, rgb, ["relu3_1"])["relu3_1"]
  bf16 = vgg.VGG19.with_options(compute_dtype="bfloat16")
  b = bf16.extract(random_params, rgb, ["relu3_1"])["relu3_1"]
  assert b.dtype == np.float32
  assert rel_err(b, np.asarray(a, np.float64)) < 0.05
  assert rel_err(b, np.asarray(a, np.float64)) > 0  # It did compute in bfloat16.


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_precomputed_grad_kernels_give_the_same_gradient(random_params, dtype):
  bb = vgg.VGG19.with_options(compute_dtype=dtype, conv="direct")  # Winograd: test_winograd.
  prepared = bb.prepare(random_params)
  assert set(prepared["grad_kernels"]) == set(random_params["conv"])
  assert prepared["conv"] is random_params["conv"]  # The plain params are kept as they are.
  k = random_params["conv"]["conv2_1"]["kernel"]
  assert prepared["grad_kernels"]["conv2_1"].shape == (3, 3, k.shape[3], k.shape[2])
  np.testing.assert_array_equal(prepared["grad_kernels"]["conv2_1"], vgg.grad_kernel(k))
  x = bb.preprocess(random_params, np.random.default_rng(0).uniform(size=(1, 16, 20, 3)))
  x = np.asarray(x, np.float32)

  def loss(p, x):
    f = bb.features(p, x, ["relu1_2", "relu3_1"])
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


# ---------------------------------------------------------------- the registry


@pytest.mark.parametrize("name,arch", [("vgg19", "vgg19"), ("vgg16", "vgg16")])
def test_get_finds_backbones_by_name(name, arch):
  bb = backbones.get(name)
  assert bb.arch == vgg.ARCHS[arch] and bb.name == name
  assert bb == {"vgg19": vgg.VGG19, "vgg16": vgg.VGG16}[name]
  least = winograd.auto_min_channels(records.cpu_arch())  # This CPU's.
  assert bb.describe() == {"name": name, "pooling": "max", "compute_dtype": "float32",
                           "conv": "winograd", "winograd_min_channels": least}  # auto, on CPU.
  avg = backbones.get(name, pooling="avg", compute_dtype="bfloat16")
  assert (avg.pooling, avg.compute_dtype, avg.arch) == ("avg", "bfloat16", bb.arch)
  assert avg.describe() == {"name": name, "pooling": "avg", "compute_dtype": "bfloat16",
                            "conv": "winograd", "winograd_min_channels": least}
  assert name in backbones.NAMES


def test_backbones_are_hashable_values():
  """Backbones key the compile caches: equal options, equal and hashable; frozen."""
  a = backbones.get("vgg19", pooling="avg")
  b = vgg.VGG19.with_options(pooling="avg")
  assert a == b and hash(a) == hash(b) and a != vgg.VGG19
  assert len({a, b, vgg.VGG19, vgg.VGG16}) == 3
  with pytest.raises(dataclasses.FrozenInstanceError):
    a.pooling = "max"
  assert vgg.VGG19.with_options() == vgg.VGG19  # None keeps every option.
  assert vgg.VGG19.default_content_layers == ("relu4_2",)
  assert vgg.VGG19.default_style_layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


@pytest.mark.parametrize("name,options,match", [
    ("vgg11", {}, "unknown backbone 'vgg11'.*vgg19, vgg16"),
    ("resnet18", {"pooling": "avg"}, "unknown backbone .resnet18.*resnet50"),
    ("vgg19", {"pooling": "min"}, "unknown pooling 'min'"),
    ("vgg16", {"compute_dtype": "float16"}, "unknown compute dtype 'float16'"),
])
def test_get_rejects_unknown_names_and_options(name, options, match):
  with pytest.raises(JnstError, match=match):
    backbones.get(name, **options)
