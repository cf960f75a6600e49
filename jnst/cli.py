"""The absl-flag side of the scripts in scripts/: flag groups (range-checked by absl
validators at parse time), flags -> one config per experiment, loading the inputs, progress
lines, run records, and turning bad input into a one-line error with exit status 2."""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable
from pathlib import Path

import jax
from absl import app, flags, logging

import jnst.backbones as backbones
import jnst.demo as demo
import jnst.experiments as experiments
import jnst.images as images
import jnst.masks as masks
import jnst.optimize as optimize
import jnst.records as records
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
  _define("string", "weights", None, "Network weights file (default: the backbone's: "
          "$JNST_WEIGHTS (VGG-19) / $JNST_WEIGHTS_VGG16, else weights/<backbone>.h5, fetched "
          "and converted on first use).")
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
  _define("enum", "style_loss", "gram", ["gram", "wasserstein", "mean_std"], "Style statistics "
          "compared: gram (Gatys), wasserstein (W2 between Gaussian fits of the features) or "
          "mean_std (per-channel mean and std); jnst/style_stats.py.")


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
  _define("bool", "original_colors", False, "Keep the content image's colours (the same as "
          "--color_transfer=original).")
  _define("enum", "color_transfer", "none", ["none", "original", "histogram"], "Colour: none; "
          "original (keep the content's colours: luminance transfer on the result); histogram "
          "(recolour the style image(s) to the content's colour distribution first: "
          "mean/covariance, then per-channel histograms).")
  _define("string", "content_mask", None, "Guided style transfer: a colour-coded mask of the "
          "content image (its size; one flat colour per region; PNG).")
  _define("list", "style_mask", None, "Guided style transfer: one colour-coded mask per --style "
          "image; each content-mask colour takes its style from the same colour here.")


def define_reconstruct_flags():
  define_content_flags()
  _define("string", "layer", None, "Layer whose features are reconstructed (default: the "
          "backbone's content layer; VGG: relu4_2, ResNet-50: layer2.3).")
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
              variant=FLAGS.variant, seed=FLAGS.seed, opt=opt_config())


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
      original_colors=FLAGS.original_colors, style_loss=FLAGS.style_loss,
      color_transfer=FLAGS.color_transfer).validate()


def reconstruct_config(layer: str | None = None) -> experiments.ReconstructConfig:
  common = _common()
  layer = layer or FLAGS.layer or backbones.get(common["backbone"]).default_content_layers[0]
  return experiments.ReconstructConfig(**common, layer=layer).validate()


def synthesize_config() -> experiments.SynthesizeConfig:
  return experiments.SynthesizeConfig(**_common(), style_layers=_layers("style_layers"),
                                      style_layer_weights=_floats("style_layer_weights"),
                                      style_loss=FLAGS.style_loss).validate()


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
  content_mask: str | None = None
  style_masks: tuple[str, ...] | None = None


def input_spec() -> InputSpec:
  init = FLAGS["init"].value if "init" in FLAGS else None
  style_masks = FLAGS["style_mask"].value if "style_mask" in FLAGS else None
  return InputSpec(FLAGS["content"].value if "content" in FLAGS else None,
                   tuple(FLAGS.style) if "style" in FLAGS and FLAGS.style else None,
                   None if init in (None, "content", "noise", "style") else init,
                   FLAGS.size, FLAGS["style_scale"].value if "style_scale" in FLAGS else 1.0,
                   FLAGS["content_mask"].value if "content_mask" in FLAGS else None,
                   tuple(style_masks) if style_masks else None)


