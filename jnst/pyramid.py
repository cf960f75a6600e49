"""Coarse-to-fine: one experiment solved at increasing sizes, each scale started from the
previous scale's result (crowsonkb/style-transfer-pytorch's design; neural-style's
chained runs).

Scales are named by the longer side of the output in pixels. ``sides(size, min_size=128)``
goes *down* from the output size by a factor (default √2) and rounds each side to the
nearest integer, stopping below ``min_size``: 512 -> (128, 181, 256, 362, 512), 1000 ->
(177, 250, 354, 500, 707, 1000). ``shape_at`` keeps the aspect ratio: each side is
``round(side * H / max(H, W))`` (at least 1), as ``jnst.images.load_image`` resizes, so a
scale's content image equals the file loaded at that size.

At every scale the experiment's config ``build``s a fresh ``Problem`` from the inputs at
that size (``inputs_at(side)``: the CLI reloads its files at that size, the notebook API
resizes arrays with ``resizer``; the style image is sized relative to the current output,
``style_scale`` times its side, as a single run does), so targets are recomputed per scale.
The first scale starts from the experiment's own initial image (content, or the seed's
noise at that size); every later one from the previous result upsampled bicubically
(``jax.image.resize(..., "cubic")`` of the unclipped image; the input space is an affine
per-channel map of RGB, so this is the bicubic upsampling of the RGB image).

Optimiser state: L-BFGS starts afresh at each scale (its history pairs are image-sized and
do not survive a resize); Adam's moments are carried, resized (first moment cubic, second
moment linear and clipped at 0, as crowsonkb does), its step count kept for the bias
correction. ``Schedule.lbfgs_memory`` may give each scale its own history size (smaller at
large sizes: a pair is 2 images, 100 pairs at 2048x1536 are 7.5 GB).

A one-scale schedule is exactly a single run: the same problem, initial image and config
(tests/test_pyramid.py checks bit-equality with ``experiments.run``). Batches (seeds, loss
weight sweeps) run through ``jnst.batched`` at every scale, each member started from its own
upsampled result. Progress: each ``optimize.Report`` carries the scale, the steps over all
scales and the share of the job's work done (steps x pixels), for an ETA over all scales;
``Report.image()`` is the current iterate upsampled to the output size. Chunks are made
short enough (``LINE_SECONDS``, a CPU cost model) that the host sees progress every ~15 s.

No file I/O here.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jnst.batched as batched
import jnst.experiments as experiments
import jnst.optimize as optimize
from jnst.errors import JnstError

DEFAULT_MIN_SIZE = 128
DEFAULT_FACTOR = math.sqrt(2.0)
MIN_SIDE = 16  # VGG reaches relu5_1 at 1/16 of the input: a smaller scale has no features.
# The host should see progress at least this often (seconds): chunks are cut to fit.
LINE_SECONDS = 15.0
# Estimated seconds per pixel per L-BFGS step of VGG-19 style transfer on the 2-core CPU
# (BENCHMARKS.md: about 1.7 s per step at 512x384); accelerators are ~100x faster.
CPU_SECONDS_PER_PIXEL = 1e-5
ACCEL_SECONDS_PER_PIXEL = 1e-7


# ------------------------------------------------------------------ the schedule


def sides(size: int, *, scales: Sequence[int] | None = None, min_size: int | None = None,
          factor: float = DEFAULT_FACTOR) -> tuple[int, ...]:
  """The longer side of every scale, increasing, the last one ``size``.

  scales: explicit sides (increasing, each >= 16 and <= size; ``size`` is appended when the
  list does not end with it). Otherwise ``min_size`` (default 128) and ``factor``: ``size /
  factor**k`` rounded to the nearest pixel for k = 0, 1, ... while at least ``min_size``
  (``min_size >= size``: one scale).
  """
  if size < MIN_SIDE:
    raise JnstError(f"the output size must be at least {MIN_SIDE} px, got {size}")
  if scales:
    out = [int(s) for s in scales]
    if any(s < MIN_SIDE for s in out):
      raise JnstError(f"--scales must be at least {MIN_SIDE} px each, got {out}")
    if any(b <= a for a, b in zip(out, out[1:])):
      raise JnstError(f"--scales must increase, got {out}")
    if out[-1] > size:
      raise JnstError(f"--scales must not exceed the output size {size}, got {out}: raise "
                      f"--size or drop the larger scales")
    return tuple(out if out[-1] == size else out + [size])
  if not factor > 1:
    raise JnstError(f"the scale factor must be > 1, got {factor}")
  lo = DEFAULT_MIN_SIZE if min_size is None else int(min_size)
  if lo < MIN_SIDE:
    raise JnstError(f"--min_size must be at least {MIN_SIDE}, got {lo}")
  out, k = [size], 1
  while round(size / factor**k) >= lo:
    s = round(size / factor**k)
    if s < out[-1]:
      out.append(s)
    k += 1
  return tuple(reversed(out))


def default_steps(num_scales: int, steps: int) -> tuple[int, ...]:
  """Coarsest-heavy steps per scale for a budget of ``steps`` (the single-scale step count):
  ``STEP_RULE`` (one scale: ``steps``)."""
  return STEP_RULE(num_scales, steps)


def _coarse_heavy(num_scales: int, steps: int) -> tuple[int, ...]:
  # With f = steps // 5: 2f at the coarsest scale, f at each middle one, 2f at the output
  # scale: 500 -> (200, 100, 100, 100, 200) for 5 scales (300 full-size-equivalent
  # evaluations at 512 px instead of 500). The output scale's 2f: at 128 px a pyramid needed
  # 75 output-scale evaluations (of 200) to reach the loss PyTorch reaches in 200
  # (BENCHMARKS.md, "Pyramid"); f = 40 would not have.
  if num_scales == 1:
    return (steps,)
  fine = max(1, steps // 5)
  return (2 * fine,) + (fine,) * (num_scales - 2) + (2 * fine,)


STEP_RULE: Callable[[int, int], tuple[int, ...]] = _coarse_heavy


@dataclasses.dataclass(frozen=True)
class Schedule:
  """What a pyramid runs: per scale the longer side (increasing), the optimiser steps and
  optionally the L-BFGS history size (None: the config's); ``rule`` says how the schedule
  was chosen (for records)."""
  sides: tuple[int, ...]
  steps: tuple[int, ...]
  lbfgs_memory: tuple[int, ...] | None = None
  rule: str = "given"

  def validate(self) -> Schedule:
    n = len(self.sides)
    if n < 1 or len(self.steps) != n:
      raise JnstError(f"{len(self.steps)} step counts for {n} scales: give one per scale "
                      f"(--steps_per_scale)")
    if any(s < 1 for s in self.steps):
      raise JnstError(f"steps per scale must be at least 1, got {list(self.steps)}")
    if self.lbfgs_memory is not None and (len(self.lbfgs_memory) != n
                                          or any(m < 1 for m in self.lbfgs_memory)):
      raise JnstError(f"give one L-BFGS history size >= 1 per scale, got "
                      f"{list(self.lbfgs_memory)} for {n} scales")
    return self

  def describe(self) -> dict:
    return {"sides": list(self.sides), "steps": list(self.steps),
            "lbfgs_memory": None if self.lbfgs_memory is None else list(self.lbfgs_memory),
            "rule": self.rule}


def schedule(size: int, steps: int, *, scales: Sequence[int] | None = None,
             min_size: int | None = None, factor: float = DEFAULT_FACTOR,
             steps_per_scale: Sequence[int] | None = None,
             lbfgs_memory: Sequence[int] | None = None) -> Schedule:
  """A validated ``Schedule``: ``sides(...)`` and ``steps_per_scale`` (one per scale; one
  number: the same at every scale; None: ``default_steps`` from the total ``steps``)."""
  s = sides(size, scales=scales, min_size=min_size, factor=factor)
  if steps_per_scale:
    per = tuple(int(v) for v in steps_per_scale)
    per, rule = (per * len(s) if len(per) == 1 else per), "steps per scale given"
  else:
    per, rule = default_steps(len(s), steps), f"default: {STEP_RULE.__name__}({steps})"
  mem = None if not lbfgs_memory else tuple(int(m) for m in lbfgs_memory)
  if mem is not None and len(mem) == 1:
    mem = mem * len(s)
  return Schedule(s, per, mem, rule).validate()


def single(size: int, steps: int) -> Schedule:
  """The one-scale schedule: today's single run."""
  return Schedule((size,), (steps,), None, "single scale")


def shape_at(shape: Sequence[int], side: int) -> tuple[int, ...]:
  """``shape`` (H, W, ...) with its longer side ``side``, aspect kept (module docstring)."""
  h, w = shape[:2]
  if side == max(h, w):
    return tuple(shape)
  s = side / max(h, w)
  return (max(1, round(h * s)), max(1, round(w * s)), *shape[2:])


# ------------------------------------------------------------------ resizing


def resize(a, hw: Sequence[int], method: str = "cubic"):
  """Resizes the (H, W) axes (third and second from last) of ``a`` (..., H, W, C); leading
  axes (a batch of members) are untouched."""
  a = jnp.asarray(a)
  return jax.image.resize(a, (*a.shape[:-3], *hw, a.shape[-1]), method)


def resizer(inputs: experiments.Inputs,
            size: int | None = None) -> Callable[[int], experiments.Inputs]:
  """``inputs_at(side)`` from in-memory images: the content (and init) image resized to
  longer side ``side``, each style image by the same factor (relative to the output, as a
  single run at that size sizes it); antialiased Lanczos-3 downsampling. ``size``: the
  output size (default: the content's longer side, else the first style's). At ``size``
  the inputs come back unchanged."""
  ref = inputs.content if inputs.content is not None else inputs.styles[0]
  size = size or max(np.shape(ref)[:2])

  def at(side: int) -> experiments.Inputs:
    if side == size:
      return inputs
    f = side / size
    scale = lambda im: None if im is None else np.asarray(jax.image.resize(
        jnp.asarray(im, jnp.float32), shape_at(np.shape(im), max(
            MIN_SIDE, round(f * max(np.shape(im)[:2])))), "lanczos3"))
    return experiments.Inputs(scale(inputs.content), tuple(scale(s) for s in inputs.styles),
                              scale(inputs.init))

  return at


def _is_adam(node) -> bool:
  return isinstance(node, optax.ScaleByAdamState)


def carry_adam(new_opt, prev_opt, hw: Sequence[int]):
  """``new_opt`` (a fresh optax state at the new size) with every Adam state replaced by
  ``prev_opt``'s, its moments resized to ``hw`` (mu cubic; nu linear, clipped at 0) and its
  count kept (the bias correction continues). Other states (a schedule's count) stay fresh."""
  prev = [n for n in jax.tree.leaves(prev_opt, is_leaf=_is_adam) if _is_adam(n)]
  it = iter(prev)

  def swap(node):
    if not _is_adam(node):
      return node
    p = next(it)
    return node._replace(count=jnp.asarray(p.count, node.count.dtype),
                         mu=resize(p.mu, hw, "cubic").astype(node.mu.dtype),
                         nu=jnp.maximum(resize(p.nu, hw, "linear"), 0).astype(node.nu.dtype))

  return jax.tree.map(swap, new_opt, is_leaf=_is_adam)


# ------------------------------------------------------------------ running


def chunk_for(opt: optimize.OptConfig, pixels: int, members: int = 1) -> int:
  """The largest divisor of ``opt.chunk`` whose estimated run time fits ``LINE_SECONDS``
  (so progress lines, early stops and saves stay on the same step multiples)."""
  per_px = CPU_SECONDS_PER_PIXEL if jax.default_backend() == "cpu" else ACCEL_SECONDS_PER_PIXEL
  fit = max(1, int(LINE_SECONDS / (per_px * pixels * members)))
  return max(d for d in range(1, opt.chunk + 1) if opt.chunk % d == 0 and d <= fit)


def _scale_opt(opt: optimize.OptConfig, sched: Schedule, i: int, pixels: int,
               members: int = 1) -> optimize.OptConfig:
  if len(sched.sides) == 1:  # Exactly the single run.
    return dataclasses.replace(opt, steps=sched.steps[0], chunk=min(opt.chunk, sched.steps[0]))
  mem = opt.lbfgs_memory if sched.lbfgs_memory is None else sched.lbfgs_memory[i]
  o = dataclasses.replace(opt, steps=sched.steps[i], lbfgs_memory=mem)
  return dataclasses.replace(o, chunk=min(chunk_for(o, pixels, members), o.steps)).validate()


@dataclasses.dataclass
class PyramidResult:
  """A pyramid run of one image (``run``) or a batch (``run_members``).

  result: the last (output-size) scale's ``optimize.RunResult`` or ``batched.BatchResult``
  (its loss is the full-resolution loss). problem: that scale's ``Problem`` (``rgb``).
  scales: per scale {"side", "shape", "steps", "evaluations", "final_loss", "seconds",
  "loss_history"} (a batch: per-member lists). schedule. seconds: {"compile", "run",
  "total"} over all scales.
  """
  result: object
  problem: object
  scales: list[dict]
  schedule: Schedule
  seconds: dict

  @property
  def x(self):
    return self.result.x

  def describe(self) -> dict:
    """The record's "pyramid" entry: which schedule ran and what each scale did."""
    return {"schedule": self.schedule.describe(), "seconds": self.seconds,
            "scales": [{k: v for k, v in s.items() if k != "loss_history"}
                       for s in self.scales],
            "loss_history_per_scale": [s["loss_history"] for s in self.scales]}


class _Progress:
  """Wraps a progress callback: scale fields, global step, work share, total elapsed and
  images upsampled to the output size."""

  def __init__(self, progress, sched: Schedule, out_hw, first_pixels: int):
    # Pixels per scale, estimated from the first scale's (the ETA's weights).
    pixels = [first_pixels * (s / sched.sides[0]) ** 2 for s in sched.sides]
    self.progress, self.sched, self.pixels, self.out_hw = progress, sched, pixels, out_hw
    self.work = [p * s for p, s in zip(pixels, sched.steps)]
    self.t0 = time.perf_counter()

  def at(self, i: int, rgb: Callable):
    if self.progress is None:
      return None
    before, work_before = sum(self.sched.steps[:i]), sum(self.work[:i])
    total = sum(self.work)

    def report(r: optimize.Report) -> None:
      img = r.render
      render = None if img is None else (
          lambda: np.clip(np.asarray(resize(img(), self.out_hw, "cubic")), 0, 1))
      self.progress(dataclasses.replace(
          r, scale=i, num_scales=len(self.sched.sides), side=self.sched.sides[i],
          global_step=before + r.step, elapsed=time.perf_counter() - self.t0,
          done_fraction=(work_before + r.step * self.pixels[i]) / total, render=render))

    return report


def output_hw(cfg: experiments.Config, inputs: experiments.Inputs) -> tuple[int, int]:
  """(H, W) of ``cfg``'s result for ``inputs`` (the content's; a synthesis: its size or
  the style's)."""
  if isinstance(cfg, experiments.SynthesizeConfig):
    return tuple(cfg.size) if cfg.size is not None else tuple(np.shape(inputs.styles[0])[:2])
  return tuple(np.shape(inputs.content)[:2])


def _problems(cfg, params, inputs_at, sched: Schedule):
  """Yields (scale, config, problem) per scale; a synthesis of a given ``size`` is scaled."""
  for i, side in enumerate(sched.sides):
    c = cfg
    if isinstance(cfg, experiments.SynthesizeConfig) and cfg.size is not None:
      c = dataclasses.replace(cfg, size=tuple(shape_at((*cfg.size, 3), round(
          side * max(cfg.size) / sched.sides[-1]))[:2]))
    problem = c.build(params, inputs_at(side))
    if min(problem.shape[:2]) < MIN_SIDE:
      raise JnstError(f"scale {side} px gives a {problem.shape[0]}x{problem.shape[1]} image, "
                      f"under {MIN_SIDE} px on a side: raise --min_size or give --scales")
    yield i, c, problem


def _scale_record(side, problem, opt, res, batch: bool) -> dict:
  if batch:
    return {"side": side, "shape": list(problem.shape), "steps": opt.steps,
            "lbfgs_memory": opt.lbfgs_memory, "chunk": opt.chunk,
            "evaluations": [int(e) for e in res.evaluations],
            "final_loss": [float(v) for v in res.final_loss], "seconds": res.seconds,
            "loss_history": res.loss_history}
  return {"side": side, "shape": list(problem.shape), "steps": opt.steps,
          "lbfgs_memory": opt.lbfgs_memory, "chunk": opt.chunk,
          "evaluations": res.evaluations, "final_loss": res.loss_history[-1],
          "seconds": res.seconds, "loss_history": res.loss_history}


def _totals(scales, t0) -> dict:
  total = time.perf_counter() - t0
  compile_s = sum(s["seconds"]["compile"] for s in scales)
  return {"compile": compile_s, "run": total - compile_s, "total": total}


def run(cfg: experiments.Config, params, inputs_at: Callable[[int], experiments.Inputs],
        sched: Schedule, *, progress: optimize.Progress | None = None) -> PyramidResult:
  """Solves ``cfg``'s experiment from seed ``cfg.seed`` over ``sched``'s scales.

  ``inputs_at(side)``: the experiment's inputs at longer side ``side`` (``resizer`` for
  arrays). Returns a ``PyramidResult``; ``result.problem.rgb(result.x)`` is the image.
  """
  sched = sched.validate()
  out_hw = output_hw(cfg, inputs_at(sched.sides[-1]))
  t0, scales, prev, wrap = time.perf_counter(), [], None, None
  for i, c, problem in _problems(cfg, params, inputs_at, sched):
    pixels = problem.shape[0] * problem.shape[1]
    if wrap is None:
      wrap = _Progress(progress, sched, out_hw, pixels)
    opt = _scale_opt(c.opt, sched, i, pixels)
    adjust = None
    if prev is None:
      x0 = problem.x0(jax.random.key(c.seed))
    else:
      x0 = resize(prev.x, problem.shape[:2], "cubic")
      if opt.optimizer == "adam" and prev.opt_state is not None:
        adjust = lambda s, p=prev.opt_state, hw=problem.shape[:2]: s._replace(
            opt=carry_adam(s.opt, p, hw))
    res = optimize.run(problem.objective, x0, problem.data, opt,
                       progress=wrap.at(i, problem.rgb), render=problem.rgb, adjust=adjust)
    scales.append(_scale_record(sched.sides[i], problem, opt, res, False))
    prev = res
  return PyramidResult(prev, problem, scales, sched, _totals(scales, t0))


def run_members(cfg: experiments.Config, params, inputs_at: Callable[[int], experiments.Inputs],
                sched: Schedule, seeds: Sequence[int], *, term: str | None = None,
                values: Sequence[float] | None = None, members_per_batch="auto",
                devices=None, progress: optimize.Progress | None = None) -> PyramidResult:
  """``run`` for many members at every scale through ``jnst.batched``: seeds
  (``run_seeds``), or the values x seeds grid of ``term``'s loss weight (``run_sweep``).
  Member k at the first scale starts from seed k's initial image; later scales from its own
  upsampled result. ``result`` is the last scale's ``BatchResult``."""
  sched = sched.validate()
  seeds = batched.check_seeds(seeds)
  out_hw = output_hw(cfg, inputs_at(sched.sides[-1]))
  t0, scales, prev, wrap = time.perf_counter(), [], None, None
  n = len(seeds) * (1 if values is None else len(values))
  for i, c, problem in _problems(cfg, params, inputs_at, sched):
    pixels = problem.shape[0] * problem.shape[1]
    if wrap is None:
      wrap = _Progress(progress, sched, out_hw, pixels)
    opt = _scale_opt(c.opt, sched, i, pixels, n if jax.default_backend() == "cpu" else 1)
    x0 = adjust = None
    if prev is not None:
      x0 = np.asarray(resize(prev.x, problem.shape[:2], "cubic"))
      if opt.optimizer == "adam" and prev.opt_state is not None:
        def carry(s, lo, hi, p=prev.opt_state, hw=problem.shape[:2]):
          size = s.x.shape[0]
          part = jax.tree.map(lambda a: batched._pad(np.asarray(a)[lo:hi], size), p)
          return s._replace(opt=carry_adam(s.opt, part, hw))
        adjust = carry
    kw = dict(members_per_batch=members_per_batch, devices=devices,
              progress=wrap.at(i, problem.rgb), x0=x0, adjust=adjust)
    if values is None:
      res = batched.run_seeds(problem, seeds, opt, **kw)
    else:
      res = batched.run_sweep(problem, term, values, opt, seeds, **kw)
    scales.append(_scale_record(sched.sides[i], problem, opt, res, True))
    prev = res
  return PyramidResult(prev, problem, scales, sched, _totals(scales, t0))
