"""Many members at once: one ``Problem`` from many seeds (or loss-weight values), vmapped,
padded, sharded over the devices and gathered from every host.

``run_seeds(problem, seeds, opt)``: member k starts from ``problem.x0(jax.random.key(seeds[k]))``
— exactly what a single run with ``seed=seeds[k]`` does — so a single run reproduces any
member. The optimisation step of ``jnst.optimize`` is ``jax.vmap``-ed over a leading member
axis of the *state* (image, L-BFGS/Adam state, stop flags); ``problem.data`` (backbone
params, targets, weights) is shared and never batched (a batched kernel would turn every
conv into a grouped conv).

``run_sweep(problem, term, values, opt, seeds)``: the same over a loss weight (the traced
scalar ``data["loss_weights"][term]``), so the values × seeds grid is one vmapped batch.

Batches: members run in batches of ``members_per_batch`` one after another through the same
compiled program (the last batch padded with copies of its last member, so nothing
recompiles). ``"auto"`` picks the size with ``auto_batch_size``'s cost model. Each batch's
member axis is sharded over a 1-D ``jax.make_mesh`` of all devices (``NamedSharding``; not
pmap), the shared data replicated, a batch rounded up to a multiple of the device count.
After ``jax.distributed.initialize()`` ``jax.devices()`` spans every host and the same code
runs multi-host (every process passes the same arguments; results are gathered to all).

Tolerance: member k equals a single run with seed k up to float rounding of the batched
convs (tests/test_batched.py). Under vmap a zoom line search runs until its slowest member
finishes; finished members are masked, so their results do not change.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

import jnst.memory as memory
import jnst.optimize as optimize
from jnst.errors import JnstError
from jnst.objective import Problem

AXIS = "members"
MAX_SEED = 2**32 - 1
# On CPU a vmapped batch costs about what its members cost one by one, and loses above this
# many pixels per image (BENCHMARKS.md, seed scaling): batch below it, run singly above.
CPU_BATCH_MAX_PIXELS = 128 * 128
# On an accelerator: members per batch so the estimated working set fits this share of memory.
DEVICE_MEMORY_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class WeightSweepLoss:
  """``loss(x, (data, w))``: the wrapped objective with ``data["loss_weights"][term] = w``.
  Hashable (it keys the compile cache); ``w`` is traced, so values vmap with
  ``data_axes=(None, 0)``."""
  loss: Callable
  term: str

  def __call__(self, x, data):
    base, value = data
    return self.loss(x, {**base, "loss_weights": {**base["loss_weights"], self.term: value}})


@dataclasses.dataclass
class BatchResult:
  """N members' results, in member order (padding removed).

  seeds: (N,) seed of each member. values: (N,) swept loss-weight value, or None.
  x: (N, H, W, 3) final images in input space (NumPy); ``problem.rgb(x)`` gives RGB.
  loss_history, eval_history: per member, as ``optimize.RunResult``.
  evaluations, steps: (N,) ints. status: per member. terms: {term: (N,)} final weighted terms.
  metrics: per step and member, {"loss": (steps, N), "evals": (steps, N), "terms": {term:
  (steps, N)}} (NaN after a member's batch stopped; a member's own steps are ``steps[k]``).
  seconds: {"compile", "run", "total"}. batch_size: members per batch (padded, a multiple of
  the device count); num_batches; batch_choice: how batch_size was chosen. devices; sharding.
  """
  seeds: list[int]
  values: list[float] | None
  x: np.ndarray
  loss_history: list[list[float]]
  eval_history: list[list[int]]
  evaluations: np.ndarray
  steps: np.ndarray
  status: list[str]
  terms: dict[str, np.ndarray]
  metrics: dict
  seconds: dict[str, float]
  batch_size: int
  num_batches: int
  batch_choice: str
  devices: list[str]
  sharding: str
  opt_state: object = None  # Adam only: the final optax state, member axis first (NumPy).

  @property
  def final_loss(self) -> np.ndarray:
    return np.array([h[-1] for h in self.loss_history], np.float64)

  @property
  def images_per_second(self) -> float:
    return len(self.seeds) / self.seconds["total"]


# ---------------------------------------------------------------- checks and layout


def check_seeds(seeds: Sequence[int]) -> list[int]:
  """Returns ``seeds`` as ints; raises JnstError if empty, negative or too large."""
  seeds = [int(s) for s in seeds]
  if not seeds:
    raise JnstError("no seeds given: ask for at least one (e.g. --num_seeds=4)")
  bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
  if bad:
    raise JnstError(f"seeds must be in [0, {MAX_SEED}], got {bad[:3]}: use non-negative seeds")
  return seeds


def working_set_bytes(problem: Problem, opt: optimize.OptConfig) -> int:
  """Estimated device bytes one member needs: ``jnst.memory.estimate``'s per-member parts
  (the optimiser's image-sized buffers, L-BFGS's history, the activations kept for the
  backward pass through every backbone layer)."""
  est = memory.estimate(problem.backbone, problem.shape, optimizer=opt.optimizer,
                        lbfgs_memory=opt.lbfgs_memory)
  return sum(est.parts[k] for k in ("image", "lbfgs", "activations"))


def auto_batch_size(problem: Problem, opt: optimize.OptConfig, n: int,
                    devices: Sequence) -> tuple[int, str]:
  """(members per batch, why) so that batching never loses to running members one by one.

  CPU: vmapping does not cut the per-image cost, and costs more above
  ``CPU_BATCH_MAX_PIXELS`` (BENCHMARKS.md): all members at or below it, else one at a time.
  Accelerators: as many as fit ``DEVICE_MEMORY_SHARE`` of the smallest device memory per
  device by ``working_set_bytes`` (all, where memory is not reported).
  """
  h, w, _ = problem.shape
  if devices[0].platform == "cpu":
    if h * w <= CPU_BATCH_MAX_PIXELS:
      return n, f"auto: all {n} (CPU, {h}x{w} <= {CPU_BATCH_MAX_PIXELS} px)"
    return 1, f"auto: 1 (CPU, {h}x{w} > {CPU_BATCH_MAX_PIXELS} px: batching does not pay)"
  limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices]
  if not all(limits):
    return n, "auto: all (device memory not reported)"
  per_device = max(1, int(DEVICE_MEMORY_SHARE * min(limits) // working_set_bytes(problem, opt)))
  size = min(n, per_device * len(devices))
  return size, (f"auto: {size} (about {per_device} per device fit {DEVICE_MEMORY_SHARE:.0%} "
                f"of memory)")


def batch_layout(n: int, members_per_batch: int | None, num_devices: int) -> tuple[int, int]:
  """(batch size, number of batches) for ``n`` members: at most ``members_per_batch`` per
  batch (None or 0: all), rounded up to a multiple of ``num_devices``."""
  if members_per_batch is not None and members_per_batch < 0:
    raise JnstError(f"members per batch must be >= 1 (or 0 for all), got {members_per_batch}")
  per = min(members_per_batch or n, n)
  size = math.ceil(per / num_devices) * num_devices
  return size, math.ceil(n / size)


def mesh(devices: Sequence | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis "members" over ``devices`` (default: all, every host)."""
  devices = list(devices if devices is not None else jax.devices())
  return jax.make_mesh((len(devices),), (AXIS,), (jax.sharding.AxisType.Auto,), devices=devices)


