"""The absl-flag side of the scripts in scripts/: flag groups (range-checked by absl
validators at parse time), flags -> one config per experiment, loading the inputs, progress
lines, run records, and turning bad input into a one-line error with exit status 2."""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
from absl import app, flags, logging

import jnst.backbones as backbones
import jnst.demo as demo
import jnst.experiments as experiments
import jnst.images as images
import jnst.optimize as optimize
import jnst.pyramid as pyramid
import jnst.records as records
import jnst.study as study
from jnst.errors import JnstError

FLAGS = flags.FLAGS
_OURS: list[str] = []  # Names of the flags jnst defined, for the run record.


def _define(kind, name, default, help_, *args, check=None, message="", **kw):
  """Defines a flag once (scripts combine groups), with an optional validator."""
  if name in _OURS:
    return FLAGS[name]
  _OURS.append(name)
  holder = getattr(flags, f"DEFINE_{kind}")(name, default, help_, *args, **kw)
  if check is not None:
    flags.register_validator(name, lambda v: v is None or check(v), message=f"--{name} {message}")
  return holder


def _finite_nonneg(v):
  return math.isfinite(v) and v >= 0


def _numbers(values):
  try:
    return all(_finite_nonneg(float(v)) for v in values)
  except ValueError:
    return False


# ------------------------------------------------------------------ flag groups


def define_common_flags(default_steps: int = 500, default_size: int = 512):
  """Backbone, optimiser and output flags every experiment script shares."""
  _define("string", "output", None, "Output PNG path (a JSON record is written beside it).")
  _define("string", "weights", None, "Network weights file (default: $JNST_WEIGHTS, else "
          "weights/vgg19.h5, fetched and converted on first use).")
  _define("enum", "backbone", "vgg19", list(backbones.NAMES), "Network whose features define "
          "the losses.")
  _define("integer", "size", default_size, "Max side of the output in pixels (aspect kept).",
          lower_bound=images.MIN_SIDE)
  _define("integer", "steps", default_steps, "Optimiser iterations.", lower_bound=1)
  _define("enum", "optimizer", "lbfgs", ["lbfgs", "adam"], "Optimiser.")
  _define("float", "learning_rate", None, "Step size: L-BFGS default 1.0 (the plain "
          "quasi-Newton step); Adam default 10.0 (input units, 0-255 for the Caffe VGG).",
          check=lambda v: math.isfinite(v) and v > 0, message="must be a finite number > 0")
  _define("enum", "linesearch", "none", ["none", "zoom"], "L-BFGS line search: none (one "
          "evaluation per iteration, as torch/neural-style) or zoom (optax).")
  _define("integer", "lbfgs_memory", 100, "L-BFGS history size.", lower_bound=1)
  _define("enum", "schedule", "constant", ["constant", "cosine"], "Adam learning-rate schedule.")
  _define("float", "tol", 0.0, "Stop when the relative loss change is at most this (0: off).",
          check=_finite_nonneg, message="must be a finite number >= 0")
  _define("enum", "loop", "scan", list(optimize.LOOPS), "Compiled loop design (BENCHMARKS.md).")
  _define("integer", "seed", 0, "PRNG seed for noise initialisation.", lower_bound=0,
          upper_bound=2**32 - 1)
  _define("enum", "pooling", "max", ["max", "avg"], "VGG pooling: max, or avg (the paper).")
  _define("enum", "variant", "paper", ["paper", "mean"], "Loss normalisation (jnst.losses).")
  _define("enum", "compute_dtype", "float32", ["float32", "bfloat16"], "Backbone compute dtype.")
  _define("integer", "print_every", 50, "Progress line every N steps (0: only at the end).",
          lower_bound=0)
  _define("integer", "save_every", 0, "Write an intermediate image every N steps (0: never).",
          lower_bound=0)
  _define("bool", "remat", False, "Rematerialise the backbone's blocks in the backward pass "
          "(jax.checkpoint): same loss and gradient, less activation memory where the "
          "compiler honours it (BUILD.md), more time.")
  define_pyramid_flags()


