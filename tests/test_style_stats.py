"""jnst.style_stats (Wasserstein, mean/std and masked Gram style losses), jnst.masks and
colour.match_colors against float64 NumPy references and finite differences."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnst import colour, experiments, losses, masks, objective, optimize, style_stats, study
from jnst.errors import JnstError


def spd(n, cond, seed=0):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
  return (q * np.geomspace(1.0, 1.0 / cond, n)) @ q.T


def relu_feats(shape, seed=0):
  """Positive, correlated, ReLU-like features (1, H, W, N)."""
  rng = np.random.default_rng(seed)
  n = shape[-1]
  f = rng.normal(size=(*shape[:-1], n)) @ rng.normal(size=(n, n)) + 0.5
  return np.maximum(f, 0.0)[None]


@pytest.mark.parametrize("n,cond", [(8, 10.0), (64, 100.0)])
def test_sqrtm_ns_matches_eigendecomposition(n, cond):
  a = 37.0 * spd(n, cond)
  ref = style_stats.sqrtm_eigh(a)
  got = np.asarray(style_stats.sqrtm_ns(jnp.asarray(a, jnp.float32)), np.float64)
  assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-4
  np.testing.assert_allclose(got @ got, a, rtol=0, atol=1e-3 * np.abs(a).max())


def test_sqrtm_ns_backward_solves_the_lyapunov_equation():
  # d tr(Z̄ᵀ A^½) / dA = X with Z X + X Z = Z̄ (Z = A^½): the eigenbasis solution.
  a, zbar = spd(6, 20.0, 1) * 5, np.random.default_rng(2).normal(size=(6, 6))
  with jax.enable_x64(True):
    _, vjp = jax.vjp(style_stats.sqrtm_ns, jnp.asarray(a))
    (got,) = vjp(jnp.asarray(zbar))
  vals, vecs = np.linalg.eigh(a)
  d = np.sqrt(vals)
  ref = vecs @ ((vecs.T @ zbar @ vecs) / (d[:, None] + d[None, :])) @ vecs.T
  np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-7, atol=1e-9)


def test_trace_sqrtm_ns_value_and_gradient():
  a = 3.0 * spd(16, 50.0, 5)
  vals, vecs = np.linalg.eigh(a)
  with jax.enable_x64(True):
    v, g = jax.value_and_grad(style_stats.trace_sqrtm_ns)(jnp.asarray(a))
    g_general = jax.grad(lambda x: jnp.trace(style_stats.sqrtm_ns(x)))(jnp.asarray(a))
  np.testing.assert_allclose(float(v), np.sum(np.sqrt(vals)), rtol=1e-10)
  ref = 0.5 * (vecs / np.sqrt(vals)) @ vecs.T  # d tr A^½ / dA = ½ A^-½.
  np.testing.assert_allclose(np.asarray(g), ref, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(np.asarray(g_general), ref, rtol=1e-8, atol=1e-10)


def np_w2(f, s):
  """Reference W₂² · unit in float64 from the target's own statistics."""
  f = f.reshape(-1, f.shape[-1])
  mu, cov = f.mean(0), np.cov(f.T, bias=True) + float(s["eps"][0]) * np.eye(f.shape[-1])
  cs, ts = np.asarray(s["cov_sqrt"][0], np.float64), np.asarray(s["cov"][0], np.float64)
  cross = style_stats.sqrtm_eigh(cs @ cov @ cs)
  w2 = np.sum((mu - s["mean"][0]) ** 2) + np.trace(cov) + np.trace(ts) - 2 * np.trace(cross)
  return w2 * float(s["unit"][0])


