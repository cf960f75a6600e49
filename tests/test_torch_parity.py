"""The PyTorch reference computes exactly what jnst computes (runs whenever torch imports)."""

import dataclasses

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jnst import optimize, transfer, vgg  # noqa: E402
from jnst.bench import torch_ref  # noqa: E402


@pytest.fixture(scope="module")
def params():
  # scale < 1 keeps activations of a random 19-layer stack in a well-conditioned range.
  return vgg.init_random(jax.random.key(1), scale=0.8)


def _images(h=40, w=48):
  rng = np.random.default_rng(0)
  return (rng.uniform(size=(h, w, 3)).astype(np.float32),
          rng.uniform(size=(h + 8, w - 8, 3)).astype(np.float32))


CONFIGS = [
    transfer.StylizeConfig(),
    transfer.StylizeConfig(pooling="avg", variant="mean", tv_weight=1e-3,
                           content_layers=("relu3_1", "conv4_1"),
                           style_layers=("relu1_2", "pool2", "relu3_3"),
                           style_layer_weights=(0.5, 1.0, 2.0)),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["defaults", "avg-mean-tv"])
def test_loss_and_gradient_match(params, cfg):
  content, style = _images()
  problem = transfer.stylize_problem(params, content, [style], cfg)
  x = problem.init_x + 5.0 * jax.random.normal(jax.random.key(2), problem.init_x.shape)
  (loss, terms), grad = jax.value_and_grad(problem.loss, has_aux=True)(x, problem.data)
  tl, _ = torch_ref.stylize_problem(params, content, [style], cfg)
  t_loss, t_grad = torch_ref.value_and_grad(tl, torch_ref.to_nchw(np.asarray(x)))
  np.testing.assert_allclose(float(t_loss), float(loss), rtol=1e-4)
  t_grad = torch_ref.to_nhwc(t_grad)[0]
  np.testing.assert_allclose(t_grad, np.asarray(grad), rtol=1e-4,
                             atol=1e-4 * float(np.abs(grad).max()))


def test_adam_trajectories_match(params):
  content, style = _images()
  cfg = transfer.StylizeConfig()
  problem = transfer.stylize_problem(params, content, [style], cfg)
  opt = optimize.OptConfig(optimizer="adam", steps=20, learning_rate=1.0, chunk=20)
  res = optimize.run(problem.loss, problem.init_x, problem.data, opt)
  tl, xc = torch_ref.stylize_problem(params, content, [style], cfg)
  tres = torch_ref.run(tl, xc, opt)
  assert tres.evaluations == int(res.evaluations) == 21
  rgb = np.asarray(vgg.deprocess(params, res.x))
  t_rgb = torch_ref.to_nhwc(tl.net.deprocess(tres.x))[0]
  np.testing.assert_allclose(t_rgb, rgb, atol=1e-3)
  np.testing.assert_allclose(tres.loss_history, res.loss_history, rtol=1e-3)


def test_lbfgs_runs_the_same_number_of_evaluations(params):
  content, style = _images(32, 32)
  cfg = dataclasses.replace(transfer.StylizeConfig(), style_layers=("relu1_1", "relu2_1"),
                            content_layers=("relu2_2",))
  tl, xc = torch_ref.stylize_problem(params, content, [style], cfg)
  res = torch_ref.run(tl, xc, optimize.OptConfig(steps=7))
  assert res.evaluations == 8 and len(res.loss_history) == 8
  assert res.loss_history[-1] < res.loss_history[0]


def test_stacked_batch_equals_separate_runs(params):
  """Adam on seeds stacked in a batch = independent runs (the losses sum)."""
  content, style = _images(32, 32)
  cfg = dataclasses.replace(transfer.StylizeConfig(), style_layers=("relu1_1", "relu2_1"),
                            content_layers=("relu2_2",))
  tl, xc = torch_ref.stylize_problem(params, content, [style], cfg)
  xs = xc.repeat(2, 1, 1, 1) + torch.randn(2, *xc.shape[1:], generator=torch.Generator().manual_seed(0))
  opt = optimize.OptConfig(optimizer="adam", steps=5, learning_rate=1.0)
  both = torch_ref.run(tl, xs, opt).x
  for i in range(2):
    one = torch_ref.run(tl, xs[i:i + 1], opt).x
    np.testing.assert_allclose(one.numpy(), both[i:i + 1].numpy(), rtol=1e-5, atol=1e-3)