def define_pyramid_flags(default_min_size: int | None = None):
  """Coarse-to-fine (jnst/pyramid.py). Off unless --scales or --min_size is given."""
  _define("list", "scales", None, "Coarse-to-fine: the longer side of each scale in px, "
          "increasing (--size is appended if missing), e.g. 128,256,512.")
  _define("integer", "min_size", default_min_size, "Coarse-to-fine from this longer side: "
          "scales --size / factor**k rounded to whole px while >= min_size (512 -> 128,181,"
          "256,362,512; aspect kept). 0 or >= --size: a single scale.", lower_bound=0)
  _define("float", "scale_factor", pyramid.DEFAULT_FACTOR, "Ratio between neighbouring "
          "scales (with --min_size).", check=lambda v: math.isfinite(v) and v > 1,
          message="must be a finite number > 1")
  _define("list", "steps_per_scale", None, "Optimiser steps at each scale, coarsest first (one "
          "number: every scale). Default: jnst.pyramid.default_steps(--steps): 500 -> "
          "200,100,...,100,200.")
  _define("list", "lbfgs_memory_per_scale", None, "L-BFGS history per scale (one number: every "
          "scale; default --lbfgs_memory). Smaller at large sizes saves 24 bytes/px per pair.")


def define_content_flags():
  _define("string", "content", None, "Content image (default: the demo photo).")


def define_style_flags():
  _define("list", "style", None, "Style image(s), comma-separated (default: the demo painting).")
  _define("list", "style_blend_weights", None, "One weight per style image (default: equal).",
          check=_numbers, message="must be finite numbers >= 0")
  _define("list", "style_layers", None, "Style layers (default: the backbone's; VGG: "
          "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1; blockN = all ReLUs of block N).")
  _define("list", "style_layer_weights", None, "One weight per style layer (default 1/n).",
          check=_numbers, message="must be finite numbers >= 0")
  _define("float", "style_scale", 1.0, "Style image max side relative to --size.",
          check=lambda v: math.isfinite(v) and v > 0, message="must be a finite number > 0")


def define_stylize_flags():
  define_content_flags()
  define_style_flags()
  _define("string", "init", "content", "Initial image: content, noise, style, or an image "
          "file path.")
  _define("list", "content_layers", None, "Content layers (default: the backbone's; VGG: "
          "relu4_2).")
  _define("list", "content_layer_weights", None, "One weight per content layer (default 1).",
          check=_numbers, message="must be finite numbers >= 0")
  for name, default, greek in (("content_weight", 1.0, "α, the content"),
                               ("style_weight", 1e3, "β, the style"),
                               ("tv_weight", 0.0, "γ, the total-variation")):
    _define("float", name, default, f"{greek} loss weight.", check=_finite_nonneg,
            message="must be a finite number >= 0")
  _define("bool", "original_colors", False, "Keep the content image's colours.")


def define_reconstruct_flags():
  define_content_flags()
  _define("string", "layer", "relu4_2", "Layer whose features are reconstructed.")
  _define("bool", "all_blocks", False, "Reconstruct at the first layer of every block "
          "(VGG: relu1_1 ... relu5_1, the paper's conv_1 ... conv_5) instead of --layer.")


# ------------------------------------------------------------------ flags -> configs


def _floats(name: str) -> tuple[float, ...] | None:
  values = FLAGS[name].value
  return tuple(float(v) for v in values) if values else None


def opt_config() -> optimize.OptConfig:
  lr = FLAGS.learning_rate or (1.0 if FLAGS.optimizer == "lbfgs" else 10.0)
  every = [v for v in (FLAGS.print_every, FLAGS.save_every) if v > 0]
  chunk = max(1, min(math.gcd(*every) if every else FLAGS.steps, FLAGS.steps))
  return optimize.OptConfig(
      optimizer=FLAGS.optimizer, steps=FLAGS.steps, learning_rate=lr,
      lbfgs_memory=FLAGS.lbfgs_memory, linesearch=FLAGS.linesearch, schedule=FLAGS.schedule,
      tol=FLAGS.tol, chunk=chunk, loop=FLAGS.loop).validate()


def _common() -> dict:
  return dict(backbone=FLAGS.backbone, pooling=FLAGS.pooling, compute_dtype=FLAGS.compute_dtype,
              variant=FLAGS.variant, seed=FLAGS.seed, opt=opt_config(), remat=FLAGS.remat)


def _layers(name: str):
  return tuple(FLAGS[name].value) if FLAGS[name].value else None


def stylize_config() -> experiments.StylizeConfig:
  init = FLAGS.init if FLAGS.init in ("content", "noise", "style") else "image"
  return experiments.StylizeConfig(
      **_common(), content_layers=_layers("content_layers"), style_layers=_layers("style_layers"),
      content_weight=FLAGS.content_weight, style_weight=FLAGS.style_weight,
      tv_weight=FLAGS.tv_weight, content_layer_weights=_floats("content_layer_weights"),
      style_layer_weights=_floats("style_layer_weights"),
      style_blend_weights=_floats("style_blend_weights"), init=init,
      original_colors=FLAGS.original_colors).validate()


