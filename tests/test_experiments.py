"""The experiments on small images: random weights unless the real ones are the point."""

import dataclasses

import jax
import numpy as np
import pytest

from jnst import colour, experiments, losses, metrics, objective, optimize
from jnst.backbones import vgg
from jnst.errors import JnstError

SHALLOW = ("relu1_1", "relu2_1")


def images(seed=0, h=32, w=32):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w] / max(h, w)
  content = np.stack([xx, yy, 0.5 + 0.4 * np.sin(8 * xx)], -1).astype(np.float32)
  sy, sx = np.mgrid[:h + 8, :w] / max(h, w)
  phase = rng.uniform(0, 6, size=3)
  style = 0.5 + 0.45 * np.sin(23 * sx[..., None] + 11 * sy[..., None] + phase)  # Coloured stripes.
  return content, style.astype(np.float32)


def opt(steps=20, **kw):
  return optimize.OptConfig(steps=steps, chunk=steps, **kw)


def weighted_terms(problem, x):
  """Weighted loss terms of a network-space image (random weights push pixels out of
  [0, 1], so terms are compared on the optimised variable, not the clipped output)."""
  _, terms = problem.objective(x, problem.data)
  return {k: float(v) for k, v in terms.items()}


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_stylize_from_noise_lowers_both_terms(random_params, optimizer):
  content, style = images()
  cfg = experiments.StylizeConfig(content_layers=("relu2_1",), style_layers=SHALLOW,
                                  init="noise", style_weight=10.0, variant="paper",  # Its units.
                                  opt=opt(25, optimizer=optimizer,
                                          learning_rate=1.0 if optimizer == "lbfgs" else 5.0))
  problem = cfg.build(random_params, experiments.Inputs(content, (style,)))
  rgb, res = experiments.stylize(random_params, content, [style], cfg)
  before = weighted_terms(problem, problem.x0(jax.random.key(cfg.seed)))
  after = weighted_terms(problem, res.x)
  assert after["content"] < before["content"] and after["style"] < before["style"]
  assert res.loss_history[-1] < res.loss_history[0]
  assert set(res.terms) == {"content", "style", "tv"}
  assert res.terms["style"] == pytest.approx(after["style"], rel=1e-5)
  assert np.abs(rgb - content).mean() > 0.01 and np.abs(rgb - style[:32]).mean() > 0.01


def test_stylize_from_content_moves_towards_style(random_params):
  content, style = images(1)
  # A line search: fixed-step L-BFGS climbs on these random weights (optax keeps pairs of
  # negative curvature, s.y < 0, in its memory; the run converges to a higher loss).
  cfg = experiments.StylizeConfig(content_layers=("relu2_1",), style_layers=SHALLOW,
                                  opt=opt(20, linesearch="zoom"))
  problem = cfg.build(random_params, experiments.Inputs(content, (style,)))
  rgb, res = experiments.stylize(random_params, content, [style], cfg)
  before = weighted_terms(problem, vgg.VGG19.preprocess(random_params, content))
  after = weighted_terms(problem, res.x)
  assert before["content"] < 1e-3 * max(after["content"], 1.0)  # Starts at the content...
  assert after["style"] < 0.5 * before["style"]                 # ...and moves to the style.
  assert np.abs(rgb - content).mean() > 0.01


def test_synthesize_lowers_style_loss_100x(random_params):
  _, style = images(2)
  cfg = experiments.SynthesizeConfig(style_layers=SHALLOW, opt=opt(60))
  rgb, res = experiments.synthesize(random_params, style, cfg)
  assert rgb.shape == style.shape
  assert res.loss_history[-1] * 100 <= res.loss_history[0]
  assert set(res.terms) == {"style"}  # A texture has only a style term.


def test_synthesize_size(random_params):
  _, style = images(2)
  cfg = experiments.SynthesizeConfig(style_layers=SHALLOW, size=(24, 32), opt=opt(2))
  problem = cfg.build(random_params, experiments.Inputs(styles=(style,)))
  assert problem.shape == (24, 32, 3) and problem.init_x is None
  rgb, _ = experiments.synthesize(random_params, style, cfg)
  assert rgb.shape == (24, 32, 3)
  with pytest.raises(JnstError, match="size must be"):
    dataclasses.replace(cfg, size=(0, 4)).validate()


def test_same_seed_same_image_different_seed_different(random_params):
  content, _ = images()
  run = lambda seed: experiments.reconstruct(
      random_params, content,
      experiments.ReconstructConfig(layer="relu1_2", seed=seed, opt=opt(5)))[0]
  a, b, c = run(3), run(3), run(4)
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).mean() > 1e-3


