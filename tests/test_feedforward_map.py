"""N feed-forward networks by ``jax.lax.map`` or unrolled (one program, one network after
another) give the same params as by ``jax.vmap``; "auto" is unroll on CPU (vmap's grouped
convs are slow there), vmap elsewhere; the training record says which ran. Random weights, a
4-wide network, 32 px, CPU."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from PIL import Image

import jnst.feedforward as ff
import jnst.ff_train as ff_train
from jnst.errors import JnstError

CFG = ff.FFConfig(content_layers=("relu2_1",), style_layers=("relu1_2", "relu2_1"), width=4,
                  num_res_blocks=1, image_size=32, batch_size=2, steps=3, learning_rate=1e-2,
                  style_weight=10.0, sweep=("style_weight", (3.0, 30.0)))


def test_resolve_member_map():
  assert ff.resolve_member_map("auto", 2, "cpu") == "unroll"
  assert ff.resolve_member_map("auto", 1, "cpu") == "vmap"
  assert ff.resolve_member_map("auto", 4, "gpu") == "vmap"
  assert ff.resolve_member_map("vmap", 4, "cpu") == "vmap"
  assert ff.resolve_member_map("map", 1, "tpu") == "map"
  with pytest.raises(JnstError, match="auto, vmap, map, unroll"):
    ff.resolve_member_map("scan", 2)
  with pytest.raises(JnstError, match="vmap, map, unroll here"):
    ff.train_step(None, CFG, "auto")


def test_map_and_unroll_equal_vmap_after_a_few_steps(random_params):
  rng = np.random.default_rng(0)
  styles = [rng.uniform(size=(40, 36, 3)).astype(np.float32)]
  batches = rng.uniform(size=(3, 2, 32, 32, 3)).astype(np.float32)
  setup = ff.build(CFG, random_params, styles)
  out = {}
  for how in ("vmap", "map", "unroll"):
    state, fn, losses = ff.init_state(CFG, setup.n), ff.train_step(setup.objective, CFG, how), []
    for b in batches:
      state, m = fn(state, b, setup.shared, setup.members)
      losses.append(np.asarray(m["loss"]))
    out[how] = jax.device_get(state), np.stack(losses)
  sv, lv = out["vmap"]
  assert lv.shape == (3, 2) and lv[0, 0] != lv[0, 1]  # Two different networks.
  for how in ("map", "unroll"):
    sm, lm = out[how]
    np.testing.assert_allclose(lm, lv, rtol=1e-4)
    for a, b in zip(jax.tree.leaves(sm["params"]), jax.tree.leaves(sv["params"])):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
  # The steps moved the params: the comparison is not of two initial states.
  init = jax.device_get(ff.init_state(CFG, setup.n))
  assert max(float(np.abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(sm["params"]), jax.tree.leaves(init["params"]))) > 1e-3


def test_training_record_says_which_ran(tmp_path, random_params):
  d = tmp_path / "photos"
  d.mkdir()
  rng = np.random.default_rng(0)
  for i in range(3):
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(d / f"p{i}.png")
  Image.fromarray(rng.integers(0, 255, (30, 30, 3), np.uint8)).save(tmp_path / "style.png")
  opts = ff_train.RunOptions(styles=(str(tmp_path / "style.png"),), data_dir=str(d),
                             output=str(tmp_path / "out"), checkpoint_every=0, sample_every=0,
                             log_every=0, hold_out=1, member_map="map")
  rec = ff_train.train_and_evaluate(dataclasses.replace(CFG, steps=1), opts, random_params,
                                    lambda m: None)
  assert rec["member_map"] == {"asked": "map", "ran": "map"}
  assert json.loads((tmp_path / "out" / "record.json").read_text())["member_map"]["ran"] == "map"


def test_training_benchmark_times_vmap_and_unroll(random_params):
  from jnst.bench import ff_torch
  style = np.random.default_rng(1).uniform(size=(32, 32, 3)).astype(np.float32)
  rows = ff_torch.training(random_params, style, ns=(2,), size=32, batch_size=2, steps=1,
                           cfg=CFG)
  assert [(r["networks"], r["member_map"]) for r in rows] == [(2, "vmap"), (2, "unroll")]
  for r in rows:
    assert r["step_s"] > 0 and r["images_per_s"] == pytest.approx(2 * r["networks"] / r["step_s"])
