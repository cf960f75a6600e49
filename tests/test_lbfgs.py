"""jnst.lbfgs (torch.optim.LBFGS's rules, line_search_fn=None): curvature pairs with
s·y <= 1e-10 are skipped, torch's first step, the same trajectory and loss as an
independent reference (a NumPy transcription of torch's algorithm, always; torch itself
when it imports: the ``bench`` extra), optax's algorithm when nothing is skipped and the
first step is the same, one compile per shape, and the OptConfig switch between the rules."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnst import lbfgs, optimize
from jnst.optimize import OptConfig


def quadratic(seed=0, n=12):
  """0.5 xᵀ A x - bᵀ x with A SPD and condition number ~1e3 (s·y > 0 for every pair)."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  a = (q * np.logspace(0, 3, n)) @ q.T
  b = rng.normal(size=n)
  return a.astype(np.float32), b.astype(np.float32)


def rosenbrock(x):
  """Works on jax and NumPy arrays. Non-convex: from ROSEN_X0, a fixed-step L-BFGS meets
  pairs with s·y < 0 (not rounding noise: s·y ≈ -2.4) after accepted ones."""
  return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def rosenbrock_grad(x):
  g = np.zeros_like(x)
  t = x[1:] - x[:-1] ** 2
  g[:-1] += -400.0 * x[:-1] * t - 2.0 * (1.0 - x[:-1])
  g[1:] += 200.0 * t
  return g


ROSEN_X0 = np.random.default_rng(0).uniform(-2, 2, size=8).astype(np.float32)


def reference_lbfgs(f, grad, x0, evals, memory, lr=1.0, first_norm=lambda g: np.abs(g).sum()):
  """torch.optim.LBFGS.step (torch 2.x, line_search_fn=None, tolerances off) transcribed to
  NumPy float32, written from torch's source independently of jnst.lbfgs: the losses of the
  first ``evals`` evaluations and s·y of every consecutive pair of iterates. ``first_norm``:
  the norm of the first step's min(1, 1/norm(g)) (torch's: |g|₁)."""
  x = np.array(x0, np.float32)
  loss, g = np.float32(f(x)), grad(x).astype(np.float32)
  losses, sys_ = [float(loss)], []
  dirs, stps, ro, h_diag = [], [], [], np.float32(1.0)
  d = t = prev_g = None
  for n_iter in range(1, evals):
    if n_iter == 1:
      d = -g
    else:
      y, s = g - prev_g, d * t
      ys = np.float32(y @ s)
      sys_.append(float(ys))
      if ys > 1e-10:
        if len(dirs) == memory:
          dirs.pop(0), stps.pop(0), ro.pop(0)
        dirs.append(y), stps.append(s), ro.append(np.float32(1.0) / ys)
        h_diag = ys / np.float32(y @ y)
      q, al = -g, [None] * len(dirs)
      for i in range(len(dirs) - 1, -1, -1):
        al[i] = (stps[i] @ q) * ro[i]
        q = q - al[i] * dirs[i]
      r = q * h_diag
      for i in range(len(dirs)):
        r = r + stps[i] * (al[i] - (dirs[i] @ r) * ro[i])
      d = r
    prev_g = g
    t = np.float32(min(1.0, 1.0 / first_norm(g)) * lr) if n_iter == 1 else np.float32(lr)
    x = (x + t * d).astype(np.float32)
    loss, g = np.float32(f(x)), grad(x).astype(np.float32)
    losses.append(float(loss))
  return np.array(losses), sys_


def trajectory(opt, f, x0, steps):
  """(losses at x_0 … x_{steps-1}, final state, [(s·y) of every consecutive pair])."""
  vg = jax.jit(jax.value_and_grad(f))
  state, x, losses, sy, prev = opt.init(x0), x0, [], [], None
  upd = jax.jit(opt.update)
  for _ in range(steps):
    loss, g = vg(x)
    losses.append(float(loss))
    if prev is not None:
      sy.append(float(jnp.vdot(x - prev[0], g - prev[1])))
    u, state = upd(g, state, x)
    prev, x = (x, g), x + u
  return np.array(losses), state, sy


