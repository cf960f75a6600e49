"""jnst.calibrate: term scales that give a backbone the reference's term values on a pair,
and the Objective applying them."""

import dataclasses

import jax
import numpy as np
import pytest

import jnst.calibrate as calibrate
import jnst.objective as objective
from jnst.backbones import resnet, vgg


def test_scaled_terms_match_reference(random_params):
  rng = np.random.default_rng(0)
  content = rng.uniform(size=(32, 40, 3)).astype(np.float32)
  style = rng.uniform(size=(24, 30, 3)).astype(np.float32) ** 2  # Another shape.
  r_params = resnet.RESNET50.init_random(jax.random.key(3))
  scales = calibrate.term_scales(vgg.VGG19, random_params, resnet.RESNET50, r_params, content,
                                 style)
  assert [t for t, _ in scales] == ["content", "style"]
  assert all(np.isfinite(s) and s > 0 for _, s in scales)
  ref = calibrate.raw_terms(vgg.VGG19, random_params, content, style)
  own = calibrate.raw_terms(resnet.RESNET50, r_params, content, style)
  for t, s in scales:
    assert own[t] * s == pytest.approx(ref[t], rel=1e-5)
  # The Objective multiplies the raw terms by the backbone's term_scales.
  layers = resnet.RESNET50.default_style_layers
  terms = {"style": (1.0, {l: 1.0 / len(layers) for l in layers},
                     objective.style_target(resnet.RESNET50, r_params, [style], layers))}
  x = resnet.RESNET50.preprocess(r_params, content)
  values = {}
  for bb in (resnet.RESNET50, dataclasses.replace(resnet.RESNET50, term_scales=scales)):
    obj, data = objective.build(bb, r_params, terms)
    values[bool(bb.term_scales)] = float(obj(x, data)[1]["style"])
  assert values[False] == pytest.approx(own["style"], rel=1e-4)
  assert values[True] == pytest.approx(ref["style"], rel=1e-4)
