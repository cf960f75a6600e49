"""Winograd F(4x4, 3x3) convs (``jnst.backbones.winograd``) and VGG's use of them: the conv
equals ``lax.conv_general_dilated`` (float64: to rounding; float32: to ~1e-5), its custom
VJP gives the direct conv's input and kernel gradients, ``VGG.prepare`` transforms exactly
the eligible convs up to the deepest layer, and features / loss gradients of a whole VGG
match the direct convs'."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnst import backbones, records
from jnst.backbones import vgg, winograd
from jnst.errors import JnstError

_DN = ("NHWC", "HWIO", "NHWC")


def _direct(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DN)


@pytest.mark.parametrize("h,w", [(1, 1), (4, 4), (5, 7), (8, 12), (13, 6), (17, 9)])
def test_conv_matches_lax_in_float64(h, w):
  with jax.enable_x64():
    x = jax.random.normal(jax.random.key(0), (2, h, w, 3), jnp.float64)
    k = jax.random.normal(jax.random.key(1), (3, 3, 3, 5), jnp.float64)
    got = winograd.conv(x, winograd.transform_kernel(k))
    assert got.shape == (2, h, w, 5) and got.dtype == jnp.float64
    np.testing.assert_allclose(got, _direct(x, k), rtol=1e-10, atol=1e-10)


def test_conv_float32_error_is_small():
  x = jax.nn.relu(jax.random.normal(jax.random.key(0), (1, 12, 20, 64)))
  k = jax.random.normal(jax.random.key(1), (3, 3, 64, 32)) / 24.0
  ref = _direct(x, k)
  err = jnp.abs(winograd.conv(x, winograd.transform_kernel(k)) - ref).max() / jnp.abs(ref).max()
  assert err < 1e-5


def test_conv3x3_with_winograd_has_the_direct_gradients():
  """Value, input gradient (through the grad kernel's transform) and kernel gradient of
  ``vgg.conv3x3(..., wino=...)`` against JAX's rule for the direct conv, float64; a wrong
  backward transform shows."""
  with jax.enable_x64():
    x = jax.random.normal(jax.random.key(0), (1, 9, 10, 4), jnp.float64)
    k = jax.random.normal(jax.random.key(1), (3, 3, 4, 6), jnp.float64)
    wino = (winograd.transform_kernel(k), winograd.transform_kernel(vgg.grad_kernel(k)))
    y_ref, vjp_ref = jax.vjp(_direct, x, k)
    y, vjp = jax.vjp(lambda x, k: vgg.conv3x3(x, k, None, wino), x, k)
    g = jax.random.normal(jax.random.key(2), y_ref.shape, jnp.float64)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    for got, want in zip(vjp(g), vjp_ref(g)):
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    wrong = (wino[0], winograd.transform_kernel(k.swapaxes(2, 3)))  # Not flipped.
    dx = jax.vjp(lambda x: vgg.conv3x3(x, k, None, wrong), x)[1](g)[0]
    assert not np.allclose(dx, vjp_ref(g)[0], rtol=1e-3)


@pytest.mark.parametrize("shape,want", [
    ((3, 3, 256, 256), True), ((3, 3, 256, 512), True), ((3, 3, 512, 256), True),
    ((3, 3, 128, 256), False), ((3, 3, 64, 512), False), ((1, 1, 512, 512), False),
])
def test_eligible(shape, want):
  assert winograd.eligible(shape) is want
  assert winograd.eligible(shape, winograd.MIN_CHANNELS) is want
  assert winograd.eligible(shape, 64) is (shape[:2] == (3, 3))  # Each has >= 64 channels.
  assert winograd.eligible(shape, 1024) is False


_ZEN3_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
flags\t\t: fpu sse2 avx avx2 fma bmi2
"""


@pytest.mark.parametrize("cpu,want", [
    ({"flags": ["avx2", "fma"]}, 128),  # AMD Zen 3 (measured), Intel before Skylake-SP.
    ({"flags": ["avx2", "fma", "avx512f", "avx512_bf16"]}, 256),  # Zen 4/5, Sapphire Rapids.
    ({"flags": ["fma"]}, 256),
    ({}, 256),  # Not x86, or no /proc/cpuinfo.
    (records.cpu_arch(_ZEN3_CPUINFO), 128),
])
def test_auto_min_channels_by_cpu(cpu, want):
  assert winograd.auto_min_channels(cpu) == want


def test_winograd_channels_option(vgg19_params):
  """``winograd_channels``: 0 follows this CPU; a value sets the threshold that ``prepare``
  uses and the record shows; bad values and non-VGG backbones are refused."""
  here = winograd.auto_min_channels(records.cpu_arch())
  assert vgg.VGG19.winograd_channels == 0 and vgg.VGG19.winograd_min_channels == here
  for least, n in [(64, 15), (128, 13), (256, 11), (512, 7), (1024, 0)]:
    bb = backbones.get("vgg19", conv="winograd", winograd_channels=least)
    assert bb.winograd_min_channels == least and bb.describe()["winograd_min_channels"] == least
    assert len(bb.prepare(vgg19_params).get("winograd", {})) == n, least
  assert "winograd_min_channels" not in backbones.get("vgg19", conv="direct",
                                                      winograd_channels=64).describe()
  assert backbones.get("vgg19", winograd_channels=0) == vgg.VGG19
  with pytest.raises(JnstError, match="winograd_channels must be an integer >= 0"):
    vgg.VGG19.with_options(winograd_channels=-1)
  with pytest.raises(JnstError, match="--winograd_channels is for the VGG backbones"):
    backbones.get("resnet50", winograd_channels=64)


def test_plain_params_use_the_same_convs_as_prepared_ones(vgg19_params):
  """From 64 channels conv1_2 is eligible at full resolution: on a 32x32 image plain params
  must be prepared inside ``features`` too (block 3's map, 8x8, is under MIN_PIXELS), so
  targets and the optimised image run the same convs."""
  bb = vgg.VGG19.with_options(winograd_channels=64)
  x = vgg.VGG19.preprocess(vgg19_params, np.random.default_rng(0).uniform(
      size=(1, 32, 32, 3)).astype(np.float32))
  layers = ("relu1_2", "relu2_1")
  prepared_params = bb.prepare(vgg19_params, layers)
  assert sorted(prepared_params["winograd"]) == ["conv1_2", "conv2_1"]
  for params in (vgg19_params, prepared_params):
    text = jax.jit(lambda x, p=params: bb.features(p, x, layers)).lower(x).compile().as_text()
    assert re.search(r'op_name="[^"]*winograd[/)]', text)
  plain = bb.features(vgg19_params, x, layers)
  direct = bb.with_options(conv="direct").features(vgg19_params, x, layers)
  for l in layers:
    np.testing.assert_allclose(plain[l], direct[l], atol=1e-5 * np.abs(direct[l]).max())


@pytest.fixture(scope="module")
def vgg19_params():
  return vgg.VGG19.init_random(jax.random.key(0))


@pytest.mark.parametrize("layers,want", [
    (None, ["conv3_2", "conv3_3", "conv3_4", "conv4_1", "conv4_2", "conv4_3", "conv4_4",
            "conv5_1", "conv5_2", "conv5_3", "conv5_4"]),
    (("relu3_1",), []),
    (("relu1_1", "relu4_2"), ["conv3_2", "conv3_3", "conv3_4", "conv4_1", "conv4_2"]),
    (("conv5_1",), ["conv3_2", "conv3_3", "conv3_4", "conv4_1", "conv4_2", "conv4_3",
                    "conv4_4", "conv5_1"]),
])
def test_prepare_transforms_the_eligible_convs_up_to_the_deepest_layer(vgg19_params, layers,
                                                                         want):
  bb = vgg.VGG19.with_options(conv="winograd", winograd_channels=256)
  prepared = bb.prepare(vgg19_params, layers)
  assert sorted(prepared.get("winograd", {})) == want
  assert set(prepared["grad_kernels"]) == set(vgg19_params["conv"])  # For maps under MIN_PIXELS.
  for n in want:
    k = vgg19_params["conv"][n]["kernel"]
    np.testing.assert_array_equal(prepared["winograd"][n]["fwd"], winograd.transform_kernel(k))
    np.testing.assert_array_equal(prepared["winograd"][n]["bwd"],
                                  winograd.transform_kernel(vgg.grad_kernel(k)))


def test_conv_option_resolves_and_is_recorded(vgg19_params):
  assert jax.default_backend() == "cpu"
  assert vgg.VGG19.conv == "auto" and vgg.VGG19.conv_algorithm == "winograd"
  assert vgg.VGG19.describe()["conv"] == "winograd"
  direct = backbones.get("vgg19", conv="direct")
  assert direct.describe()["conv"] == "direct"
  assert "winograd" not in direct.prepare(vgg19_params)
  assert backbones.get("vgg16", conv="winograd").conv_algorithm == "winograd"
  with pytest.raises(JnstError, match="unknown conv algorithm"):
    vgg.VGG19.with_options(conv="fft")
  with pytest.raises(JnstError, match="for the VGG backbones"):
    backbones.get("resnet50", conv="winograd")
  assert backbones.get("resnet50", conv="auto").name == "resnet50"


def test_auto_runs_small_maps_direct():
  """``min_pixels`` (conv="auto": ``winograd.MIN_PIXELS``) picks the algorithm by the map's
  size: the compiled program has Winograd ops only from 12x16 positions on."""
  k = jax.random.normal(jax.random.key(1), (3, 3, 256, 256)) / 48.0
  wino = (winograd.transform_kernel(k), winograd.transform_kernel(vgg.grad_kernel(k)))
  assert vgg.VGG19.winograd_min_pixels == winograd.MIN_PIXELS == 12 * 16
  assert vgg.VGG19.with_options(conv="winograd").winograd_min_pixels == 0
  for h, w, used in [(8, 8, False), (12, 15, False), (12, 16, True)]:
    x = jnp.ones((1, h, w, 256))
    f = jax.jit(jax.grad(lambda x: jnp.sum(vgg.conv3x3(x, k, vgg.grad_kernel(k), wino,
                                                         winograd.MIN_PIXELS) ** 2)))
    text = f.lower(x).compile().as_text()
    assert bool(re.search(r'op_name="[^"]*winograd[/)]', text)) == used, (h, w)


@pytest.mark.parametrize("remat", [False, True])
def test_vgg_features_and_gradient_match_direct_convs(vgg19_params, remat):
  """A whole VGG-19 up to relu4_2 (five Winograd convs) on a 44x36 image: features and the
  image gradient of a loss over them equal the direct convs' to float32 accuracy."""
  layers = ("relu1_1", "relu3_3", "relu4_2")
  rgb = np.random.default_rng(0).uniform(size=(1, 44, 36, 3)).astype(np.float32)
  x = vgg.VGG19.preprocess(vgg19_params, rgb)
  out = {}
  for conv in ("direct", "winograd"):
    bb = vgg.VGG19.with_options(conv=conv, remat=remat)
    p = bb.prepare(vgg19_params, layers)
    assert ("winograd" in p) == (conv == "winograd")

    def loss(x, p=p, bb=bb):
      f = bb.features(p, x, layers)
      return sum(jnp.mean(f[l] ** 2) / jnp.mean(jax.lax.stop_gradient(f[l]) ** 2)
                 for l in layers), f
    (value, feats), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(x)
    out[conv] = value, feats, grad
  (v0, f0, g0), (v1, f1, g1) = out["direct"], out["winograd"]
  for l in layers:
    scale = np.abs(f0[l]).max()
    np.testing.assert_allclose(f1[l], f0[l], atol=1e-5 * scale)
  np.testing.assert_allclose(v1, v0, rtol=1e-5)
  assert np.linalg.norm(g1 - g0) / np.linalg.norm(g0) < 1e-4