def test_skips_pairs_with_negative_curvature_as_torch_does():
  ref, ref_sy = reference_lbfgs(rosenbrock, rosenbrock_grad, ROSEN_X0, 20, 5)
  assert ref_sy[0] > 0 and min(ref_sy) < -1.0, "the problem must give s·y < 0 pairs"
  ours, state, sy = trajectory(lbfgs.lbfgs(memory_size=5), rosenbrock, jnp.asarray(ROSEN_X0),
                               20)
  bad = sum(v <= lbfgs.TORCH_CURVATURE_EPS for v in sy)
  assert bad == sum(v <= lbfgs.TORCH_CURVATURE_EPS for v in ref_sy) >= 2
  assert int(state.skipped) == bad and int(state.stored) == len(sy) - bad
  # Only positive-curvature pairs are in the history: every ρ = 1/(s·y) held is > 0.
  assert np.all(np.asarray(state.rho)[:min(int(state.stored), 5)] > 0)
  # The reference's trajectory, and its loss (within 1 %).
  np.testing.assert_allclose(ours, ref, rtol=2e-3)
  assert ours[-1] <= 1.01 * ref[-1]
  # Keeping every pair (curvature_eps=-inf, optax's rule) keeps the bad ones too.
  _, kept, kept_sy = trajectory(lbfgs.lbfgs(memory_size=5, curvature_eps=-np.inf),
                                rosenbrock, jnp.asarray(ROSEN_X0), 20)
  assert int(kept.skipped) == 0 and min(kept_sy) < -1.0


def test_optax_keeps_the_bad_pair_and_ends_higher():
  """Issue 10's failure in small: optax.lbfgs without a line search stores an s·y < 0 pair
  and ends far above torch's loss; jnst.lbfgs ends at it."""
  ref, _ = reference_lbfgs(rosenbrock, rosenbrock_grad, ROSEN_X0, 20, 5)
  old, _, old_sy = trajectory(optax.lbfgs(memory_size=5, linesearch=None), rosenbrock,
                              jnp.asarray(ROSEN_X0), 20)
  new, _, _ = trajectory(lbfgs.lbfgs(memory_size=5), rosenbrock, jnp.asarray(ROSEN_X0), 20)
  assert min(old_sy) < -1.0  # optax stores every pair, this one too.
  assert old[-1] > 2 * ref[-1] and new[-1] <= 1.01 * ref[-1]


def test_reference_is_torch():
  """The NumPy transcription is torch.optim.LBFGS (on Rosenbrock with skipped pairs)."""
  torch = pytest.importorskip("torch")
  ref, _ = reference_lbfgs(rosenbrock, rosenbrock_grad, ROSEN_X0, 20, 5)
  theirs = torch_losses(torch, rosenbrock, ROSEN_X0, 20, 5)
  np.testing.assert_allclose(ref, theirs, rtol=1e-3)  # float32, other summation orders.


def torch_losses(torch, f, x0, evals, memory):
  xt = torch.tensor(np.asarray(x0), requires_grad=True)
  opt = torch.optim.LBFGS([xt], lr=1, max_iter=evals, history_size=memory,
                          tolerance_grad=-1.0, tolerance_change=-1.0, line_search_fn=None)
  losses = []

  def closure():
    opt.zero_grad()
    loss = f(xt)
    loss.backward()
    losses.append(float(loss.detach()))
    return loss

  opt.step(closure)
  return np.array(losses)


def test_equals_optax_when_no_pair_is_skipped():
  a, b = quadratic()
  f = lambda x: 0.5 * x @ (jnp.asarray(a) @ x) - jnp.asarray(b) @ x
  x0 = jnp.zeros(12, jnp.float32)
  ref, _, sy = trajectory(optax.lbfgs(memory_size=4, linesearch=None), f, x0, 20)
  ours, state, _ = trajectory(lbfgs.lbfgs(memory_size=4, first_step="l2"), f, x0, 20)
  assert min(sy) > 0 and int(state.skipped) == 0
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * abs(ref[0]) + 1e-6)


def test_follows_torch_lbfgs_on_a_quadratic():
  torch = pytest.importorskip("torch")
  a, b = quadratic(seed=2)
  x0 = np.full(12, 0.5, np.float32)
  ours, _, _ = trajectory(lbfgs.lbfgs(memory_size=6),
                          lambda x: 0.5 * x @ (jnp.asarray(a) @ x) - jnp.asarray(b) @ x,
                          jnp.asarray(x0), 15)
  at, bt = torch.tensor(a), torch.tensor(b)
  theirs = torch_losses(torch, lambda x: 0.5 * x @ (at @ x) - bt @ x, x0, 15, 6)
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * abs(theirs[0]))


def test_tiny_style_problem_reaches_torchs_loss():
  """The stylize loss (random VGG-19, 32×32): jnst's default L-BFGS (torch rules) ends
  within 2 % of torch.optim.LBFGS's loss after the same evaluations."""
  pytest.importorskip("torch")
  from jnst.backbones import vgg
  from jnst.bench import torch_ref
  from jnst.experiments import Inputs, StylizeConfig
  params = vgg.VGG19.init_random(jax.random.key(1), scale=0.8)
  rng = np.random.default_rng(0)
  content, style = (rng.uniform(size=(32, 32, 3)).astype(np.float32) for _ in range(2))
  cfg = dataclasses.replace(StylizeConfig(variant="paper"), style_layers=("relu1_1", "relu2_1"),
                            content_layers=("relu2_2",))
  opt = OptConfig(steps=15, chunk=15)
  tl, xc = torch_ref.stylize_problem(params, content, [style], cfg)
  theirs = torch_ref.run(tl, xc, opt).loss_history
  problem = cfg.build(params, Inputs(content, (style,)))
  ours = optimize.run(problem.objective, problem.init_x, problem.data, opt).loss_history
  assert len(ours) == len(theirs) == 16
  assert ours[-1] < 0.2 * ours[0]
  assert ours[-1] <= 1.02 * theirs[-1], (ours, theirs)