def _load_masks(spec: InputSpec, paths: dict, content, styles) -> tuple:
  """(content mask, style masks) as uint8 RGB at their images' loaded sizes; JnstError if a
  mask's file is not its image's size or the colours do not match (``jnst.masks``)."""
  if spec.style_masks and not spec.content_mask:
    raise JnstError("--style_mask needs --content_mask too")
  if len(spec.style_masks or ()) != len(paths["style"]):
    raise JnstError(f"{len(spec.style_masks or ())} --style_mask files for "
                    f"{len(paths['style'])} --style images: give one mask per style image")
  pairs = [(spec.content_mask, paths["content"], content)] + list(
      zip(spec.style_masks, paths["style"], styles))
  out = []
  for mask, image, loaded in pairs:
    if images.image_size(mask) != images.image_size(image):
      (mw, mh), (iw, ih) = images.image_size(mask), images.image_size(image)
      raise JnstError(f"mask {mask} is {mw}x{mh} px but its image {image} is {iw}x{ih}: a mask "
                      f"must have its image's size")
    out.append(images.load_mask(mask, loaded.shape[:2]))
  masks.regions(out[0], out[1:])  # Colours on one side only fail here, before anything heavy.
  return out[0], tuple(out[1:])


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
  if spec.content_mask or spec.style_masks:
    if experiment != "stylize":
      raise JnstError(f"--content_mask/--style_mask apply to stylize, not {experiment}")
    paths["content_mask"], paths["style_mask"] = spec.content_mask, list(spec.style_masks or ())
    mask_c, mask_s = _load_masks(spec, paths, content, styles)
  else:
    mask_c, mask_s = None, ()
  if spec.init is not None:
    if not Path(spec.init).is_file():
      raise JnstError(f"--init={spec.init!r} is neither content, noise, style nor an "
                      f"existing image file")
    init = _load(spec.init, spec.size)
  return experiments.Inputs(content, styles, init, mask_c, mask_s), paths


def load_params(cfg: experiments.Config):
  """The network weights of ``cfg``'s backbone from --weights (default: fetched once)."""
  return cfg.get_backbone().load(FLAGS.weights)


def variant_params(variants) -> list:
  """The network weights of each study variant (``study.Variant``), loaded once per backbone:
  from --weights, or with a sweep over backbones each one's default file."""
  names = list(dict.fromkeys(v.cfg.backbone for v in variants))
  if len(names) > 1 and FLAGS.weights:
    raise JnstError(f"--weights names one file, but the sweep uses {', '.join(names)}: omit "
                    f"--weights (each backbone then uses its default file, e.g. $JNST_WEIGHTS, "
                    f"$JNST_WEIGHTS_VGG16)")
  loaded = {n: backbones.get(n).load(FLAGS.weights) for n in names}
  return [loaded[v.cfg.backbone] for v in variants]


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


# ------------------------------------------------------------------ progress and records


class Printer:
  """A progress callback (``optimize.Report``): a line every --print_every steps (loss,
  terms or the batch's spread, evaluations, ETA) and every --save_every steps an
  intermediate image beside ``output``."""

  def __init__(self, output: Path | None = None, label: str = ""):
    self.print_every, self.save_every = FLAGS.print_every, FLAGS.save_every
    self.output, self.label = output, label

  def __call__(self, r: optimize.Report) -> None:
    total = r.num_runs * r.num_batches * r.total_steps
    done = (r.run * r.num_batches + r.batch) * r.total_steps + r.step
    eta = r.elapsed / done * (total - done) if done else float("nan")
    if self.print_every and (r.step % self.print_every == 0 or r.step == r.total_steps):
      where, what = f"step {r.step:5d}/{r.total_steps}", f"loss {float(r.loss.mean()):.5g}"
      if r.loss.ndim == 0:
        what += " (" + " ".join(f"{k} {float(v):.4g}" for k, v in r.terms.items()) + ")"
      else:
        where = f"batch {r.batch + 1}/{r.num_batches} {where}"
        what = (f"loss mean {r.loss.mean():.5g} [min {r.loss.min():.4g} max "
                f"{r.loss.max():.4g}]")
      print(f"{self.label}{r.label}{where} {what} evals {int(r.evals.max())} elapsed "
            f"{r.elapsed:.1f}s eta {eta:.0f}s", flush=True)
    if (self.save_every and self.output and r.step % self.save_every == 0
        and r.step < r.total_steps):
      path = self.output.with_name(f"{self.output.stem}_{r.step:05d}.png")
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
      seed_steps=pick(FLAGS.seed_steps, 10, 2), backbone=FLAGS.backbone).validate()


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

