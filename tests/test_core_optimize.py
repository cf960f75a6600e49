"""jnst.optimize on small problems: descent, evaluation counts, compile-once, stop rules."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnst import optimize
from jnst.optimize import OptConfig

CALLS = []


@dataclasses.dataclass(frozen=True)
class Quadratic:
  """0.5 |A x - b|² with a host callback counting real evaluations."""
  count: bool = False

  def __call__(self, x, data):
    if self.count:
      jax.debug.callback(lambda: CALLS.append(1))
    r = jnp.einsum("ij,hwj->hwi", data["A"], x) - data["b"]
    loss = 0.5 * jnp.sum(r * r)
    return loss, {"fit": loss}


@dataclasses.dataclass(frozen=True)
class Sqrt:
  """sum(sqrt(x)): descent drives x negative, where it is NaN."""

  def __call__(self, x, data):
    loss = jnp.sum(jnp.sqrt(x))
    return loss, {"fit": loss}


def quad_data(seed=0):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(3, 3)) + 3 * np.eye(3)
  return {"A": jnp.asarray(a, jnp.float32),
          "b": jnp.asarray(rng.normal(size=(4, 5, 3)), jnp.float32)}


X0 = jnp.zeros((4, 5, 3), jnp.float32)


@pytest.mark.parametrize("cfg", [
    OptConfig("lbfgs", steps=15, chunk=5),
    OptConfig("lbfgs", steps=15, chunk=5, loop="scan"),
    OptConfig("adam", steps=15, learning_rate=0.1, chunk=5),
    OptConfig("adam", steps=15, learning_rate=0.1, chunk=5, schedule="cosine", loop="scan"),
])
def test_descends_and_counts_evaluations(cfg):
  CALLS.clear()
  res = optimize.run(Quadratic(count=True), X0, quad_data(), cfg)
  jax.effects_barrier()
  assert res.loss_history[-1] < 0.2 * res.loss_history[0]
  assert res.evaluations == cfg.steps + 1 == len(res.loss_history)
  assert len(CALLS) == res.evaluations  # Every evaluation counted, no more.
  assert res.status == "steps" and res.steps == cfg.steps


def test_zoom_linesearch_counts_its_evaluations():
  CALLS.clear()
  cfg = OptConfig("lbfgs", steps=6, linesearch="zoom", chunk=3)
  res = optimize.run(Quadratic(count=True), X0, quad_data(), cfg)
  jax.effects_barrier()
  assert res.loss_history[-1] < 1e-3 * res.loss_history[0]
  assert res.evaluations == len(CALLS)
  assert res.evaluations > cfg.steps + 1  # The line search spends extra evaluations.


def test_step_and_scan_loops_agree():
  a = optimize.run(Quadratic(), X0, quad_data(), OptConfig(steps=12, chunk=4, loop="step"))
  b = optimize.run(Quadratic(), X0, quad_data(), OptConfig(steps=12, chunk=4, loop="scan"))
  np.testing.assert_allclose(a.x, b.x, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(a.loss_history, b.loss_history, rtol=1e-5)


@pytest.mark.parametrize("loop", ["step", "scan"])
def test_compiled_once_for_two_runs_of_the_same_shape(loop):
  cfg = OptConfig(steps=6, chunk=3, loop=loop, lbfgs_memory=7)  # A config no other test uses.
  a = optimize.run(Quadratic(), X0, quad_data(0), cfg)
  b = optimize.run(Quadratic(), X0 + 1, quad_data(1), cfg)  # New values, same shapes.
  fn = (optimize.compiled_step(Quadratic(), cfg, False, None) if loop == "step"
        else optimize.compiled_chunk(Quadratic(), cfg, 3, False, None))
  assert len([k for k in optimize._EXECUTABLES if k[0] is fn]) == 1
  assert a.seconds["compile"] > 0 and b.seconds["compile"] == 0
  optimize.run(Quadratic(), jnp.zeros((2, 5, 3)), quad_data(0) | {"b": jnp.zeros((2, 5, 3))}, cfg)
  assert len([k for k in optimize._EXECUTABLES if k[0] is fn]) == 2  # A new shape compiles.


def test_no_recompile_logged_on_second_run(caplog):
  cfg = OptConfig(steps=4, chunk=2, lbfgs_memory=9)
  optimize.run(Quadratic(), X0, quad_data(0), cfg)
  x0, data = X0 - 1, quad_data(2)
  with jax.log_compiles(True), caplog.at_level("WARNING"):
    optimize.run(Quadratic(), x0, data, cfg)
  compiled = [r.getMessage()[:60] for r in caplog.records if "Compiling" in r.getMessage()]
  assert not [m for m in compiled if "convert_element_type" not in m], compiled


def test_tolerance_stops_early():
  res = optimize.run(Quadratic(), X0, quad_data(), OptConfig(steps=200, chunk=50, tol=1e-6))
  assert res.status == "converged"
  assert res.steps < 200 and res.evaluations == res.steps + 1


@pytest.mark.parametrize("loop", ["step", "scan"])
def test_nonfinite_loss_stops_and_keeps_last_finite_iterate(loop):
  x0 = jnp.ones((2, 2, 3), jnp.float32)
  cfg = OptConfig("adam", steps=40, learning_rate=0.3, chunk=10, loop=loop)
  res = optimize.run(Sqrt(), x0, {}, cfg)
  assert res.status == "nonfinite"
  assert np.all(np.isfinite(res.x)) and np.isfinite(res.loss_history[-1])
  assert not np.isfinite(res.loss_history[-2])  # The evaluation that found the NaN.
  assert res.steps < 40


def test_bad_config_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
    OptConfig("sgd").validate()
  with pytest.raises(ValueError, match="steps must be at least 1"):
    OptConfig(steps=0).validate()
