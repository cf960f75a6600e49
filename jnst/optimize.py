"""Optimise one image with optax L-BFGS or Adam, compiled, without per-step host syncs.

The loss is any hashable callable ``loss_fn(x, data) -> (loss, terms)`` (a
``jnst.objective.Objective``): ``x`` is the image in the backbone's input space and ``data``
a pytree of everything else. Because ``data`` is an argument, not a closure, compiled
programs are cached per (loss_fn, config, shapes) and a second run of the same shape does
not recompile. The cache is bounded (``CACHE``, least recently used goes first).

One optimisation step is a pure function ``step(state, data) -> (state, metrics)``. Two
drivers run it (``OptConfig.loop``): ``"scan"`` (the default on every backend, BENCHMARKS.md)
jits a ``lax.scan`` over ``chunk`` steps, one call per chunk; ``"step"`` jits one step with
the state donated and dispatches it from Python. Either way the host looks at the results
only every ``chunk`` steps (progress, intermediate images, early stopping).

Stopping: the step budget; optionally relative loss change ≤ ``tol``; a non-finite loss
stops the run and returns the last finite iterate. A stopped state is frozen inside the
compiled step (``status``), so a chunk can finish without changing the result and the
evaluation count stays exact.

``run`` optimises one state; ``drive`` is the loop itself, which ``jnst.batched`` runs over
a vmapped batch of states (``Vmap``) with its own placement and gathering hooks, and
``jnst.video`` over members whose losses are coupled (``Vmap(joint=True)``: one loss over
the batch, each member's optimiser on its part of the gradient).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jnst.lbfgs as lbfgs
from jnst.errors import JnstError

RUNNING, CONVERGED, NONFINITE = 0, 1, 2
STATUS = {RUNNING: "steps", CONVERGED: "converged", NONFINITE: "nonfinite"}
LOOPS = ("scan", "step")
LBFGS_RULES = ("torch", "optax")
LBFGS_FIRST_STEPS = ("l1", "linf")


@dataclasses.dataclass(frozen=True)
class OptConfig:
  """How to optimise.

  Attributes:
    optimizer: "lbfgs" or "adam".
    steps: iteration budget.
    learning_rate: L-BFGS: scale of each step (1.0 = the plain quasi-Newton step, as
      torch.optim.LBFGS(lr=1)); Adam: step size in the backbone's input units (0-255 for
      the Caffe VGG weights).
    lbfgs_memory: L-BFGS history size (torch's default is 100).
    linesearch: "none" (fixed step, one evaluation per iteration, as torch/neural-style)
      or "zoom" (optax's zoom line search; several evaluations per iteration).
    max_linesearch_steps: cap for the zoom line search.
    schedule: Adam learning-rate schedule, "constant" or "cosine" (decays to 0).
    tol: stop when |L_k - L_{k-1}| <= tol * |L_k| (0 disables).
    chunk: steps between host looks (progress, intermediate saves, stop checks).
    loop: "scan" or "step" (module docstring).
    lbfgs_rules: L-BFGS without a line search: "torch" (``jnst.lbfgs``: curvature pairs
      with s·y <= 1e-10 skipped, H₀ from the newest kept pair, as torch.optim.LBFGS; the
      first step by lbfgs_first_step; while no pair is held the step grows 10× per
      refused pair, where torch jumps by -g) or "optax" (``optax.lbfgs``: every pair kept,
      the behaviour before; BENCHMARKS.md "L-BFGS per evaluation"). The zoom line search
      always uses optax's.
    lbfgs_first_step: with lbfgs_rules="torch", the first step's scale (also after a
      pyramid scale's or a resume's reset): "linf" (min(1, 1/|g|_∞): no value moves by more
      than learning_rate input units, whatever the image size; the default) or "l1"
      (torch's min(1, 1/|g|₁), whose step falls below the image's float32 spacing from
      about 512 px on; ``jnst.lbfgs``, BENCHMARKS.md "L-BFGS per evaluation").
    ema_decay: 0 (off) or the decay d in [0, 1) of an exponential moving average of the
      iterates x_0 … x_K, bias-corrected as crowsonkb/style-transfer-pytorch's: m_k =
      v_k / (1 - d^(k+1)), v_k = d v_{k-1} + (1 - d) x_k, v_{-1} = 0. When on, the run's result
      (``State.x`` after ``drive``, ``RunResult.x``, the final loss) is the average, not the
      last iterate; progress reports still show the iterate.
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
  loop: str = "scan"
  lbfgs_rules: str = "torch"
  lbfgs_first_step: str = "linf"
  ema_decay: float = 0.0

  def validate(self) -> OptConfig:
    if self.optimizer not in ("lbfgs", "adam"):
      raise JnstError(f"unknown optimizer {self.optimizer!r}: use lbfgs or adam")
    if self.linesearch not in ("none", "zoom"):
      raise JnstError(f"unknown linesearch {self.linesearch!r}: use none or zoom")
    if self.loop not in LOOPS:
      raise JnstError(f"unknown loop {self.loop!r}: use scan or step")
    if self.lbfgs_rules not in LBFGS_RULES:
      raise JnstError(f"unknown lbfgs_rules {self.lbfgs_rules!r}: use torch or optax")
    if self.lbfgs_first_step not in LBFGS_FIRST_STEPS:
      raise JnstError(f"unknown lbfgs_first_step {self.lbfgs_first_step!r}: use l1 or linf")
    if self.schedule not in ("constant", "cosine"):
      raise JnstError(f"unknown schedule {self.schedule!r}: use constant or cosine")
    for name in ("steps", "chunk", "lbfgs_memory", "max_linesearch_steps"):
      if getattr(self, name) < 1:
        raise JnstError(f"{name} must be at least 1, got {getattr(self, name)}")
    f32_max = float(np.finfo(np.float32).max)  # Values beyond it are inf in the program.
    if not 0 < self.learning_rate <= f32_max:
      raise JnstError(f"learning_rate must be a finite number > 0 that fits float32, got "
                      f"{self.learning_rate}")
    if not 0 <= self.ema_decay < 1:
      raise JnstError(f"ema_decay must be in [0, 1) (0: off), got {self.ema_decay}")
    if not 0 <= self.tol <= f32_max:
      raise JnstError(f"tol must be a finite number >= 0, got {self.tol}")
    return self

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
  if cfg.linesearch == "none" and cfg.lbfgs_rules == "torch":
    return lbfgs.lbfgs(learning_rate=cfg.learning_rate, memory_size=cfg.lbfgs_memory,
                       first_step=cfg.lbfgs_first_step)
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
  ema: Any = None        # OptConfig.ema_decay > 0: (sum d^(k-i) (1-d) x_i, d^(k+1)), else None


def init_state(x0: jax.Array, cfg: OptConfig) -> State:
  return State(x=x0, x_prev=x0, opt=make_optimizer(cfg).init(x0),
               evals=jnp.zeros((), jnp.int32), loss_prev=jnp.full((), jnp.inf, jnp.float32),
               status=jnp.zeros((), jnp.int32), ema=ema_init(x0, cfg.ema_decay))


def ema_init(x0: jax.Array, decay: float):
  """The moving average's state after x_0 (None when ``decay`` is 0: off)."""
  if not decay:
    return None
  return ((1.0 - decay) * x0).astype(x0.dtype), jnp.full((), decay, jnp.float32)


def ema_update(ema, x: jax.Array, decay: float):
  """The average's state after one more iterate ``x``."""
  if ema is None:
    return None
  value, accum = ema
  return (decay * value + (1.0 - decay) * x).astype(x.dtype), accum * decay


def ema_value(ema) -> jax.Array:
  """The bias-corrected average (any leading batch axes: one per member)."""
  value, accum = ema
  accum = jnp.reshape(accum, jnp.shape(accum) + (1,) * (value.ndim - jnp.ndim(accum)))
  return (value / (1.0 - accum)).astype(value.dtype)


def make_step(loss_fn: Callable, cfg: OptConfig, joint: bool = False) -> Callable:
  """The pure step ``step(state, data) -> (state, metrics)``.

  ``metrics`` = {"loss": loss at the incoming iterate, "terms": its terms (NaN under a
  line search, which does not expose them), "evals": cumulative count, "status"}.

  ``joint``: ``state`` is a batch of members whose losses are coupled: ``loss_fn(x, data)``
  reads the whole batch x (B, …) and returns the members' losses (B,) and terms
  ({name: (B,)}); every member's optimiser (its own state, vmapped) steps on its slice of
  the gradient of the sum of the losses. No line search (the members' steps are taken
  together, so there is no one-member value function to search along).
  """
  opt = make_optimizer(cfg)

  def advance(state: State, loss, terms, grad, updates, opt_state, n_evals):
    """The state after a step with ``updates`` (stopping rules applied), and its metrics."""
    x = state.x
    finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(grad))
    converged = (cfg.tol > 0) & (jnp.abs(state.loss_prev - loss) <= cfg.tol * jnp.abs(loss))
    running = state.status == RUNNING
    new_status = jnp.where(~finite, NONFINITE, jnp.where(converged, CONVERGED, RUNNING))
    x_new = optax.apply_updates(x, updates)
    advanced = State(x=x_new, x_prev=x, opt=opt_state,
                     evals=state.evals + n_evals, loss_prev=loss.astype(jnp.float32),
                     status=jnp.int32(RUNNING), ema=ema_update(state.ema, x_new, cfg.ema_decay))
    # Non-finite: go back to the last finite iterate. Converged: keep x. Stopped: frozen.
    stopped = state._replace(
        x=jnp.where(~finite & running, state.x_prev, state.x),
        evals=state.evals + jnp.where(running, n_evals, 0).astype(jnp.int32),
        status=jnp.where(running, new_status, state.status))
    go = running & (new_status == RUNNING)
    # The optimiser state is not frozen: a stopped run's iterate never moves again, so it
    # may drift freely, and a select over L-BFGS's image-sized history every step is costly
    # (BENCHMARKS.md).
    new = jax.tree.map(lambda a, b: jnp.where(go, a, b), advanced._replace(opt=None),
                       stopped._replace(opt=None))._replace(opt=opt_state)
    metrics = {"loss": loss.astype(jnp.float32), "terms": terms, "evals": new.evals,
               "status": new.status, "counted": running}
    return new, metrics

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
      return advance(state, loss, terms, grad, updates, opt_state, n_evals)
    (loss, terms), grad = jax.value_and_grad(loss_fn, has_aux=True)(x, data)
    return advance(state, loss, terms, grad, *opt.update(grad, state.opt, x), 1)

  def joint_step(state: State, data) -> tuple[State, dict]:
    def total(x):
      losses, terms = loss_fn(x, data)
      return jnp.sum(losses), (losses, terms)

    (_, (losses, terms)), grad = jax.value_and_grad(total, has_aux=True)(state.x)
    one = lambda s, l, t, g: advance(s, l, t, g, *opt.update(g, s.opt, s.x), 1)
    return jax.vmap(one)(state, losses, terms, grad)

  if joint and cfg.uses_linesearch:
    raise JnstError("coupled members take their steps together: use --linesearch=none")
  return joint_step if joint else step


