"""The experiments on small images: random weights unless the real ones are the point."""

import jax
import numpy as np
import pytest

from jnst import losses, optimize, transfer, vgg
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
  _, terms = problem.loss(x, problem.data)
  return {k: float(v) for k, v in terms.items()}


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_stylize_from_noise_lowers_both_terms(random_params, optimizer):
  content, style = images()
  cfg = transfer.StylizeConfig(content_layers=("relu2_1",), style_layers=SHALLOW, init="noise",
                               style_weight=10.0,
                               opt=opt(25, optimizer=optimizer,
                                       learning_rate=1.0 if optimizer == "lbfgs" else 5.0))
  problem = transfer.stylize_problem(random_params, content, [style], cfg)
  rgb, res = transfer.stylize(random_params, content, [style], cfg)
  before = weighted_terms(problem, problem.x0(jax.random.key(cfg.seed)))
  after = weighted_terms(problem, res.x)
  assert after["content"] < before["content"] and after["style"] < before["style"]
  assert res.loss_history[-1] < res.loss_history[0]
  assert np.abs(rgb - content).mean() > 0.01 and np.abs(rgb - style[:32]).mean() > 0.01


def test_stylize_from_content_moves_towards_style(random_params):
  content, style = images(1)
  cfg = transfer.StylizeConfig(content_layers=("relu2_1",), style_layers=SHALLOW, opt=opt(20))
  problem = transfer.stylize_problem(random_params, content, [style], cfg)
  rgb, res = transfer.stylize(random_params, content, [style], cfg)
  before = weighted_terms(problem, vgg.preprocess(random_params, content))
  after = weighted_terms(problem, res.x)
  assert before["content"] < 1e-3 * max(after["content"], 1.0)  # Starts at the content...
  assert after["style"] < 0.5 * before["style"]                 # ...and moves to the style.
  assert np.abs(rgb - content).mean() > 0.01


def test_synthesize_lowers_style_loss_100x(random_params):
  _, style = images(2)
  cfg = transfer.SynthesizeConfig(style_layers=SHALLOW, opt=opt(60))
  rgb, res = transfer.synthesize(random_params, style, cfg)
  assert rgb.shape == style.shape
  assert res.loss_history[-1] * 100 <= res.loss_history[0]


def test_same_seed_same_image_different_seed_different(random_params):
  content, _ = images()
  run = lambda seed: transfer.reconstruct(
      random_params, content, transfer.ReconstructConfig(layer="relu1_2", seed=seed, opt=opt(5)))[0]
  a, b, c = run(3), run(3), run(4)
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).mean() > 1e-3


def test_original_colors_keeps_content_chroma(random_params):
  content, style = images(3)
  cfg = transfer.StylizeConfig(content_layers=("relu2_1",), style_layers=SHALLOW,
                               original_colors=True, opt=opt(10))
  rgb, _ = transfer.stylize(random_params, content, [style], cfg)
  plain, _ = transfer.stylize(random_params, content, [style],
                              transfer.StylizeConfig(content_layers=("relu2_1",),
                                                     style_layers=SHALLOW, opt=opt(10)))
  iq = lambda im: transfer.rgb_to_yiq(im)[..., 1:]
  y = lambda im: transfer.rgb_to_yiq(im)[..., 0]
  inside = np.all((rgb > 0.01) & (rgb < 0.99), -1)  # Away from clipping.
  assert inside.mean() > 0.5
  np.testing.assert_allclose(iq(rgb)[inside], iq(content)[inside], atol=2e-3)
  np.testing.assert_allclose(y(rgb)[inside], y(plain)[inside], atol=2e-3)


def test_style_blend_is_weighted_gram_sum(random_params):
  _, s1 = images(4)
  _, s2 = images(5)
  t = transfer.style_targets(random_params, [s1, s2], ("relu1_1",), (1.0, 3.0), "max", "float32")
  g = lambda s: losses.gram(vgg.extract(random_params, s[None], ["relu1_1"])["relu1_1"][0])
  np.testing.assert_allclose(t["relu1_1"], 0.25 * g(s1) + 0.75 * g(s2), rtol=1e-4)


@pytest.mark.parametrize("kw,match", [
    (dict(style_blend_weights=(1.0, 2.0)), "2 style blend weights for 1 style"),
    (dict(style_weight=-1.0), "style_weight must be"),
    (dict(style_layers=("relu9_1",)), "unknown layer"),
    (dict(style_layer_weights=(1.0,)), "1 style layer weights for 5 style layers"),
    (dict(init="sideways"), "unknown init"),
])
def test_stylize_bad_config(random_params, kw, match):
  content, style = images()
  with pytest.raises(JnstError, match=match):
    transfer.stylize_problem(random_params, content, [style], transfer.StylizeConfig(**kw))


def test_block_layer_names(random_params):
  content, style = images()
  cfg = transfer.StylizeConfig(style_layers=("block1",), content_layers=("relu1_2",))
  problem = transfer.stylize_problem(random_params, content, [style], cfg)
  assert set(problem.data["targets"]["style"]) == {"relu1_1", "relu1_2"}


def test_reconstruction_detail_falls_with_depth(real_params):
  """Paper Fig. 1 / the seeds' finding: lower layers reconstruct the photo almost exactly."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:64, :64] / 64.0
  photo = np.clip(np.stack([0.5 + 0.4 * np.sin(9 * xx + 3 * yy), 0.5 + 0.3 * np.cos(7 * yy),
                            xx * yy], -1) + 0.05 * rng.normal(size=(64, 64, 3)), 0, 1)
  photo = photo.astype(np.float32)
  psnr = {}
  for layer, steps in [("relu1_1", 300), ("relu3_1", 100), ("relu5_1", 100)]:
    rgb, _ = transfer.reconstruct(real_params, photo,
                                  transfer.ReconstructConfig(layer=layer, opt=opt(steps)))
    psnr[layer] = transfer.psnr(rgb, photo)
  assert psnr["relu1_1"] >= 30, psnr
  assert psnr["relu1_1"] > psnr["relu3_1"] > psnr["relu5_1"], psnr


@pytest.mark.parametrize("init", ["content", "style", "image", "noise"])
def test_init_choices(random_params, init):
  content, style = images(6)
  other = np.full((20, 30, 3), 0.25, np.float32)
  cfg = transfer.StylizeConfig(init=init, style_layers=SHALLOW, content_layers=("relu1_1",))
  problem = transfer.stylize_problem(random_params, content, [style], cfg, init_image=other)
  x0 = transfer.to_rgb(random_params, problem.x0(jax.random.key(0)))
  assert x0.shape == content.shape
  expected = {"content": content, "style": np.asarray(jax.image.resize(style, content.shape, "lanczos3")),
              "image": np.full_like(content, 0.25)}.get(init)
  if expected is None:  # Noise: seeded, uniform over [0, 1].
    assert 0.2 < x0.std() < 0.4
  else:
    np.testing.assert_allclose(x0, np.clip(expected, 0, 1), atol=1e-4)
