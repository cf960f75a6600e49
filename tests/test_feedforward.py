"""Feed-forward training: the loss goes down, N vmapped networks equal N single ones, the
batch-sharded step equals the single-device one, checkpoints round-trip and --resume
continues exactly, and the photo loader (deterministic batches, skipped files)."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from jnst import checkpoints, data, feedforward as ff, ff_train
from jnst.errors import JnstError

REPO = Path(__file__).resolve().parent.parent
CFG = ff.FFConfig(content_layers=("relu2_1",), style_layers=("relu1_2", "relu2_1"), width=4,
                  num_res_blocks=1, image_size=32, batch_size=2, steps=4, learning_rate=1e-2,
                  style_weight=10.0)


@pytest.fixture(scope="module")
def style():
  return np.random.default_rng(1).uniform(size=(40, 36, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def batch():
  return np.random.default_rng(2).uniform(size=(2, 32, 32, 3)).astype(np.float32)


def run_steps(cfg, params, styles, batch, n_steps):
  setup = ff.build(cfg, params, styles)
  state = ff.init_state(cfg, setup.n)
  fn, out = ff.train_step(setup.objective, cfg), []
  for _ in range(n_steps):
    state, metrics = fn(state, batch, setup.shared, setup.members)
    out.append(jax.device_get(metrics))
  return jax.device_get(state), out, setup


def test_a_few_steps_lower_the_loss(random_params, style, batch):
  state, metrics, setup = run_steps(CFG, random_params, [style], batch, 6)
  losses = [float(m["loss"][0]) for m in metrics]
  assert setup.n == 1 and losses[-1] < 0.8 * losses[0], losses
  assert int(state["step"]) == 6
  terms = metrics[0]["terms"]
  np.testing.assert_allclose(sum(float(v[0]) for v in terms.values()), losses[0], rtol=1e-5)


def test_vmapped_networks_equal_single_networks(random_params, style, batch):
  """From the same state, one vmapped step of N networks equals N single-network steps."""
  values = (1.0, 10.0, 100.0)
  many, m_metrics, setup = run_steps(dataclasses.replace(CFG, sweep=("style_weight", values)),
                                     random_params, [style], batch, 2)  # A warmed-up Adam.
  assert setup.labels == ["style_weight=1", "style_weight=10", "style_weight=100"]
  fn = ff.train_step(setup.objective, CFG)
  put = lambda tree: jax.tree.map(jax.numpy.asarray, tree)
  after, metrics = jax.device_get(fn(put(many), batch, setup.shared, setup.members))
  differ = jax.tree.leaves(ff.member_params(after["params"], 0))[0] - \
      jax.tree.leaves(ff.member_params(after["params"], 2))[0]
  assert np.abs(differ).max() > CFG.learning_rate  # The members differ: the test can fail.
  for k, v in enumerate(values):
    single = ff.build(dataclasses.replace(CFG, style_weight=v), random_params, [style])
    one = jax.tree.map(lambda a: a[k:k + 1] if np.ndim(a) else a, many)
    got, o_metrics = jax.device_get(fn(put(one), batch, single.shared, single.members))
    np.testing.assert_allclose(metrics["loss"][k], o_metrics["loss"][0], rtol=1e-5)
    for t in metrics["terms"]:
      np.testing.assert_allclose(metrics["terms"][t][k], o_metrics["terms"][t][0], rtol=1e-5)
    # Batched and single convs round differently (gradients agree to ~1e-5 of their max);
    # Adam's normalised step can carry that to a few % of a step where a gradient is small.
    for a, b in zip(jax.tree.leaves(ff.member_params(after["params"], k)),
                    jax.tree.leaves(got["params"])):
      np.testing.assert_allclose(a, b[0], atol=0.05 * CFG.learning_rate)


def test_several_styles_are_members(random_params, style):
  other = style[::-1].copy()
  cfg = dataclasses.replace(CFG, sweep=("tv_weight", (0.0, 1.0)))
  setup = ff.build(cfg, random_params, [style, other], ["a", "b"])
  assert setup.labels == ["a tv_weight=0", "a tv_weight=1", "b tv_weight=0", "b tv_weight=1"]
  assert setup.members["style"]["relu1_2"].shape == (4, 64, 64)
  assert setup.members["loss_weights"]["tv"].tolist() == [0, 1, 0, 1]
  assert setup.members["loss_weights"]["style"].tolist() == [10.0] * 4


def test_config_errors(random_params, style):
  for bad in (dict(sweep=("layer", (1.0,))), dict(style_layers=("relu9_9",)),
              dict(style_weight=-1.0), dict(image_size=4), dict(sweep=("style_weight", ()))):
    with pytest.raises(JnstError):
      dataclasses.replace(CFG, **bad).validate()
  with pytest.raises(JnstError, match="divide over"):
    ff.check_batch(3, _FakeMesh(2))


class _FakeMesh:
  def __init__(self, size):
    self.size = size


def test_checkpoint_round_trip_and_keep(tmp_path):
  state = jax.device_get(ff.init_state(CFG, 2))
  for s in (1, 2, 3, 4):
    checkpoints.save(tmp_path, s, state, {"net": CFG.net}, {"loss": np.ones((s, 1))}, keep=2)
  assert checkpoints.list_steps(tmp_path) == [3, 4]
  assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
  meta, raw, hist = checkpoints.read(checkpoints.find(tmp_path))
  assert meta["step"] == 4 and meta["net"] == CFG.net and hist["loss"].shape == (4, 1)
  template = jax.tree.map(np.zeros_like, state)
  back = checkpoints.restore(template, raw, "x")
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(back)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(JnstError, match="incompatible"):
    checkpoints.check_meta(meta, {"net": {"width": 8, "num_res_blocks": 1}}, "x")
  with pytest.raises(JnstError, match="does not fit"):
    checkpoints.restore(jax.device_get(ff.init_state(dataclasses.replace(CFG, width=8), 2)),
                        raw, "x")
  (tmp_path / "junk.msgpack").write_bytes(b"\x93not a checkpoint")
  with pytest.raises(JnstError, match="not a jnst feed-forward checkpoint"):
    checkpoints.read(tmp_path / "junk.msgpack")


# ------------------------------------------------------------------ training loop


def photos(d: Path, n=3) -> Path:
  d.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for i in range(n):
    a = rng.integers(0, 255, (40 + 4 * i, 48, 3), dtype=np.uint8)
    Image.fromarray(a).save(d / f"p{i}.png")
  return d


def test_resume_continues_like_an_uninterrupted_run(tmp_path, random_params):
  d = photos(tmp_path / "photos", 4)
  Image.fromarray(np.random.default_rng(5).integers(0, 255, (30, 30, 3), np.uint8)).save(
      tmp_path / "style.png")
  quiet = lambda msg: None
  opts = lambda out, resume=False: ff_train.RunOptions(
      styles=(str(tmp_path / "style.png"),), data_dir=str(d), output=str(tmp_path / out),
      resume=resume, checkpoint_every=0, sample_every=0, log_every=0, hold_out=1)
  full = ff_train.train_and_evaluate(dataclasses.replace(CFG, steps=3), opts("full"),
                                     random_params, quiet)
  ff_train.train_and_evaluate(dataclasses.replace(CFG, steps=2), opts("part"), random_params, quiet)
  with pytest.raises(JnstError, match="--resume"):
    ff_train.train_and_evaluate(dataclasses.replace(CFG, steps=3), opts("part"), random_params)
  resumed = ff_train.train_and_evaluate(dataclasses.replace(CFG, steps=3),
                                        opts("part", True), random_params, quiet)
  assert resumed["start_step"] == 2 and len(resumed["loss_history"]) == 3
  np.testing.assert_allclose(resumed["loss_history"], full["loss_history"], rtol=1e-6)
  a = ff_train.load_model(tmp_path / "full")
  b = ff_train.load_model(tmp_path / "part")
  assert a.step == b.step == 3 and a.labels == ["style"]
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  assert (tmp_path / "full" / "samples" / "step_00000003.png").is_file()
  assert (tmp_path / "full" / "losses.png").is_file()
  with pytest.raises(JnstError, match="incompatible"):
    ff_train.train_and_evaluate(dataclasses.replace(CFG, steps=4, style_weight=1.0),
                                opts("part", True), random_params, quiet)


# ------------------------------------------------------------------ sharding


SHARDED = textwrap.dedent("""
    import dataclasses, json
    import jax, numpy as np
    from jnst import feedforward as ff
    from jnst.backbones import vgg
    rng = np.random.default_rng(0)
    conv = {n: {"kernel": (rng.normal(size=s) * np.sqrt(2 / np.prod(s[:3]))).astype(np.float32),
                "bias": np.zeros(s[-1:], np.float32)}
            for n, s in vgg.ARCHS["vgg19"].kernel_shapes().items()}
    params = {"conv": conv, "input": vgg.caffe_input()}
    cfg = ff.FFConfig(content_layers=("relu1_2",), style_layers=("relu1_2",), width=4,
                      num_res_blocks=1, image_size=16, batch_size=4, learning_rate=1e-2,
                      sweep=("style_weight", (1.0, 10.0)))
    style = rng.uniform(size=(20, 20, 3)).astype(np.float32)
    batches = rng.uniform(size=(2, 4, 16, 16, 3)).astype(np.float32)
    setup = ff.build(cfg, params, [style])
    out = {}
    for name, devices in (("four", jax.devices()), ("one", jax.devices()[:1])):
      m = ff.mesh(devices)
      state = ff.replicate(ff.init_state(cfg, setup.n), m)
      shared, members = ff.replicate((setup.shared, setup.members), m)
      fn = ff.train_step(setup.objective, cfg)
      for b in batches:
        x = ff.put_batch(b[:ff.check_batch(4, m)], m)
        state, metrics = fn(state, x, shared, members)
      flat = np.concatenate([np.ravel(a) for a in jax.tree.leaves(state["params"])])
      out[name] = {"loss": np.asarray(metrics["loss"]).tolist(), "params": flat,
                   "shards": len(x.addressable_shards), "spec": str(x.sharding.spec)}
    d = np.abs(out["four"]["params"] - out["one"]["params"]).max()
    print(json.dumps({"devices": jax.device_count(), "max_diff": float(d),
                      "scale": float(np.abs(out["one"]["params"]).max()),
                      "loss4": out["four"]["loss"], "loss1": out["one"]["loss"],
                      "shards": out["four"]["shards"], "spec": out["four"]["spec"]}))
