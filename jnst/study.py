"""Seed studies and sweeps: many seeds of one experiment, optionally over the values of one
option, with member names, a summary record and a contact sheet. No file I/O: the caller
loads the inputs of each variant and writes what comes back.

A sweep over a loss weight (``content_weight``, ``style_weight``, ``tv_weight``) is one
vmapped batch (``batched.run_sweep``); a sweep over anything that changes the computation
(layers, init, pooling, sizes, optimiser, the backbone, ...) runs one variant after another,
each built from the base config with ``dataclasses.replace``; a sweep over ``backbone``
gives each variant its own network params (``run``'s ``params`` is then one per variant).
Inside a value, list items are joined with '+': ``style_layers:relu1_1,relu1_1+relu2_1``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence

import jax
import numpy as np

import jnst.batched as batched
import jnst.experiments as experiments
import jnst.metrics as metrics
import jnst.optimize as optimize
import jnst.plots as plots
import jnst.pyramid as pyramid
from jnst.errors import JnstError

ALL = ("reconstruct", "synthesize", "stylize")
# Loss-weight flags -> the term whose weight they set (vmapped, stylize only).
BATCHED = {"content_weight": "content", "style_weight": "style", "tv_weight": "tv",
           "matting_weight": "matting"}


def _layers(v: str):
  return tuple(s for s in v.split("+") if s)


def _number(kind, positive: bool = False):
  def parse(v: str):
    try:
      x = kind(v)
    except ValueError:
      raise JnstError(f"{v!r} is not a number") from None
    if not math.isfinite(x) or x < 0 or (positive and x == 0):
      raise JnstError(f"{v!r} must be a finite number {'>' if positive else '>='} 0")
    return x
  return parse


@dataclasses.dataclass(frozen=True)
class Option:
  """A sequential sweep target: ``field`` of the config ("cfg"), of its ``opt``, or of the
  caller's inputs spec ("inputs"); ``parse`` turns a value string into the field's value."""
  where: str
  field: str
  experiments: tuple[str, ...]
  parse: Callable = str


SEQUENTIAL = {
    "layer": Option("cfg", "layer", ("reconstruct",)),
    "content_layers": Option("cfg", "content_layers", ("stylize",), _layers),
    "style_layers": Option("cfg", "style_layers", ("synthesize", "stylize"), _layers),
    "init": Option("cfg", "init", ("stylize",)),
    "pooling": Option("cfg", "pooling", ALL),
    "backbone": Option("cfg", "backbone", ALL),
    "variant": Option("cfg", "variant", ALL),
    "style_loss": Option("cfg", "style_loss", ("synthesize", "stylize")),
    "color_transfer": Option("cfg", "color_transfer", ("stylize",)),
    "compute_dtype": Option("cfg", "compute_dtype", ALL),
    "conv": Option("cfg", "conv", ALL),
    "winograd_channels": Option("cfg", "winograd_channels", ALL, _number(int)),
    "optimizer": Option("opt", "optimizer", ALL),
    "linesearch": Option("opt", "linesearch", ALL),
    "learning_rate": Option("opt", "learning_rate", ALL, _number(float, positive=True)),
    "size": Option("inputs", "size", ALL, _number(int, positive=True)),
    "style_scale": Option("inputs", "style_scale", ("synthesize", "stylize"),
                          _number(float, positive=True)),
    "guided_filter_radius": Option("cfg", "guided_filter_radius", ("stylize",), _number(int)),
}


@dataclasses.dataclass(frozen=True)
class Sweep:
  flag: str
  values: tuple[str, ...]  # As given: used in file names and labels.

  @property
  def batched(self) -> bool:
    return self.flag in BATCHED


def parse_sweep(spec: str | None, experiment: str) -> Sweep | None:
  """'FLAG:v1,v2' -> Sweep; raises JnstError naming what is wrong."""
  if not spec:
    return None
  flag, sep, rest = spec.partition(":")
  values = tuple(v.strip() for v in rest.split(",") if v.strip())
  if not sep or not values:
    raise JnstError(f"--sweep={spec!r} must look like FLAG:v1,v2,... (e.g. style_weight:1e2,1e3)")
  allowed = {**{f: o.experiments for f, o in SEQUENTIAL.items()},
             **{f: ("stylize",) for f in BATCHED}}
  if flag not in allowed:
    raise JnstError(f"--sweep over {flag!r} is not supported: use one of "
                    f"{', '.join(sorted(allowed))}")
  if experiment not in allowed[flag]:
    raise JnstError(f"--sweep={flag}:... does not apply to --experiment={experiment}: use it "
                    f"with {' or '.join(allowed[flag])}")
  if len(set(values)) != len(values):
    raise JnstError(f"--sweep values repeat: {','.join(values)}; give each value once")
  if flag in BATCHED:
    try:
      [_number(float)(v) for v in values]
    except JnstError:
      raise JnstError(f"--sweep={flag}:... values must be finite numbers >= 0, got "
                      f"{','.join(values)}") from None
  return Sweep(flag, values)


@dataclasses.dataclass(frozen=True)
class Variant:
  """One sequential run of a study: the swept value (None without a sequential sweep), the
  experiment config and the caller's inputs spec (a dataclass: paths, sizes, ...)."""
  value: str | None
  cfg: experiments.Config
  inputs: object


