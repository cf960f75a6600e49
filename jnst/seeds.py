"""Many noise seeds (or loss weights) in one vmapped optimisation, sharded over devices.

``run_seeds(problem, seeds, opt)`` solves one ``transfer.Problem`` from N initial images at
once: the optimisation step of ``jnst.optimize`` is ``jax.vmap``-ed over a leading member
axis of the *state* (image, L-BFGS/Adam state, stop flags), while ``problem.data`` (VGG
params, targets, weights) is shared and never batched (a batched kernel would turn every
conv into a grouped conv). Member k starts from ``problem.x0(jax.random.key(seeds[k]))``
— exactly what ``transfer.solve`` does for ``seed=seeds[k]`` — so a single-seed run of
the matching script reproduces member k.

``run_sweep(problem, weight, values, opt, seeds)`` is the same machinery batched over a
loss weight (α ``content_weight``, β ``style_weight``, γ ``tv_weight``): the weight is a
traced scalar in ``data["weights"]``, so the values × seeds grid is one vmapped batch.
Sweeps over things that change the graph (layers, init, pooling) are separate calls.

Memory and devices: members are cut into batches of ``seeds_per_batch`` run one after
another through the same compiled step (the last batch is padded with copies of its last
member, so nothing recompiles). The member axis of each batch is sharded over a 1-D
``jax.make_mesh`` of all devices (``NamedSharding``; not pmap), the shared data
replicated; a batch is rounded up to a multiple of the device count. With
``jax.distributed.initialize()`` called first, ``jax.devices()`` spans every host and the
same code runs multi-host (every process must pass the same arguments).

Tolerance: member k equals a single run with seed k up to float rounding of the batched
convs (rtol 1e-4 on CPU, checked in tests/test_seeds.py). Under vmap a zoom line search
runs until its slowest member finishes; finished members are masked, so their results
do not change. Stopped members (tol, non-finite loss) are frozen the same way.

Diversity metrics (pure NumPy) are at the end of this module.
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

from jnst import optimize, transfer, vgg
from jnst.errors import JnstError

AXIS = "seeds"
# Sweepable loss weights (flag name -> key of data["weights"]); traced, so vmapped.
WEIGHTS = {"content_weight": "content", "style_weight": "style", "tv_weight": "tv"}
# VGG layers the feature-diversity metrics use: the first ReLU of each block (the
# paper's conv_1 ... conv_5).
DIVERSITY_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
MAX_SEED = 2**32 - 1


@dataclasses.dataclass(frozen=True)
class WeightSweepLoss:
  """``loss(x, (data, w))``: the wrapped loss with ``data["weights"][weight] = w``.

  Hashable (it keys the compile caches); ``w`` is a traced scalar, so a batch of values
  is one vmapped run with ``data_axes=(None, 0)``.
  """
  loss: Callable
  weight: str

  def __call__(self, x, data):
    base, value = data
    return self.loss(x, {**base, "weights": {**base["weights"], self.weight: value}})


@dataclasses.dataclass
class SeedsResult:
  """N members' results, in member order (padding removed).

  seeds: (N,) seed of each member. values: (N,) swept weight value, or None.
  x: (N, H, W, 3) final images in network input space (NumPy).
  loss_history: per member, loss per step then the final loss (as optimize.Result).
  eval_history: per member, the evaluation count at which each loss_history entry was
    known (x-axis of a loss-vs-evaluation plot).
  evaluations, steps: (N,) ints. status: per member "steps" | "converged" | "nonfinite".
  terms: {term: (N,)} final weighted loss terms.
  seconds: {"compile": compiling (0 when cached), "run": the rest, "total"} wall
    seconds. batch_size: members per batch (padded, a multiple of
    the device count); num_batches. devices: the mesh's devices. sharding: the last
    batch's output sharding (mesh and spec).
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
  seconds: dict[str, float]
  batch_size: int
  num_batches: int
  devices: list[str]
  sharding: str

  @property
  def final_loss(self) -> np.ndarray:
    return np.array([h[-1] for h in self.loss_history], np.float64)

  @property
  def images_per_second(self) -> float:
    return len(self.seeds) / self.seconds["total"]

  def rgb(self, params) -> np.ndarray:
    """(N, H, W, 3) RGB in [0, 1], clipped."""
    return transfer.to_rgb(params, self.x)


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


def batch_layout(n: int, seeds_per_batch: int | None, num_devices: int) -> tuple[int, int]:
  """(batch size, number of batches) for ``n`` members.

  A batch holds at most ``seeds_per_batch`` members (None or 0: all; larger than n is
  fine), rounded up to a multiple of ``num_devices`` so every device gets the same share.
  """
  if seeds_per_batch is not None and seeds_per_batch < 0:
    raise JnstError(f"seeds_per_batch must be >= 1 (or 0 for all), got {seeds_per_batch}")
  per = min(seeds_per_batch or n, n)
  size = math.ceil(per / num_devices) * num_devices
  return size, math.ceil(n / size)


