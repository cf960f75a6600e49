"""jnst.calibrate: term scales that give a backbone the reference's term values on a pair,
and the Objective applying them."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import jnst.calibrate as calibrate
import jnst.objective as objective
from jnst import backbones
from jnst.backbones import resnet, vgg

REPO = Path(__file__).resolve().parent.parent


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


def _scaled(params, s):
  """VGG params whose every ReLU layer is ``s`` times the original's (s > 0): the first kernel
  and every bias times s. Raw content terms scale by s², style terms by s⁴."""
  return {"input": params["input"], "conv": {
      n: {"kernel": c["kernel"] * (s if n == "conv1_1" else 1.0), "bias": c["bias"] * s}
      for n, c in params["conv"].items()}}


def _pair(seed, shape=(24, 32, 3), style_shape=(20, 28, 3)):
  rng = np.random.default_rng(seed)
  return (rng.uniform(size=shape).astype(np.float32),
          rng.uniform(size=style_shape).astype(np.float32))


def test_start_scales_find_a_known_scale(random_params):
  s = 0.5
  r = calibrate.start_scales(vgg.VGG19, random_params, vgg.VGG19, _scaled(random_params, s),
                             [_pair(3), _pair(4, (32, 24, 3))])
  assert len(r["per_pair"]) == 2
  for p in r["per_pair"]:
    assert p["content"] == pytest.approx(1 / s ** 2, rel=1e-3)
    assert p["style"] == pytest.approx(1 / s ** 4, rel=1e-3)
  assert r["median"]["style"] == pytest.approx(1 / s ** 4, rel=1e-3)


def test_find_multiplier_on_a_known_curve():
  runs = []

  def run_r(m):  # r falls as m grows; r = 0.2 at m = 37.
    runs.append(m)
    return 0.2 * (m / 37.0) ** -0.6

  m, probes = calibrate.find_multiplier(run_r, 0.2, tol=0.01, max_runs=8)
  assert m == pytest.approx(37.0, rel=0.02)
  assert probes[0] == (1.0, pytest.approx(0.2 * 37 ** 0.6)) and probes[1][0] == pytest.approx(4.0)
  assert len(runs) <= 5
  # Downwards too, and a target r never reached stops at the edge of the range.
  m, _ = calibrate.find_multiplier(lambda m: 0.2 * (m / 0.01) ** -0.6, 0.2, tol=0.01)
  assert m == pytest.approx(0.01, rel=0.02)
  m, probes = calibrate.find_multiplier(lambda m: 0.5 + 0.0 * m, 0.1, max_runs=20)
  assert m == pytest.approx(calibrate.M_RANGE) and len(probes) < 20


def test_combine_leaves_out_pairs_that_never_reached_the_target():
  """VGG-16's real probes at 64 px (weights/README.md): r barely moves with β, so the search
  extrapolates to ×256; such a pair must not set the style scale."""
  flat = [(1.0, 0.01362), (4.0, 0.01368), (16.0, 0.01369), (64.0, 0.0139)]
  assert not calibrate.reached(flat, 0.001196, 0.05)
  assert calibrate.reached([(1.0, 0.5), (4.0, 0.0121)], 0.012, 0.05)
  stuck = {"multiplier": 256.0, "converged": False}
  assert calibrate.combine([stuck, stuck]) == (1.0, False)
  m, ok = calibrate.combine([{"multiplier": 2.0, "converged": True},
                             {"multiplier": 8.0, "converged": True}])
  assert m == pytest.approx(4.0) and ok
  m, ok = calibrate.combine([{"multiplier": 2.0, "converged": True}, stuck])
  assert m == pytest.approx(2.0) and not ok


def test_scales_per_variant():
  bb = vgg.VGG16
  assert backbones.scales_for(bb, "paper") == dict(bb.term_scales)
  two = backbones.with_scales(bb, "mean", {"content": 2.0, "style": 3.0})
  assert backbones.scales_for(two, "mean") == {"content": 2.0, "style": 3.0}
  assert backbones.scales_for(two, "paper") == dict(bb.term_scales)  # No entry: term_scales.
  three = backbones.with_scales(two, "mean", {"style": 5.0})  # Replaces the entry.
  assert backbones.scales_for(three, "mean") == {"style": 5.0}
  assert hash(three) != hash(two)  # Part of the compile-cache key.
  # The Objective applies the entry of its variant.
  content, style = _pair(5)
  params = bb.init_random(jax.random.key(1))
  layers = bb.default_style_layers
  terms = {"style": (1.0, {l: 1.0 / len(layers) for l in layers},
                     objective.style_target(bb, params, [style], layers))}
  x = bb.preprocess(params, content)
  got = {}
  for b in (dataclasses.replace(bb, term_scales=()), three):
    for v in ("paper", "mean"):
      obj, data = objective.build(b, params, terms, v)
      got[b is three, v] = float(obj(x, data)[1]["style"])
  assert got[True, "mean"] == pytest.approx(5.0 * got[False, "mean"], rel=1e-5)
  assert got[True, "paper"] == pytest.approx(dict(bb.term_scales)["style"] * got[False, "paper"],
                                             rel=1e-5)


def test_balance_recovers_a_wrong_style_scale(random_params):
  """The same network with features ×s and units given with the style scale 8× too small: the
  balancing runs are then the reference's runs with β/8, so the multiplier found is ≈ 8.
  (β = 30: random weights balance style and content there, where r depends on β most.)"""
  s = 0.5
  pair = _pair(6, (32, 32, 3), (32, 32, 3))
  logs = []
  rec = calibrate.balance(vgg.VGG19, random_params, vgg.VGG19, _scaled(random_params, s),
                          [pair], steps=40, tol=0.01, max_runs=6, style_weight=30.0,
                          start={"content": 1 / s ** 2, "style": 1 / (8 * s ** 4)},
                          log=logs.append)
  assert rec["pairs"][0]["multiplier"] == pytest.approx(8.0, rel=0.3), rec["pairs"][0]
  assert rec["pairs"][0]["converged"] and rec["converged"]
  assert rec["term_scales"]["style"] == pytest.approx(1 / s ** 4, rel=0.3)
  assert rec["term_scales"]["content"] == 1 / s ** 2
  assert 0 < rec["pairs"][0]["r_reference"] < 1 and logs
  assert calibrate.rounded({"content": 123456.0, "style": 0.000123456}) == (
      ("content", 120000.0), ("style", 0.00012))


def test_calibrate_script(tmp_path, random_weights_file):
  """scripts/calibrate_backbone.py end to end at a tiny size (random VGG-16 against random
  VGG-19): the record and the printed scales; bad input is one line, exit 2, no record."""
  params = vgg.VGG16.init_random(jax.random.key(2))
  w16 = vgg.write(tmp_path / "w16.h5", {n: (np.asarray(c["kernel"]), np.asarray(c["bias"]))
                                        for n, c in params["conv"].items()},
                  arch=vgg.ARCHS["vgg16"], source="random", source_sha256="0" * 64,
                  convention="caffe_bgr", mean=vgg.CAFFE_MEAN_BGR, storage_dtype="float16")
  rng = np.random.default_rng(0)
  for name, shape in (("c.png", (24, 32, 3)), ("s.png", (30, 30, 3))):
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(tmp_path / name)
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
  script = [sys.executable, str(REPO / "scripts" / "calibrate_backbone.py"), "--backbone=vgg16",
            f"--weights={w16}", f"--reference_weights={random_weights_file}", "--size=32"]
  out = tmp_path / "cal"
  p = subprocess.run(script + [f"--pairs={tmp_path / 'c.png'}:{tmp_path / 's.png'}",
                               "--steps=3", "--max_runs=2", f"--output_dir={out}"],
                     capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
  assert p.returncode == 0, p.stderr[-3000:]
  rec = json.loads((out / "calibration_vgg16_paper.json").read_text())
  assert rec["backbone"] == "vgg16" and rec["reference"] == "vgg19" and rec["steps"] == 3
  assert len(rec["pairs"]) == 1 and 1 <= len(rec["pairs"][0]["probes"]) <= 2
  assert rec["term_scales"]["style"] == pytest.approx(
      rec["start"]["median"]["style"] * rec["multiplier"])
  assert rec["current"] == dict(vgg.VGG16.term_scales) and "converged" in rec
  assert "term_scales for variant paper: (('content', " in p.stdout
  for bad, msg in (("--pairs=nonsense", "must be demo or CONTENT:STYLE"),
                   (f"--pairs={tmp_path / 'none.png'}:{tmp_path / 's.png'}", "none.png")):
    p = subprocess.run(script + [bad, f"--output_dir={tmp_path / 'no'}"], capture_output=True,
                       text=True, env=env, timeout=300, cwd=REPO)
    assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "no" / "calibration_vgg16_paper.json").exists()
