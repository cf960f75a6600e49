"""Issue 10's remaining pieces: the moving average of the iterates (``OptConfig.ema_decay``,
``--ema_decay``), single-scale progress lines at least every ~15 s (``cli.line_chunks``,
``cli.Printer`` under a fake clock), and reconstruct / synthesize over a 2-scale pyramid
(32 -> 64 px, random weights) through their scripts. Images <= 64 px."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from PIL import Image

from jnst import cli, optimize, pyramid
from jnst.optimize import OptConfig


@dataclasses.dataclass(frozen=True)
class Quadratic:
  def __call__(self, x, data):
    r = jnp.einsum("ij,hwj->hwi", data["A"], x) - data["b"]
    loss = 0.5 * jnp.sum(r * r) + jnp.sum(jnp.cos(x))  # Non-convex: L-BFGS wanders a little.
    return loss, {"fit": loss}


def quad_data():
  rng = np.random.default_rng(0)
  return {"A": jnp.asarray(rng.normal(size=(3, 3)) + 3 * np.eye(3), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(4, 5, 3)), jnp.float32)}


X0 = jnp.asarray(np.random.default_rng(1).normal(size=(4, 5, 3)), jnp.float32)


def test_ema_decay_zero_is_no_ema():
  cfg = OptConfig(steps=8, chunk=4)
  ref = optimize.run(Quadratic(), X0, quad_data(), cfg)
  zero = optimize.run(Quadratic(), X0, quad_data(), dataclasses.replace(cfg, ema_decay=0.0))
  assert np.array_equal(np.asarray(ref.x), np.asarray(zero.x))
  assert ref.loss_history == zero.loss_history
  with pytest.raises(Exception, match="ema_decay"):
    OptConfig(ema_decay=1.0).validate()


@pytest.mark.parametrize("optimizer,lr", [("lbfgs", 1.0), ("adam", 0.1)])
def test_ema_matches_numpy_from_the_iterates(optimizer, lr):
  d, steps = 0.7, 6
  cfg = OptConfig(optimizer, steps=steps, chunk=1, learning_rate=lr, ema_decay=d)
  iterates = [np.asarray(X0)]
  res = optimize.run(Quadratic(), X0, quad_data(), cfg,
                     progress=lambda r: iterates.append(r.iterate()))
  assert len(iterates) == steps + 1  # x_0 … x_K, K = steps.
  v = np.zeros_like(iterates[0], np.float64)
  for x in iterates:
    v = d * v + (1 - d) * x
  ema = v / (1 - d ** len(iterates))
  np.testing.assert_allclose(np.asarray(res.x), ema, rtol=1e-5, atol=1e-5)
  assert not np.allclose(ema, iterates[-1], atol=1e-3)  # The average is not the iterate.
  # The final loss is the average's.
  loss, _ = Quadratic()(jnp.asarray(ema, jnp.float32), quad_data())
  np.testing.assert_allclose(res.loss_history[-1], float(loss), rtol=1e-5)


def test_ema_in_a_vmapped_batch_equals_single_runs():
  cfg = OptConfig(steps=5, chunk=5, ema_decay=0.5)
  single = [optimize.run(Quadratic(), x, quad_data(), cfg).x for x in (X0, X0 + 1.0)]
  out = optimize.drive(Quadratic(), jnp.stack([X0, X0 + 1.0]), quad_data(), cfg,
                       vmap=optimize.Vmap())
  for i in range(2):
    np.testing.assert_allclose(out.state.x[i], single[i], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ flags and the scripts


@pytest.fixture()
def files(tmp_path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "c.png")
  Image.fromarray(rng.integers(0, 255, (40, 64, 3), dtype=np.uint8)).save(tmp_path / "s.png")
  return tmp_path


def _parse(script, *args):
  import importlib
  module = importlib.import_module(f"scripts.{script}")  # Defines its flags.
  flags.FLAGS.unparse_flags()
  flags.FLAGS([script, *args])
  return module


@pytest.fixture()
def parsed():
  yield _parse
  flags.FLAGS.unparse_flags()


def report(step, total=500):
  return optimize.Report(step, total, np.float32(1.0), {"style": np.float32(1.0)},
                         np.int32(step), 1.0)


def test_printer_prints_at_least_every_15_seconds(parsed, monkeypatch, capsys):
  parsed("stylize", "--print_every=100")
  now = [1000.0]
  monkeypatch.setattr(cli.time, "monotonic", lambda: now[0])
  printer = cli.Printer()
  lines = []
  for step, t in [(5, 1005), (10, 1014), (15, 1016), (20, 1020), (25, 1030), (30, 1031.5),
                  (100, 1032)]:
    now[0] = t
    printer(report(step))
    lines.append(capsys.readouterr().out.count("\n"))
  # 15 s since the last line (or the start) -> a line; --print_every multiples always.
  assert lines == [0, 0, 1, 0, 0, 1, 1]


def test_single_scale_chunks_fit_the_line_interval(parsed, files, random_weights_file,
                                                   monkeypatch):
  stylize = parsed("stylize", f"--weights={random_weights_file}", f"--content={files / 'c.png'}",
                   f"--style={files / 's.png'}", f"--output={files / 'o.png'}", "--size=32",
                   "--steps=4", "--print_every=4", "--content_layers=relu2_1",
                   "--style_layers=relu1_1")
  assert cli.opt_config().chunk == 4
  steps = []
  real = cli.Printer.__call__
  monkeypatch.setattr(cli.Printer, "__call__", lambda self, r: (steps.append(r.step),
                                                                real(self, r)))
  monkeypatch.setattr(pyramid, "CPU_SECONDS_PER_PIXEL", 10.0)  # Every step "takes" > 15 s.
  stylize.main([])
  assert steps == [1, 2, 3, 4]  # The host saw every step, so a line could be printed.
  slow = json.loads((files / "o.json").read_text())
  monkeypatch.setattr(pyramid, "CPU_SECONDS_PER_PIXEL", 1e-12)
  steps.clear()
  (files / "o.png").unlink()
  stylize.main([])
  assert steps == [4]
  # Only how often the host looks changed, not the result.
  assert json.loads((files / "o.json").read_text())["loss_history"] == slow["loss_history"]


@pytest.mark.parametrize("script,args", [
    ("reconstruct", ["--layer=relu2_1", "--content={d}/c.png"]),
    ("synthesize", ["--style_layers=relu1_1,relu2_1", "--style={d}/s.png"]),
])
def test_two_scale_pyramid_through_the_script(parsed, files, random_weights_file, script, args,
                                              capsys):
  out = files / f"{script}.png"
  module = parsed(script, f"--weights={random_weights_file}", f"--output={out}", "--size=64",
                  "--scales=32", "--steps_per_scale=3,2", "--print_every=1", "--ema_decay=0.5",
                  *[a.format(d=files) for a in args])
  module.main([])
  assert "coarse-to-fine: 2 scales 32, 64 px" in capsys.readouterr().out
  assert Image.open(out).size == ((64, 48) if script == "reconstruct" else (64, 40))
  rec = json.loads(out.with_suffix(".json").read_text())
  assert [s["side"] for s in rec["pyramid"]["scales"]] == [32, 64]
  assert rec["pyramid"]["scales"][-1]["shape"][:2] == [48 if script == "reconstruct" else 40, 64]
  assert rec["ema"]["decay"] == 0.5 and rec["flags"]["ema_decay"] == 0.5
  assert rec["evaluations"] == 3  # The output scale: 2 steps + the final loss.