def test_problem_terms_and_data(random_params):
  content, style = images()
  inputs = experiments.Inputs(content, (style,))
  built = {
      "stylize": experiments.StylizeConfig(content_layers=("relu2_1",), style_layers=SHALLOW,
                                           tv_weight=2.0),
      "reconstruct": experiments.ReconstructConfig(layer="relu2_1"),
      "synthesize": experiments.SynthesizeConfig(style_layers=SHALLOW)}
  problems = {k: cfg.build(random_params, inputs) for k, cfg in built.items()}
  for k, terms in (("stylize", {"content", "style", "tv"}), ("reconstruct", {"content"}),
                   ("synthesize", {"style"})):
    data = problems[k].data
    assert set(data) == {"params", "targets", "loss_weights", "layer_weights", "pixel_scale"}
    assert set(data["loss_weights"]) == terms
    assert set(data["targets"]) == terms - {"tv"}
    assert problems[k].shape == ((40, 32, 3) if k == "synthesize" else (32, 32, 3))
  lw = problems["stylize"].data["loss_weights"]
  # α: the default variant's ("invariant", jnst.losses.DEFAULT_WEIGHTS); the paper's is 1.
  alpha = losses.DEFAULT_WEIGHTS["invariant"][0]
  assert (float(lw["content"]), float(lw["style"]), float(lw["tv"])) == (alpha, 1e3, 2.0)
  assert {l: float(w) for l, w in problems["stylize"].data["layer_weights"]["style"].items()} == {
      "relu1_1": 0.5, "relu2_1": 0.5}
  assert list(problems["reconstruct"].data["targets"]["content"]) == ["relu2_1"]
  # The defaults are the backbone's layers.
  default = experiments.StylizeConfig().build(random_params, inputs)
  assert list(default.data["targets"]["content"]) == list(vgg.VGG19.default_content_layers)
  assert list(default.data["targets"]["style"]) == list(vgg.VGG19.default_style_layers)


def test_original_colors_keeps_content_chroma(random_params):
  content, style = images(3)
  cfg = experiments.StylizeConfig(content_layers=("relu2_1",), style_layers=SHALLOW,
                                  original_colors=True, opt=opt(10))
  rgb, _ = experiments.stylize(random_params, content, [style], cfg)
  plain, _ = experiments.stylize(random_params, content, [style],
                                 dataclasses.replace(cfg, original_colors=False))
  iq = lambda im: colour.rgb_to_yiq(im)[..., 1:]
  y = lambda im: colour.rgb_to_yiq(im)[..., 0]
  inside = np.all((rgb > 0.01) & (rgb < 0.99), -1)  # Away from clipping.
  assert inside.mean() > 0.5
  np.testing.assert_allclose(iq(rgb)[inside], iq(content)[inside], atol=2e-3)
  np.testing.assert_allclose(y(rgb)[inside], y(plain)[inside], atol=2e-3)
  assert np.abs(iq(plain) - iq(content)).max() > 0.05  # Without it the chroma moves.
  # YIQ round trip.
  np.testing.assert_allclose(colour.yiq_to_rgb(colour.rgb_to_yiq(content)), content, atol=1e-5)


def test_style_blend_is_weighted_gram_sum(random_params):
  _, s1 = images(4)
  _, s2 = images(5)
  bb = vgg.VGG19
  t = objective.style_target(bb, random_params, [s1, s2], ("relu1_1",), (1.0, 3.0))
  g = lambda s: losses.gram(bb.extract(random_params, s[None], ["relu1_1"])["relu1_1"][0])
  np.testing.assert_allclose(t["relu1_1"], 0.25 * g(s1) + 0.75 * g(s2), rtol=1e-4)
  equal = objective.style_target(bb, random_params, [s1, s2], ("relu1_1",))
  np.testing.assert_allclose(equal["relu1_1"], 0.5 * g(s1) + 0.5 * g(s2), rtol=1e-4)
  # The same blend through a config.
  content, _ = images()
  cfg = experiments.StylizeConfig(content_layers=("relu1_1",), style_layers=("relu1_1",),
                                  style_blend_weights=(1.0, 3.0))
  problem = cfg.build(random_params, experiments.Inputs(content, (s1, s2)))
  np.testing.assert_allclose(problem.data["targets"]["style"]["relu1_1"], t["relu1_1"],
                             rtol=1e-5)


@pytest.mark.parametrize("kw,match", [
    (dict(style_blend_weights=(1.0, 2.0)), "2 style blend weights for 1 style"),
    (dict(style_blend_weights=(0.0,)), "positive sum"),
    (dict(style_weight=-1.0), "style_weight must be"),
    (dict(tv_weight=float("nan")), "tv_weight must be"),
    (dict(style_layers=("relu9_1",)), "unknown vgg19 layer"),
    (dict(style_layers=()), "empty layer list"),
    (dict(content_layers=()), "empty layer list"),
    (dict(style_layer_weights=(1.0,)), "1 style layer weights for 5 style layers"),
    (dict(init="sideways"), "unknown init"),
    (dict(init="photo.png"), "unknown init"),  # A path is init="image" plus Inputs.init.
    (dict(init="image"), "needs an init image"),
    (dict(pooling="min"), "unknown pooling"),
    (dict(compute_dtype="float64"), "unknown compute dtype"),
    (dict(backbone="resnet"), "unknown backbone"),
    (dict(variant="median"), "unknown loss variant"),
    (dict(seed=-1), "seed must be"),
    (dict(opt=optimize.OptConfig(loop="auto")), "unknown loop"),
])
def test_stylize_bad_config(random_params, kw, match):
  content, style = images()
  with pytest.raises(JnstError, match=match):
    experiments.StylizeConfig(**kw).build(random_params, experiments.Inputs(content, (style,)))