def test_wasserstein_self_is_zero_and_matches_reference():
  f = relu_feats((6, 7, 16))
  t = style_stats.from_features(f, "wasserstein")
  scale = float(t.stats["unit"][0]) * float(np.trace(t.stats["cov"][0]))  # unit · tr Σ̂.
  assert abs(float(t.loss(jnp.asarray(f, jnp.float32), "paper"))) < 1e-4 * scale
  g = relu_feats((6, 7, 16), seed=1)
  got = float(t.loss(jnp.asarray(g, jnp.float32), "paper"))
  np.testing.assert_allclose(got, np_w2(g, t.stats), rtol=1e-3)
  assert got > 1e-2 * scale  # Different features: far from 0.
  # Same style image twice (any blend) is the same target.
  mean, srm = style_stats._raw_moments(f.reshape(-1, 16), np.ones((1, 42)))[1:]
  again = style_stats._stats("wasserstein", 0.3 * mean + 0.7 * mean, 0.3 * srm + 0.7 * srm)
  np.testing.assert_allclose(again["cov_sqrt"], t.stats["cov_sqrt"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["wasserstein", "mean_std"])
def test_gradient_matches_finite_differences(kind):
  t = style_stats.from_features(relu_feats((4, 5, 6)), kind)
  with jax.enable_x64(True):
    t64 = dataclasses.replace(t, stats={k: jnp.asarray(v, jnp.float64) for k, v in t.stats.items()})
    f = jnp.asarray(relu_feats((4, 5, 6), seed=3), jnp.float64)
    loss = lambda x: t64.loss(x, "paper")
    grad = np.asarray(jax.grad(loss)(f))
    rng = np.random.default_rng(4)
    for _ in range(3):
      v = rng.normal(size=f.shape)
      h = 1e-5
      fd = (float(loss(f + h * v)) - float(loss(f - h * v))) / (2 * h)
      np.testing.assert_allclose(np.sum(grad * v), fd, rtol=1e-6)


def test_mean_std_matches_reference():
  f, g = relu_feats((5, 6, 8)), relu_feats((5, 6, 8), seed=1)
  t = style_stats.from_features(f, "mean_std")
  f2, g2 = f.reshape(-1, 8), g.reshape(-1, 8)
  eps = 1e-3 * f2.var(0).mean()
  unit = style_stats.UNITS["mean_std"] * np.mean(np.sum(f2**2, 1)) / 8**2  # UNITS · tr Ŝ / N².
  ref = unit * (np.sum((g2.mean(0) - f2.mean(0)) ** 2) + np.sum(
      (np.sqrt(g2.var(0) + eps) - np.sqrt(f2.var(0) + eps)) ** 2))
  np.testing.assert_allclose(float(t.loss(jnp.asarray(g, jnp.float32), "paper")), ref, rtol=1e-4)
  # The "mean" variant is 4/N² times the paper one, as for the Gram loss.
  np.testing.assert_allclose(float(t.loss(jnp.asarray(g, jnp.float32), "mean")),
                             ref * 4 / 64, rtol=1e-4)


def test_masked_gram_all_ones_is_the_gram():
  f = jnp.asarray(relu_feats((5, 7, 8)), jnp.float32)
  got = style_stats.masked_gram(f, jnp.ones((1, 5, 7)))
  np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(losses.gram(f[0])))
  # And the masked style loss with one all-ones region is the plain Gram loss.
  s = relu_feats((5, 7, 8), seed=1)
  mean, srm = style_stats._raw_moments(s.reshape(-1, 8), np.ones((1, 35)))[1:]
  t = style_stats.StyleStats("gram", style_stats._stats("gram", mean, srm), jnp.ones((1, 5, 7)),
                             jnp.ones(1))
  plain = losses.style_layer_loss(f, losses.gram(jnp.asarray(s[0], jnp.float32)))
  for variant in ("paper", "mean"):
    np.testing.assert_allclose(float(t.loss(f, variant)),
                               float(losses.style_layer_loss(f, losses.gram(
                                   jnp.asarray(s[0], jnp.float32)), variant)), rtol=1e-5)
  assert float(plain) > 0


