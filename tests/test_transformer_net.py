"""The image transformation network: shapes at odd sizes, instance norm against NumPy, and
parity with the PyTorch module of the same architecture (``jnst.bench.ff_torch``: the PyTorch
examples' TransformerNet with our sigmoid output, crop and biases)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnst import transformer_net as tn


@pytest.fixture(scope="module")
def small():
  return tn.init(jax.random.key(1), width=4, num_res_blocks=2)


@pytest.mark.parametrize("h,w", [(8, 8), (17, 23), (33, 30), (31, 9)])
def test_any_size_gives_the_input_size(small, h, w):
  x = jax.random.uniform(jax.random.key(2), (2, h, w, 3))
  y = jax.jit(tn.apply, static_argnums=(2, 3))(small, x, 4, 2)
  assert y.shape == (2, h, w, 3)
  assert float(y.min()) > 0 and float(y.max()) < 1
  assert tn.output_size(h, w) == (4 * -(-h // 4), 4 * -(-w // 4))
  assert jax.eval_shape(lambda p, a: tn.apply(p, a, 4, 2), small, x[0]).shape == (h, w, 3)


def test_params_size_independent_and_width():
  p = jax.eval_shape(tn.init, jax.random.key(0))
  assert tn.num_params(p) == 1_676_995  # Johnson's network: about 1.7 M.
  assert p["conv_in"]["layer"]["conv"]["kernel"].shape == (9, 9, 3, 32)
  assert p["down2"]["layer"]["conv"]["kernel"].shape == (3, 3, 64, 128)
  assert p["conv_out"]["conv"]["kernel"].shape == (9, 9, 32, 3)
  assert len([k for k in p if k.startswith("res")]) == 5
  q = jax.eval_shape(lambda k: tn.init(k, width=8, num_res_blocks=1), jax.random.key(0))
  assert q["res0"]["conv1"]["conv"]["kernel"].shape == (3, 3, 32, 32) and "res1" not in q


def test_instance_norm_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(3.0, 2.0, (2, 5, 7, 4)).astype(np.float32)
  scale, bias = rng.normal(size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)
  mean = x.mean(axis=(1, 2), keepdims=True)
  var = ((x - mean) ** 2).mean(axis=(1, 2), keepdims=True)
  want = (x - mean) / np.sqrt(var + 1e-5) * scale + bias
  np.testing.assert_allclose(tn.instance_norm(jnp.asarray(x), scale, bias), want, atol=1e-5)


def test_reflect_pad_is_torchs():
  x = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)
  got = np.asarray(tn.reflect_pad(jnp.asarray(x), 2))[0, :, :, 0]
  assert got[2].tolist() == [2, 1, 0, 1, 2, 3, 2, 1]  # The edge pixel is not repeated.


# ------------------------------------------------------------------ PyTorch parity


@pytest.mark.parametrize("h,w", [(32, 32), (21, 30)])
def test_torch_parity(h, w):
  torch = pytest.importorskip("torch")
  params = tn.init(jax.random.key(3), width=8, num_res_blocks=2)
  # Perturb the instance-norm affines so they matter.
  params = jax.tree_util.tree_map_with_path(
      lambda p, a: a + 0.1 * jax.random.normal(jax.random.key(len(str(p))), a.shape)
      if p[-1].key in ("scale", "bias") else a, params)
  x = np.random.default_rng(0).uniform(size=(2, h, w, 3)).astype(np.float32)
  from jnst.bench import ff_torch
  want = ff_torch.load(ff_torch.transformer_net_module(8, 2), params)(
      torch.from_numpy(x.transpose(0, 3, 1, 2)))
  want = want.detach().numpy().transpose(0, 2, 3, 1)
  got = np.asarray(jax.jit(tn.apply, static_argnums=(2, 3))(params, jnp.asarray(x), 8, 2))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-4)


def _assert_same_value_and_vjp(got, ref, x, kernel):
  """got(x, kernel) and its VJP equal ref's (float64, jitted: eager dispatch is the slow
  part); returns got's value."""
  def both(f):
    @jax.jit
    def value_and_vjp(x, kernel):
      y, vjp = jax.vjp(f, x, kernel)
      return y, vjp(jax.random.normal(jax.random.key(2), y.shape, y.dtype))
    return value_and_vjp(x, kernel)
  (y, grads), (y_ref, grads_ref) = both(got), both(ref)
  np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
  for a, b in zip(grads, grads_ref):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-11)
  return y


@pytest.mark.parametrize("cin,cout,k,stride", [
    (3, 32, 9, 1),    # the RGB input conv: conv_blocks
    (3, 8, 5, 1),     # conv_blocks, an input not a multiple of the block
    (32, 3, 9, 1),    # the output conv: lax's forward, conv_blocks' gradient (custom_vjp)
    (64, 32, 3, 1),   # narrowing 3x3: lax's conv, padded and cropped
    (32, 64, 3, 2),   # strided: lax's conv, padded after
    (16, 16, 3, 1),   # same width: lax's conv, padded and cropped
])
def test_conv_valid_matches_lax(cin, cout, k, stride):
  with jax.enable_x64():
    x = jax.random.normal(jax.random.key(0), (2, 13, 11, cin), jnp.float64)
    kernel = jax.random.normal(jax.random.key(1), (k, k, cin, cout), jnp.float64)
    ref = lambda x, w: jax.lax.conv_general_dilated(x, w, (stride, stride), "VALID",
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
    got = lambda x, w: tn.conv_valid(x, w, stride)
    _assert_same_value_and_vjp(got, ref, x, kernel)


@pytest.mark.parametrize("h, w, cin, cout", [(5, 7, 6, 4), (8, 8, 4, 8), (3, 9, 2, 3)])
def test_upsample_conv3_is_nearest_x2_reflect_pad_conv(h, w, cin, cout):
  """The phase decomposition equals upsampling, reflection padding and a 3x3 conv by lax, and
  so do its gradients (float64)."""
  with jax.enable_x64():
    x = jax.random.normal(jax.random.key(0), (2, h, w, cin), jnp.float64)
    kernel = jax.random.normal(jax.random.key(1), (3, 3, cin, cout), jnp.float64)

    def ref(x, k):
      up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      return jax.lax.conv_general_dilated(tn.reflect_pad(up, 1), k, (1, 1), "VALID",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))

    y = _assert_same_value_and_vjp(tn.upsample_conv3, ref, x, kernel)
    assert y.shape == (2, 2 * h, 2 * w, cout)
