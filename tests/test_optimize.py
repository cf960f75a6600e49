"""jnst.optimize on small problems: descent, evaluation counts, compile-once, the bounded
compile cache, returned per-step metrics and progress reports, stop rules."""

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
  h = {"step": 3, "scan": 5}[loop]  # Shapes of its own (the final-loss program ignores cfg).
  x0, data = jnp.zeros((h, 7, 3)), quad_data(0) | {"b": jnp.ones((h, 7, 3))}
  before = optimize.CACHE.compiles
  a = optimize.run(Quadratic(), x0, data, cfg)
  first = optimize.CACHE.compiles - before
  b = optimize.run(Quadratic(), x0 + 1, quad_data(1) | {"b": data["b"] * 2}, cfg)  # New values.
  assert first == 3  # init, the step (or chunk of 3), the final loss.
  assert optimize.CACHE.compiles - before == first
  assert a.seconds["compile"] > 0 and b.seconds["compile"] == 0
  optimize.run(Quadratic(), x0[1:], data | {"b": data["b"][1:]}, cfg)
  assert optimize.CACHE.compiles - before == 2 * first  # A new shape compiles again.


def test_compile_cache_is_bounded_over_many_shapes():
  cache = optimize.CACHE
  size, before = cache.maxsize, cache.compiles
  cfg = OptConfig("adam", steps=2, chunk=2, learning_rate=0.1, lbfgs_memory=3)
  try:
    cache.resize(5)
    for h in range(30, 50):  # 20 image shapes of its own, 3 programs each.
      x0 = jnp.zeros((h, 5, 3), jnp.float32)
      data = quad_data(0) | {"b": jnp.ones((h, 5, 3), jnp.float32)}
      res = optimize.run(Quadratic(), x0, data, cfg)
      assert len(cache) <= 5 and res.loss_history[-1] < res.loss_history[0]
    assert cache.compiles - before == 60
    # The most recent shape is still cached; an evicted one compiles again.
    optimize.run(Quadratic(), x0, data, cfg)
    assert cache.compiles - before == 60
    optimize.run(Quadratic(), jnp.zeros((30, 5, 3)), quad_data(0) | {"b": jnp.ones((30, 5, 3))},
                 cfg)
    assert cache.compiles - before == 63
  finally:
    cache.resize(size)


def test_per_step_metrics_and_reports_are_returned():
  reports = []
  cfg = OptConfig("adam", steps=6, chunk=2, learning_rate=0.1)
  res = optimize.run(Quadratic(), X0, quad_data(), cfg, progress=reports.append,
                     render=lambda x: np.asarray(x) * 0 + 0.5)
  assert [r.step for r in reports] == [2, 4, 6]
  assert all(r.total_steps == 6 and r.elapsed >= 0 for r in reports)
  np.testing.assert_allclose(res.metrics["loss"], res.loss_history[:-1], rtol=1e-6)
  np.testing.assert_array_equal(res.metrics["evals"], np.arange(1, 7))
  np.testing.assert_allclose(res.metrics["terms"]["fit"], res.metrics["loss"], rtol=1e-6)
  assert [float(r.loss) for r in reports] == [res.loss_history[i] for i in (1, 3, 5)]
  assert [int(r.evals) for r in reports] == [2, 4, 6] and res.eval_history == list(range(1, 8))
  assert res.terms == {"fit": pytest.approx(res.loss_history[-1], rel=1e-6)}
  no_render = []
  optimize.run(Quadratic(), X0, quad_data(), cfg, progress=no_render.append)
  assert no_render[0].image() is None


def test_report_image_renders_the_current_iterate():
  seen = []
  cfg = OptConfig("adam", steps=4, chunk=2, learning_rate=0.5)
  optimize.run(Quadratic(), X0, quad_data(), cfg, progress=lambda r: seen.append(r.image()),
               render=lambda x: np.asarray(x).copy())
  assert seen[0].shape == X0.shape and not np.allclose(seen[0], seen[1])


