"""The backbones' convs with explicit input gradients (``vgg.conv3x3``, ``resnet.strided_conv``
and ResNet's 1x1 convs as matmuls) against ``lax.conv_general_dilated`` and JAX's own
gradient rule, in float64: same values, same input and kernel gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnst.backbones import resnet, vgg

_DN = ("NHWC", "HWIO", "NHWC")


def _reference(x, kernel, stride, pad):
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                      dimension_numbers=_DN)


def _check(fn, h, w, cin, cout, k, stride, pad):
  with jax.enable_x64():
    x = jax.random.normal(jax.random.key(0), (2, h, w, cin), jnp.float64)
    kernel = jax.random.normal(jax.random.key(1), (k, k, cin, cout), jnp.float64)
    y_ref, vjp_ref = jax.vjp(lambda x, w: _reference(x, w, stride, pad), x, kernel)
    y, vjp = jax.vjp(fn, x, kernel)
    g = jax.random.normal(jax.random.key(2), y_ref.shape, jnp.float64)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(vjp(g), vjp_ref(g)):
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("h,w,k,stride,pad", [
    (17, 16, 7, 2, 3),   # ResNet's stem: odd size, the last window leaves a row unreached
    (16, 16, 3, 2, 1),   # a bottleneck's strided 3x3 (torchvision v1.5)
    (15, 13, 3, 2, 1),
    (8, 9, 3, 1, 1),
    (10, 11, 5, 3, 2),
])
def test_strided_conv_matches_lax(h, w, k, stride, pad):
  _check(lambda x, kk: resnet.strided_conv(x, kk, stride, pad), h, w, 3, 4, k, stride, pad)


def test_conv3x3_matches_lax():
  _check(vgg.conv3x3, 9, 7, 3, 5, 3, 1, 1)


@pytest.mark.parametrize("stride", [1, 2])
def test_resnet_1x1_conv_matches_lax(stride):
  conv = resnet.ConvBias(4, 1, stride, "float64")

  def fn(x, kernel):
    p = {"params": {"kernel": kernel, "bias": jnp.zeros(4, kernel.dtype)}}
    return conv.apply(p, x)
  _check(fn, 9, 8, 3, 4, 1, stride, 0)


def test_resnet_precomputed_grad_kernels_give_the_same_gradient():
  """``ResNet.prepare``'s input-gradient kernels (the 7x7/2 stem, 3x3/1 and 3x3/2 convs) give
  the image gradient of the plain params, and a wrong one shows (the test can fail)."""
  bb = resnet.RESNET50
  params = bb.init_random(jax.random.key(0))
  prepared = bb.prepare(params)
  assert prepared["conv"] is params["conv"]
  big = {n for n, c in params["conv"].items() if c["kernel"].shape[0] > 1}
  assert set(prepared["grad_kernels"]) == big and "conv1" in big and "layer2.0.conv2" in big
  np.testing.assert_array_equal(prepared["grad_kernels"]["conv1"],
                                vgg.grad_kernel(params["conv"]["conv1"]["kernel"]))
  x = np.asarray(bb.preprocess(params, np.random.default_rng(0).uniform(size=(1, 40, 36, 3))),
                 np.float32)
  layers = ("relu", "layer1.0", "layer2.0", "layer3.0")

  @jax.jit
  def grad(p, x):
    def loss(x):
      f = bb.features(p, x, layers)
      return sum(np.float32(i + 1) * jnp.mean(f[l] ** 2) for i, l in enumerate(layers))
    return jax.grad(loss)(x)

  a, b = np.asarray(grad(params, x)), np.asarray(grad(prepared, x))
  scale = np.abs(a).max()
  assert scale > 0
  np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * scale)
  for conv in ("conv1", "layer1.0.conv2", "layer2.0.conv2"):  # Same shapes: no new compile.
    broken = {**prepared, "grad_kernels": {**prepared["grad_kernels"],
                                           conv: 2 * prepared["grad_kernels"][conv]}}
    assert np.abs(np.asarray(grad(broken, x)) - a).max() > 1e-3 * scale, conv


@pytest.mark.parametrize("h,w", [(16, 12), (15, 9)])
def test_resnet_stem_max_pool_matches_reduce_window(h, w):
  """The separable 3x3/2 max pool after a ReLU: lax.reduce_window's values (-inf padding) and,
  through the ReLU, its input gradient."""
  x = jax.random.normal(jax.random.key(0), (2, h, w, 5), jnp.float32)
  ref = lambda x: jax.lax.reduce_window(jax.nn.relu(x), -jnp.inf, jax.lax.max, (1, 3, 3, 1),
                                        (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
  got = lambda x: resnet.stem_pool(jax.nn.relu(x), "max")
  y_ref, vjp_ref = jax.vjp(ref, x)
  y, vjp = jax.vjp(got, x)
  np.testing.assert_array_equal(y, y_ref)
  g = jax.random.normal(jax.random.key(1), y.shape, jnp.float32)
  np.testing.assert_allclose(vjp(g)[0], vjp_ref(g)[0], rtol=1e-6, atol=1e-6)
