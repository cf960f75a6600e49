"""The public API a notebook user calls (random weights, tiny images)."""

import jax
import numpy as np
import pytest

import jnst


@pytest.fixture(scope="module")
def pair():
  rng = np.random.default_rng(0)
  return (rng.uniform(size=(32, 24, 3)).astype(np.float32),
          rng.uniform(size=(24, 24, 3)).astype(np.float32))


def test_stylize_returns_image_and_record(pair, random_params):
  content, style = pair
  image, rec = jnst.stylize(content, style, params=random_params, steps=3, style_weight=1e2,
                            style_layers=("relu1_1", "relu2_1"), content_layers=("relu2_2",))
  assert image.shape == (32, 24, 3) and image.dtype == np.float32
  assert 0 <= image.min() and image.max() <= 1
  assert len(rec["loss_history"]) == rec["evaluations"] == 4
  assert rec["loss_history"][-1] < rec["loss_history"][0]
  assert rec["config"]["style_weight"] == 100.0 and rec["config"]["opt"]["steps"] == 3
  assert set(rec["final_terms"]) == {"content", "style", "tv"}


def test_api_matches_the_library_path(pair, random_params):
  content, style = pair
  image, rec = jnst.stylize(content, [style], params=random_params, steps=2, init="noise", seed=3)
  cfg = jnst.StylizeConfig(init="noise", seed=3, opt=jnst.OptConfig(steps=2, chunk=2))
  ref, res = jnst.experiments.stylize(random_params, content, [style], cfg)
  np.testing.assert_array_equal(image, ref)
  assert rec["loss_history"] == res.loss_history


def test_reconstruct_synthesize_and_seeds(pair, random_params):
  content, style = pair
  rec_img, rec = jnst.reconstruct(content, params=random_params, steps=2, layer="relu2_1")
  assert rec_img.shape == content.shape and set(rec["final_terms"]) == {"content"}
  tex, rec = jnst.synthesize(style, params=random_params, steps=2, size=(16, 20))
  assert tex.shape == (16, 20, 3) and set(rec["final_terms"]) == {"style"}
  imgs, rec = jnst.run_seeds("reconstruct", content, params=random_params, seeds=[4, 5], steps=2,
                             layer="relu2_1")
  assert imgs.shape == (2, 32, 24, 3) and rec["seeds"] == [4, 5]
  assert rec["batch_choice"].startswith("auto")
  single, _ = jnst.reconstruct(content, params=random_params, steps=2, layer="relu2_1", seed=5)
  np.testing.assert_allclose(imgs[1], single, atol=2e-3)


@pytest.mark.parametrize("call,message", [
    (lambda c, s, p: jnst.stylize(c, s, params=p, stpes=3), "unknown option(s) stpes"),
    (lambda c, s, p: jnst.stylize(c, s, params=p, variant="sum"), "unknown loss variant"),
    (lambda c, s, p: jnst.stylize(c, s, params=p, init="nosie"), "unknown init 'nosie'"),
    (lambda c, s, p: jnst.stylize(c, s, params=p, backbone="vgg99"), "unknown backbone 'vgg99'"),
    (lambda c, s, p: jnst.stylize(c, s, params=p, pooling="min"), "unknown pooling 'min'"),
    (lambda c, s, p: jnst.run_seeds("paint", c, s, params=p), "unknown experiment 'paint'"),
])
def test_bad_options_are_clear_errors(pair, random_params, call, message):
  with pytest.raises(jnst.JnstError, match=message.replace("(", r"\(").replace(")", r"\)")):
    call(*pair, random_params)


def test_load_backbone_from_a_file(random_weights_file):
  bb, params = jnst.load_backbone("vgg19", random_weights_file, pooling="avg")
  assert bb.name == "vgg19" and bb.pooling == "avg"
  assert set(params) == {"conv", "input"} and params["conv"]["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
  with pytest.raises(jnst.JnstError, match="holds vgg19 weights, not vgg16"):
    jnst.load_backbone("vgg16", random_weights_file)
  assert jax.tree.leaves(params)[0].dtype == np.float32
