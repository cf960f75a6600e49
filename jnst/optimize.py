"""Optimise an image with optax L-BFGS or Adam, compiled, without per-step host syncs.

The loss is any hashable callable ``loss_fn(x, data) -> (loss, terms)`` (a frozen
dataclass in jnst.transfer): ``x`` is the image in the network's input space and ``data``
a pytree of everything else (VGG params, targets, loss weights). Because ``data`` is an
argument, not a closure, compiled functions are cached per (loss_fn, config, shapes) and a
second run of the same shape does not recompile.

One optimisation step is a pure function ``step(state, data) -> (state, metrics)``. Two
drivers run it (``OptConfig.loop``):

* ``"step"``: ``jit(step)`` with the state donated, dispatched from a Python loop. Dispatch
  is asynchronous: per-step losses stay on the device and are fetched once per chunk.
* ``"scan"``: ``jit`` of a ``lax.scan`` over ``chunk`` steps, one call per chunk.

``"auto"`` picks ``"scan"`` on every backend: since ``jnst.vgg.conv3x3`` keeps XLA:CPU's
transposed convs on its fast path inside loop bodies, the scan loop measured 1.03-1.46x faster
than the step loop on CPU (BENCHMARKS.md); ``"step"`` stays available.
Either way the host looks at the results only every ``chunk`` steps (progress lines,
intermediate images, early stopping); the step itself never syncs.

Stopping: the step budget; optionally relative loss change ≤ ``tol``; a non-finite loss
stops the run and returns the last finite iterate. A stopped state is frozen inside the
compiled step (``done`` flag), so a chunk can finish without changing the result and the
evaluation count stays exact. ``seeds.py`` vmaps the same ``step`` over a batch of states.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnst.errors import JnstError

RUNNING, CONVERGED, NONFINITE = 0, 1, 2
STATUS = {RUNNING: "steps", CONVERGED: "converged", NONFINITE: "nonfinite"}


@dataclasses.dataclass(frozen=True)
class OptConfig:
  """How to optimise.

  Attributes:
    optimizer: "lbfgs" or "adam".
    steps: iteration budget.
    learning_rate: L-BFGS: scale of each step (1.0 = the plain quasi-Newton step, as
      torch.optim.LBFGS(lr=1)); Adam: step size in the network's input units (0-255 for
      the Caffe weights).
    lbfgs_memory: L-BFGS history size (torch's default is 100).
    linesearch: "none" (fixed step, one evaluation per iteration, as torch/neural-style)
      or "zoom" (optax's zoom line search; several evaluations per iteration).
    max_linesearch_steps: cap for the zoom line search.
    schedule: Adam learning-rate schedule, "constant" or "cosine" (decays to 0).
    tol: stop when |L_k - L_{k-1}| <= tol * |L_k| (0 disables).
    chunk: steps between host looks (progress, intermediate saves, stop checks).
    loop: "step", "scan", or "auto" (per backend; see module docstring).
  """
  optimizer: str = "lbfgs"
  steps: int = 500
  learning_rate: float = 1.0
  lbfgs_memory: int = 100
  linesearch: str = "none"
  max_linesearch_steps: int = 20
  schedule: str = "constant"
  tol: float = 0.0
  chunk: int = 50
  loop: str = "auto"

  def validate(self) -> OptConfig:
    if self.optimizer not in ("lbfgs", "adam"):
      raise JnstError(f"unknown optimizer {self.optimizer!r}: use lbfgs or adam")
    if self.linesearch not in ("none", "zoom"):
      raise JnstError(f"unknown linesearch {self.linesearch!r}: use none or zoom")
    if self.loop not in ("auto", "step", "scan"):
      raise JnstError(f"unknown loop {self.loop!r}: use auto, step or scan")
    if self.schedule not in ("constant", "cosine"):
      raise JnstError(f"unknown schedule {self.schedule!r}: use constant or cosine")
    for name in ("steps", "chunk", "lbfgs_memory", "max_linesearch_steps"):
      if getattr(self, name) < 1:
        raise JnstError(f"{name} must be at least 1, got {getattr(self, name)}")
    if not self.learning_rate > 0:
      raise JnstError(f"learning_rate must be positive, got {self.learning_rate}")
    if self.tol < 0:
      raise JnstError(f"tol must be >= 0, got {self.tol}")
    return self

  def resolved_loop(self) -> str:
    if self.loop != "auto":
      return self.loop
    return "scan"  # Fastest on CPU too since jnst.vgg.conv3x3 (BENCHMARKS.md).

  @property
  def uses_linesearch(self) -> bool:
    return self.optimizer == "lbfgs" and self.linesearch == "zoom"


def make_optimizer(cfg: OptConfig) -> optax.GradientTransformation:
  if cfg.optimizer == "adam":
    lr = cfg.learning_rate
    if cfg.schedule == "cosine":
      lr = optax.cosine_decay_schedule(cfg.learning_rate, cfg.steps)
    return optax.adam(lr)
  linesearch = None
  if cfg.linesearch == "zoom":
    linesearch = optax.scale_by_zoom_linesearch(cfg.max_linesearch_steps,
                                                initial_guess_strategy="one")
  # optax scales the first step to a unit-norm ball (like torch's min(1, 1/|g|_1)).
  return optax.lbfgs(learning_rate=cfg.learning_rate, memory_size=cfg.lbfgs_memory,
                     linesearch=linesearch)


class State(NamedTuple):
  x: jax.Array           # current iterate
  x_prev: jax.Array      # previous iterate (returned if x's loss is not finite)
  opt: Any               # optax state
  evals: jax.Array       # int32, loss/gradient evaluations so far
  loss_prev: jax.Array   # loss at x_prev (inf at start)
  status: jax.Array      # int32, RUNNING / CONVERGED / NONFINITE


def init_state(x0: jax.Array, cfg: OptConfig) -> State:
  return State(x=x0, x_prev=x0, opt=make_optimizer(cfg).init(x0),
               evals=jnp.zeros((), jnp.int32), loss_prev=jnp.full((), jnp.inf, jnp.float32),
               status=jnp.zeros((), jnp.int32))


def make_step(loss_fn: Callable, cfg: OptConfig) -> Callable:
  """The pure step ``step(state, data) -> (state, metrics)``.

  ``metrics`` = {"loss": loss at the incoming iterate, "terms": its terms (NaN under a
  line search, which does not expose them), "evals": cumulative count, "status"}.
  """
  opt = make_optimizer(cfg)

  def step(state: State, data) -> tuple[State, dict]:
    x = state.x
    if cfg.uses_linesearch:
      value_fn = lambda y: loss_fn(y, data)[0]
      loss, grad = optax.value_and_grad_from_state(value_fn)(x, state=state.opt)
      updates, opt_state = opt.update(grad, state.opt, x, value=loss, grad=grad,
                                      value_fn=value_fn)
      ls = optax.tree.get(opt_state, "info")
      # First iteration evaluates at x; every line-search step evaluates once more.
      n_evals = ls.num_linesearch_steps + jnp.where(state.evals == 0, 1, 0)
      terms = jax.tree.map(lambda t: jnp.full((), jnp.nan, jnp.float32),
                           jax.eval_shape(loss_fn, x, data)[1])
    else:
      (loss, terms), grad = jax.value_and_grad(loss_fn, has_aux=True)(x, data)
      updates, opt_state = opt.update(grad, state.opt, x)
      n_evals = 1
    finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(grad))
    converged = (cfg.tol > 0) & (jnp.abs(state.loss_prev - loss) <= cfg.tol * jnp.abs(loss))
    running = state.status == RUNNING
    new_status = jnp.where(~finite, NONFINITE, jnp.where(converged, CONVERGED, RUNNING))
    advanced = State(x=optax.apply_updates(x, updates), x_prev=x, opt=opt_state,
                     evals=state.evals + n_evals, loss_prev=loss.astype(jnp.float32),
                     status=jnp.int32(RUNNING))
    # Non-finite: go back to the last finite iterate. Converged: keep x. Stopped: frozen.
    stopped = state._replace(
        x=jnp.where(~finite & running, state.x_prev, state.x),
        evals=state.evals + jnp.where(running, n_evals, 0).astype(jnp.int32),
        status=jnp.where(running, new_status, state.status))
    go = running & (new_status == RUNNING)
    # The optimiser state is not frozen: a stopped run's iterate never moves again, so it
    # may drift freely, and selecting over L-BFGS's 2 x memory image-sized history every step
    # cost 3-8 ms per step on CPU (BENCHMARKS.md).
    new = jax.tree.map(lambda a, b: jnp.where(go, a, b), advanced._replace(opt=None),
                       stopped._replace(opt=None))._replace(opt=opt_state)
    metrics = {"loss": loss.astype(jnp.float32), "terms": terms, "evals": new.evals,
               "status": new.status, "counted": running}
    return new, metrics

  return step


# ------------------------------------------------------------------- compiled, cached


@functools.lru_cache(maxsize=64)
def compiled_step(loss_fn, cfg: OptConfig, batched: bool = False, data_axes=None):
  """jit(step) with the state donated; vmapped over a leading state axis if ``batched``."""
  step = make_step(loss_fn, cfg)
  if batched:
    step = jax.vmap(step, in_axes=(0, data_axes))
  return jax.jit(step, donate_argnums=0)


@functools.lru_cache(maxsize=64)
def compiled_chunk(loss_fn, cfg: OptConfig, length: int, batched: bool = False, data_axes=None):
  """jit of ``length`` steps in one ``lax.scan``; metrics stacked on a leading step axis."""
  step = make_step(loss_fn, cfg)
  if batched:
    step = jax.vmap(step, in_axes=(0, data_axes))

  def chunk(state, data):
    return jax.lax.scan(lambda s, _: step(s, data), state, None, length=length)

  return jax.jit(chunk, donate_argnums=0)


@functools.lru_cache(maxsize=64)
def compiled_init(cfg: OptConfig, batched: bool = False):
  fn = functools.partial(init_state, cfg=cfg)
  return jax.jit(jax.vmap(fn) if batched else fn)


@functools.lru_cache(maxsize=64)
def compiled_loss(loss_fn, batched: bool = False, data_axes=None):
  fn = jax.vmap(loss_fn, in_axes=(0, data_axes)) if batched else loss_fn
  return jax.jit(fn)


_EXECUTABLES: dict = {}


def _executable(jitted, *args):
  """(AOT-compiled ``jitted`` for these argument shapes, seconds spent compiling now).

  Compiling ahead of time lets runs report compile and run time separately; the cache
  (keyed on the jitted function and the arguments' shapes, dtypes and shardings) means a
  second run of the same shape compiles nothing.
  """
  leaves, tree = jax.tree.flatten(args)
  key = (jitted, tree, tuple((l.shape, l.dtype, getattr(l, "sharding", None)) for l in leaves))
  if key in _EXECUTABLES:
    return _EXECUTABLES[key], 0.0
  t0 = time.perf_counter()
  exe = jitted.lower(*args).compile()
  _EXECUTABLES[key] = exe
  return exe, time.perf_counter() - t0


# ------------------------------------------------------------------- driver


@dataclasses.dataclass
class Result:
  """What a run returns. With a batch, every field has a leading batch axis.

  x: final image in the network's input space. loss_history: loss at each evaluated
  iterate, then the final image's loss (list per batch member; runs that stop early are
  shorter). evaluations: loss/gradient evaluations spent (the final evaluation included).
  status: "steps" | "converged" | "nonfinite". terms: final weighted loss terms.
  seconds: {"compile": compiling the step/chunk (0 when cached), "run": the rest, "total"}.
  """
  x: Any
  loss_history: Any
  evaluations: Any
  status: Any
  terms: Any
  steps: Any
  seconds: dict


def run(loss_fn: Callable, x0: jax.Array, data, cfg: OptConfig, *,
        on_chunk: Callable[[int, State, dict], None] | None = None,
        batched: bool = False, data_axes=None) -> Result:
  """Optimises ``x0`` (or a batch of them, with ``batched``) for ``loss_fn(x, data)``.

  ``on_chunk(step, state, host_metrics)`` is called every ``cfg.chunk`` steps with the
  metrics of all steps so far fetched to the host (arrays with a step axis first) —
  the only place the host waits for the device.
  """
  cfg = cfg.validate()
  loop = cfg.resolved_loop()
  t0 = time.perf_counter()
  compile_s = 0.0
  state = compiled_init(cfg, batched)(x0)
  if batched and isinstance(getattr(x0, "sharding", None), jax.sharding.NamedSharding):
    # A batch sharded over a mesh (jnst.seeds): every state leaf has the batch axis first;
    # shard them all like x0 so each step's inputs and outputs agree.
    state = jax.device_put(state, x0.sharding)
  pieces: list[dict] = []
  done_steps = 0
  while done_steps < cfg.steps:
    n = min(cfg.chunk, cfg.steps - done_steps)
    if loop == "scan":
      # Same compiled chunk for every call; the last partial chunk gets its own length.
      fn, secs = _executable(compiled_chunk(loss_fn, cfg, n, batched, data_axes), state, data)
      compile_s += secs
      state, m = fn(state, data)
      pieces.append(_fetch(m))
    else:
      fn, secs = _executable(compiled_step(loss_fn, cfg, batched, data_axes), state, data)
      compile_s += secs
      ms = []
      for _ in range(n):
        state, m = fn(state, data)
        ms.append(m)
      pieces.append(jax.tree.map(lambda *a: np.stack(a), *_fetch(ms)))
    done_steps += n
    host = jax.tree.map(lambda *a: np.concatenate(a), *pieces)
    pieces = [host]
    if on_chunk is not None:
      on_chunk(done_steps, state, host)
    if np.all(host["status"][-1] != RUNNING):
      break
  host = pieces[0] if pieces else None
  final_loss, final_terms = compiled_loss(loss_fn, batched, data_axes)(state.x, data)
  final_loss, final_terms, status, evals = _fetch(
      (final_loss, final_terms, state.status, state.evals))
  total = time.perf_counter() - t0
  history, steps = _histories(host, final_loss, batched)
  status_names = np.vectorize(STATUS.get)(status).tolist() if batched else STATUS[int(status)]
  return Result(x=state.x, loss_history=history, evaluations=evals + 1, status=status_names,
                terms=final_terms, steps=steps,
                seconds={"compile": compile_s, "run": total - compile_s, "total": total})


def _fetch(tree):
  """``jax.device_get``, gathering arrays sharded over several hosts (jnst.seeds batches)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils

  def get(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return jax.device_get(a)

  return jax.tree.map(get, tree)


def _histories(host: dict, final_loss, batched: bool):
  """Per-step losses while running, then the final loss; and the steps taken."""
  counted = host["counted"]  # (steps,) or (steps, batch)
  loss = host["loss"]
  if not batched:
    k = int(counted.sum())
    return [float(v) for v in loss[:k]] + [float(final_loss)], k
  hist, steps = [], []
  for b in range(counted.shape[1]):
    k = int(counted[:, b].sum())
    hist.append([float(v) for v in loss[:k, b]] + [float(final_loss[b])])
    steps.append(k)
  return hist, steps