def test_growing_first_step_escapes_where_no_pair_is_accepted():
  """Where the loss is concave along -g (1000 Σ cos x near 0: every early pair has s·y < 0),
  jnst multiplies the first step's size by 10 per refused pair until one is accepted;
  without that growth it creeps at |s|₁ = lr for ever (the 32 px random-weight stylize
  problem of tests/test_experiments.py did exactly that)."""
  f = lambda x: 1000.0 * jnp.sum(jnp.cos(x))
  x0 = jnp.asarray(np.linspace(0.01, 0.02, 64), jnp.float32)
  grown, state, sy = trajectory(lbfgs.lbfgs(memory_size=5), f, x0, 20)
  assert sy[0] < 0 and int(state.skipped) >= 1 and int(state.stored) >= 1
  assert grown[-1] < -0.99 * grown[0]  # At the minimum x = π: -64000.
  creeping, cstate, _ = trajectory(lbfgs.lbfgs(memory_size=5, empty_growth=1.0), f, x0, 20)
  assert int(cstate.stored) == 0 and creeping[-1] > 0.9 * creeping[0]


def test_first_step_is_torchs():
  g = jnp.asarray([3.0, -4.0, 1.0])
  opt = lbfgs.lbfgs(learning_rate=2.0)
  u, _ = opt.update(g, opt.init(jnp.zeros(3)), jnp.zeros(3))
  np.testing.assert_allclose(u, -2.0 * g / 8.0, rtol=1e-6)  # lr · min(1, 1/|g|₁) · (-g)
  small = jnp.asarray([0.1, -0.2])
  u, _ = opt.update(small, opt.init(jnp.zeros(2)), jnp.zeros(2))
  np.testing.assert_allclose(u, -2.0 * small, rtol=1e-6)
  with pytest.raises(ValueError):
    lbfgs.lbfgs(first_step="l3")


def test_first_step_per_value():
  """first_step="linf": -lr · g · min(1, 1/|g|_∞), so the largest move is lr whatever the size."""
  opt = lbfgs.lbfgs(learning_rate=2.0, first_step="linf")
  g = jnp.asarray([3.0, -4.0, 1.0])
  u, _ = opt.update(g, opt.init(jnp.zeros(3)), jnp.zeros(3))
  np.testing.assert_allclose(u, -2.0 * g / 4.0, rtol=1e-6)
  small = jnp.asarray([0.1, -0.2])
  u, _ = opt.update(small, opt.init(jnp.zeros(2)), jnp.zeros(2))
  np.testing.assert_allclose(u, -2.0 * small, rtol=1e-6)


@pytest.mark.parametrize("side", [64, 512])
def test_first_step_moves_pixels_at_any_size(side):
  """The reliability finding at 2048 px, in small: pixels of magnitude ~100 (Caffe units) and a
  gradient of one sign and similar size everywhere. Torch's |g|₁ step is below float32's
  spacing at 512² (x + u == x for most values); the per-value step moves every value by
  0.5–1 units at both sizes."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(64, 128, (side, side, 3)), jnp.float32)
  g = jnp.asarray(rng.uniform(0.5e5, 1e5, x.shape), jnp.float32)
  moved = {}
  for rule in ("l1", "linf"):
    opt = lbfgs.lbfgs(first_step=rule)
    u, _ = opt.update(g, opt.init(x), x)
    moved[rule] = float(jnp.mean((x + u) != x))
    if rule == "linf":
      assert float(jnp.max(jnp.abs(u))) == pytest.approx(1.0, rel=1e-6)
      assert float(jnp.min(jnp.abs(u))) >= 0.5 - 1e-6
  assert moved["linf"] == 1.0
  assert moved["l1"] < 0.5 if side == 512 else moved["l1"] == 1.0


def test_per_value_first_step_follows_the_reference():
  """On a quadratic (every pair accepted) the linf rule is torch's algorithm with the first
  step's |g|₁ replaced by |g|_∞: the NumPy reference with that norm."""
  a, b = quadratic(seed=3)
  f = lambda x: 0.5 * x @ (a @ x) - b @ x
  x0 = np.full(12, 0.5, np.float32)
  ref, ref_sy = reference_lbfgs(f, lambda x: a @ x - b, x0, 15, 6,
                                first_norm=lambda g: np.abs(g).max())
  torch_rule, _ = reference_lbfgs(f, lambda x: a @ x - b, x0, 15, 6)
  assert min(ref_sy) > 0 and not np.allclose(ref[1:4], torch_rule[1:4], rtol=1e-3)
  ours, _, _ = trajectory(lbfgs.lbfgs(memory_size=6, first_step="linf"),
                          lambda x: 0.5 * x @ (jnp.asarray(a) @ x) - jnp.asarray(b) @ x,
                          jnp.asarray(x0), 15)
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * abs(ref[0]))


