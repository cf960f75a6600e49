"""Will a run fit in memory? Estimate the bytes it needs before allocating anything, and
refuse with one line naming the flag to change.

    est = memory.estimate(backbone, (256, 341, 3), inputs=[(256, 341, 3), (256, 256, 3)],
                          batch=1, optimizer="lbfgs", lbfgs_memory=100)
    memory.check_fits(est)            # JnstError if est.bytes > 90% of memory.available_bytes()

The model (``Estimate.parts``, bytes, float32 unless the backbone computes in bfloat16):

  inputs       each input image decoded (float32 RGB) plus its preprocessed copy
  params       the backbone's weights as ``prepare`` holds them for ``layers``: the plain
               weights, the input-gradient kernels and (VGG on CPU) the Winograd kernels
  image        per member: the iterate, previous iterate, gradient, update and two spare
               image-sized buffers (6 images), plus Adam's two moments
  lbfgs        per member: L-BFGS's history, 2 x ``lbfgs_memory`` image-sized vectors
  activations  per member: every backbone layer's output up to the deepest used (conv, ReLU
               and pool outputs), times ``ACTIVATION_FACTOR`` = 1.5: the values the
               backward pass keeps and its gradients; with ``remat=True`` only the block
               outputs are kept and one block is recomputed at a time
  runtime      ``RUNTIME_BYTES`` (0.6 GiB): XLA's compiler and runtime, the host copies
  results      extra host arrays the caller holds (``extra``, e.g. a study's images)

``batch`` multiplies the per-member parts (``jnst.batched.working_set_bytes``, the
accelerators' auto batch size, is their sum). The factor and the runtime part are
calibrated on CPU against XLA's accounting of compiled steps and the peak RSS of real runs
from 0.1 to 4.2 megapixels (BUILD.md, "Pyramid and high resolution"): the estimate is at or
above each (by up to 36 %), so a run that fits is not refused. The memory to compare with
(``available_bytes``): ``$JNST_MEMORY_BYTES`` if set (a cap, and how tests mock it), else an
accelerator's ``memory_stats()`` (limit minus in use), else ``MemAvailable`` from
/proc/meminfo, else ``os.sysconf`` free pages; None (no check) if none is known.

A pyramid/high-resolution runner calls ``estimate`` per scale (``remat`` as it runs) and
``check_fits`` on the largest.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from collections.abc import Mapping, Sequence

import jax
import numpy as np

from jnst.errors import JnstError

SHARE = 0.9  # check_fits allows this share of the available memory.
IMAGE_BUFFERS = 6
ACTIVATION_FACTOR = 1.5
RUNTIME_BYTES = int(0.6 * 2**30)
# Which flag to name when a part dominates the estimate.
FLAGS = {"inputs": "--size (or --style_scale)", "params": "--backbone",
         "image": "--size", "lbfgs": "--lbfgs_memory (or --size)", "activations": "--size",
         "results": "--num_seeds", "batch": "--seeds_per_batch"}


@dataclasses.dataclass(frozen=True)
class Estimate:
  """Estimated bytes of one run: ``bytes`` in all, ``parts`` {name: bytes} (module
  docstring), ``batch`` members per batch."""
  bytes: int
  parts: Mapping[str, int]
  batch: int = 1
  shape: tuple[int, ...] = ()  # The optimised image's (H, W, 3).

  def biggest(self) -> str:
    return max(self.parts, key=self.parts.get)

  def describe(self) -> str:
    return ", ".join(f"{k} {_gb(v)}" for k, v in sorted(self.parts.items(), key=lambda kv: -kv[1])
                     if v)


def _gb(n: float) -> str:
  if n >= 100 * 2**30:
    return f"{n / 2**30:,.0f} GiB"
  return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def _nbytes(shape, itemsize=4) -> int:
  return int(math.prod(shape)) * itemsize


def activation_shapes(backbone, shape: Sequence[int], layers: Sequence[str] | None = None
                      ) -> dict[str, tuple[int, ...]]:
  """{layer: (1, H', W', C)} of every backbone layer up to the deepest of ``layers`` (all
  by default) for one (H, W, 3) image — traced with ``jax.eval_shape``, nothing allocated."""
  names = list(backbone.layer_names)
  if layers:
    names = names[:max(names.index(l) for l in backbone.validate_layers(layers)) + 1]
  h, w = int(shape[0]), int(shape[1])
  params = _param_shapes(backbone)
  feats = jax.eval_shape(lambda p, x: backbone.features(p, x, names), params,
                         jax.ShapeDtypeStruct((1, h, w, 3), np.float32))
  return {k: tuple(v.shape) for k, v in feats.items()}


@functools.lru_cache(maxsize=8)
def _param_shapes(backbone):
  """The backbone's params as ShapeDtypeStructs: traced, or (an ``init_random`` that needs
  concrete values, e.g. NumPy's generator) made once and described."""
  try:
    return jax.eval_shape(backbone.init_random, jax.random.key(0))
  except jax.errors.JAXTypeError:
    params = backbone.init_random(jax.random.key(0))
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), params)