def reconstruct_config(layer: str | None = None) -> experiments.ReconstructConfig:
  return experiments.ReconstructConfig(**_common(), layer=layer or FLAGS.layer).validate()


def synthesize_config() -> experiments.SynthesizeConfig:
  return experiments.SynthesizeConfig(**_common(), style_layers=_layers("style_layers"),
                                      style_layer_weights=_floats("style_layer_weights")).validate()


CONFIGS = {"stylize": stylize_config, "reconstruct": reconstruct_config,
           "synthesize": synthesize_config}


# ------------------------------------------------------------------ inputs


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """Where an experiment's images come from (None: the demo pair) and at what size."""
  content: str | None = None
  styles: tuple[str, ...] | None = None
  init: str | None = None
  size: int = 512
  style_scale: float = 1.0


def input_spec() -> InputSpec:
  init = FLAGS["init"].value if "init" in FLAGS else None
  return InputSpec(FLAGS["content"].value if "content" in FLAGS else None,
                   tuple(FLAGS.style) if "style" in FLAGS and FLAGS.style else None,
                   None if init in (None, "content", "noise", "style") else init,
                   FLAGS.size, FLAGS["style_scale"].value if "style_scale" in FLAGS else 1.0)


@functools.lru_cache(maxsize=16)
def _load(path: str, side: int):
  return images.load_image(path, side)


def load_inputs(spec: InputSpec, experiment: str) -> tuple[experiments.Inputs, dict]:
  """(the images ``experiment`` reads, {"content": path, "style": [paths]}); the demo pair
  by default. Each file is read once per size."""
  if spec.size < images.MIN_SIDE:
    raise JnstError(f"--size must be at least {images.MIN_SIDE}, got {spec.size}")
  paths, content, styles, init = {}, None, (), None
  if experiment != "synthesize":
    paths["content"] = str(spec.content or demo.content_path())
    content = _load(paths["content"], spec.size)
  if experiment != "reconstruct":
    paths["style"] = [str(p) for p in (spec.styles or [demo.style_path()])]
    if experiment == "synthesize" and len(paths["style"]) > 1:
      raise JnstError(f"synthesize takes one --style image, got {len(paths['style'])}")
    side = max(images.MIN_SIDE, round(spec.style_scale * spec.size))
    styles = tuple(_load(p, side) for p in paths["style"])
  if spec.init is not None:
    if not Path(spec.init).is_file():
      raise JnstError(f"--init={spec.init!r} is neither content, noise, style nor an "
                      f"existing image file")
    init = _load(spec.init, spec.size)
  return experiments.Inputs(content, styles, init), paths


def load_params(cfg: experiments.Config):
  """The network weights of ``cfg``'s backbone from --weights (default: fetched once)."""
  return cfg.get_backbone().load(FLAGS.weights)


@dataclasses.dataclass
class Job:
  """What a single-run script needs: its output path, config, inputs (and their paths) and
  the network params."""
  out: Path
  cfg: experiments.Config
  inputs: experiments.Inputs
  paths: dict
  params: dict


def job(experiment: str, default_output: str) -> Job:
  """Checks the output path, builds ``experiment``'s config from the flags, loads its inputs
  and the backbone's weights — in that order, so bad input fails before anything heavy."""
  out = output_path(default_output)
  cfg = CONFIGS[experiment]()
  inputs, paths = load_inputs(input_spec(), experiment)
  return Job(out, cfg, inputs, paths, load_params(cfg))


# ------------------------------------------------------------------ coarse-to-fine


def schedule(size: int | None = None) -> pyramid.Schedule:
  """The pyramid schedule the flags ask for at output size ``size`` (default --size): a
  single scale unless --scales or --min_size (> 0, < size) is given."""
  size = size or FLAGS.size
  ints = lambda name: _ints(FLAGS[name].value, name) if FLAGS[name].value else None
  scales, min_size = ints("scales"), FLAGS.min_size
  if not scales and not (min_size and min_size < size):
    for name in ("steps_per_scale", "lbfgs_memory_per_scale"):
      if FLAGS[name].present:
        raise JnstError(f"--{name} needs a pyramid: give --scales or --min_size too")
    return pyramid.single(size, FLAGS.steps)
  return pyramid.schedule(size, FLAGS.steps, scales=scales, min_size=min_size,
                          factor=FLAGS.scale_factor, steps_per_scale=ints("steps_per_scale"),
                          lbfgs_memory=ints("lbfgs_memory_per_scale"))