def variants(sweep: Sweep | None, cfg: experiments.Config, inputs) -> list[Variant]:
  """One Variant per sequential sweep value (else one), each config validated now."""
  if sweep is None or sweep.batched:
    return [Variant(None, cfg.validate(), inputs)]
  opt = SEQUENTIAL[sweep.flag]
  out = []
  for v in sweep.values:
    try:
      value = opt.parse(v)
    except JnstError as e:
      raise JnstError(f"--sweep value {v!r} is not a valid --{sweep.flag}: {e}") from None
    c, i = cfg, inputs
    if opt.where == "cfg" and opt.field == "init" and value not in experiments.INITS:
      c, i = dataclasses.replace(c, init="image"), dataclasses.replace(i, init=value)
    elif opt.where == "cfg":
      c = dataclasses.replace(c, **{opt.field: value})
    elif opt.where == "opt":
      c = dataclasses.replace(c, opt=dataclasses.replace(c.opt, **{opt.field: value}))
    else:
      i = dataclasses.replace(i, **{opt.field: value})
    try:
      out.append(Variant(v, c.validate(), i))
    except JnstError as e:
      raise JnstError(f"--sweep value {v!r} is not a valid --{sweep.flag}: {e}") from None
  return out


def token(value: str) -> str:
  """A sweep value as a file-name part."""
  return re.sub(r"[^A-Za-z0-9._+-]", "_", value)


def member_name(sweep: Sweep | None, value: str | None, seed: int, num_seeds: int) -> str:
  if sweep is None:
    return f"seed_{seed:04d}"
  name = f"{sweep.flag}_{token(value)}"
  return f"{name}_seed_{seed:04d}" if num_seeds > 1 else name


def member_label(sweep: Sweep | None, value: str | None, seed: int, num_seeds: int) -> str:
  if sweep is None:
    return f"seed {seed}"
  return f"{sweep.flag}={value}" + (f" seed {seed}" if num_seeds > 1 else "")


@dataclasses.dataclass
class StudyResult:
  """members: one record per member (seed, value, file, label, losses, ...); images: their
  RGB in member order; results: one ``batched.BatchResult`` per variant; problems: the
  variants' problems (their backbones and references for the summary)."""
  members: list[dict]
  images: list[np.ndarray]
  results: list[batched.BatchResult]
  problems: list
  pyramids: list = dataclasses.field(default_factory=list)  # Per variant: describe() or None.