@dataclasses.dataclass(frozen=True)
class Smooth:
  """Convex and smooth: fixed-step L-BFGS converges without chaos, so runs that differ
  only in rounding (vmapped or not) stay close."""
  def __call__(self, x, data):
    r = x - data["centre"]
    loss = jnp.sum(r * r * (1.0 + jnp.arange(3.0))) + 0.05 * jnp.sum(r ** 4)
    return loss, {"fit": loss}


def test_optconfig_rules_compile_once_and_vmap():
  x0 = jnp.asarray(np.random.default_rng(1).uniform(-3, 3, size=(2, 4, 3)), jnp.float32)
  data = {"centre": jnp.full((), 0.5, jnp.float32)}
  cfg = OptConfig(steps=12, chunk=4, lbfgs_memory=5)
  assert cfg.lbfgs_rules == "torch"
  res = optimize.run(Smooth(), x0, data, cfg)
  before = optimize.CACHE.compiles
  again = optimize.run(Smooth(), x0 + 0.5, data, cfg)
  assert optimize.CACHE.compiles == before  # Same shapes: nothing compiled.
  assert not np.array_equal(np.asarray(again.x), np.asarray(res.x))
  assert res.loss_history[-1] < 1e-3 * res.loss_history[0]
  old = optimize.run(Smooth(), x0, data, dataclasses.replace(cfg, lbfgs_rules="optax"))
  assert old.loss_history != res.loss_history
  # A vmapped batch of states: each member as its own run.
  out = optimize.drive(Smooth(), jnp.stack([x0, x0 + 0.5]), data, cfg, vmap=optimize.Vmap())
  np.testing.assert_allclose(out.state.x[0], res.x, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out.state.x[1], again.x, rtol=1e-4, atol=1e-4)
  with pytest.raises(Exception, match="lbfgs_rules"):
    OptConfig(lbfgs_rules="scipy").validate()
  assert cfg.lbfgs_first_step == "linf"
  torchs = dataclasses.replace(cfg, lbfgs_first_step="l1")
  first = optimize.run(Smooth(), x0, data, torchs)
  before = optimize.CACHE.compiles
  optimize.run(Smooth(), x0 + 0.5, data, torchs)
  assert optimize.CACHE.compiles == before
  assert first.loss_history[1] != res.loss_history[1]  # Another first step.
  assert first.loss_history[-1] < 1e-3 * first.loss_history[0]
  with pytest.raises(Exception, match="lbfgs_first_step"):
    OptConfig(lbfgs_first_step="l2").validate()


def test_lbfgs_curves_bench(tmp_path, random_weights_file, capsys):
  """jnst.bench.lbfgs_curves: one loss history per rule, the table and the record."""
  import json

  from PIL import Image

  from jnst.bench import lbfgs_curves
  assert lbfgs_curves.at_evals([5.0, 4.0, 3.0], at=(1, 3, 10)) == {1: 5.0, 3: 3.0}
  assert lbfgs_curves.climbs([3.0, 4.0, 2.0, 2.5]) == 2
  rng = np.random.default_rng(0)
  for name in ("c", "s"):
    pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / f"{name}.png")
  rec = lbfgs_curves.main([f"--weights={random_weights_file}", "--size=32", "--steps=3",
                           f"--content={tmp_path / 'c.png'}", f"--style={tmp_path / 's.png'}",
                           "--no_torch", "--rules=torch,linf,optax", "--variant=invariant",
                           f"--out={tmp_path / 'r.json'}"])
  assert len(rec["jnst_torch"]) == len(rec["jnst_optax"]) == len(rec["jnst_linf"]) == 4
  assert rec["jnst_linf"][1] != rec["jnst_torch"][1] and rec["variant"] == "invariant"
  assert rec["jnst_torch"][0] == rec["jnst_optax"][0] and rec["skipped_pairs"] >= 0
  assert json.loads((tmp_path / "r.json").read_text())["jnst_torch"] == rec["jnst_torch"]
  assert "| evaluations | jnst_torch | jnst_linf | jnst_optax |" in capsys.readouterr().out