# ------------------------------------------------------------------- compiled, cached


@dataclasses.dataclass(frozen=True)
class Vmap:
  """Run over a leading batch axis of the state; ``data_axes``: ``jax.vmap`` in_axes of
  ``data`` (None: shared by every member). ``joint``: the members' losses are coupled
  (``make_step``'s ``joint``): ``loss_fn`` reads the whole batch and ``data`` is not
  vmapped (``data_axes`` unused)."""
  data_axes: Any = None
  joint: bool = False


def _program(kind: str, loss_fn, cfg: OptConfig | None, length: int, vmap: Vmap | None):
  """The jitted function of one kind: "init" (x0 -> state), "step", "chunk" (``length``
  steps in one ``lax.scan``, metrics stacked on a leading step axis) or "loss"."""
  if kind == "init":
    fn = functools.partial(init_state, cfg=cfg)
    return jax.jit(jax.vmap(fn) if vmap else fn)
  if kind == "loss":
    batched = vmap and not vmap.joint
    return jax.jit(jax.vmap(loss_fn, in_axes=(0, vmap.data_axes)) if batched else loss_fn)
  step = make_step(loss_fn, cfg, joint=bool(vmap and vmap.joint))
  if vmap and not vmap.joint:
    step = jax.vmap(step, in_axes=(0, vmap.data_axes))
  if kind == "step":
    return jax.jit(step, donate_argnums=0)

  def chunk(state, data):
    return jax.lax.scan(lambda s, _: step(s, data), state, None, length=length)

  return jax.jit(chunk, donate_argnums=0)


