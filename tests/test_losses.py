"""jnst.losses against independent float64 NumPy formulas and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnst import losses


def np_style_E(f, a):
  """Paper eq. 4 in float64: f (M, N) features, a (N, N) target Gram."""
  m, n = f.shape
  g = f.T @ f
  return np.sum((g - a) ** 2) / (4.0 * n * n * m * m)


@pytest.mark.parametrize("norm,div", [("none", 1), ("hw", 5 * 6), ("chw", 5 * 6 * 4)])
def test_gram(norm, div):
  f = np.random.default_rng(0).normal(size=(2, 5, 6, 4)).astype(np.float32)
  got = losses.gram(f, norm)
  m = f.reshape(2, 30, 4).astype(np.float64)
  ref = np.einsum("bmi,bmj->bij", m, m) / div
  np.testing.assert_allclose(got, ref, rtol=1e-5)


# The two forms: M (Ḡ + Ḡᵀ), and M Ḡ + M Ḡᵀ where 2 M <= C.
@pytest.mark.parametrize("h,w,c", [(3, 4, 5), (2, 3, 12)])
def test_gram_vjp_with_unsymmetric_cotangent(h, w, c):
  # The Gram's custom VJP assumes nothing of the cotangent: d<Ḡ, FᵀF>/dF = F (Ḡ + Ḡᵀ).
  rng = np.random.default_rng(3)
  f = rng.normal(size=(2, h, w, c))
  gbar = rng.normal(size=(2, c, c))
  _, vjp = jax.vjp(losses.gram, jnp.asarray(f, jnp.float32))
  (got,) = vjp(jnp.asarray(gbar, jnp.float32))
  m = f.reshape(2, h * w, c)
  ref = np.einsum("bmi,bij->bmj", m, gbar + gbar.transpose(0, 2, 1)).reshape(f.shape)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  # Under vmap too (the seeds path batches it).
  got_v = jax.vmap(lambda x, g: jax.vjp(losses.gram, x)[1](g)[0])(
      jnp.asarray(f, jnp.float32), jnp.asarray(gbar, jnp.float32))
  np.testing.assert_allclose(got_v, ref, rtol=1e-5, atol=1e-5)


def test_style_gradient_matches_paper_and_finite_differences():
  rng = np.random.default_rng(1)
  h, w, n = 4, 5, 3
  f = rng.normal(size=(h, w, n))
  a = (lambda s: s.T @ s)(rng.normal(size=(h * w, n)))
  # JAX gradient (float32).
  grad = jax.grad(lambda x: losses.style_layer_loss(x, jnp.asarray(a, jnp.float32)))(
      jnp.asarray(f, jnp.float32))
  grad = np.asarray(grad, np.float64).reshape(h * w, n)
  # The paper's analytic gradient (eq. 6, before the ReLU mask): (F (G - A)) / (N² M²).
  fm = f.reshape(h * w, n)
  analytic = fm @ (fm.T @ fm - a) / (n * n * (h * w) ** 2)
  np.testing.assert_allclose(grad, analytic, rtol=1e-4, atol=1e-6 * np.abs(analytic).max())
  # Central finite differences of the float64 reference.
  eps, fd = 1e-6, np.zeros_like(fm)
  for idx in np.ndindex(fm.shape):
    d = np.zeros_like(fm)
    d[idx] = eps
    fd[idx] = (np_style_E(fm + d, a) - np_style_E(fm - d, a)) / (2 * eps)
  np.testing.assert_allclose(analytic, fd, rtol=1e-4, atol=1e-8)
  # And the value itself.
  np.testing.assert_allclose(losses.style_layer_loss(f.astype(np.float32), a.astype(np.float32)),
                             np_style_E(fm, a), rtol=1e-5)


def test_content_loss_and_gradient():
  rng = np.random.default_rng(2)
  f, p = rng.normal(size=(2, 3, 4, 5)).astype(np.float32), rng.normal(size=(3, 4, 5)).astype(np.float32)
  np.testing.assert_allclose(losses.content_layer_loss(f, p), 0.5 * np.sum((f - p) ** 2), rtol=1e-5)
  np.testing.assert_allclose(losses.content_layer_loss(f, p, "mean"), np.mean((f - p) ** 2), rtol=1e-5)
  g = jax.grad(losses.content_layer_loss)(f, p)
  np.testing.assert_allclose(g, f - p, rtol=1e-6)  # Paper eq. 2 (before the ReLU mask).


def test_mean_variant_style_scale():
  rng = np.random.default_rng(3)
  f = rng.normal(size=(4, 5, 3)).astype(np.float32)
  a = np.eye(3, dtype=np.float32)
  paper = float(losses.style_layer_loss(f, a, "paper"))
  mean = float(losses.style_layer_loss(f, a, "mean"))
  # mean = Σ(G-A)²/(N² (N M)²) = paper * 4 M² N² / (N² N² M²) ... = paper * 4 / N².
  np.testing.assert_allclose(mean, paper * 4 / 9, rtol=1e-5)


def test_tv_loss():
  x = np.random.default_rng(4).normal(size=(6, 7, 3)).astype(np.float32)
  ref = np.sum(np.diff(x, axis=0) ** 2) + np.sum(np.diff(x, axis=1) ** 2)
  np.testing.assert_allclose(losses.tv_loss(x), ref, rtol=1e-5)


@pytest.mark.parametrize("fn", [losses.content_layer_loss, losses.style_layer_loss])
def test_unknown_variant_is_an_error(fn):
  f = np.ones((2, 2, 3), np.float32)
  with pytest.raises(ValueError, match="unknown loss variant 'paperr'"):
    fn(f, np.ones((3, 3), np.float32) if fn is losses.style_layer_loss else f, "paperr")


def test_terms_table_matches_the_layer_losses():
  rng = np.random.default_rng(5)
  feats = {"a": rng.normal(size=(1, 4, 4, 3)).astype(np.float32),
           "b": rng.normal(size=(1, 2, 2, 3)).astype(np.float32)}
  image = rng.normal(size=(4, 4, 3)).astype(np.float32)
  p, a = rng.normal(size=(4, 4, 3)).astype(np.float32), np.eye(3, dtype=np.float32)
  c = losses.TERMS["content"](feats, image, {"a": p}, {"a": 1.5}, "paper")
  s = losses.TERMS["style"](feats, image, {"a": a, "b": 2 * a}, {"a": 0.25, "b": 0.75}, "paper")
  t = losses.TERMS["tv"](feats, image, None, {}, "paper")
  np.testing.assert_allclose(c, 1.5 * 0.5 * np.sum((feats["a"][0] - p) ** 2), rtol=1e-5)
  np.testing.assert_allclose(s, 0.25 * np_style_E(feats["a"][0].reshape(16, 3), a)
                             + 0.75 * np_style_E(feats["b"][0].reshape(4, 3), 2 * a), rtol=1e-5)
  np.testing.assert_allclose(t, np.sum(np.diff(image, axis=0) ** 2)
                             + np.sum(np.diff(image, axis=1) ** 2), rtol=1e-5)