def run(variants_: Sequence[Variant], inputs: Sequence[experiments.Inputs], params,
        sweep: Sweep | None, seeds: Sequence[int], members_per_batch="auto",
        progress: optimize.Progress | None = None, pyramids=None, done=None,
        on_variant: Callable | None = None, batches=None,
        on_batch: Callable | None = None) -> StudyResult:
  """Runs every member of every variant (``inputs[i]``: variant i's loaded images; ``params``:
  the network params, or a list of them, one per variant, e.g. for a backbone sweep).

  pyramids: per variant None (one scale) or (``pyramid.Schedule``, ``inputs_at(side)``):
  every member runs coarse-to-fine (``pyramid.run_members``); its BatchResult is the output
  scale's, with the seconds of all scales.

  Resuming (the caller keeps the files, e.g. ``jnst.snapshots``): ``done`` maps a variant's
  index to (its ``batched.BatchResult``, its pyramid description or None) from an earlier,
  interrupted run of the same study; those variants are not run again (their problems are
  rebuilt, which is cheap). ``on_variant(i, result, pyramid_description)`` is called after
  each variant this call computes, before the next one starts. Within a one-scale variant,
  finer: ``batches`` maps a variant's index to its member batches finished earlier ({batch
  index: part}, ``batched.run_seeds``' ``done_batches``), and ``on_batch(i, b, part)`` is
  called after each batch b of variant i this call computes (a coarse-to-fine variant
  resumes as a whole)."""
  seeds = batched.check_seeds(seeds)
  per_variant = params if isinstance(params, (list, tuple)) else [params] * len(variants_)
  members, images, results, problems, pyrs = [], [], [], [], []
  for i, (var, inp) in enumerate(zip(variants_, inputs)):
    label = "" if var.value is None else f"{sweep.flag}={var.value} "
    prog = None if progress is None else (lambda r, i=i, label=label: progress(
        dataclasses.replace(r, run=i, num_runs=len(variants_), label=label)))
    cfg = var.cfg
    if sweep is not None and sweep.batched:  # Build with a weight > 0 so the term exists
      top = max(float(x) for x in sweep.values) or 1.0  # (matting); the sweep sets it.
      cfg = dataclasses.replace(cfg, **{sweep.flag: top})
    pyr = pyramids[i] if pyramids else None
    hooks = dict(done_batches=(batches or {}).get(i), on_batch=None if on_batch is None else (
        lambda b, part, i=i: on_batch(i, b, part)))
    if done and i in done:
      res, desc = done[i]
      problem = cfg.build(per_variant[i], inp)
      values = ([x for x in sweep.values for _ in seeds] if sweep is not None and sweep.batched
                else [var.value] * len(seeds))
      pyrs.append(desc)
    elif pyr is not None and len(pyr[0].sides) > 1:
      kw = {}
      if sweep is not None and sweep.batched:
        kw = dict(term=BATCHED[sweep.flag], values=[float(x) for x in sweep.values])
      out = pyramid.run_members(cfg, per_variant[i], pyr[1], pyr[0], seeds,
                                members_per_batch=members_per_batch, progress=prog, **kw)
      res, problem = dataclasses.replace(out.result, seconds=out.seconds), out.problem
      values = ([x for x in sweep.values for _ in seeds] if kw else [var.value] * len(seeds))
      pyrs.append(out.describe())
    elif sweep is not None and sweep.batched:
      problem = cfg.build(per_variant[i], inp)
      res = batched.run_sweep(problem, BATCHED[sweep.flag], [float(x) for x in sweep.values],
                              var.cfg.opt, seeds, members_per_batch=members_per_batch,
                              progress=prog, **hooks)
      values = [x for x in sweep.values for _ in seeds]
    else:
      problem = var.cfg.build(per_variant[i], inp)
      res = batched.run_seeds(problem, seeds, var.cfg.opt, members_per_batch=members_per_batch,
                              progress=prog, **hooks)
      values = [var.value] * len(seeds)
    if not (done and i in done):
      if pyr is None or len(pyr[0].sides) == 1:
        pyrs.append(None)
      if on_variant is not None:
        on_variant(i, res, pyrs[-1])
    results.append(res)
    problems.append(problem)
    images += list(problem.rgb(res.x))
    for k, (seed, value) in enumerate(zip(res.seeds, values)):
      members.append({
          "seed": seed, "value": value, "variant": i,
          "file": member_name(sweep, value, seed, len(seeds)) + ".png",
          "label": member_label(sweep, value, seed, len(seeds)),
          "final_loss": float(res.loss_history[k][-1]),
          "terms": {t: float(a[k]) for t, a in res.terms.items()},
          "evaluations": int(res.evaluations[k]), "steps": int(res.steps[k]),
          "status": res.status[k], "loss_history": res.loss_history[k],
          "eval_history": res.eval_history[k]})
  return StudyResult(members, images, results, problems, pyrs)