def seed_mesh(devices: Sequence | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis "seeds" over ``devices`` (default: all, every host)."""
  devices = list(devices if devices is not None else jax.devices())
  return jax.make_mesh((len(devices),), (AXIS,), (jax.sharding.AxisType.Auto,),
                       devices=devices)


def _put(tree, sharding: NamedSharding):
  """Host values -> global arrays with ``sharding`` (each process holds the full value)."""

  def put(a):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

  return jax.tree.map(put, tree)


def _gather(x) -> np.ndarray:
  if x.is_fully_addressable:
    return np.asarray(x)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _pad(a: np.ndarray, size: int) -> np.ndarray:
  """Pads the leading axis to ``size`` with copies of the last entry."""
  return np.concatenate([a, np.repeat(a[-1:], size - len(a), 0)]) if len(a) < size else a


def eval_axis(evals_after_step: np.ndarray, k: int, total: int, linesearch: bool) -> list[int]:
  """Evaluation count at which each of a member's k step losses and its final loss was known.

  ``evals_after_step``: cumulative evaluations after each step. Without a line search
  step i evaluates its iterate itself (evaluation i + 1); with one, the loss at iterate
  i > 0 came from step i - 1's line search.
  """
  e = [int(v) for v in evals_after_step[:k]]
  xs = e if not linesearch else [1] + e[:k - 1] if k else []
  return xs + [int(total)]


# ---------------------------------------------------------------- running


def run_seeds(problem: transfer.Problem, seeds: Sequence[int], opt: optimize.OptConfig, *,
              seeds_per_batch: int | None = None, devices: Sequence | None = None,
              on_chunk: Callable | None = None) -> SeedsResult:
  """Solves ``problem`` from each seed's initial image, vmapped and sharded.

  Args:
    problem: from ``transfer.{stylize,reconstruct,synthesize}_problem``.
    seeds: N non-negative seeds; member k starts at ``problem.x0(jax.random.key(seeds[k]))``.
    opt: optimiser config (shared by all members).
    seeds_per_batch: memory bound, members per sequential batch (None: all at once).
    devices: devices of the seed mesh (default ``jax.devices()``).
    on_chunk: ``on_chunk(batch, num_batches, step, state, host)`` every ``opt.chunk``
      steps; ``host`` holds the metrics of the batch's real members (step axis first).
  """
  return _run_members(problem, opt, check_seeds(seeds), None, None, seeds_per_batch,
                      devices, on_chunk)


def run_sweep(problem: transfer.Problem, weight: str, values: Sequence[float],
              opt: optimize.OptConfig, seeds: Sequence[int] = (0,), *,
              seeds_per_batch: int | None = None, devices: Sequence | None = None,
              on_chunk: Callable | None = None) -> SeedsResult:
  """Like ``run_seeds`` over the grid values × seeds (value-major), batched over a loss
  weight: ``weight`` is "content_weight" (α), "style_weight" (β) or "tv_weight" (γ)."""
  if weight not in WEIGHTS:
    raise JnstError(f"cannot batch over {weight!r}: use one of {', '.join(WEIGHTS)}")
  values = [float(v) for v in values]
  if not values or any(not math.isfinite(v) or v < 0 for v in values):
    raise JnstError(f"{weight} sweep values must be finite numbers >= 0, got {values}")
  grid = list(itertools.product(values, check_seeds(seeds)))
  return _run_members(problem, opt, [s for _, s in grid], [v for v, _ in grid], weight,
                      seeds_per_batch, devices, on_chunk)


def _run_members(problem, opt, seeds, values, weight, seeds_per_batch, devices, on_chunk):
  opt = opt.validate()
  mesh = seed_mesh(devices)
  size, num_batches = batch_layout(len(seeds), seeds_per_batch, mesh.size)
  member, shared = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())
  data = _put(problem.data, shared)
  loss_fn, data_axes = problem.loss, None
  if values is not None:
    loss_fn, data_axes = WeightSweepLoss(problem.loss, WEIGHTS[weight]), (None, 0)
  x0_all = np.stack([np.asarray(problem.x0(jax.random.key(s))) for s in seeds])
  t0 = time.perf_counter()
  parts, compile_s, sharding = [], 0.0, ""
  for b in range(num_batches):
    lo, hi = b * size, min((b + 1) * size, len(seeds))
    n_real, last = hi - lo, {}
    x0 = _put(_pad(x0_all[lo:hi], size), member)
    batch_data = data
    if values is not None:
      vals = _pad(np.asarray(values[lo:hi], np.float32), size)
      batch_data = (data, _put(vals, member))

    def chunk_cb(step, state, host, b=b, n_real=n_real, last=last):
      last["host"] = host
      if on_chunk is not None:
        on_chunk(b, num_batches, step, state,
                 jax.tree.map(lambda a: a[:, :n_real] if a.ndim > 1 else a, host))

    res = optimize.run(loss_fn, x0, batch_data, opt, on_chunk=chunk_cb, batched=True,
                       data_axes=data_axes)
    compile_s += res.seconds["compile"]
    sharding = f"{dict(mesh.shape)} {res.x.sharding.spec}"
    evals_hist = last["host"]["evals"]
    parts.append({
        "x": _gather(res.x)[:n_real],
        "loss_history": res.loss_history[:n_real],
        "eval_history": [eval_axis(evals_hist[:, i], res.steps[i], res.evaluations[i],
                                   opt.uses_linesearch) for i in range(n_real)],
        "evaluations": np.asarray(res.evaluations)[:n_real],
        "steps": np.asarray(res.steps)[:n_real],
        "status": res.status[:n_real],
        "terms": {k: np.asarray(v)[:n_real] for k, v in res.terms.items()},
    })
  total = time.perf_counter() - t0
  cat = lambda key: [v for p in parts for v in p[key]]
  return SeedsResult(
      seeds=list(seeds), values=None if values is None else list(values),
      x=np.concatenate([p["x"] for p in parts]), loss_history=cat("loss_history"),
      eval_history=cat("eval_history"),
      evaluations=np.concatenate([p["evaluations"] for p in parts]),
      steps=np.concatenate([p["steps"] for p in parts]), status=cat("status"),
      terms={k: np.concatenate([p["terms"][k] for p in parts]) for k in parts[0]["terms"]},
      seconds={"compile": compile_s, "run": total - compile_s, "total": total},
      batch_size=size, num_batches=num_batches, devices=[str(d) for d in mesh.devices.flat],
      sharding=sharding)


# ---------------------------------------------------------------- diversity (NumPy)


def rms_distance(a, b) -> float:
  """Root-mean-square difference of two equally shaped arrays (their own units)."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  return float(np.sqrt(np.mean(np.square(d))))


def pairwise_distances(items: Sequence) -> np.ndarray:
  """(N, N) symmetric matrix of ``rms_distance`` between all pairs (zero diagonal)."""
  n = len(items)
  out = np.zeros((n, n))
  for i, j in itertools.combinations(range(n), 2):
    out[i, j] = out[j, i] = rms_distance(items[i], items[j])
  return out


def _stats(values) -> dict:
  v = np.asarray(values, np.float64)
  if v.size == 0:
    return {"mean": None, "std": None, "min": None, "max": None, "count": 0}
  return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
          "max": float(v.max()), "count": int(v.size)}