def solve(cfg: experiments.Config, params, inputs: experiments.Inputs, experiment: str,
          progress: optimize.Progress | None = None):
  """Runs ``cfg`` once, over the flags' pyramid schedule: (RGB image, the output scale's
  ``optimize.RunResult``, extra record entries {"schedule": ...}). One scale is exactly
  ``experiments.run``; a pyramid reloads the input files at every scale's size."""
  sched = schedule()
  if len(sched.sides) == 1:
    rgb, res = experiments.run(cfg, params, inputs, progress)
    return rgb, res, {"schedule": sched.describe()}
  spec = input_spec()
  at = lambda side: inputs if side == spec.size else load_inputs(
      dataclasses.replace(spec, size=side), experiment)[0]
  print(f"coarse-to-fine: {len(sched.sides)} scales {', '.join(map(str, sched.sides))} px, "
        f"steps {', '.join(map(str, sched.steps))}", flush=True)
  out = pyramid.run(cfg, params, at, sched, progress=progress)
  return out.problem.rgb(out.x), out.result, {"schedule": sched.describe(),
                                              "pyramid": out.describe()}


def run_study(variants, inputs, params, sweep, seeds, per_batch, experiment: str):
  """``study.run`` with a ``Printer`` and the flags' pyramid (``study_pyramids``)."""
  return study.run(variants, inputs, params, sweep, seeds, per_batch, Printer(),
                   study_pyramids(variants, experiment))


def study_pyramids(variants, experiment: str) -> list:
  """``study.run``'s ``pyramids``: per variant (its schedule at its --size, ``inputs_at``
  reloading its files at each scale)."""
  return [(schedule(v.inputs.size), lambda side, v=v: load_inputs(
      dataclasses.replace(v.inputs, size=side), experiment)[0]) for v in variants]


# ------------------------------------------------------------------ progress and records


class Printer:
  """A progress callback (``optimize.Report``): a line every --print_every steps and at
  least every ``MIN_INTERVAL`` seconds where the run reports that often (loss, terms or the
  batch's spread, evaluations, the scale of a pyramid, ETA over everything), and every
  --save_every steps (over all scales of a pyramid) an intermediate image beside
  ``output``, at the output size."""

  MIN_INTERVAL = 15.0

  def __init__(self, output: Path | None = None, label: str = ""):
    self.print_every, self.save_every = FLAGS.print_every, FLAGS.save_every
    self.output, self.label = output, label
    self._last_line = time.monotonic()
    self._last_saved = 0

  def __call__(self, r: optimize.Report) -> None:
    total = r.num_runs * r.num_batches * r.total_steps
    done = (r.run * r.num_batches + r.batch) * r.total_steps + r.step
    frac = done / total if total else 0.0
    if r.done_fraction is not None:  # A pyramid: its share of the work, in this run.
      frac = (r.run * r.num_batches + r.batch + r.done_fraction) / (r.num_runs * r.num_batches)
    eta = r.elapsed / frac * (1 - frac) if frac > 0 else float("nan")
    now = time.monotonic()
    due = (r.step % self.print_every == 0 or r.step == r.total_steps
           or now - self._last_line >= self.MIN_INTERVAL) if self.print_every else False
    if due:
      self._last_line = now
      where, what = f"step {r.step:5d}/{r.total_steps}", f"loss {float(r.loss.mean()):.5g}"
      if r.num_scales > 1:
        where = f"scale {r.scale + 1}/{r.num_scales} ({r.side} px) {where}"
      if r.loss.ndim == 0:
        what += " (" + " ".join(f"{k} {float(v):.4g}" for k, v in r.terms.items()) + ")"
      else:
        where = f"batch {r.batch + 1}/{r.num_batches} {where}"
        what = (f"loss mean {r.loss.mean():.5g} [min {r.loss.min():.4g} max "
                f"{r.loss.max():.4g}]")
      print(f"{self.label}{r.label}{where} {what} evals {int(r.evals.max())} elapsed "
            f"{r.elapsed:.1f}s eta {eta:.0f}s", flush=True)
    step = r.step if r.global_step is None else r.global_step
    last = r.step == r.total_steps and r.scale == r.num_scales - 1
    if (self.save_every and self.output and step // self.save_every > self._last_saved
        and not last):
      self._last_saved = step // self.save_every
      path = self.output.with_name(f"{self.output.stem}_{step:05d}.png")
      images.save_image(path, r.image())