def test_no_recompile_logged_on_second_run(caplog):
  cfg = OptConfig(steps=4, chunk=2, lbfgs_memory=9)
  optimize.run(Quadratic(), X0, quad_data(0), cfg)
  x0, data = X0 - 1, quad_data(2)
  with jax.log_compiles(True), caplog.at_level("WARNING"):
    optimize.run(Quadratic(), x0, data, cfg)
  compiled = [r.getMessage()[:60] for r in caplog.records if "Compiling" in r.getMessage()]
  assert not [m for m in compiled if "convert_element_type" not in m], compiled


@dataclasses.dataclass(frozen=True)
class Offset(Quadratic):
  """Quadratic + 1: a relative tolerance needs a minimum away from 0 (at 0 the loss's
  rounding noise is never within tol of itself)."""

  def __call__(self, x, data):
    loss, _ = super().__call__(x, data)
    return loss + 1.0, {"fit": loss + 1.0}


def test_tolerance_stops_early():
  res = optimize.run(Offset(), X0, quad_data(), OptConfig(steps=200, chunk=50, tol=1e-6))
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


@dataclasses.dataclass(frozen=True)
class Chain:
  """Members in a chain: loss_i = ½|x_i − a_i|² + ½λ|x_i − x_{i−1}|² (i ≥ 1)."""
  lam: float = 1.0
  stop: bool = False  # No gradient into x_{i−1} through the link.

  def __call__(self, x, data):
    prev = jnp.concatenate([x[:1], x[:-1]])  # Member 0 has no predecessor: its term is 0.
    prev = jax.lax.stop_gradient(prev) if self.stop else prev
    own = 0.5 * jnp.sum(jnp.square(x - data["a"]), axis=(1, 2, 3))
    link = 0.5 * self.lam * jnp.sum(jnp.square(x - prev), axis=(1, 2, 3))
    return own + link, {"own": own, "link": link}


@pytest.mark.parametrize("optimizer,steps", [("lbfgs", 100), ("adam", 800)])
def test_joint_members_reach_the_coupled_minimum(optimizer, steps):
  """Per-member optimisers on the gradient of the sum find the joint minimum, which solves
  a tridiagonal linear system (the independent reference); without the coupling's gradient
  into x_{i−1} they do not."""
  n, lam = 4, 1.0
  a = np.random.default_rng(0).normal(size=(n, 2, 3, 3)).astype(np.float32)
  lap = np.zeros((n, n))
  for i in range(1, n):
    lap[i, i] += lam
    lap[i - 1, i - 1] += lam
    lap[i, i - 1] -= lam
    lap[i - 1, i] -= lam
  want = np.linalg.solve(np.eye(n) + lap, a.reshape(n, -1)).reshape(a.shape)
  cfg = OptConfig(optimizer=optimizer, steps=steps, chunk=steps // 2,
                  learning_rate=1.0 if optimizer == "lbfgs" else 0.05)
  before = optimize.CACHE.compiles
  out = optimize.drive(Chain(lam), jnp.zeros_like(a), {"a": a}, cfg,
                       vmap=optimize.Vmap(joint=True))
  assert optimize.CACHE.compiles - before <= 3  # init, one chunk length, the final loss.
  np.testing.assert_allclose(out.state.x, want, atol=2e-3)
  assert out.final_loss.shape == (n,) and out.final_terms["link"].shape == (n,)
  assert np.all(np.asarray(out.state.evals) == steps)
  one_sided = optimize.drive(Chain(lam, stop=True), jnp.zeros_like(a), {"a": a}, cfg,
                             vmap=optimize.Vmap(joint=True)).state.x
  assert np.abs(np.asarray(one_sided) - want).max() > 0.1


def test_joint_members_refuse_a_line_search():
  with pytest.raises(optimize.JnstError, match="linesearch=none"):
    optimize.make_step(Chain(), OptConfig(linesearch="zoom"), joint=True)