def test_masked_gram_of_a_binary_region_is_the_regions_gram():
  f = np.asarray(relu_feats((4, 6, 5)), np.float32)
  m = np.zeros((1, 4, 6), np.float32)
  m[0, :, :2] = 1  # The left third.
  got = np.asarray(style_stats.masked_gram(jnp.asarray(f), jnp.asarray(m)))[0]
  part = f[0, :, :2].reshape(-1, 5).astype(np.float64)
  np.testing.assert_allclose(got, part.T @ part * 3, rtol=1e-5)  # Scaled by M / area = 3.


# ---------------------------------------------------------------- masks


def two_colour(h, w, split, horizontal=True, colours=((255, 0, 0), (0, 0, 255))):
  m = np.zeros((h, w, 3), np.uint8)
  m[:] = colours[0]
  if horizontal:
    m[:, split:] = colours[1]
  else:
    m[split:] = colours[1]
  return m


def test_regions_match_colours_across_masks():
  c = two_colour(8, 10, 4)
  s1 = two_colour(30, 30, 15, horizontal=False)
  s1[0, 0] = (250, 3, 2)  # A stray JPEG-like pixel (0.1 %) joins the nearest region colour.
  cols, c1h, (s1h,) = masks.regions(c, [s1])
  assert [tuple(x) for x in cols] == [(0, 0, 255), (255, 0, 0)]
  assert c1h.shape == (2, 8, 10) and np.all(c1h.sum(0) == 1)
  assert c1h[1, :, :4].all() and c1h[0, :, 4:].all()
  assert s1h[1, :15].all() and s1h[0, 15:].all()
  # A region may come from a second style image only.
  s2 = np.full((6, 6, 3), (0, 0, 255), np.uint8)
  s1_red = np.full((6, 6, 3), (255, 0, 0), np.uint8)
  _, _, (a, b) = masks.regions(c, [s1_red, s2])
  assert a[1].all() and not a[0].any() and b[0].all()


@pytest.mark.parametrize("content,style,message", [
    (two_colour(8, 8, 4), np.full((8, 8, 3), 255, np.uint8), "only in"),
    (np.full((8, 8, 3), (255, 0, 0), np.uint8), two_colour(8, 8, 4), "#0000ff only in the style"),
])
def test_colour_in_one_mask_only_is_an_error(content, style, message):
  with pytest.raises(JnstError, match=message):
    masks.regions(content, [style])


def test_mask_of_another_size_is_an_error():
  with pytest.raises(JnstError, match="the content mask is 10x8 px but the content image is 9x8"):
    masks.check_sizes(np.zeros((8, 10, 3)), np.zeros((8, 9, 3)), [np.zeros((4, 4, 3))],
                      [np.zeros((4, 4, 3))])
  with pytest.raises(JnstError, match="1 style masks for 2 style images"):
    masks.check_sizes(np.zeros((8, 10, 3)), np.zeros((8, 10, 3)), [np.zeros((4, 4, 3))],
                      [np.zeros((4, 4, 3))] * 2)


# ---------------------------------------------------------------- experiments


@pytest.fixture(scope="module")
def pair():
  rng = np.random.default_rng(0)
  return rng.random((24, 32, 3)).astype(np.float32), rng.random((20, 20, 3)).astype(np.float32)


def loss_and_grad(problem):
  x = problem.x0(jax.random.key(0))
  (loss, terms), g = jax.value_and_grad(problem.objective, has_aux=True)(x, problem.data)
  return float(loss), terms, np.asarray(g)


def test_default_gram_target_is_unchanged(random_params, pair):
  c, s = pair
  p = experiments.StylizeConfig().build(random_params, experiments.Inputs(c, (s,)))
  tgt = p.data["targets"]["style"]
  feats = p.backbone.extract(random_params, jnp.asarray(s)[None], list(tgt))
  for l, a in tgt.items():  # The plain raw Gram, bit for bit.
    assert isinstance(a, jax.Array)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(losses.gram(feats[l][0])))