def reference(experiment: str, inputs: experiments.Inputs) -> tuple[str, np.ndarray]:
  """The diversity reference: the content image (the style image for textures)."""
  return ("style", inputs.styles[0]) if experiment == "synthesize" else ("content", inputs.content)


def summary(experiment: str, sweep: Sweep | None, study: StudyResult,
            inputs: Sequence[experiments.Inputs], params, num_seeds: int,
            diversity_layers: Sequence[str] | None = None) -> dict:
  """The study's record: per-member results, diversity metrics, timing, batching. Diversity
  is measured with the first variant's backbone and params (with a backbone sweep, the
  per-value figures use each value's own network); ``params`` is not read (each problem
  carries its own) and is kept for callers."""
  members, images, results = study.members, study.images, study.results
  backbone, params = study.problems[0].backbone, study.problems[0].params
  seconds = {k: sum(r.seconds[k] for r in results) for k in ("compile", "run", "total")}
  ref_name, ref = reference(experiment, inputs[0])
  div = None  # Images of different sizes (a size sweep) only get per-value metrics.
  if len({im.shape for im in images}) == 1:
    div = metrics.diversity_metrics(backbone, params, images, ref, diversity_layers)
    div["reference"] = ref_name
  out = {
      "experiment": experiment,
      **{k: [m[k] for m in members] for k in ("seed", "final_loss", "evaluations", "steps",
                                              "status", "file", "label")},
      "terms": {t: [m["terms"][t] for m in members] for t in members[0]["terms"]},
      "diversity": div,
      "images_per_second": len(members) / seconds["total"],
      "seconds": seconds,
      "batches": [{"batch_size": r.batch_size, "count": r.num_batches, "choice": r.batch_choice}
                  for r in results],
      "devices": results[0].devices, "sharding": results[0].sharding,
      "process_count": jax.process_count(),
      "loss_history": [m["loss_history"] for m in members],
      "eval_history": [m["eval_history"] for m in members],
      "image_size": {"output": [list(im.shape[:2]) for im in images]},
      "pyramid": study.pyramids if any(study.pyramids) else None}
  for k in ("seed", "file", "label"):
    out[k + "s"] = out.pop(k)
  if sweep is not None:
    out["sweep"] = {"flag": sweep.flag, "values": list(sweep.values),
                    "mode": "vmapped" if sweep.batched else "sequential"}
    out["values"] = [m["value"] for m in members]
    if num_seeds > 1:
      out["diversity_per_value"] = {}
      for v in sweep.values:
        idx = [i for i, m in enumerate(members) if m["value"] == v]
        var = members[idx[0]]["variant"]
        _, r = reference(experiment, inputs[var])
        own = study.problems[var if sweep.flag == "backbone" else 0]
        layers = diversity_layers if diversity_layers and set(diversity_layers) <= set(
            own.backbone.layer_names) else None  # Else that backbone's own defaults.
        out["diversity_per_value"][v] = metrics.diversity_metrics(
            own.backbone, own.params, [images[i] for i in idx], r, layers)
  return out


def grid(inputs: dict[str, np.ndarray], study: StudyResult, sweep: Sweep | None,
         num_seeds: int) -> np.ndarray:
  """Contact sheet: the inputs first, then every member, labelled; with a sweep and several
  seeds, one row per value."""
  cells = list(inputs.values()) + list(study.images)
  labels = list(inputs) + [m["label"] for m in study.members]
  columns = None
  if sweep is not None and num_seeds > 1:
    columns = max(num_seeds, 2)
    blanks = -len(inputs) % columns
    cells = cells[:len(inputs)] + [np.ones((1, 1, 3), np.float32)] * blanks + cells[len(inputs):]
    labels = labels[:len(inputs)] + [""] * blanks + labels[len(inputs):]
  side = max(max(np.shape(c)[:2]) for c in cells)
  return plots.contact_sheet(cells, labels, columns=columns, cell=int(min(256, max(128, side))))


def loss_curves(study: StudyResult, experiment: str) -> np.ndarray:
  """Loss vs evaluation of every member (``plots.loss_plot``)."""
  return plots.loss_plot([(m["eval_history"], m["loss_history"]) for m in study.members],
                         title=f"{experiment}: loss vs evaluation, {len(study.members)} runs")