""")


def test_batch_sharded_over_four_devices_equals_one():
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
         "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  p = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env,
                     cwd=REPO, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  got = json.loads(p.stdout.strip().splitlines()[-1])
  assert got["devices"] == 4 and got["shards"] == 4 and "batch" in got["spec"]
  np.testing.assert_allclose(got["loss4"], got["loss1"], rtol=1e-5)
  assert got["max_diff"] <= 1e-5 * max(1.0, got["scale"])


# ------------------------------------------------------------------ data


def test_scan_errors_and_skipped(tmp_path):
  with pytest.raises(JnstError, match="not a directory"):
    data.scan(tmp_path / "nope")
  (tmp_path / "empty").mkdir()
  with pytest.raises(JnstError, match="no image files"):
    data.scan(tmp_path / "empty")
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "a.jpg").write_text("not a jpeg")
  (bad / "b.png").write_bytes(b"\x89PNG\r\n")
  with pytest.raises(JnstError, match="none of the 2 image files"):
    data.scan(bad)
  photos(bad, 3)
  seen = []
  got = data.scan(bad, hold_out=1, log=seen.append)
  assert len(got.train) == 2 and len(got.held) == 1 and len(got.skipped) == 2
  assert seen and "skipped 2 unreadable" in seen[0]
  assert data.scan(photos(tmp_path / "one", 1), hold_out=2).held == ()  # Keep one to train.


def test_loader_is_deterministic_and_sliced(tmp_path):
  files = data.scan(photos(tmp_path / "p", 5), hold_out=0).train
  a = data.Loader(files, 16, 4, seed=3, start=0, stop=3, prefetch=1)
  got = [next(a) for _ in range(3)]
  a.close()
  assert got[0].shape == (4, 16, 16, 3) and got[0].dtype == np.float32
  assert 0 <= got[0].min() and got[0].max() <= 1
  b = data.Loader(files, 16, 4, seed=3, start=2, stop=3, offset=2, local=2)
  np.testing.assert_array_equal(next(b), got[2][2:])  # Resume at step 2, process 1 of 2.
  np.testing.assert_array_equal(b.batch(1), got[1][2:])
  b.close()
  assert not np.array_equal(got[0], got[1])


def test_loader_skips_undecodable_files(tmp_path):
  d = photos(tmp_path / "p", 2)
  data_bytes = (d / "p0.png").read_bytes()
  (d / "p9.png").write_bytes(data_bytes[:60])  # Header fine, data truncated.
  files = data.scan(d, hold_out=0).train
  assert len(files) == 3
  seen = []
  loader = data.Loader(files, 16, 6, seed=0, start=0, stop=1, log=seen.append)
  assert next(loader).shape == (6, 16, 16, 3)
  loader.close()
  assert loader.skipped and "p9.png" in loader.skipped[0][0] and seen
