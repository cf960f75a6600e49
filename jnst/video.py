"""Video stylisation without flicker: the runner over per-frame ``Problem``s (no file I/O).

Modes (``VideoConfig.mode``), after Ruder, Dosovitskiy & Brox 2016 ("Artistic style transfer
for videos"; repository manuelruder/artistic-videos):

* ``none`` — the baseline: every frame stylised on its own, from its own initial image
  (``Problem.x0``: the content frame by default), ``opt.steps`` steps each.
* ``sequential`` — Ruder's method: frame 0 as above; frame t starts from the stylised frame
  t−1 warped to t, and adds the temporal term (``jnst.losses.temporal``) towards the
  stylised frames t−k warped to t, k ∈ ``offsets`` (default (1,): short-term only; (1, 2, 4)
  adds Ruder's long-term terms, each mask reduced by the closer ones', eq. 5:
  c_k ← max(c_k − Σ_{j<k} c_j, 0)), ``opt.steps`` steps each.
* ``batch`` — every frame of a window of ``window`` frames (0: the whole clip) optimised at
  once, one vmapped (and device-sharded) batch, coupled in one of two ways (``coupling``):

  ``joint`` (the default) — one objective over the window, ``JointLoss``:
    J(x_lo … x_hi) = Σ_t L_t(x_t) + λ Σ_t T(x_t, warp(x_{t−1}), c_t),
  each frame's own loss plus the temporal term towards its previous frame's *current*
  iterate warped to t (frame lo: the earlier window's final result, or none), so the
  gradient of the term reaches both frames. Every frame keeps its own optimiser state
  (vmapped: ``optimize.Vmap(joint=True)``) and steps on its slice of ∇J, ``opt.steps``
  steps from ``Problem.x0``; no passes.

  ``passes`` — coupled through their previous-pass values. The documented multi-pass
  schedule (``passes`` = P; ``VideoConfig.pass_steps`` splits ``opt.steps``: S_0 =
  round(``first_pass`` · steps) for pass 0 and the rest evenly over the later passes, S_p
  each; ``first_pass`` = 0 splits evenly, S_p = steps // P):

    pass 0: frame t from ``Problem.x0`` (as ``none``), no temporal term (masks 0), S_0 steps.
    pass p ≥ 1: direction forward if p is odd (neighbour n = t−1), backward if even
      (n = t+1). With ω = x_n^{p−1} warped to t and c its reliability mask (0 where the
      neighbour does not exist yet: beyond the clip, or in a later window; a neighbour in
      an earlier window is its final result), frame t starts from
        x_t ← δ x_t^{p−1} + (1 − δ) (c ω + (1 − c) x_t^{p−1})        (δ = ``blend``)
      — Ruder's multi-pass initialisation, eq. 8 — and is optimised for S_p steps (with
      pass p−1's optimiser state, ``carry`` (the default; ``carry_state``), or a fresh one)
      with the temporal term towards ω weighted by c.
    result: x^{P−1}.

  All frames of a pass move together (Jacobi-style), where Ruder sweeps frame after frame
  (Gauss-Seidel): that is what lets one compiled program run the whole window in one batch
  on one or many devices. ``tests/test_video.py`` checks the batch against this schedule run
  frame by frame. Joint coupling reaches a lower style loss at the same flicker
  (BENCHMARKS.md, "Batch mode as one joint objective"): a pass-coupled frame is pulled
  towards its neighbours' older, less stylised iterates.

A run takes a sequence of per-frame problems (``frame_problems`` builds them lazily from a
``StylizeConfig``) and a flow provider ``flows(t, s) -> (flow(t, s), mask)`` (default:
OpenCV DIS on the content frames, ``jnst.flow``; a synthetic clip passes its true flow,
``flow.CameraMove``).
A feed-forward network's frames (``fast_frames``) can start every frame
(``FrameProblems(init_frames=…)``; sequential mode with ``fill_from_init`` takes the warped
previous result only where it is reliable), or be the result: ``score`` records their
losses and warping error without optimising. One content mask (``FrameProblems``'s
``content_mask``/``style_masks``) applies to every frame.
``store`` (optional) keeps finished frames so an interrupted run resumes: ``store.load(t)``
gives ``(x, info)`` or None, ``store.save(t, x, info)`` keeps one (``jnst.video_io`` has the
on-disk one). Frames are stored in the backbone's input space as float32, so a resumed run
continues from exactly the values an uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import jnst.batched as batched
import jnst.experiments as experiments
import jnst.flow as flow
import jnst.lbfgs as lbfgs
import jnst.objective as objective
import jnst.optimize as optimize
from jnst.errors import JnstError

MODES = ("none", "sequential", "batch")
COUPLINGS = ("joint", "passes")
# Tuned on the demo clip and a camera move at 256 px (the script's default size) against
# the style term's scale there (BENCHMARKS.md, "Video": "The temporal weight in today's
# units", "Batch mode as one joint objective"); smaller frames leave a larger style
# residual and need a stronger weight.
DEFAULT_TEMPORAL_WEIGHT = 2e8
JOINT_TEMPORAL_WEIGHT = 5e8


def default_temporal_weight(mode: str, coupling: str = "joint") -> float:
  """The temporal weight a mode uses when none is given."""
  return JOINT_TEMPORAL_WEIGHT if (mode, coupling) == ("batch", "joint") else \
      DEFAULT_TEMPORAL_WEIGHT


@dataclasses.dataclass(frozen=True)
class VideoConfig:
  """How to stylise a clip (module docstring).

  mode: none | sequential | batch. temporal_weight: the weight of the temporal term (its
  raw value is a mean squared difference in RGB 0-255 steps; None: the mode's
  ``default_temporal_weight``, filled in by ``validate``). offsets: sequential mode's
  earlier frames (1 = the previous one). window: batch mode's frames per batch (0: all).
  coupling: batch mode's "joint" objective or its multi-pass schedule, "passes". passes,
  blend: the schedule's P and δ. first_pass: the schedule's share of the
  steps for pass 0 (the rest split evenly over the later passes; 0: every pass ``steps //
  passes``). fill_from_init: sequential mode's initial image takes the warped previous
  result only where it is reliable (mask c) and the frame's own initial image elsewhere,
  c ω + (1 − c) x0_t (for a feed-forward network's frames as x0_t: ``FrameProblems``'s
  ``init_frames``); False: Ruder's, ω everywhere. carry (batch mode's passes only; the
  others ignore it): passes p >= 1 keep the optimiser state of pass p-1 (``carry_state``:
  L-BFGS's curvature pairs, Adam's moments) instead of starting afresh (False). Between
  passes only the temporal term changes (its target, and its mask with the direction): a
  diagonal part of the Hessian, so most of the curvature the pairs hold stays valid, while
  a restarted L-BFGS spends the first evaluations of every pass on short steps
  (BENCHMARKS.md, "Batch mode carrying the optimiser across passes").
  """
  mode: str = "sequential"
  temporal_weight: float | None = None
  offsets: tuple[int, ...] = (1,)
  coupling: str = "joint"
  passes: int = 4
  blend: float = 0.5
  window: int = 0
  first_pass: float = 0.0
  fill_from_init: bool = False
  carry: bool = True

  def validate(self, opt: optimize.OptConfig | None = None) -> VideoConfig:
    """The config checked, with the temporal weight filled in when it was None."""
    if self.mode not in MODES:
      raise JnstError(f"unknown temporal mode {self.mode!r}: use none, sequential or batch")
    if self.coupling not in COUPLINGS:
      raise JnstError(f"unknown coupling {self.coupling!r}: use joint or passes")
    if self.temporal_weight is None:
      return dataclasses.replace(self, temporal_weight=default_temporal_weight(
          self.mode, self.coupling)).validate(opt)
    if not np.isfinite(self.temporal_weight) or self.temporal_weight < 0:
      raise JnstError(f"temporal_weight must be a finite number >= 0, got {self.temporal_weight}")
    offsets = list(self.offsets)
    if not offsets or offsets[0] != 1 or offsets != sorted(set(offsets)):
      raise JnstError(f"temporal offsets must be increasing and start at 1 (e.g. 1,2,4), got "
                      f"{offsets}")
    if self.passes < 2:
      raise JnstError(f"batch mode needs at least 2 passes, got {self.passes}")
    if not 0 <= self.blend <= 1:
      raise JnstError(f"blend must be in [0, 1], got {self.blend}")
    if self.window < 0:
      raise JnstError(f"window must be >= 0 (0: the whole clip), got {self.window}")
    if not 0 <= self.first_pass < 1:
      raise JnstError(f"first_pass must be in [0, 1) (0: an even split), got {self.first_pass}")
    if self.joint and opt is not None and opt.uses_linesearch:
      raise JnstError("batch mode's joint coupling steps every frame together: use "
                      "--linesearch=none (or --coupling=passes)")
    if opt is not None and self.multipass and min(self.pass_steps(opt.steps)) < 1:
      raise JnstError(f"batch mode splits --steps={opt.steps} over {self.passes} passes"
                      f"{f' (--first_pass={self.first_pass:g})' if self.first_pass else ''}: "
                      f"give more steps")
    return self

  def pass_steps(self, steps: int) -> tuple[int, ...]:
    """Batch mode's steps per pass out of a frame's ``steps`` (module docstring)."""
    if not self.first_pass:
      return (steps // self.passes,) * self.passes
    first = round(self.first_pass * steps)
    return (first,) + ((steps - first) // (self.passes - 1),) * (self.passes - 1)

  @property
  def joint(self) -> bool:
    """Batch mode with the joint objective."""
    return self.mode == "batch" and self.coupling == "joint"

  @property
  def multipass(self) -> bool:
    """Batch mode with the multi-pass schedule."""
    return self.mode == "batch" and self.coupling == "passes"

  @property
  def num_targets(self) -> int:
    """K, the earlier frames one temporal term compares against."""
    return len(self.offsets) if self.mode == "sequential" else 1


# ---------------------------------------------------------------- per-frame problems


class FrameProblems(Sequence):
  """The ``Problem`` of each content frame under one ``StylizeConfig``, built on demand:
  the style target once (frame 0's problem), then per frame only its content target, its
  initial image (``cfg.init``: the frame itself for "content") and original colours.

  ``init_frames``: per-frame initial images, RGB [0, 1] (T, H, W, 3) (e.g. a feed-forward
  network's output, ``fast_frames``), instead of ``cfg.init``. ``content_mask`` /
  ``style_masks``: guided style transfer (``jnst.masks``) with one content mask for the
  whole clip (the frames' (H, W)), applied to every frame: the masked style target is
  built once and shared, as the style target is."""

  def __init__(self, cfg: experiments.StylizeConfig, params, frames: Sequence[np.ndarray],
               styles: Sequence[np.ndarray], init_image: np.ndarray | None = None,
               init_frames: Sequence[np.ndarray] | None = None,
               content_mask: np.ndarray | None = None, style_masks: Sequence[np.ndarray] = ()):
    if not len(frames):
      raise JnstError("the clip has no frames: check --start and --max_frames")
    if init_frames is not None and len(init_frames) != len(frames):
      raise JnstError(f"{len(init_frames)} initial frames for {len(frames)} frames: give one "
                      f"per frame")
    self.cfg, self.params, self.frames, self.init_frames = cfg, params, frames, init_frames
    self.base = cfg.build(params, experiments.Inputs(frames[0], tuple(styles), init_image,
                                                     content_mask, tuple(style_masks)))
    self._layers = next(t.layers for t in self.base.objective.terms if t.name == "content")
    if init_frames is not None:
      self.base = dataclasses.replace(self.base, init_x=self._init(0))

  def _init(self, t: int):
    rgb = objective.check_image(self.init_frames[t], f"initial frame {t}")
    if tuple(rgb.shape) != self.base.shape:
      raise JnstError(f"initial frame {t} is {rgb.shape[1]}x{rgb.shape[0]}, the frames "
                      f"{self.base.shape[1]}x{self.base.shape[0]}: give frames of the clip's size")
    return self.base.backbone.preprocess(self.params, jnp.clip(rgb, 0, 1))

  def __len__(self) -> int:
    return len(self.frames)

  def __getitem__(self, t: int) -> objective.Problem:
    if t == 0:
      return self.base
    base, bb = self.base, self.base.backbone
    content = objective.check_image(self.frames[t], f"frame {t}")
    if tuple(content.shape) != base.shape:
      raise JnstError(f"frame {t} is {content.shape[1]}x{content.shape[0]}, frame 0 "
                      f"{base.shape[1]}x{base.shape[0]}: every frame must have the same size")
    targets = {**base.data["targets"],
               "content": objective.content_target(bb, self.params, content, self._layers)}
    if self.init_frames is not None:
      init_x = self._init(t)
    else:
      init_x = bb.preprocess(self.params, content) if self.cfg.init == "content" else base.init_x
    return dataclasses.replace(
        base, data={**base.data, "targets": targets}, init_x=init_x,
        colors_from=None if base.colors_from is None else np.asarray(content))


def fast_frames(net_params, net: dict, frames: Sequence[np.ndarray], batch: int = 4
                ) -> tuple[np.ndarray, float]:
  """(the clip's frames through one feed-forward network (``jnst.feedforward``; unstacked
  ``net_params``, ``net`` its width and blocks), RGB (T, H, W, 3) in (0, 1); seconds taken,
  the first call's compilation included), ``batch`` frames a call."""
  import jnst.feedforward as feedforward  # Flax and optax only when a network is used.
  t0 = time.perf_counter()
  batch = min(batch, len(frames))
  out = []
  for i in range(0, len(frames), batch):
    chunk = np.stack(frames[i:i + batch])
    pad = batch - len(chunk)  # The last call padded to the same shape: one compilation.
    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk
    out.append(feedforward.stylize(net_params, chunk, net)[:batch - pad])
  return np.concatenate(out).astype(np.float32), time.perf_counter() - t0


def with_temporal(problem: objective.Problem, weight: float, k: int) -> objective.Problem:
  """``problem`` plus the temporal term (loss weight ``weight``) with K = ``k`` empty targets
  (masks 0: the term is 0 until ``set_temporal`` fills them)."""
  h, w, _ = problem.shape
  obj = problem.objective
  if not any(t.name == "temporal" for t in obj.terms):
    obj = dataclasses.replace(obj, terms=obj.terms + (objective.Term("temporal"),))
  data = problem.data
  target = {"warped": jnp.zeros((k, h, w, 3), jnp.float32),
            "mask": jnp.zeros((k, h, w, 1), jnp.float32)}
  data = {**data, "targets": {**data["targets"], "temporal": target},
          "loss_weights": {**data["loss_weights"], "temporal": jnp.float32(weight)}}
  return dataclasses.replace(problem, objective=obj, data=data)


def temporal_target(problem: objective.Problem, warped_x, masks) -> dict:
  """The temporal target from warped earlier frames in input space (K, H, W, 3) and their
  masks (K, H, W): both in the units the term reads (RGB 0-255 steps)."""
  scale = problem.data["pixel_scale"]
  return {"warped": jnp.asarray(warped_x, jnp.float32) * scale,
          "mask": jnp.asarray(masks, jnp.float32)[..., None]}


def set_temporal(problem: objective.Problem, target: dict) -> objective.Problem:
  data = problem.data
  return dataclasses.replace(problem, data={**data, "targets": {**data["targets"],
                                                                 "temporal": target}})


def long_term_masks(masks: Sequence[np.ndarray]) -> list[np.ndarray]:
  """Ruder's eq. 5 for masks ordered nearest first: c_k ← max(c_k − Σ_{j<k} c_j, 0), so
  each pixel is compared with the nearest earlier frame where it is reliable."""
  out, seen = [], np.zeros_like(np.asarray(masks[0]))
  for c in masks:
    out.append(np.maximum(np.asarray(c) - seen, 0.0))
    seen = seen + np.asarray(c)
  return out


# ---------------------------------------------------------------- flows


class ContentFlows:
  """``flows(t, s) -> (flow(t, s), reliability mask)`` from DIS flow on the content frames,
  computed once per pair. ``seconds`` counts the time spent."""

  def __init__(self, frames: Sequence[np.ndarray]):
    flow.require_opencv()
    self.frames, self._memo, self.seconds = frames, {}, 0.0

  def __call__(self, t: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    if (t, s) not in self._memo:
      t0 = time.perf_counter()
      self._memo[(t, s)] = flow.pair(self.frames, t, s)
      self.seconds += time.perf_counter() - t0
    return self._memo[(t, s)]


# ---------------------------------------------------------------- results and progress


@dataclasses.dataclass
class FrameReport:
  """Progress: ``frame`` (0-based) of ``num_frames`` finished (or, with ``pass_`` set, a
  batch-mode pass of the window starting at ``frame``, or with ``unit`` "step" the steps
  done so far of a joint window), its loss and evaluations, seconds it took, whether it
  came from the store, elapsed seconds and the ETA over the clip."""
  frame: int
  num_frames: int
  loss: float
  evaluations: int
  seconds: float
  cached: bool
  elapsed: float
  eta: float
  pass_: int | None = None
  num_passes: int | None = None
  window: int = 1
  unit: str = "pass"

  def line(self) -> str:
    if self.pass_ is not None:
      where = (f"frames {self.frame + 1}-{self.frame + self.window}/{self.num_frames} "
               f"{self.unit} {self.pass_ + 1}/{self.num_passes}")
    else:
      where = f"frame {self.frame + 1}/{self.num_frames}"
    what = "cached" if self.cached else f"loss {self.loss:.5g} evals {self.evaluations}"
    return (f"{where} {what} {self.seconds:.1f}s elapsed {self.elapsed:.1f}s "
            f"eta {self.eta:.0f}s")


@dataclasses.dataclass
class VideoResult:
  """x: (T, H, W, 3) input-space results; rgb: (T, H, W, 3) RGB in [0, 1]. frames: per frame
  {"loss", "terms" (weighted, final), "evaluations", "seconds", "cached"}. warping_error:
  ``flow.warping_error`` of ``rgb`` under the run's flows. seconds: {"flow", "optimise",
  "total"}."""
  x: np.ndarray
  rgb: np.ndarray
  frames: list[dict]
  warping_error: float
  seconds: dict

  @property
  def frames_per_second(self) -> float:
    return len(self.frames) / self.seconds["total"]

  def summary(self) -> dict:
    """The clip's part of a JSON record: per-frame losses, terms, evaluations and seconds,
    their means, the warping error, timings and frames per second."""
    terms = self.frames[0]["terms"].keys()
    return {"warping_error": self.warping_error, "seconds": dict(self.seconds),
            "frames_per_second": self.frames_per_second, "num_frames": len(self.frames),
            "mean_terms": {k: float(np.mean([f["terms"][k] for f in self.frames])) for k in terms},
            "mean_loss": float(np.mean([f["loss"] for f in self.frames])),
            "evaluations": int(sum(f["evaluations"] for f in self.frames)),
            "per_frame": [{"frame": t, **f} for t, f in enumerate(self.frames)]}


class _Clock:
  """ETA over the clip from the frames computed so far (cached ones cost nothing); a batch
  pass counts as its share of its window's frames."""

  def __init__(self, n, progress):
    self.n, self.progress, self.t0 = n, progress, time.perf_counter()
    self.done = self.computed = 0

  def frame(self, t, info, cached, partial: float = 0.0, **kw):
    if kw.get("pass_") is None:
      self.done += 1
      self.computed += 0 if cached else 1
    elapsed = time.perf_counter() - self.t0
    work = self.computed + partial
    eta = elapsed / work * (self.n - self.done - partial) if work else float("nan")
    if self.progress is not None:
      self.progress(FrameReport(t, self.n, float(info["loss"]), int(info["evaluations"]),
                                float(info["seconds"]), cached, elapsed, eta, **kw))


# ---------------------------------------------------------------- the runner


def _solve(problem: objective.Problem, x0, opt, step_progress):
  res = optimize.run(problem.objective, x0, problem.data, opt, progress=step_progress,
                     render=problem.rgb)
  info = {"loss": res.loss_history[-1], "terms": res.terms, "evaluations": res.evaluations,
          "seconds": res.seconds["total"], "status": res.status}
  return np.asarray(res.x), info


def run(problems: Sequence[objective.Problem], cfg: VideoConfig, opt: optimize.OptConfig, *,
        seed: int = 0, flows: Callable | None = None, store=None,
        progress: Callable[[FrameReport], None] | None = None,
        step_progress: optimize.Progress | None = None) -> VideoResult:
  """Stylises the clip whose frame t is ``problems[t]`` (module docstring).

  ``flows``: provider of (flow(t, s), mask) (default: DIS on the problems' content frames,
  which needs ``problems.frames``); ``store``: finished frames (resume); ``progress``: a
  ``FrameReport`` per finished frame (and per batch pass); ``step_progress``: the per-step
  ``optimize.Report`` of each frame (none / sequential).
  """
  cfg, opt = cfg.validate(opt), opt.validate()
  n = len(problems)
  if n == 0:
    raise JnstError("the clip has no frames: check --start and --max_frames")
  if flows is None:
    if not hasattr(problems, "frames"):
      raise JnstError("give the flows (flow(t, s), mask) for problems without content frames")
    flows = ContentFlows(problems.frames)
  t0 = time.perf_counter()
  clock = _Clock(n, progress)
  xs: list[np.ndarray | None] = [None] * n
  infos: list[dict | None] = [None] * n
  key = jax.random.key(seed)
  temporal = cfg.mode != "none"

  def problem(t):
    p = problems[t]
    return with_temporal(p, cfg.temporal_weight, cfg.num_targets) if temporal else p

  def cached(t):
    got = None if store is None else store.load(t)
    if got is not None:
      xs[t], infos[t] = np.asarray(got[0], np.float32), {**got[1], "cached": True}
    return got is not None

  if cfg.mode in ("none", "sequential"):
    for t in range(n):
      if cached(t):
        clock.frame(t, infos[t], True)
        continue
      p = problem(t)
      x0 = p.x0(key)
      if cfg.mode == "sequential" and t > 0:
        warped, masks = [], []
        for k in cfg.offsets:
          if t - k >= 0:
            f, c = flows(t, t - k)
            warped.append(np.asarray(flow.warp(jnp.asarray(xs[t - k]), jnp.asarray(f))))
            masks.append(c)
          else:
            warped.append(np.zeros(p.shape, np.float32))
            masks.append(np.zeros(p.shape[:2], np.float32))
        p = set_temporal(p, temporal_target(p, np.stack(warped), np.stack(long_term_masks(masks))))
        x0 = jnp.asarray(warped[0])  # Ruder's init: the previous result, warped.
        if cfg.fill_from_init:  # Unreliable pixels from the frame's own initial image.
          c3 = jnp.asarray(masks[0], jnp.float32)[..., None]
          x0 = c3 * x0 + (1 - c3) * p.x0(key)
      xs[t], info = _solve(p, x0, opt, step_progress)
      infos[t] = {**info, "cached": False}
      if store is not None:
        store.save(t, xs[t], info)
      clock.frame(t, infos[t], False)
  else:
    size = cfg.window or n
    for lo in range(0, n, size):
      hi = min(lo + size, n)
      if all(cached(t) for t in range(lo, hi)):
        for t in range(lo, hi):
          clock.frame(t, infos[t], True)
        continue
      solve = run_joint if cfg.joint else run_window
      out, window_infos = solve([problem(t) for t in range(lo, hi)], lo, n, cfg, opt, key,
                                flows, xs[lo - 1] if lo else None, clock)
      for i, t in enumerate(range(lo, hi)):
        xs[t], infos[t] = out[i], {**window_infos[i], "cached": False}
        if store is not None:
          store.save(t, xs[t], window_infos[i])
        clock.frame(t, infos[t], False)
  return _result(problems, np.stack(xs), infos, flows, t0)


def _result(problems, x, infos, flows, t0) -> VideoResult:
  optimise_s = time.perf_counter() - t0
  n = len(problems)
  if problems[0].colors_from is None:
    rgb = problems[0].rgb(x)
  else:  # Original colours: each frame keeps its own content frame's.
    rgb = np.stack([problems[t].rgb(x[t]) for t in range(n)])
  err = flow.warping_error(rgb, [None] + [flows(t, t - 1)[0] for t in range(1, n)],
                           [None] + [flows(t, t - 1)[1] for t in range(1, n)])
  total = time.perf_counter() - t0
  return VideoResult(x, rgb, infos, err, {"flow": float(getattr(flows, "seconds", 0.0)),
                                          "optimise": optimise_s, "total": total})


def score(problems: Sequence[objective.Problem], rgb_frames, *, flows: Callable | None = None,
          seconds: float = 0.0) -> VideoResult:
  """A clip stylised elsewhere, with no optimisation (e.g. ``fast_frames``: RGB (T, H, W, 3)
  in [0, 1]), as a ``VideoResult``: each frame's loss and weighted terms under its problem
  (0 evaluations), the warping error. ``seconds``: time already spent making the frames
  (counted in the total)."""
  n = len(problems)
  if len(rgb_frames) != n:
    raise JnstError(f"{len(rgb_frames)} stylised frames for {n} frames")
  if flows is None:
    flows = ContentFlows(problems.frames)
  t0 = time.perf_counter() - seconds
  xs, infos = [], []
  for t in range(n):
    p = problems[t]
    x = p.backbone.preprocess(p.params, jnp.clip(jnp.asarray(rgb_frames[t], jnp.float32), 0, 1))
    t1 = time.perf_counter()
    fn, _ = optimize.CACHE.get("loss", p.objective, None, 0, None, x, p.data)
    loss, terms = jax.device_get(fn(x, p.data))
    xs.append(np.asarray(x))
    infos.append({"loss": float(loss), "terms": {k: float(v) for k, v in terms.items()},
                  "evaluations": 0, "seconds": time.perf_counter() - t1 + seconds / n,
                  "status": "feed-forward", "cached": False})
  return _result(problems, np.stack(xs), infos, flows, t0)


PER_FRAME = ("content", "temporal")  # The targets that differ between frames.


@dataclasses.dataclass(frozen=True)
class FrameLoss:
  """``loss(x, (shared, per_frame))``: the wrapped objective with the targets in
  ``per_frame`` ({"content", "temporal"}) put into ``shared``'s. Hashable (it keys the
  compile cache); vmapped with ``data_axes=(None, 0)`` a window's frames share the network
  params and style target and each reads its own content and temporal targets."""
  loss: Callable

  def __call__(self, x, data):
    shared, frame = data
    return self.loss(x, {**shared, "targets": {**shared["targets"], **frame}})


def pass_targets(problems, x_prev: np.ndarray, lo: int, n: int, p: int, flows,
                 before: np.ndarray | None, blend: float):
  """Pass ``p`` ≥ 1 of the schedule for the window of frames lo … lo+N−1: (initial images
  (N, H, W, 3), temporal targets [per frame]) from the previous pass ``x_prev`` (N, H, W, 3);
  ``before``: the final result of frame lo−1 (an earlier window) or None."""
  step = -1 if p % 2 else 1
  x0, targets = [], []
  for i, prob in enumerate(problems):
    t, s = lo + i, lo + i + step
    if lo <= s < lo + len(problems):
      neighbour = x_prev[s - lo]
    elif s == lo - 1 and before is not None:
      neighbour = before
    else:
      neighbour = None
    if neighbour is None:
      w, c = np.zeros(prob.shape, np.float32), np.zeros(prob.shape[:2], np.float32)
    else:
      f, c = flows(t, s)
      w = np.asarray(flow.warp(jnp.asarray(neighbour), jnp.asarray(f)))
    c3 = np.asarray(c, np.float32)[..., None]
    x0.append(blend * x_prev[i] + (1 - blend) * (c3 * w + (1 - c3) * x_prev[i]))
    targets.append(temporal_target(prob, w[None], np.asarray(c)[None]))
  return np.stack(x0).astype(np.float32), targets


@functools.lru_cache(maxsize=8)
def _value_and_grad(loss_fn, data_axes):
  return jax.jit(jax.vmap(jax.value_and_grad(lambda x, d: loss_fn(x, d)[0]),
                          in_axes=(0, data_axes)))


def carry_state(fresh: optimize.State, prev: optimize.State, value=None,
                grad=None) -> optimize.State:
  """The batched optimiser state ``fresh`` (a new pass's, at x0) with ``prev``'s (the last
  pass's) optimiser carried over; ``value``, ``grad``: the loss and gradient at x0 under the
  new pass's targets (one evaluation, counted in ``evals``), needed by L-BFGS only (Adam:
  None, nothing evaluated).

  L-BFGS (``jnst.lbfgs``, torch's rules): the accepted pairs are kept and the remembered
  step and gradient are set to s_last and grad − y_last, so that the pass's first update
  adds the last accepted pair again (not a pair across the jump to x0 and the change of
  target); a member with no accepted pair yet starts afresh. L-BFGS (optax): the history
  of curvature pairs (s, y) is kept, and the remembered iterate and gradient are set to
  x0 − s_last and grad − y_last, so that the first step of the pass adds the last pair
  again (a BFGS update with a pair already satisfied changes nothing) rather than a pair
  across the jump to x0 and the change of target, and the initial scaling ⟨s, y⟩/⟨y, y⟩
  stays the last pair's; the line search starts from ``value``/``grad`` at x0. A member
  with fewer than 2 steps so far starts afresh. Adam: the moments and count are kept."""
  def parts(opt):  # jnst.lbfgs's state is one NamedTuple; optax's chains are tuples.
    return (opt,) if isinstance(opt, lbfgs.LBFGSState) else tuple(opt)

  def one(new_opt, old_opt, v, g, x0):
    out = []
    for new, old in zip(parts(new_opt), parts(old_opt)):
      if isinstance(new, lbfgs.LBFGSState):
        i = (old.stored - 1) % old.rho.shape[0]
        carried = old._replace(update=old.s[i], grad=g - old.y[i])
        new = jax.tree.map(lambda a, b: jnp.where(old.stored >= 1, a, b), carried, new)
      elif isinstance(new, optax.ScaleByLBFGSState):
        m = old.weights_memory.shape[0]
        i = (old.count - 2) % m
        s, y = old.diff_params_memory[i], old.diff_updates_memory[i]
        carried = old._replace(params=x0 - s, updates=g - y)
        new = jax.tree.map(lambda a, b: jnp.where(old.count >= 2, a, b), carried, new)
      elif isinstance(new, optax.ScaleByZoomLinesearchState):
        new = new._replace(value=jnp.asarray(v, new.value.dtype), grad=g)
      elif isinstance(new, optax.ScaleByAdamState):
        new = old
      out.append(new)
    return out[0] if isinstance(new_opt, lbfgs.LBFGSState) else tuple(out)

  if grad is None:
    if any(isinstance(o, (optax.ScaleByLBFGSState, lbfgs.LBFGSState)) for o in parts(fresh.opt)):
      raise ValueError("carrying L-BFGS needs the loss and gradient at x0")
    value = grad = jnp.zeros(fresh.x.shape[:1], jnp.float32)
    counted = 0
  else:
    counted = 1
  opt = jax.vmap(one)(fresh.opt, prev.opt, value, grad, fresh.x)
  return fresh._replace(opt=opt, evals=fresh.evals + counted)


class _Layout(NamedTuple):
  """A window's frames on the devices: ``size`` (padded to a multiple of the device
  count), ``member`` / ``shared`` (the frame axis sharded / replicated), ``shared_data``
  (the data every frame shares, placed), ``stack`` (per-frame host trees -> one tree
  padded to ``size`` with copies of the last frame) and ``x0`` (the initial images,
  stacked, on the host)."""
  size: int
  member: NamedSharding
  shared: NamedSharding
  shared_data: dict
  stack: Callable
  x0: np.ndarray


def _layout(problems, key) -> _Layout:
  m = batched.mesh()
  size, _ = batched.batch_layout(len(problems), len(problems), m.size)
  member, shared = NamedSharding(m, P(batched.AXIS)), NamedSharding(m, P())
  base = problems[0]
  data = jax.device_put({**base.data, "targets": {
      k: v for k, v in base.data["targets"].items() if k not in PER_FRAME}}, shared)
  stack = lambda trees: jax.tree.map(lambda *a: batched._pad(np.stack(a), size), *trees)
  x0 = np.stack([np.asarray(p.x0(key)) for p in problems]).astype(np.float32)
  return _Layout(size, member, shared, data, stack, x0)


def _frame_infos(loss, terms, evals, seconds: float, status) -> list[dict]:
  """Per frame {"loss", "terms", "evaluations", "seconds", "status"} from a window's arrays
  (seconds: the window's, shared evenly)."""
  return [{"loss": float(loss[i]), "terms": {k: float(v[i]) for k, v in terms.items()},
           "evaluations": int(evals[i]), "seconds": seconds / len(loss),
           "status": optimize.STATUS[int(status[i])]} for i in range(len(loss))]


def run_window(problems, lo, n, cfg: VideoConfig, opt: optimize.OptConfig, key, flows, before,
               clock: _Clock | None = None):
  """Batch mode on one window (``problems`` with the temporal term): (x (N, H, W, 3), per
  frame info). One vmapped ``optimize.drive`` per pass, the frame axis sharded over every
  device (padded with copies of the last frame to a multiple of the device count)."""
  num = len(problems)
  lay = _layout(problems, key)
  member, stack, x_prev = lay.member, lay.stack, lay.x0
  pass_opts = [dataclasses.replace(opt, steps=s, chunk=min(opt.chunk, s))
               for s in cfg.pass_steps(opt.steps)]
  loss_fn, vmap = FrameLoss(problems[0].objective), optimize.Vmap((None, 0))
  content = jax.device_put(stack([p.data["targets"]["content"] for p in problems]), member)
  targets = [p.data["targets"]["temporal"] for p in problems]  # Pass 0: masks 0.
  evals, secs = np.zeros(num, np.int64), 0.0
  final_terms = final_loss = None
  for p in range(cfg.passes):
    if p:
      x_prev, targets = pass_targets(problems, x_prev, lo, n, p, flows, before, cfg.blend)
    data = (lay.shared_data, {"content": content,
                              "temporal": jax.device_put(stack(targets), member)})
    x0 = jax.device_put(batched._pad(x_prev, lay.size), member)
    adjust = None
    if cfg.carry and p:
      value = grad = None
      if opt.optimizer == "lbfgs":  # Adam needs no evaluation at x0.
        value, grad = _value_and_grad(loss_fn, vmap.data_axes)(x0, data)
      adjust = lambda s, prev=out.state, v=value, g=grad: carry_state(s, prev, v, g)
    out = optimize.drive(loss_fn, x0, data, pass_opts[p], vmap=vmap,
                         place=lambda s: jax.device_put(s, member), fetch=batched.gather,
                         adjust=adjust)
    x_prev = batched.gather(out.state.x)[:num]
    evals += batched.gather(out.state.evals)[:num] + 1
    secs += out.seconds["total"]
    final_loss = np.asarray(out.final_loss)[:num]
    final_terms = {k: np.asarray(v)[:num] for k, v in out.final_terms.items()}
    if clock is not None:
      clock.frame(lo, {"loss": float(final_loss.mean()), "evaluations": int(evals.max()),
                       "seconds": out.seconds["total"]}, False, (p + 1) / cfg.passes * num,
                  pass_=p, num_passes=cfg.passes, window=num)
  status = batched.gather(out.state.status)[:num]
  return x_prev, _frame_infos(final_loss, final_terms, evals, secs, status)


@dataclasses.dataclass(frozen=True)
class JointLoss:
  """Batch mode's joint objective over a window (module docstring), for
  ``optimize.Vmap(joint=True)``: ``loss(x, (shared, per_frame, before))`` with x (N, H, W,
  3) the window's frames in input space gives the frames' losses (N,) and weighted terms
  ({name: (N,)}). ``per_frame``: "content" (stacked targets), "flow" (N, H, W, 2): flow(t,
  t−1) of each frame, "mask" (N, H, W): its reliability (frame 0 of the window: 0, or
  towards ``before`` (H, W, 3), the earlier window's last result), "weight" (N,): 1, or 0
  for padding. Frame t's temporal target, x_{t−1} warped to t, is computed from the
  current iterate, so its gradient reaches both frames."""
  frame: FrameLoss

  def __call__(self, x, data):
    shared, per, before = data
    prev = jnp.concatenate([before[None], x[:-1]])
    warped = jax.vmap(flow.warp)(prev, per["flow"]) * shared["pixel_scale"]
    target = {"warped": warped[:, None], "mask": per["mask"][:, None, :, :, None]}
    losses, terms = jax.vmap(self.frame, in_axes=(0, (None, 0)))(
        x, (shared, {"content": per["content"], "temporal": target}))
    w = per["weight"]
    return w * losses, {k: w * v for k, v in terms.items()}


def run_joint(problems, lo, n, cfg: VideoConfig, opt: optimize.OptConfig, key, flows, before,
              clock: _Clock | None = None):
  """Batch mode's joint objective on one window (``problems`` with the temporal term): (x
  (N, H, W, 3), per frame info). One ``optimize.drive`` of ``opt.steps`` steps, the frame
  axis sharded over every device (padded to a multiple of the device count with copies of
  the last frame of weight 0)."""
  num = len(problems)
  lay = _layout(problems, key)
  base = problems[0]
  h, w, _ = base.shape
  flow_of, mask_of = [], []
  for t in range(lo, lo + num):
    if t == lo and before is None:
      f, c = np.zeros((h, w, 2), np.float32), np.zeros((h, w), np.float32)
    else:
      f, c = flows(t, t - 1)
    flow_of.append(np.asarray(f, np.float32))
    mask_of.append(np.asarray(c, np.float32))
  per = {"content": lay.stack([p.data["targets"]["content"] for p in problems]),
         "flow": lay.stack(flow_of), "mask": lay.stack(mask_of),
         "weight": (np.arange(lay.size) < num).astype(np.float32)}
  before = np.zeros(base.shape, np.float32) if before is None else np.asarray(before)
  data = (lay.shared_data, jax.device_put(per, lay.member), jax.device_put(before, lay.shared))
  loss_fn = JointLoss(FrameLoss(base.objective))
  x0 = jax.device_put(batched._pad(lay.x0, lay.size), lay.member)
  t0 = time.perf_counter()

  def on_chunk(done, state, host):
    if clock is not None:
      clock.frame(lo, {"loss": float(host["loss"][-1][:num].mean()),
                       "evaluations": int(host["evals"][-1][:num].max()),
                       "seconds": time.perf_counter() - t0}, False, done / opt.steps * num,
                  pass_=done - 1, num_passes=opt.steps, window=num, unit="step")

  out = optimize.drive(loss_fn, x0, data, opt, vmap=optimize.Vmap(joint=True),
                       place=lambda s: jax.device_put(s, lay.member), fetch=batched.gather,
                       on_chunk=on_chunk)
  x, evals, status = (v[:num] for v in batched.gather(
      (out.state.x, out.state.evals, out.state.status)))
  terms = {k: np.asarray(v)[:num] for k, v in out.final_terms.items()}
  return x, _frame_infos(np.asarray(out.final_loss)[:num], terms, evals + 1,
                         out.seconds["total"], status)
