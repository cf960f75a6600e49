"""jnst.objective with a toy backbone: a new backbone plugs in through the documented
interface, terms are weighted as configured, TV is measured in RGB 0-255 steps whatever the
input normalisation, term_scales apply, bad terms and variants are clear errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnst import objective


@dataclasses.dataclass(frozen=True)
class Toy:
  """A one-layer "backbone": relu(x @ W), input (rgb - 0.5) / std."""
  term_scales: tuple = ()
  name = "toy"

  def preprocess(self, params, rgb):
    return (rgb - 0.5) / params["std"]

  def deprocess(self, params, x):
    return x * params["std"] + 0.5

  def pixel_scale(self, params):
    return 255.0 * params["std"]

  def features(self, params, x, layers):
    assert set(layers) <= {"relu"}
    return {"relu": jax.nn.relu(x @ params["w"])}

  def extract(self, params, rgb, layers):
    return self.features(params, self.preprocess(params, rgb), layers)

  def prepare(self, params, layers=None):
    return {**params, "prepared": jnp.ones(())}


def setup(std=0.25, scales=()):
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            "std": jnp.full((3,), std, jnp.float32)}
  content, style, x_rgb = (jnp.asarray(rng.uniform(size=(6, 5, 3)), jnp.float32) for _ in range(3))
  bb = Toy(scales)
  terms = {"content": (2.0, {"relu": 1.5}, objective.content_target(bb, params, content, ["relu"])),
           "style": (3.0, {"relu": 0.5}, objective.style_target(bb, params, [style], ["relu"])),
           "tv": (0.25, {}, None)}
  obj, data = objective.build(bb, params, terms)
  return obj, data, params, content, style, bb.preprocess(params, x_rgb), x_rgb


def reference(params, content, style, x_rgb, scales):
  """The same loss in float64 NumPy, from the paper's formulas."""
  w = np.asarray(params["w"], np.float64)
  feat = lambda rgb: np.maximum(((np.asarray(rgb, np.float64) - 0.5) / 0.25) @ w, 0)
  f, p, s = feat(x_rgb), feat(content), feat(style)
  m, n = 30, 4
  g, a = f.reshape(m, n).T @ f.reshape(m, n), s.reshape(m, n).T @ s.reshape(m, n)
  px = 255.0 * np.asarray(x_rgb, np.float64)  # TV in RGB 0-255 steps.
  tv = np.sum(np.diff(px, axis=0) ** 2) + np.sum(np.diff(px, axis=1) ** 2)
  return {"content": 2.0 * 1.5 * 0.5 * np.sum((f - p) ** 2) * scales.get("content", 1.0),
          "style": 3.0 * 0.5 * np.sum((g - a) ** 2) / (4 * n * n * m * m) * scales.get("style", 1.0),
          "tv": 0.25 * tv}


@pytest.mark.parametrize("scales", [(), (("content", 2.0), ("style", 0.5))])
def test_terms_weighted_and_tv_in_pixel_steps(scales):
  obj, data, params, content, style, x, x_rgb = setup(scales=scales)
  assert obj.layers == ("relu",) and [t.name for t in obj.terms] == ["content", "style", "tv"]
  assert "prepared" in data["params"]  # The backbone's prepare ran, once, at build time.
  loss, terms = jax.jit(obj)(x, data)
  ref = reference(params, content, style, x_rgb, dict(scales))
  for k in ref:
    np.testing.assert_allclose(terms[k], ref[k], rtol=1e-4, err_msg=k)
  np.testing.assert_allclose(loss, sum(ref.values()), rtol=1e-4)


def test_problem_rgb_and_noise_init():
  obj, data, params, content, *_ = setup()
  prob = objective.Problem(obj, data, params, None, (6, 5, 3), colors_from=None)
  x0 = prob.x0(jax.random.key(1))
  rgb = prob.rgb(x0)
  assert rgb.shape == (6, 5, 3) and 0 <= rgb.min() and rgb.max() <= 1 and rgb.std() > 0.1
  np.testing.assert_allclose(prob.rgb(obj.backbone.preprocess(params, content)), content, atol=1e-6)


@pytest.mark.parametrize("terms,variant,message", [
    ({"contnet": (1.0, {}, None)}, "paper", "unknown loss term 'contnet'"),
    ({"tv": (-1.0, {}, None)}, "paper", "tv loss weight must be a finite number >= 0"),
    ({"tv": (1.0, {}, None)}, "sum", "unknown loss variant 'sum'"),
])
def test_bad_objectives_are_clear_errors(terms, variant, message):
  _, _, params, *_ = setup()
  with pytest.raises(ValueError, match=message):
    objective.build(Toy(), params, terms, variant)
