"""The PyTorch reference computes exactly what jnst computes (runs whenever torch imports)."""

import dataclasses

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jnst import optimize  # noqa: E402
from jnst.backbones import vgg  # noqa: E402
from jnst.bench import torch_ref  # noqa: E402
from jnst.experiments import Inputs, StylizeConfig  # noqa: E402


@pytest.fixture(scope="module")
def params():
  # scale < 1 keeps activations of a random 19-layer stack in a well-conditioned range.
  return vgg.VGG19.init_random(jax.random.key(1), scale=0.8)


def _images(h=40, w=48):
  rng = np.random.default_rng(0)
  return (rng.uniform(size=(h, w, 3)).astype(np.float32),
          rng.uniform(size=(h + 8, w - 8, 3)).astype(np.float32))


CONFIGS = [
    StylizeConfig(),
    StylizeConfig(pooling="avg", variant="mean", tv_weight=1e-3,
                  content_layers=("relu3_1", "conv4_1"),
                  style_layers=("relu1_2", "pool2", "relu3_3"),
                  style_layer_weights=(0.5, 1.0, 2.0)),
    StylizeConfig(style_layers=("relu1_1", "relu2_1", "relu3_1"), content_layers=("relu2_2",),
                  content_layer_weights=(3.0,), style_blend_weights=(1.0, 3.0)),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["defaults", "avg-mean-tv", "blend-two-styles"])
def test_loss_and_gradient_match(params, cfg):
  content, style = _images()
  styles = [style] if cfg.style_blend_weights is None else [style, style[::-1, ::-1] ** 2]
  problem = cfg.build(params, Inputs(content, tuple(styles)))
  x = problem.init_x + 5.0 * jax.random.normal(jax.random.key(2), problem.init_x.shape)
  (loss, terms), grad = jax.value_and_grad(problem.objective, has_aux=True)(x, problem.data)
  tl, xc = torch_ref.stylize_problem(params, content, styles, cfg)
  # Both start from the content image in the same input space.
  np.testing.assert_allclose(torch_ref.to_nhwc(xc)[0], np.asarray(problem.init_x), atol=1e-3)
  t_loss, t_grad = torch_ref.value_and_grad(tl, torch_ref.to_nchw(np.asarray(x)))
  np.testing.assert_allclose(float(t_loss), float(loss), rtol=1e-4)
  _, t_terms = tl(torch_ref.to_nchw(np.asarray(x)))
  for name in ("content", "style", "tv"):
    np.testing.assert_allclose(float(t_terms[name]), float(terms.get(name, 0.0)), rtol=1e-4,
                               atol=1e-6 * float(loss), err_msg=name)
  t_grad = torch_ref.to_nhwc(t_grad)[0]
  np.testing.assert_allclose(t_grad, np.asarray(grad), rtol=1e-4,
                             atol=1e-4 * float(np.abs(grad).max()))


def test_style_targets_match(params):
  """objective.style_target (blended raw Grams) = the reference's targets."""
  from jnst import objective
  content, style = _images()
  styles = [style, 1.0 - style]
  cfg = StylizeConfig(style_layers=("relu1_2", "relu2_1"), style_blend_weights=(2.0, 1.0))
  targets = objective.style_target(vgg.VGG19, params, styles, cfg.style_layers,
                                   cfg.style_blend_weights)
  tl, _ = torch_ref.stylize_problem(params, content, styles, cfg)
  assert set(tl.style) == set(targets) == {"relu1_2", "relu2_1"}
  for layer, a in targets.items():
    t = tl.style[layer].numpy()
    np.testing.assert_allclose(t, np.asarray(a), rtol=1e-4, atol=1e-5 * np.abs(t).max())
  # The blend matters: equal weights give other targets.
  equal = objective.style_target(vgg.VGG19, params, styles, cfg.style_layers)
  assert not np.allclose(np.asarray(equal["relu1_2"]), np.asarray(targets["relu1_2"]), rtol=1e-3)


def test_adam_trajectories_match(params):
  content, style = _images()
  cfg = StylizeConfig()
  problem = cfg.build(params, Inputs(content, (style,)))
  opt = optimize.OptConfig(optimizer="adam", steps=20, learning_rate=1.0, chunk=20)
  res = optimize.run(problem.objective, problem.init_x, problem.data, opt)
  assert isinstance(res, optimize.RunResult) and res.status == "steps" and res.steps == 20
  tl, xc = torch_ref.stylize_problem(params, content, [style], cfg)
  tres = torch_ref.run(tl, xc, opt)
  assert tres.evaluations == int(res.evaluations) == 21
  rgb = np.asarray(problem.backbone.deprocess(params, res.x))
  t_rgb = torch_ref.to_nhwc(tl.net.deprocess(tres.x))[0]
  np.testing.assert_allclose(t_rgb, rgb, atol=1e-3)
  np.testing.assert_allclose(tres.loss_history, res.loss_history, rtol=1e-3)