def _put(tree, sharding: NamedSharding):
  """Host values -> global arrays with ``sharding`` (each process holds the full value)."""
  def put(a):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])
  return jax.tree.map(put, tree)


def gather(tree):
  """Device values -> NumPy on this host, gathered from every process where sharded."""
  def get(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(jax.device_get(a))
  return jax.tree.map(get, tree)


def _pad(a: np.ndarray, size: int) -> np.ndarray:
  """Pads the leading axis to ``size`` with copies of the last entry."""
  return np.concatenate([a, np.repeat(a[-1:], size - len(a), 0)]) if len(a) < size else a


# ---------------------------------------------------------------- running


def run_seeds(problem: Problem, seeds: Sequence[int], opt: optimize.OptConfig, *,
              members_per_batch: int | str | None = "auto", devices: Sequence | None = None,
              progress: optimize.Progress | None = None, x0=None, adjust=None,
              done_batches=None, on_batch=None) -> BatchResult:
  """Solves ``problem`` from each seed's initial image, vmapped and sharded.

  members_per_batch: "auto" (``auto_batch_size``), a number (memory bound), or None/0 (all
  at once). progress: called with an ``optimize.Report`` every ``opt.chunk`` steps, its
  arrays holding the batch's real members. x0: (N, H, W, 3) initial images in input space
  instead of the seeds' (a pyramid's upsampled previous scale). adjust(state, lo, hi): the
  initial state of the batch of members lo..hi-1 (padded to the batch size), changed before
  the first step (``optimize.drive``).
  done_batches: {batch index: part} finished earlier (a resumed study; a part is what
  ``on_batch(index, part)`` was given after that batch: a dict of its members' "x",
  "loss_history", "eval_history", "evaluations", "steps", "status", "terms", "metrics", "opt"
  and "span" (first, end member)); a part whose span differs from this layout's is run again.
  """
  return _run_members(problem, opt, check_seeds(seeds), None, None, members_per_batch,
                      devices, progress, x0, adjust, done_batches, on_batch)


def run_sweep(problem: Problem, term: str, values: Sequence[float], opt: optimize.OptConfig,
              seeds: Sequence[int] = (0,), *, members_per_batch: int | str | None = "auto",
              devices: Sequence | None = None,
              progress: optimize.Progress | None = None, x0=None, adjust=None,
              done_batches=None, on_batch=None) -> BatchResult:
  """``run_seeds`` over the grid values × seeds (value-major), batched over the loss weight
  of ``term`` (e.g. "style" for β); x0, adjust, done_batches, on_batch: as in ``run_seeds``,
  in grid order."""
  if term not in problem.data["loss_weights"]:
    raise JnstError(f"cannot sweep the weight of {term!r}: this problem's terms are "
                    f"{', '.join(problem.data['loss_weights'])}")
  values = [float(v) for v in values]
  if not values or any(not math.isfinite(v) or v < 0 for v in values):
    raise JnstError(f"{term} weight sweep values must be finite numbers >= 0, got {values}")
  grid = list(itertools.product(values, check_seeds(seeds)))
  return _run_members(problem, opt, [s for _, s in grid], [v for v, _ in grid], term,
                      members_per_batch, devices, progress, x0, adjust, done_batches, on_batch)


def _run_members(problem, opt, seeds, values, term, members_per_batch, devices, progress,
                 x0_given=None, adjust=None, done_batches=None, on_batch=None):
  opt = opt.validate()
  m = mesh(devices)
  choice = f"{members_per_batch or 'all'} (given)"
  if members_per_batch == "auto":
    members_per_batch, choice = auto_batch_size(problem, opt, len(seeds), list(m.devices.flat))
  size, num_batches = batch_layout(len(seeds), members_per_batch, m.size)
  member, shared = NamedSharding(m, P(AXIS)), NamedSharding(m, P())
  data = _put(problem.data, shared)
  loss_fn, vmap = problem.objective, optimize.Vmap(None)
  if values is not None:
    loss_fn, vmap = WeightSweepLoss(problem.objective, term), optimize.Vmap((None, 0))
  if x0_given is not None:
    x0_all = np.asarray(x0_given, np.float32)
    if x0_all.shape != (len(seeds), *problem.shape):
      raise JnstError(f"x0 must be {(len(seeds), *problem.shape)} (one image per member), got "
                      f"{x0_all.shape}")
  else:
    x0_all = np.stack([np.asarray(problem.x0(jax.random.key(s))) for s in seeds])
  t0 = time.perf_counter()
  parts, compile_s, sharding = [], 0.0, ""
  for b in range(num_batches):
    lo, hi = b * size, min((b + 1) * size, len(seeds))
    n_real = hi - lo
    if done_batches and list(done_batches.get(b, {}).get("span", ())) == [lo, hi]:
      parts.append(done_batches[b])  # Finished by an earlier, interrupted run.
      continue
    x0 = _put(_pad(x0_all[lo:hi], size), member)
    batch_data = data
    if values is not None:
      batch_data = (data, _put(_pad(np.asarray(values[lo:hi], np.float32), size), member))

    def on_chunk(step, state, host, b=b, n_real=n_real):
      if progress is not None:
        real = lambda a: np.asarray(a[-1][:n_real])
        progress(optimize.Report(step, opt.steps, real(host["loss"]),
                                 {k: real(v) for k, v in host["terms"].items()},
                                 real(host["evals"]), time.perf_counter() - t0, b, num_batches,
                                 render=lambda: problem.rgb(gather(state.x)[:n_real])))

    out = optimize.drive(loss_fn, x0, batch_data, opt, vmap=vmap,
                         place=lambda s: jax.device_put(s, member), fetch=gather,
                         on_chunk=on_chunk,
                         adjust=None if adjust is None else (
                             lambda s, lo=lo, hi=hi: adjust(s, lo, hi)))
    compile_s += out.seconds["compile"]
    sharding = f"{dict(m.shape)} {out.state.x.sharding.spec}"
    evaluations, status = gather((out.state.evals, out.state.status))
    hists = [optimize.member_history(out.metrics, out.final_loss, int(evaluations[i]) + 1,
                                     opt.uses_linesearch, i) for i in range(n_real)]
    parts.append({
        "x": gather(out.state.x)[:n_real], "loss_history": [h[0] for h in hists],
        "eval_history": [h[1] for h in hists], "evaluations": evaluations[:n_real] + 1,
        "steps": np.array([h[2] for h in hists]),
        "status": [optimize.STATUS[int(s)] for s in status[:n_real]],
        "terms": {k: np.asarray(v)[:n_real] for k, v in out.final_terms.items()},
        "metrics": jax.tree.map(lambda a: a[:, :n_real], {
            k: out.metrics[k] for k in ("loss", "evals", "terms")}),
        "opt": (jax.tree.map(lambda a: a[:n_real], gather(out.state.opt))
                if opt.optimizer == "adam" else None), "span": (lo, hi)})
    if on_batch is not None:
      on_batch(b, parts[-1])
  total = time.perf_counter() - t0
  cat = lambda key: [v for p in parts for v in p[key]]
  steps = max(len(p["metrics"]["loss"]) for p in parts)
  pad = lambda a: np.concatenate([a, np.full((steps - len(a), *a.shape[1:]), np.nan)]) \
      if len(a) < steps else a
  metrics = jax.tree.map(lambda *a: np.concatenate([pad(np.asarray(x, np.float64)) for x in a], 1),
                         *[p["metrics"] for p in parts])
  return BatchResult(
      seeds=list(seeds), values=None if values is None else list(values),
      x=np.concatenate([p["x"] for p in parts]), loss_history=cat("loss_history"),
      eval_history=cat("eval_history"),
      evaluations=np.concatenate([p["evaluations"] for p in parts]),
      steps=np.concatenate([p["steps"] for p in parts]), status=cat("status"), metrics=metrics,
      terms={k: np.concatenate([p["terms"][k] for p in parts]) for k in parts[0]["terms"]},
      seconds={"compile": compile_s, "run": total - compile_s, "total": total},
      batch_size=size, num_batches=num_batches, batch_choice=choice,
      devices=[str(d) for d in m.devices.flat], sharding=sharding,
      opt_state=None if any(p["opt"] is None for p in parts) else jax.tree.map(
          lambda *a: np.concatenate(a), *[p["opt"] for p in parts]))