@functools.lru_cache(maxsize=8)
def _param_bytes(backbone, layers: tuple[str, ...] | None) -> int:
  """Bytes of ``backbone.prepare``'s params for ``layers`` (traced, nothing allocated)."""
  prepared = jax.eval_shape(lambda p: backbone.prepare(p, layers), _param_shapes(backbone))
  return sum(_nbytes(l.shape, np.dtype(l.dtype).itemsize) for l in jax.tree.leaves(prepared))


def estimate(backbone, shape: Sequence[int], *, inputs: Sequence[Sequence[int]] = (),
             batch: int = 1, optimizer: str = "lbfgs", lbfgs_memory: int = 100,
             layers: Sequence[str] | None = None, remat: bool = False,
             extra: Mapping[str, int] | None = None) -> Estimate:
  """Bytes a run optimising ``batch`` images of ``shape`` (H, W, 3) needs.

  backbone: a ``jnst.backbones`` backbone (its compute dtype counts). inputs: the (H, W, 3)
  shapes of the decoded input images. optimizer/lbfgs_memory: as ``optimize.OptConfig``.
  layers: the layers the losses read (None: all, the worst case). remat: activations
  recomputed per block (a runner that uses ``jax.checkpoint``). extra: further named
  parts, bytes (e.g. ``{"results": ...}``). Traces the backbone's shapes only.
  """
  if batch < 1:
    raise JnstError(f"batch must be at least 1, got {batch}")
  act_item = 2 if getattr(backbone, "compute_dtype", "float32") == "bfloat16" else 4
  acts = activation_shapes(backbone, shape, layers)
  sizes = [_nbytes(s, act_item) for s in acts.values()]
  if remat:  # Block outputs kept; the largest block recomputed (its layers' sum) at a time.
    blocks: dict[str, int] = {}  # Block = the first number in a layer's name (VGG: conv3_1).
    for name, n in zip(acts, sizes):
      block = (re.findall(r"\d+", name) or [name])[0]
      blocks[block] = blocks.get(block, 0) + n
    kept = sum(n for name, n in zip(acts, sizes) if name.startswith("pool"))
    act = kept + ACTIVATION_FACTOR * max(blocks.values())
  else:
    act = ACTIVATION_FACTOR * sum(sizes)
  act = int(act)
  image = _nbytes(shape)
  parts = {
      "inputs": 2 * sum(_nbytes(s) for s in inputs),
      "params": _param_bytes(backbone, tuple(layers) if layers else None),
      "image": batch * image * (IMAGE_BUFFERS + (2 if optimizer == "adam" else 0)),
      "lbfgs": batch * image * 2 * lbfgs_memory if optimizer == "lbfgs" else 0,
      "activations": batch * act,
      "runtime": RUNTIME_BYTES,
      **(extra or {})}
  return Estimate(int(sum(parts.values())), parts, batch, tuple(int(v) for v in shape))


def available_bytes() -> int | None:
  """Memory a run may use now, in bytes (module docstring for the sources); None if
  unknown. Tests mock it with ``$JNST_MEMORY_BYTES`` or by monkeypatching this function."""
  env = os.environ.get("JNST_MEMORY_BYTES")
  if env:
    try:
      return int(float(env))
    except ValueError:
      raise JnstError(f"JNST_MEMORY_BYTES={env!r} is not a number of bytes") from None
  try:
    dev = jax.devices()[0]
    if dev.platform != "cpu":
      stats = dev.memory_stats() or {}
      if stats.get("bytes_limit"):
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  except RuntimeError:
    pass
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def check_fits(est: Estimate, available: int | None = None, *, share: float = SHARE,
               flags: Mapping[str, str] | None = None, what: str = "this run") -> Estimate:
  """``est`` if it fits ``share`` of ``available`` bytes (default ``available_bytes()``;
  unknown: no check); else JnstError naming the biggest part's flag (``flags`` overrides
  ``FLAGS``, e.g. a study's ``{"batch": "--seeds_per_batch"}``)."""
  if available is None:
    available = available_bytes()
  if available is None or est.bytes <= share * available:
    return est
  names = {**FLAGS, **(flags or {})}
  fixed = est.parts.get("params", 0) + est.parts.get("runtime", 0)  # No flag lowers these.
  if fixed > share * available:
    raise JnstError(f"{what} needs about {_gb(est.bytes)}; the network weights and XLA's "
                    f"runtime alone need {_gb(fixed)} but only {_gb(available)} is available: "
                    f"free memory (close other programs) or use another machine")
  per_member = ("image", "lbfgs", "activations")
  varying = [k for k in est.parts if k not in ("params", "runtime")]
  alone = [k for k in varying if k not in per_member and est.parts[k] > share * available]
  part = alone[0] if alone else max(varying, key=est.parts.get)
  flag = names["batch"] if est.batch > 1 and part in per_member else names.get(part, "--size")
  raise JnstError(f"{what} needs about {_gb(est.bytes)} ({est.describe()}) but only "
                  f"{_gb(available)} is available: lower {flag}")