def test_bad_inputs(random_params):
  content, style = images()
  with pytest.raises(JnstError, match="no content image"):
    experiments.StylizeConfig().build(random_params, experiments.Inputs(styles=(style,)))
  with pytest.raises(JnstError, match="no style image"):
    experiments.StylizeConfig().build(random_params, experiments.Inputs(content))
  with pytest.raises(JnstError, match="no content image"):
    experiments.ReconstructConfig().build(random_params, experiments.Inputs(styles=(style,)))
  with pytest.raises(JnstError, match="synthesize takes one style image, got 2"):
    experiments.SynthesizeConfig().build(random_params, experiments.Inputs(styles=(style, style)))
  with pytest.raises(JnstError, match=r"content image must be RGB \(H, W, 3\)"):
    experiments.ReconstructConfig().build(random_params, experiments.Inputs(content[..., 0]))
  with pytest.raises(JnstError, match="unknown vgg19 layer"):
    experiments.ReconstructConfig(layer="block1").validate()  # One layer, not a block.


def test_block_layer_names(random_params):
  content, style = images()
  cfg = experiments.StylizeConfig(style_layers=("block1",), content_layers=("relu1_2",))
  problem = cfg.build(random_params, experiments.Inputs(content, (style,)))
  assert set(problem.data["targets"]["style"]) == {"relu1_1", "relu1_2"}
  assert set(problem.data["layer_weights"]["style"]) == {"relu1_1", "relu1_2"}


def test_reconstruction_detail_falls_with_depth(real_params):
  """Paper Fig. 1 / the seeds' finding: lower layers reconstruct the photo almost exactly."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:64, :64] / 64.0
  photo = np.clip(np.stack([0.5 + 0.4 * np.sin(9 * xx + 3 * yy), 0.5 + 0.3 * np.cos(7 * yy),
                            xx * yy], -1) + 0.05 * rng.normal(size=(64, 64, 3)), 0, 1)
  photo = photo.astype(np.float32)
  psnr = {}
  for layer, steps in [("relu1_1", 300), ("relu3_1", 100), ("relu5_1", 100)]:
    rgb, _ = experiments.reconstruct(real_params, photo,
                                     experiments.ReconstructConfig(layer=layer, opt=opt(steps)))
    psnr[layer] = metrics.psnr(rgb, photo)
  assert psnr["relu1_1"] >= 30, psnr
  assert psnr["relu1_1"] > psnr["relu3_1"] > psnr["relu5_1"], psnr


def test_psnr():
  a = np.zeros((4, 4, 3))
  assert metrics.psnr(a, a) == float("inf")
  assert metrics.psnr(a, np.full_like(a, 0.1)) == pytest.approx(20.0)


@pytest.mark.parametrize("init", experiments.INITS)
def test_init_choices(random_params, init):
  content, style = images(6)
  other = np.full((20, 30, 3), 0.25, np.float32)
  cfg = experiments.StylizeConfig(init=init, style_layers=SHALLOW, content_layers=("relu1_1",))
  problem = cfg.build(random_params, experiments.Inputs(content, (style,), other))
  x0 = problem.rgb(problem.x0(jax.random.key(0)))
  assert x0.shape == content.shape
  expected = {"content": content,
              "style": np.asarray(jax.image.resize(style, content.shape, "lanczos3")),
              "image": np.full_like(content, 0.25)}.get(init)
  if expected is None:  # Noise: seeded, uniform over [0, 1].
    assert problem.init_x is None and 0.2 < x0.std() < 0.4
    assert np.abs(x0 - problem.rgb(problem.x0(jax.random.key(1)))).mean() > 0.1
  else:
    np.testing.assert_allclose(x0, np.clip(expected, 0, 1), atol=1e-4)


def test_solve_and_run_agree(random_params):
  """experiments.run = build + solve from cfg.seed; the wrappers pass their inputs through."""
  content, style = images(7)
  cfg = experiments.StylizeConfig(content_layers=("relu1_1",), style_layers=SHALLOW,
                                  init="noise", seed=5, opt=opt(3))
  inputs = experiments.Inputs(content, (style,))
  a, ra = experiments.run(cfg, random_params, inputs)
  b, rb = experiments.solve(cfg.build(random_params, inputs), cfg.opt, seed=5)
  c, _ = experiments.stylize(random_params, content, [style], cfg)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a, c)
  assert ra.loss_history == rb.loss_history and ra.evaluations == 4 and ra.status == "steps"