@pytest.mark.parametrize("kind", ["wasserstein", "mean_std"])
def test_stylize_with_each_loss_and_masks(random_params, pair, kind):
  c, s = pair
  cfg = experiments.StylizeConfig(style_loss=kind, style_layers=("relu1_1",),
                                  content_layers=("relu1_1",),
                                  opt=optimize.OptConfig(steps=2, chunk=2))
  loss, terms, g = loss_and_grad(cfg.build(random_params, experiments.Inputs(c, (s,))))
  assert np.isfinite(loss) and terms["style"] > 0 and np.isfinite(g).all() and np.abs(g).max() > 0
  # With one all-covering colour the masked loss is the unmasked one.
  full_c, full_s = np.full((24, 32, 3), 7, np.uint8), np.full((20, 20, 3), 7, np.uint8)
  masked = cfg.build(random_params, experiments.Inputs(c, (s,), content_mask=full_c,
                                                       style_masks=(full_s,)))
  np.testing.assert_allclose(loss_and_grad(masked)[0], loss, rtol=1e-4)
  # Two regions styled from two halves: a different, finite loss.
  two = cfg.build(random_params, experiments.Inputs(c, (s,), content_mask=two_colour(24, 32, 10),
                                                    style_masks=(two_colour(20, 20, 12),)))
  l2 = loss_and_grad(two)[0]
  assert np.isfinite(l2) and abs(l2 - loss) > 1e-3 * loss
  if kind == "mean_std":  # One masked run end to end (the compile dominates; once is enough).
    rgb, res = experiments.solve(two, cfg.opt)
    assert rgb.shape == c.shape and np.isfinite(res.loss_history).all()


def test_masked_gram_all_ones_equals_plain_stylize(random_params, pair):
  c, _ = pair
  s = np.random.default_rng(1).random((24, 32, 3)).astype(np.float32)  # Same size as content.
  cfg = experiments.StylizeConfig(style_layers=("relu1_1", "relu2_1"))
  plain = loss_and_grad(cfg.build(random_params, experiments.Inputs(c, (s,))))
  ones = np.zeros((24, 32, 3), np.uint8)
  masked = loss_and_grad(cfg.build(random_params, experiments.Inputs(
      c, (s,), content_mask=ones, style_masks=(ones,))))
  np.testing.assert_allclose(masked[0], plain[0], rtol=1e-4)
  np.testing.assert_allclose(masked[2], plain[2], rtol=1e-3, atol=1e-4 * np.abs(plain[2]).max())


def test_config_errors(random_params, pair):
  c, s = pair
  with pytest.raises(JnstError, match="unknown style loss 'w3': use gram, wasserstein or mean_std"):
    experiments.StylizeConfig(style_loss="w3").validate()
  with pytest.raises(JnstError, match="unknown style loss"):
    experiments.SynthesizeConfig(style_loss="nope").validate()
  with pytest.raises(JnstError, match="unknown color_transfer"):
    experiments.StylizeConfig(color_transfer="sepia").validate()
  with pytest.raises(JnstError, match="cannot be combined"):
    experiments.StylizeConfig(original_colors=True, color_transfer="histogram").validate()
  with pytest.raises(JnstError, match="style masks need a content mask"):
    experiments.StylizeConfig().build(random_params, experiments.Inputs(
        c, (s,), style_masks=(np.zeros((20, 20, 3)),)))


def test_synthesize_with_wasserstein(random_params, pair):
  _, s = pair
  cfg = experiments.SynthesizeConfig(style_loss="wasserstein", style_layers=("relu1_1",),
                                     opt=optimize.OptConfig(steps=3, chunk=3))
  rgb, res = experiments.synthesize(random_params, s, cfg)
  assert rgb.shape == s.shape and res.loss_history[-1] < res.loss_history[0]