class ExecutableCache:
  """Compiled programs, least recently used dropped beyond ``maxsize``.

  Keyed on what determines the program — kind, loss, config, chunk length, batching and
  the arguments' tree, shapes, dtypes and shardings — never on a jitted object, so an
  evicted entry is simply compiled again. ``compiles`` counts every compilation.
  """

  def __init__(self, maxsize: int):
    self.maxsize, self.compiles = maxsize, 0
    self._entries: collections.OrderedDict = collections.OrderedDict()

  def __len__(self) -> int:
    return len(self._entries)

  def resize(self, maxsize: int) -> None:
    if maxsize < 1:
      raise JnstError(f"the compile cache holds at least 1 program, got {maxsize}")
    self.maxsize = maxsize
    while len(self._entries) > maxsize:
      self._entries.popitem(last=False)

  def clear(self) -> None:
    self._entries.clear()

  def get(self, kind, loss_fn, cfg, length, vmap, *args) -> tuple[Any, float]:
    """(compiled program for ``args``, seconds spent compiling it now: 0 on a hit)."""
    leaves, tree = jax.tree.flatten(args)
    key = (kind, loss_fn, cfg, length, vmap, tree,
           tuple((l.shape, l.dtype, getattr(l, "sharding", None)) for l in leaves))
    if key in self._entries:
      self._entries.move_to_end(key)
      return self._entries[key], 0.0
    t0 = time.perf_counter()
    exe = _program(kind, loss_fn, cfg, length, vmap).lower(*args).compile()
    self.compiles += 1
    self._entries[key] = exe
    while len(self._entries) > self.maxsize:
      self._entries.popitem(last=False)
    return exe, time.perf_counter() - t0


