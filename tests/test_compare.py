"""jnst.bench.compare and scripts/compare_backbones.py (random weights, tiny images)."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jnst.backbones import vgg
from jnst.bench import compare
from jnst.errors import JnstError
from tests.script_runner import run_script

REPO = Path(__file__).resolve().parent.parent


def test_first_balanced():
  metrics = {"terms": {"style": np.array([9.0, 5.0, 2.0, 1.0]),
                       "content": np.array([0.0, 1.0, 2.0, 3.0])}}
  assert compare.first_balanced(metrics, 1.0) == 2
  assert compare.first_balanced(metrics, 5.0) == 1
  assert compare.first_balanced(metrics, 0.1) is None


@pytest.mark.parametrize("kw,match", [(dict(steps=0), "--steps"), (dict(balance=0.0), "balance"),
                                      (dict(balance=float("nan")), "balance")])
def test_config_rejects(kw, match):
  with pytest.raises(JnstError, match=match):
    compare.CompareConfig(**kw).validate()


def test_compare_in_process(random_params):
  rng = np.random.default_rng(0)
  content, style = (rng.uniform(size=(24, 32, 3)).astype(np.float32) for _ in range(2))
  p16 = vgg.VGG16.init_random(jax.random.key(1))
  # Any content > 0 balances: step 1 (at the content image, content term 0) cannot, step 2 can.
  cfg = compare.CompareConfig(steps=3, repeats=1, balance=1e20)
  recs, imgs = compare.run([("vgg19", random_params), ("vgg16", p16)], content, style, cfg,
                           log=lambda s: None)
  assert [r["backbone"] for r in recs] == ["vgg19", "vgg16"]
  for r in recs:
    assert r["eval_ms"] > 0 and r["evaluations"] == 4 and r["evals_to_balance"] == 2
    assert r["xla_temp_mb"] is None or r["xla_temp_mb"] > 0
    assert set(r["final_terms"]) == {"content", "style", "tv"}
  assert recs[1]["term_scales"] == dict(vgg.VGG16.term_scales)
  assert recs[1]["layers"]["style"] == list(vgg.VGG16.default_style_layers)
  assert all(im.shape == (24, 32, 3) for im in imgs)
  md = compare.markdown(recs, cfg, content.shape, "test machine")
  assert "| vgg16 |" in md and "32x24 px" in md
  sheet = compare.grid(content, style, recs, imgs)
  assert sheet.ndim == 3 and sheet.shape[1] > 4 * 256


def test_compare_script(tmp_path, random_weights_file):
  params = vgg.VGG16.init_random(jax.random.key(2))
  w16 = vgg.write(tmp_path / "w16.h5", {n: (np.asarray(c["kernel"]), np.asarray(c["bias"]))
                                        for n, c in params["conv"].items()},
                  arch=vgg.ARCHS["vgg16"], source="random", source_sha256="0" * 64,
                  convention="caffe_bgr", mean=vgg.CAFFE_MEAN_BGR, storage_dtype="float16")
  env = {"JNST_WEIGHTS": str(random_weights_file)}
  out = tmp_path / "cmp"
  p = run_script("compare_backbones", "--backbones=vgg16,vgg19", "--size=32", "--steps=2",
                 "--repeats=1", f"--weights=vgg16={w16}", f"--output_dir={out}", env=env)
  assert p.returncode == 0, p.stderr[-3000:]
  rec = json.loads((out / "compare.json").read_text())
  assert [r["backbone"] for r in rec["results"]] == ["vgg16", "vgg19"]
  assert rec["config"]["steps"] == 2 and rec["size"] == 32
  assert sorted(f.name for f in out.iterdir()) == ["compare.json", "compare.md", "grid.png"]
  p = run_script("compare_backbones", "--backbones=vgg19,vgg11",
                 f"--output_dir={tmp_path / 'no'}", env=env)
  assert p.returncode == 2 and "unknown backbone 'vgg11'" in p.stderr
  p = run_script("compare_backbones", "--weights=vgg16", f"--output_dir={tmp_path / 'no'}",
                 env=env)
  assert p.returncode == 2 and "--weights=vgg16 must be NAME=PATH pairs" in p.stderr