def pairwise_stats(items: Sequence) -> dict:
  """Mean/std/min/max of the RMS distance over the N(N-1)/2 pairs (None if N < 2)."""
  d = pairwise_distances(items)
  return _stats(d[np.triu_indices(len(items), 1)])


def reference_stats(items: Sequence, reference) -> dict:
  """Mean/std/min/max of each item's RMS distance to ``reference``, plus the list."""
  d = [rms_distance(x, reference) for x in items]
  return {**_stats(d), "per_image": d}


def diversity(images: Sequence, reference=None, features: dict | None = None,
              reference_features: dict | None = None) -> dict:
  """Diversity of N RGB images in [0, 1] (each (H, W, 3)).

  ``pixel``: RMS pixel distance (RGB in [0, 1]) over all pairs, and to ``reference``.
  ``features``: the same per VGG layer, on raw activations ({layer: [N arrays]}), with
  ``reference_features`` ({layer: array}) for the distances to the reference.
  References of another shape are skipped (None).
  """
  ref_ok = reference is not None and np.shape(reference) == np.shape(images[0])
  out = {"pixel": {"pairwise": pairwise_stats(images),
                   "to_reference": reference_stats(images, reference) if ref_ok else None}}
  if features is not None:
    out["features"] = {
        "layers": list(features),
        "pairwise": {l: pairwise_stats(f) for l, f in features.items()},
        "to_reference": ({l: reference_stats(f, reference_features[l])
                          for l, f in features.items()}
                         if ref_ok and reference_features is not None else None)}
  return out


def vgg_features(params, images: Sequence, layers: Sequence[str] = DIVERSITY_LAYERS,
                 pooling: str = "max") -> dict[str, list[np.ndarray]]:
  """{layer: [(H', W', C) float32 per image]}, one image at a time (bounded memory)."""
  layers = vgg.validate_layers(layers)
  fn = jax.jit(lambda p, im: vgg.extract(p, im[None], layers, pooling))
  out: dict[str, list[np.ndarray]] = {l: [] for l in layers}
  for im in images:
    feats = jax.device_get(fn(params, np.asarray(im, np.float32)))
    for l in layers:
      out[l].append(feats[l][0])
  return out


def diversity_metrics(params, images: Sequence, reference=None,
                      layers: Sequence[str] = DIVERSITY_LAYERS, pooling: str = "max") -> dict:
  """``diversity`` with VGG features of ``layers`` computed here (raw activations)."""
  feats = vgg_features(params, images, layers, pooling)
  ref_feats = None
  if reference is not None and np.shape(reference) == np.shape(images[0]):
    ref_feats = {l: v[0] for l, v in vgg_features(params, [reference], layers, pooling).items()}
  out = diversity(images, reference, feats, ref_feats)
  out["features"]["pooling"] = pooling
  out["features"]["units"] = "RMS difference of raw VGG activations (post-ReLU)"
  return out