# A pyramid or a video of many shapes keeps at most this many programs ($JNST_COMPILE_CACHE).
CACHE = ExecutableCache(int(os.environ.get("JNST_COMPILE_CACHE", "32")))


# ------------------------------------------------------------------- the loop


@dataclasses.dataclass
class Report:
  """What a progress callback sees, every ``chunk`` steps.

  step, total_steps: steps done and budgeted. loss, evals: the last step's loss and
  cumulative evaluations (scalars, or (N,) for a batch). terms: {term: same}. elapsed: wall
  seconds of this run so far. batch, num_batches: which batch of a batched run; run,
  num_runs, label: which run of a study (``jnst.study``). ``image()``:
  RGB in [0, 1] of the current iterate(s), computed on request, valid during the callback;
  ``iterate()``: the current iterate itself (input space, NumPy), for resumable snapshots.
  """
  step: int
  total_steps: int
  loss: np.ndarray
  terms: dict
  evals: np.ndarray
  elapsed: float
  batch: int = 0
  num_batches: int = 1
  run: int = 0
  num_runs: int = 1
  label: str = ""
  render: Callable[[], np.ndarray] | None = dataclasses.field(default=None, repr=False)
  iterate: Callable[[], np.ndarray] | None = dataclasses.field(default=None, repr=False)
  # A pyramid (``jnst.pyramid``): which scale (0 = coarsest) of how many, its longer side in
  # pixels, steps done over all scales so far (for intermediate file names), and the share
  # of the whole job's estimated work done (for an ETA over all scales; None: steps).
  scale: int = 0
  num_scales: int = 1
  side: int = 0
  global_step: int | None = None
  done_fraction: float | None = None

  def image(self) -> np.ndarray | None:
    return None if self.render is None else self.render()


Progress = Callable[[Report], None]


@dataclasses.dataclass
class Loop:
  """What ``drive`` returns: the final state, per-step metrics on the host ({"loss",
  "terms", "evals", "status", "counted"}, step axis first), the final iterate's loss and
  terms, and {"compile", "run", "total"} seconds."""
  state: State
  metrics: dict
  final_loss: np.ndarray
  final_terms: dict
  seconds: dict


def drive(loss_fn, x0, data, cfg: OptConfig, *, vmap: Vmap | None = None,
          place: Callable[[State], State] = lambda s: s, fetch: Callable = jax.device_get,
          on_chunk: Callable[[int, State, dict], None] | None = None,
          adjust: Callable[[State], State] | None = None) -> Loop:
  """Runs ``cfg.steps`` steps from ``x0`` in chunks; the host waits only between chunks.

  ``place`` puts the initial state where it belongs (a batch: sharded like x0), ``fetch``
  brings device values to the host (a batch: gathered from every process);
  ``on_chunk(step, state, metrics so far)`` is called after each chunk. ``adjust(state)``
  changes the initial state before the first step (a pyramid carries Adam's moments from
  the previous scale); it must keep every shape and dtype.
  """
  cfg = cfg.validate()
  t0 = time.perf_counter()
  init, compile_s = CACHE.get("init", None, cfg, 0, vmap, x0)
  state = place(init(x0))
  if adjust is not None:
    state = place(adjust(state))
  host: dict | None = None
  done = 0
  while done < cfg.steps:
    n = min(cfg.chunk, cfg.steps - done)
    if cfg.loop == "scan":  # One program per chunk length (the last chunk may be shorter).
      fn, secs = CACHE.get("chunk", loss_fn, cfg, n, vmap, state, data)
      state, m = fn(state, data)
      piece = fetch(m)
    else:
      fn, secs = CACHE.get("step", loss_fn, cfg, 0, vmap, state, data)
      ms = []
      for _ in range(n):
        state, m = fn(state, data)
        ms.append(m)
      piece = jax.tree.map(lambda *a: np.stack(a), *fetch(ms))
    compile_s += secs
    done += n
    host = piece if host is None else jax.tree.map(lambda *a: np.concatenate(a), host, piece)
    if on_chunk is not None:
      on_chunk(done, state, host)
    if np.all(host["status"][-1] != RUNNING):
      break
  if state.ema is not None:  # The result is the average (where finite; else the iterate).
    avg = ema_value(state.ema)
    finite = jnp.all(jnp.isfinite(avg), axis=(-3, -2, -1), keepdims=True)  # Per member.
    state = state._replace(x=jnp.where(finite, avg, state.x))
  loss, secs = CACHE.get("loss", loss_fn, None, 0, vmap, state.x, data)
  compile_s += secs
  final_loss, final_terms = fetch(loss(state.x, data))
  total = time.perf_counter() - t0
  return Loop(state, host, np.asarray(final_loss), final_terms,
              {"compile": compile_s, "run": total - compile_s, "total": total})


