"""Shared plumbing for the absl-flag scripts in scripts/: flags, progress, run records,
and turning bad input into a one-line error with exit status 2."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from absl import app, flags, logging

from jnst import io, optimize, transfer, vgg
from jnst.errors import JnstError

FLAGS = flags.FLAGS
_OURS: list[str] = []  # Names of the flags jnst defined, for the run record.


def _define(kind, name, default, *args, **kw):
  """Defines a flag once (groups may be combined by a script, e.g. seed_study)."""
  if name in _OURS:
    return FLAGS[name]
  _OURS.append(name)
  return getattr(flags, f"DEFINE_{kind}")(name, default, *args, **kw)


# ------------------------------------------------------------------ flag groups


def define_common_flags(default_steps: int = 500, default_size: int = 512):
  """Optimiser, model and output flags every experiment script shares."""
  _define("string", "output", None, "Output PNG path (a JSON record is written beside it).")
  _define("string", "weights", None, "Weights file (default: $JNST_WEIGHTS, else "
          "weights/vgg19.h5, fetched and converted on first use).")
  _define("integer", "size", default_size, "Max side of the output in pixels (aspect kept).")
  _define("integer", "steps", default_steps, "Optimiser iterations.")
  _define("enum", "optimizer", "lbfgs", ["lbfgs", "adam"], "Optimiser.")
  _define("float", "learning_rate", None, "Step size: L-BFGS default 1.0 (the plain "
          "quasi-Newton step); Adam default 10.0 (network input units, 0-255 scale).")
  _define("enum", "linesearch", "none", ["none", "zoom"], "L-BFGS line search: none (one "
          "evaluation per iteration, as torch/neural-style) or zoom (optax).")
  _define("integer", "lbfgs_memory", 100, "L-BFGS history size.")
  _define("enum", "schedule", "constant", ["constant", "cosine"], "Adam learning-rate schedule.")
  _define("float", "tol", 0.0, "Stop when the relative loss change is at most this (0: off).")
  _define("enum", "loop", "auto", ["auto", "step", "scan"], "Compiled loop design; auto picks "
          "per backend (see BENCHMARKS.md).")
  _define("integer", "seed", 0, "PRNG seed for noise initialisation.")
  _define("enum", "pooling", "max", list(vgg.POOLINGS), "VGG pooling: max, or avg (the paper).")
  _define("enum", "variant", "paper", ["paper", "mean"], "Loss normalisation (jnst.losses).")
  _define("enum", "dtype", "float32", ["float32", "bfloat16"], "VGG compute dtype.")
  _define("integer", "print_every", 50, "Progress line every N steps (0: only at the end).")
  _define("integer", "save_every", 0, "Write an intermediate image every N steps (0: never).")


def define_content_flags():
  _define("string", "content", None, "Content image (default: the demo photo).")


def define_style_flags():
  _define("list", "style", None, "Style image(s), comma-separated (default: the demo painting).")
  _define("list", "style_blend_weights", None, "One weight per style image (default: equal).")
  _define("list", "style_layers", list(transfer.DEFAULT_STYLE_LAYERS),
          "Style layers (conv1_1 ... relu5_4, pool1..5, or blockN = all ReLUs of block N).")
  _define("list", "style_layer_weights", None, "One weight per style layer (default 1/n).")
  _define("float", "style_scale", 1.0, "Style image max side relative to --size.")


def define_stylize_flags():
  define_content_flags()
  define_style_flags()
  _define("string", "init", "content", "Initial image: content, noise, style, or an image "
          "file path.")
  _define("list", "content_layers", list(transfer.DEFAULT_CONTENT_LAYERS),
          "Content layers (conv1_1 ... relu5_4, pool1..5, or blockN = all ReLUs of block N).")
  _define("list", "content_layer_weights", None, "One weight per content layer (default 1).")
  _define("float", "content_weight", 1.0, "α, the content loss weight.")
  _define("float", "style_weight", 1e3, "β, the style loss weight.")
  _define("float", "tv_weight", 0.0, "γ, the total-variation weight.")
  _define("bool", "original_colors", False, "Keep the content image's colours.")


def define_reconstruct_flags():
  define_content_flags()
  _define("string", "layer", "relu4_2", "Layer whose features are reconstructed.")
  _define("bool", "all_blocks", False, "Reconstruct at relu1_1 ... relu5_1 (the paper's "
          "conv_1 ... conv_5) instead of --layer; one output per layer.")


def define_synthesize_flags():
  define_style_flags()


# ------------------------------------------------------------------ flags -> configs


def _floats(values, name) -> tuple[float, ...] | None:
  if not values:
    return None
  try:
    out = tuple(float(v) for v in values)
  except ValueError:
    raise JnstError(f"--{name} must be numbers, got {','.join(values)}") from None
  if any(not math.isfinite(v) or v < 0 for v in out):
    raise JnstError(f"--{name} must be finite and >= 0, got {','.join(values)}")
  return out


def floats_flag(name: str) -> tuple[float, ...] | None:
  """A list flag of non-negative numbers, or None if unset."""
  return _floats(FLAGS[name].value, name)


def opt_config() -> optimize.OptConfig:
  lr = FLAGS.learning_rate
  if lr is None:
    lr = 1.0 if FLAGS.optimizer == "lbfgs" else 10.0
  every = [v for v in (FLAGS.print_every, FLAGS.save_every) if v > 0]
  if FLAGS.print_every < 0 or FLAGS.save_every < 0:
    raise JnstError("--print_every and --save_every must be >= 0")
  chunk = math.gcd(*every) if every else FLAGS.steps
  return optimize.OptConfig(
      optimizer=FLAGS.optimizer, steps=FLAGS.steps, learning_rate=lr,
      lbfgs_memory=FLAGS.lbfgs_memory, linesearch=FLAGS.linesearch, schedule=FLAGS.schedule,
      tol=FLAGS.tol, chunk=max(1, min(chunk, FLAGS.steps)) if FLAGS.steps > 0 else 1,
      loop=FLAGS.loop).validate()


def stylize_config(init_is_path: bool) -> transfer.StylizeConfig:
  for name in ("content_weight", "style_weight", "tv_weight", "style_scale"):
    v = FLAGS[name].value
    if not math.isfinite(v) or v < 0 or (name == "style_scale" and v == 0):
      raise JnstError(f"--{name} must be a finite number {'>' if name == 'style_scale' else '>='}"
                      f" 0, got {v}")
  return transfer.StylizeConfig(
      content_layers=vgg.expand_layers(FLAGS.content_layers),
      style_layers=vgg.expand_layers(FLAGS.style_layers),
      content_weight=FLAGS.content_weight, style_weight=FLAGS.style_weight,
      tv_weight=FLAGS.tv_weight,
      content_layer_weights=_floats(FLAGS.content_layer_weights, "content_layer_weights"),
      style_layer_weights=_floats(FLAGS.style_layer_weights, "style_layer_weights"),
      style_blend_weights=_floats(FLAGS.style_blend_weights, "style_blend_weights"),
      init="image" if init_is_path else FLAGS.init, seed=FLAGS.seed, pooling=FLAGS.pooling,
      variant=FLAGS.variant, dtype=FLAGS.dtype, original_colors=FLAGS.original_colors,
      opt=opt_config())


def check_size():
  if FLAGS.size < io.MIN_SIDE:
    raise JnstError(f"--size must be at least {io.MIN_SIDE}, got {FLAGS.size}")


def load_content():
  """(content RGB at --size, path); the demo photo by default."""
  from jnst import demo
  check_size()
  path = FLAGS.content or demo.content_path()
  return io.load_image(path, FLAGS.size), str(path)


def load_styles():
  """([style RGB at --style_scale * --size], [paths]); the demo painting by default."""
  from jnst import demo
  check_size()
  paths = FLAGS.style or [demo.style_path()]
  if FLAGS.style_blend_weights and len(FLAGS.style_blend_weights) != len(paths):
    raise JnstError(f"{len(FLAGS.style_blend_weights)} --style_blend_weights for "
                    f"{len(paths)} --style images: give one weight per style image")
  if not (math.isfinite(FLAGS.style_scale) and FLAGS.style_scale > 0):
    raise JnstError(f"--style_scale must be a finite number > 0, got {FLAGS.style_scale}")
  side = max(io.MIN_SIDE, round(FLAGS.style_scale * FLAGS.size))
  return [io.load_image(p, side) for p in paths], [str(p) for p in paths]


def load_stylize_inputs():
  """(content, [styles], init image or None, paths) per the flags; demo pair by default."""
  content, content_path = load_content()
  styles, style_paths = load_styles()
  init_image = None
  if FLAGS.init not in transfer.INITS:
    if not Path(FLAGS.init).exists():
      raise JnstError(f"--init={FLAGS.init!r} is neither content, noise, style nor an "
                      f"existing image file")
    init_image = io.load_image(FLAGS.init, FLAGS.size)
  return content, styles, init_image, {"content": content_path, "style": style_paths}


# ------------------------------------------------------------------ progress and records


class Progress:
  """``on_chunk`` callback: progress lines and intermediate images."""

  def __init__(self, total_steps: int, params, output: Path | None = None, label: str = ""):
    self.total, self.params, self.output, self.label = total_steps, params, output, label
    self.t0 = time.perf_counter()

  def __call__(self, step: int, state, host: dict) -> None:
    elapsed = time.perf_counter() - self.t0
    if FLAGS.print_every and (step % FLAGS.print_every == 0 or step == self.total):
      loss, terms = host["loss"][-1], {k: v[-1] for k, v in host["terms"].items()}
      evals = host["evals"][-1]
      eta = elapsed / step * (self.total - step)
      parts = " ".join(f"{k} {np.mean(v):.4g}" for k, v in terms.items())
      print(f"{self.label}step {step:5d}/{self.total} loss {np.mean(loss):.5g} ({parts}) "
            f"evals {int(np.max(evals))} elapsed {elapsed:.1f}s eta {eta:.0f}s", flush=True)
    if FLAGS.save_every and self.output and step % FLAGS.save_every == 0 and step < self.total:
      rgb = transfer.to_rgb(self.params, state.x)
      io.save_image(self.output.with_name(f"{self.output.stem}_{step:05d}.png"), rgb)


def versions() -> dict:
  import flax
  import optax
  return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
          "python": sys.version.split()[0], "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()]}


def flag_values() -> dict:
  return {n: FLAGS[n].value for n in _OURS if n in FLAGS}


def run_record(res: optimize.Result, **extra) -> dict:
  """The JSON record written beside every output image (keys are stable)."""
  return {"flags": flag_values(), "versions": versions(),
          "loss_history": [float(v) for v in res.loss_history],
          "evaluations": int(res.evaluations), "steps": int(res.steps),
          "status": res.status,
          "final_loss": float(res.loss_history[-1]),
          "final_terms": {k: float(v) for k, v in res.terms.items()},
          "seconds": {k: float(v) for k, v in res.seconds.items()}, **extra}


def output_path(default_name: str) -> Path:
  out = Path(FLAGS.output or Path("out") / default_name)
  if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
    raise JnstError(f"--output={out} must end in .png or .jpg")
  io.ensure_writable(out)
  io.ensure_writable(out.with_suffix(".json"))
  return out


def write_outputs(out: Path, rgb, record: dict) -> None:
  io.save_image(out, rgb)
  io.save_json(out.with_suffix(".json"), record)
  print(f"wrote {out} and {out.with_suffix('.json')}")


# ------------------------------------------------------------------ main wrapper


def run(main: Callable[[list[str]], None]) -> None:
  """``absl.app.run(main)``, turning JnstError into a one-line message and exit 2."""

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