def flag_values() -> dict:
  return {n: FLAGS[n].value for n in _OURS if n in FLAGS}


def record(res: optimize.RunResult, cfg: experiments.Config, **extra) -> dict:
  """``records.run_record`` with the flags and the resolved backbone."""
  return records.run_record(res, flags=flag_values(), backbone=cfg.get_backbone().describe(),
                            **extra)


def output_path(default_name: str) -> Path:
  out = Path(FLAGS.output or Path("out") / default_name)
  if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
    raise JnstError(f"--output={out} must end in .png or .jpg")
  records.ensure_writable(out)
  records.ensure_writable(out.with_suffix(".json"))
  return out


def write_outputs(out: Path, rgb, rec: dict) -> None:
  images.save_image(out, rgb)
  records.save_json(out.with_suffix(".json"), rec)
  print(f"wrote {out} and {out.with_suffix('.json')}")


# ------------------------------------------------------------------ benchmark


def _ints(values, name):
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise JnstError(f"--{name} must be integers, got {','.join(values)}") from None


def benchmark_config():
  """scripts/benchmark.py's flags -> ``bench.suite.BenchConfig``."""
  from jnst.bench import suite
  q = FLAGS.quick
  pick = lambda value, normal, quick: value if value is not None else (quick if q else normal)
  default_sizes = (128, 256) + ((512,) if jax.default_backend() == "gpu" else ())
  sizes = _ints(FLAGS.sizes, "sizes") if FLAGS.sizes else ((32,) if q else default_sizes)
  mode = pick(FLAGS.seed_scaling, "off", "on")
  frameworks = ("jax",) if mode == "only" else tuple(FLAGS.frameworks)
  seed_sizes = (_ints(FLAGS.seed_sizes, "seed_sizes") if FLAGS.seed_sizes
                else ((32,) if q else (64, 128, 256)))
  seed_counts = (_ints(FLAGS.seed_counts, "seed_counts") if FLAGS.seed_counts
                 else ((1, 2) if q else (1, 2, 4, 8, 16)))
  return suite.BenchConfig(
      sizes=sizes, frameworks=frameworks, steps=pick(FLAGS.steps, 50, 4),
      repeats=pick(FLAGS.repeats, 3, 1), e2e_repeats=FLAGS.e2e_repeats,
      warmup=1 if q else 3, num_seeds=pick(FLAGS.num_seeds, 8, 2), seed_size=FLAGS.seed_size,
      loops=tuple(FLAGS.loops), torch_compile=pick(FLAGS.torch_compile, True, False),
      threads=FLAGS.threads, matmul_n=256 if q else 2048, seed_scaling=mode,
      seed_sizes=seed_sizes, seed_counts=seed_counts,
      seed_steps=pick(FLAGS.seed_steps, 10, 2)).validate()


def benchmark_images() -> tuple[str, str]:
  """The benchmark pair: --content/--style, else ../shared/images' Tübingen and Starry Night
  beside a checkout, else the demo pair."""
  shared = Path(__file__).resolve().parent.parent.parent / "shared" / "images"
  content = FLAGS.content or (shared / "tubingen.jpg")
  style = FLAGS.style or (shared / "starry_night.jpg")
  if not FLAGS.content and not Path(content).is_file():
    content = demo.content_path()
  if not FLAGS.style and not Path(style).is_file():
    style = demo.style_path()
  return str(content), str(style)


# ------------------------------------------------------------------ main wrapper


def run(main: Callable[[list[str]], None]) -> None:
  """``absl.app.run(main)``, turning JnstError and bad flags into one line and exit 2."""

  def wrapped(argv):
    if not FLAGS["verbosity"].present:  # Keep jax's backend-probing INFO lines out of the way.
      logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
      _fail(f"unexpected positional arguments {argv[1:]}: every option is a --flag")
    try:
      main(argv)
    except JnstError as e:
      _fail(str(e))

  # --help/--helpshort list the main module's key flags; ours are defined in jnst.cli or in
  # the script module, which is not the main module when run as a console entry point.
  for module, defined in FLAGS.flags_by_module_dict().items():
    if module.startswith(("jnst", "scripts")) or module.endswith(".py"):
      for flag in defined:
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)

  def parse(argv):
    try:
      return FLAGS(argv)
    except flags.Error as e:
      _fail(f"{e} (see --helpfull)")

  app.run(wrapped, flags_parser=parse)


def _fail(msg: str) -> None:
  print(f"error: {msg}", file=sys.stderr, flush=True)
  sys.exit(2)