def member_history(metrics: dict, final_loss, evaluations: int, linesearch: bool,
                   index: int | None = None) -> tuple[list[float], list[int], int]:
  """(loss per evaluated iterate then the final loss, the evaluation count at which each
  was known, steps taken) of one run, or of batch member ``index``.

  Without a line search step i evaluates its iterate itself (evaluation i + 1); with one,
  the loss at iterate i > 0 came from step i - 1's line search.
  """
  pick = (lambda a: a) if index is None else (lambda a: a[:, index])
  k = int(pick(metrics["counted"]).sum())
  losses = [float(v) for v in pick(metrics["loss"])[:k]]
  e = [int(v) for v in pick(metrics["evals"])[:k]]
  xs = e if not linesearch else ([1] + e[:k - 1] if k else [])
  final = float(final_loss if index is None else final_loss[index])
  return losses + [final], xs + [int(evaluations)], k


# ------------------------------------------------------------------- one run


@dataclasses.dataclass
class RunResult:
  """One run.

  x: the final image in input space (H, W, 3). loss_history: the loss at each evaluated
  iterate, then the final image's loss. eval_history: the evaluation count at which each
  was known. terms: the final weighted loss terms. evaluations: loss/gradient evaluations,
  the final one included. steps: steps taken. status: "steps" | "converged" | "nonfinite".
  metrics: per step, NumPy: {"loss": (steps,), "evals": (steps,), "terms": {term: (steps,)}}.
  seconds: {"compile": compiling now (0 when cached), "run": the rest, "total"}.
  opt_state: Adam's final optax state (None for L-BFGS, whose history is not kept).
  """
  x: jax.Array
  loss_history: list[float]
  eval_history: list[int]
  terms: dict[str, float]
  evaluations: int
  steps: int
  status: str
  metrics: dict
  seconds: dict[str, float]
  opt_state: Any = None  # The final optax state, kept for Adam only (a pyramid carries it).


def run(loss_fn, x0: jax.Array, data, cfg: OptConfig, *, progress: Progress | None = None,
        render: Callable[[jax.Array], np.ndarray] | None = None,
        adjust: Callable[[State], State] | None = None) -> RunResult:
  """Optimises one image ``x0`` for ``loss_fn(x, data)``.

  ``progress(Report)`` is called every ``cfg.chunk`` steps; ``render(x)`` turns an iterate
  into RGB for ``Report.image()``; ``adjust``: as in ``drive``.
  """
  t0 = time.perf_counter()

  def on_chunk(step, state, host):
    if progress is not None:
      last = {k: v[-1] for k, v in host["terms"].items()}
      progress(Report(step, cfg.steps, host["loss"][-1], last,
                      host["evals"][-1], time.perf_counter() - t0,
                      render=None if render is None else (lambda: render(state.x)),
                      iterate=lambda: np.asarray(jax.device_get(state.x))))

  out = drive(loss_fn, x0, data, cfg, on_chunk=on_chunk, adjust=adjust)
  evaluations = int(out.state.evals) + 1
  hist, evals, k = member_history(out.metrics, out.final_loss, evaluations, cfg.uses_linesearch)
  return RunResult(
      x=out.state.x, loss_history=hist, eval_history=evals,
      terms={n: float(v) for n, v in out.final_terms.items()}, evaluations=evaluations,
      steps=k, status=STATUS[int(out.state.status)],
      metrics={"loss": out.metrics["loss"][:k], "evals": out.metrics["evals"][:k],
               "terms": {n: v[:k] for n, v in out.metrics["terms"].items()}},
      seconds=out.seconds, opt_state=out.state.opt if cfg.optimizer == "adam" else None)