def test_sweep_over_style_loss_and_color_transfer():
  sw = study.parse_sweep("style_loss:gram,wasserstein,mean_std", "synthesize")
  vs = study.variants(sw, experiments.SynthesizeConfig(), None)
  assert [v.cfg.style_loss for v in vs] == ["gram", "wasserstein", "mean_std"]
  sw = study.parse_sweep("color_transfer:none,histogram", "stylize")
  assert [v.cfg.colors for v in study.variants(sw, experiments.StylizeConfig(), None)] == [
      "none", "histogram"]
  with pytest.raises(JnstError, match="'w9' is not a valid --style_loss"):
    study.variants(study.parse_sweep("style_loss:gram,w9", "stylize"),
                   experiments.StylizeConfig(), None)


# ---------------------------------------------------------------- colour


def test_histogram_matching_makes_the_histograms_match():
  rng = np.random.default_rng(0)
  mix = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]])
  content = np.clip(0.45 + 0.12 * rng.normal(size=(48, 64, 3)) @ mix, 0, 1)
  style = np.clip(np.array([0.7, 0.35, 0.2]) + 0.08 * rng.normal(size=(40, 40, 3)), 0, 1)
  matched = colour.match_colors(style, content)
  before = colour.histogram_distance(style, content)
  after = colour.histogram_distance(matched, content)
  assert before > 20 and after < 0.5, (before, after)  # 0-255 steps: the marginals match.
  linear = np.clip(colour.match_moments(style, content), 0, 1)  # The first step alone.
  assert colour.histogram_distance(linear, content) < 0.2 * before
  np.testing.assert_allclose(matched.reshape(-1, 3).mean(0), content.reshape(-1, 3).mean(0),
                             atol=2e-3)
  np.testing.assert_allclose(np.cov(matched.reshape(-1, 3).T), np.cov(content.reshape(-1, 3).T),
                             atol=2e-3)


def test_color_transfer_histogram_recolours_the_style_target(random_params, pair):
  c, s = pair
  warm = np.clip(s * np.array([1.0, 0.5, 0.2], np.float32), 0, 1)
  cfg = experiments.StylizeConfig(style_layers=("relu1_1",), color_transfer="histogram")
  p = cfg.build(random_params, experiments.Inputs(c, (warm,)))
  ref = objective.style_target(p.backbone, random_params, [colour.match_colors(warm, c)],
                               ["relu1_1"])
  np.testing.assert_allclose(p.data["targets"]["style"]["relu1_1"], ref["relu1_1"], rtol=1e-6)
  orig = dataclasses.replace(cfg, color_transfer="original").build(
      random_params, experiments.Inputs(c, (warm,)))
  assert orig.colors_from is not None and p.colors_from is None


def test_notebook_stylize_takes_masks(random_params, pair):
  import jnst
  c, s = pair
  img, rec = jnst.stylize(c, [s, s[::-1]], params=random_params, steps=2,
                          content_mask=two_colour(24, 32, 10),
                          style_masks=[np.full((20, 20, 3), (255, 0, 0), np.uint8),
                                       np.full((20, 20, 3), (0, 0, 255), np.uint8)],
                          style_layers=("relu1_1",), content_layers=("relu1_1",))
  assert img.shape == c.shape and rec["config"]["style_loss"] == "gram"


def test_seeds_batch_with_masked_wasserstein_targets(random_params, pair):
  from jnst import batched
  c, s = pair
  cfg = experiments.StylizeConfig(style_loss="wasserstein", init="noise", style_layers=("relu1_1",),
                                  content_layers=("relu1_1",),
                                  # Adam: L-BFGS's tiny first step (torch's rules) turns compile
                                  # rounding into 0.3 % by step 2 (BENCHMARKS, "L-BFGS per evaluation").
                                  opt=optimize.OptConfig(steps=2, chunk=2, optimizer="adam",
                                                         learning_rate=1.0))
  problem = cfg.build(random_params, experiments.Inputs(
      c, (s,), content_mask=two_colour(24, 32, 10), style_masks=(two_colour(20, 20, 12),)))
  res = batched.run_seeds(problem, [0, 1], cfg.opt, members_per_batch=2)
  single = experiments.solve(problem, cfg.opt, seed=1)[1]
  np.testing.assert_allclose(res.loss_history[1], single.loss_history, rtol=1e-3)