def test_lbfgs_runs_the_same_number_of_evaluations(params):
  content, style = _images(32, 32)
  cfg = dataclasses.replace(StylizeConfig(), style_layers=("relu1_1", "relu2_1"),
                            content_layers=("relu2_2",))
  tl, xc = torch_ref.stylize_problem(params, content, [style], cfg)
  res = torch_ref.run(tl, xc, optimize.OptConfig(steps=7))
  assert res.evaluations == 8 and len(res.loss_history) == 8
  assert res.loss_history[-1] < res.loss_history[0]
  # jnst's L-BFGS counts the same: steps evaluations plus the final one.
  problem = cfg.build(params, Inputs(content, (style,)))
  jres = optimize.run(problem.objective, problem.init_x, problem.data,
                      optimize.OptConfig(steps=7, chunk=7))
  assert jres.evaluations == 8 and len(jres.loss_history) == 8
  np.testing.assert_allclose(jres.loss_history[0], res.loss_history[0], rtol=1e-4)


def test_stacked_batch_equals_separate_runs(params):
  """Adam on seeds stacked in a batch = independent runs (the losses sum)."""
  content, style = _images(32, 32)
  cfg = dataclasses.replace(StylizeConfig(), style_layers=("relu1_1", "relu2_1"),
                            content_layers=("relu2_2",))
  tl, xc = torch_ref.stylize_problem(params, content, [style], cfg)
  xs = xc.repeat(2, 1, 1, 1) + torch.randn(2, *xc.shape[1:], generator=torch.Generator().manual_seed(0))
  # No cross-talk between members: the stack's loss is the sum, its gradient each member's.
  loss_both, grad_both = torch_ref.value_and_grad(tl, xs)
  singles = [torch_ref.value_and_grad(tl, xs[i:i + 1]) for i in range(2)]
  np.testing.assert_allclose(float(loss_both), sum(float(l) for l, _ in singles), rtol=1e-5)
  for i, (_, g) in enumerate(singles):
    np.testing.assert_allclose(grad_both[i:i + 1].numpy(), g.numpy(), rtol=1e-4,
                               atol=1e-5 * float(g.abs().max()))
  opt = optimize.OptConfig(optimizer="adam", steps=5, learning_rate=1.0)
  both = torch_ref.run(tl, xs, opt)
  runs = [torch_ref.run(tl, xs[i:i + 1], opt) for i in range(2)]
  np.testing.assert_allclose(both.loss_history, np.sum([r.loss_history for r in runs], 0),
                             rtol=1e-5)
  for i, one in enumerate(runs):
    diff = np.abs(one.x.numpy() - both.x[i:i + 1].numpy())
    # Adam's early steps are about lr * sign(g): a pixel whose gradient sits on a ReLU or
    # max-pool kink can take a different step from float rounding alone (batched and single
    # convs round differently), so a few pixels may differ by up to ~lr; with cross-talk
    # (e.g. a Gram over the whole batch) nearly every pixel differs.
    assert np.median(diff) < 1e-4, i
    assert np.mean(diff > 1e-3) < 0.1, (i, float(np.mean(diff > 1e-3)))


def test_torch_vgg_matches_the_backbone(params):
  """TorchVGG's features = VGG.features at every layer kind, both poolings."""
  rgb = np.random.default_rng(3).uniform(size=(1, 24, 28, 3)).astype(np.float32)
  net = torch_ref.TorchVGG(params)
  x = vgg.VGG19.preprocess(params, rgb)
  layers = ("conv1_1", "relu2_2", "pool3")
  for pooling in vgg.POOLINGS:
    got = vgg.VGG19.with_options(pooling=pooling).features(params, x, layers)
    with torch.no_grad():
      ref = net.features(torch_ref.to_nchw(np.asarray(x)), layers, pooling)
    for l in layers:
      r = torch_ref.to_nhwc(ref[l])
      np.testing.assert_allclose(np.asarray(got[l]), r, rtol=1e-4, atol=1e-4 * np.abs(r).max(),
                                 err_msg=f"{pooling} {l}")
