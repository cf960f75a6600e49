"""L-BFGS without a line search, as ``torch.optim.LBFGS(line_search_fn=None)`` does it.

An optax ``GradientTransformation`` (pure, jittable, vmappable over a batch of states):
``update(grad, state, params) -> (updates, state)`` with ``params + updates`` the next
iterate. It differs from ``optax.lbfgs(linesearch=None)`` (optax 0.2.8) in the three places
where optax's fixed-step L-BFGS loses to torch's per evaluation (BENCHMARKS.md, "L-BFGS
per evaluation"):

- **Curvature pairs**: a pair (s, y) = (x_k - x_{k-1}, g_k - g_{k-1}) enters the history
  only if its curvature s·y > ``curvature_eps`` (torch: 1e-10). optax stores every pair,
  and one with s·y < 0 — common without a line search on a non-convex loss — makes the
  inverse-Hessian approximation indefinite: the "quasi-Newton" direction can point uphill
  and the loss climbs.
- **H₀ scaling**: γ = s·y / y·y of the newest *accepted* pair (optax: of the newest pair,
  which is negative after a bad one, flipping the whole direction).
- **First step**: -lr · g · min(1, 1/|g|₁) (torch). While no pair has been accepted yet,
  jnst differs from torch: torch takes the unscaled -lr · g (with gradients of ~1e4–1e6 per
  pixel a jump far off the image: at 256 px its third evaluation was non-finite), jnst
  takes the first step's size times ``empty_growth`` (10) per pair refused so far. A short
  first step often gives s·y <= 1e-10 (too short to measure curvature: the first 3 pairs
  at 256 px), or s·y < 0 where the loss is concave along -g (random weights); the growing
  step escapes in a few evaluations instead of creeping at |s|₁ = lr forever.
- **First step, per value** (``first_step="linf"``, not torch's; ``OptConfig``'s default,
  while this function's default is torch's "l1"): -lr · g · min(1, 1/|g|_∞),
  at most lr input units per value (VGG's Caffe space: one intensity level of 255) at any
  image size. Torch's |g|₁ rule spreads one unit over all values, so at 512 px and above
  the average move is below the float32 spacing of the pixels (~4e-6 to 1.5e-5 in Caffe
  units): most values do not move, the first pair is mostly rounding, and 2–3 evaluations
  pass before the loss moves (BENCHMARKS.md, "L-BFGS per evaluation").

Every later step is -lr · H g (two-loop recursion over the accepted pairs, oldest
overwritten first when ``memory_size`` are held). When every pair is accepted and the
first step is the same, this is optax's algorithm exactly (``tests/test_lbfgs.py``).

State memory: 2 × ``memory_size`` iterate-sized arrays (the history) + 2 (the previous
iterate and gradient), as optax's.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

TORCH_CURVATURE_EPS = 1e-10
FIRST_STEPS = ("l1", "l2", "linf")


class LBFGSState(NamedTuple):
  """count: updates done. stored: pairs accepted so far (the next goes to slot
  ``stored % memory_size``). update, grad: the previous step s (torch's d·t) and gradient.
  s, y: (memory_size, *shape) history; rho: (memory_size,) 1/(s·y), 0 in empty slots
  (an empty slot is a no-op in the recursion). gamma: the H₀ scale. skipped: pairs refused."""
  count: jax.Array
  stored: jax.Array
  update: jax.Array
  grad: jax.Array
  s: jax.Array
  y: jax.Array
  rho: jax.Array
  gamma: jax.Array
  skipped: jax.Array


def _vdot(a, b):
  return jnp.vdot(a.astype(jnp.float32), b.astype(jnp.float32))


def two_loop(g, s, y, rho, gamma, newest):
  """H g by the two-loop recursion (Nocedal & Wright, Alg. 7.4) over the slots of ``s``,
  ``y``, ``rho`` from the newest (index ``newest``) back to the oldest; empty slots have
  rho = 0 and change nothing."""
  m = rho.shape[0]
  order = (newest - jnp.arange(m)) % m  # Newest first.

  def back(q, i):
    a = rho[i] * _vdot(s[i], q)
    return (q - a * y[i]).astype(q.dtype), a

  q, alphas = jax.lax.scan(back, g, order)
  r = (gamma * q).astype(g.dtype)

  def forward(r, ia):
    i, a = ia
    b = rho[i] * _vdot(y[i], r)
    return (r + (a - b) * s[i]).astype(r.dtype), None

  r, _ = jax.lax.scan(forward, r, (order[::-1], alphas[::-1]))
  return r


def lbfgs(learning_rate: float = 1.0, memory_size: int = 100,
          curvature_eps: float = TORCH_CURVATURE_EPS,
          first_step: str = "l1", empty_growth: float = 10.0) -> optax.GradientTransformation:
  """Fixed-step L-BFGS over one array (the image), torch's rules (module docstring).

  learning_rate: the step is -learning_rate · H g (1.0: the plain quasi-Newton step).
  memory_size: pairs kept. curvature_eps: a pair is kept only if s·y > curvature_eps
  (-inf keeps every pair, as optax). first_step: "l1" (torch: g · min(1, 1/|g|₁)), "l2"
  (optax: g · min(1, 1/|g|₂)) or "linf" (per value: g · min(1, 1/|g|_∞), so no value moves
  by more than learning_rate input units; module docstring). empty_growth: the first step's size is multiplied by this
  for every pair refused while none is held (1: the first step's size throughout; module
  docstring).
  """
  if memory_size < 1:
    raise ValueError(f"memory_size must be >= 1, got {memory_size}")
  if first_step not in FIRST_STEPS:
    raise ValueError(f"first_step must be one of {FIRST_STEPS}, got {first_step!r}")

  def init(params):
    zeros = jnp.zeros((memory_size,) + params.shape, params.dtype)
    return LBFGSState(count=jnp.zeros((), jnp.int32), stored=jnp.zeros((), jnp.int32),
                      update=jnp.zeros_like(params), grad=jnp.zeros_like(params),
                      s=zeros, y=zeros, rho=jnp.zeros((memory_size,), jnp.float32),
                      gamma=jnp.ones((), jnp.float32), skipped=jnp.zeros((), jnp.int32))

  def update(grad, state: LBFGSState, params):
    del params  # s is the step taken (torch's d·t), not x_k - x_{k-1} (rounded in float32).
    s_new = state.update
    y_new = grad - state.grad
    sy = _vdot(s_new, y_new)
    yy = _vdot(y_new, y_new)
    have_pair = state.count > 0
    accept = have_pair & (sy > curvature_eps) & jnp.isfinite(sy) & (yy > 0)
    slot = state.stored % memory_size
    # Written in place at one slot (not a select over the whole history).
    s = state.s.at[slot].set(jnp.where(accept, s_new, state.s[slot]))
    y = state.y.at[slot].set(jnp.where(accept, y_new, state.y[slot]))
    rho = state.rho.at[slot].set(jnp.where(accept, 1.0 / jnp.where(accept, sy, 1.0),
                                           state.rho[slot]))
    gamma = jnp.where(accept, sy / jnp.where(accept, yy, 1.0), state.gamma)
    stored = state.stored + accept.astype(jnp.int32)
    direction = two_loop(grad, s, y, rho, gamma, (stored - 1) % memory_size)
    g32 = jnp.abs(grad.astype(jnp.float32))
    norm = (jnp.sum(g32) if first_step == "l1" else jnp.max(g32) if first_step == "linf"
            else jnp.sqrt(_vdot(grad, grad)))
    skipped = state.skipped + (have_pair & ~accept).astype(jnp.int32)
    # While stored == 0 every refused pair was refused with the history empty.
    grow = jnp.float32(empty_growth) ** jnp.minimum(skipped, 30).astype(jnp.float32)
    first = jnp.minimum(1.0, 1.0 / norm) * grow
    scale = jnp.where(stored == 0, first, 1.0) * (-learning_rate)
    updates = (scale * direction).astype(grad.dtype)
    return updates, LBFGSState(
        count=state.count + 1, stored=stored, update=updates, grad=grad, s=s, y=y, rho=rho,
        gamma=gamma, skipped=skipped)

  return optax.GradientTransformation(init, update)
