"""The absl-flag side of the scripts in scripts/: flag groups (range-checked by absl
validators at parse time), flags -> one config per experiment, loading the inputs, progress
lines, run records, and turning bad input into a one-line error with exit status 2.

Exit statuses (README, "What happens when things go wrong"): 0 done; 2 bad input (one
``error:`` line, nothing written); 3 the run diverged (non-finite loss or gradient: no image,
a ``<output stem>.failed.json`` record); 130 interrupted (Ctrl-C: one line saying what was
written)."""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import PIL.Image
from absl import app, flags, logging

import jnst.backbones as backbones
import jnst.demo as demo
import jnst.experiments as experiments
import jnst.images as images
import jnst.losses as losses
import jnst.masks as masks
import jnst.matting as matting
import jnst.memory as memory
import jnst.optimize as optimize
import jnst.pyramid as pyramid
import jnst.records as records
import jnst.snapshots as snapshots
import jnst.study as study
import jnst.video as video
from jnst.errors import JnstError

FLAGS = flags.FLAGS
_OURS: list[str] = []  # Names of the flags jnst defined, for the run record.
EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130
F32_MAX = experiments.F32_MAX
_WRITTEN: list[Path] = []  # Intermediate files written by this run (for the Ctrl-C line).


class Diverged(JnstError):
  """A run whose loss or gradient became non-finite: exit status 3."""


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
  return math.isfinite(v) and 0 <= v <= F32_MAX  # Beyond float32's range is inf on device.


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
  _define("integer", "size", default_size, "Max side of the output in pixels (aspect kept; "
          f"{images.MIN_SIDE} to {images.MAX_SIDE}).", lower_bound=images.MIN_SIDE,
          upper_bound=images.MAX_SIDE)
  _define("integer", "steps", default_steps, "Optimiser iterations.", lower_bound=1)
  _define("enum", "optimizer", "lbfgs", ["lbfgs", "adam"], "Optimiser.")
  _define("float", "learning_rate", None, "Step size: L-BFGS default 1.0 (the plain "
          "quasi-Newton step); Adam default 10.0 (input units, 0-255 for the Caffe VGG).",
          check=lambda v: math.isfinite(v) and 0 < v <= F32_MAX,
          message="must be a finite number > 0 (float32)")
  _define("enum", "linesearch", "none", ["none", "zoom"], "L-BFGS line search: none (one "
          "evaluation per iteration, as torch/neural-style) or zoom (optax).")
  _define("integer", "lbfgs_memory", 100, "L-BFGS history size.", lower_bound=1)
  _define("enum", "lbfgs_rules", "torch", list(optimize.LBFGS_RULES), "L-BFGS without line "
          "search: torch (torch.optim.LBFGS's rules: pairs with s.y <= 1e-10 skipped, first "
          "step: --lbfgs_first_step) or optax (optax.lbfgs, every pair kept: jnst before).")
  _define("enum", "lbfgs_first_step", "linf", list(optimize.LBFGS_FIRST_STEPS), "First L-BFGS "
          "step (and after each pyramid scale's reset) with --lbfgs_rules=torch: linf "
          "(g/|g|_inf: at most one input unit per value at any size) or l1 (torch's g/|g|_1).")
  _define("float", "ema_decay", 0.0, "Exponential moving average of the iterates (0: off; "
          "e.g. 0.9): the written image is the bias-corrected average, at every scale of a "
          "pyramid.", check=lambda v: 0 <= v < 1, message="must be in [0, 1)")
  _define("enum", "schedule", "constant", ["constant", "cosine"], "Adam learning-rate schedule.")
  _define("float", "tol", 0.0, "Stop when the relative loss change is at most this (0: off).",
          check=_finite_nonneg, message="must be a finite number >= 0")
  _define("enum", "loop", "scan", list(optimize.LOOPS), "Compiled loop design (BENCHMARKS.md).")
  _define("integer", "seed", 0, "PRNG seed for noise initialisation.", lower_bound=0,
          upper_bound=2**32 - 1)
  _define("enum", "pooling", "max", ["max", "avg"], "VGG pooling: max, or avg (the paper).")
  _define("enum", "variant", losses.DEFAULT_VARIANT, list(losses.VARIANTS), "Loss "
          "normalisation (jnst.losses): invariant (content per element, the paper's style "
          "term: one α/β means the same at every size), paper (Gatys et al.'s: the content term "
          "grows with the pixel count), mean.")
  _define("enum", "compute_dtype", "float32", ["float32", "bfloat16"], "Backbone compute dtype.")
  _define("enum", "conv", "auto", ["auto", "winograd", "direct"], "Algorithm of the VGG convs "
          "with >= --winograd_channels channels: winograd (F(4x4,3x3), ~1e-5 relative "
          "difference, faster on CPU), direct, or auto (winograd on CPU, direct on GPU/TPU). "
          "Recorded in the JSON.")
  _define("integer", "winograd_channels", 0, "Fewest input and output channels of a VGG conv "
          "that runs as Winograd: 0 picks by CPU (128 on x86 with AVX2 but no AVX-512, else "
          "256); recorded in the JSON as backbone.winograd_min_channels.", lower_bound=0)
  _define("integer", "print_every", 50, "Progress line every N steps (0: only at the end).",
          lower_bound=0)
  _define("integer", "save_every", 0, "Write an intermediate image and a resumable snapshot "
          "(<output stem>.resume.npz) every N steps (0: never).", lower_bound=0)
  _define("bool", "resume", False, "Continue from the last --save_every snapshot of this "
          "--output (same flags; --steps is the total). The optimiser's state is not restored "
          "(jnst/snapshots.py).")
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
  _define("float", "style_scale", 1.0, "Style image max side relative to --size (the side "
          f"at most {images.MAX_SIDE}).",
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
  alphas = ", ".join(f"{v} {w[0]:g}" for v, w in losses.DEFAULT_WEIGHTS.items())
  for name, default, greek in (("content_weight", None, "α, the content"),
                               ("style_weight", 1e3, "β, the style"),
                               ("tv_weight", 0.0, "γ, the total-variation")):
    _define("float", name, default, f"{greek} loss weight" + (
        f" (default per --variant: {alphas})." if default is None else "."),
        check=_finite_nonneg, message="must be a finite number >= 0")
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
  define_photoreal_flags()


def define_photoreal_flags():
  """Photorealism (Luan et al. 2017; jnst/matting.py, BENCHMARKS.md "Photorealism")."""
  _define("bool", "photoreal", False, f"Photorealistic transfer: the matting Laplacian term "
          f"with λ = {matting.PHOTOREAL_WEIGHT:g} (unless --matting_weight is given).")
  _define("float", "matting_weight", 0.0, "λ, the weight of the matting Laplacian term "
          "Σ_c V_cᵀ L V_c (V the output in RGB [0, 1], L the content's; 0: off).",
          check=_finite_nonneg, message="must be a finite number >= 0")
  _define("integer", "guided_filter_radius", 0, "Guided-filter the result with the content "
          "as guide, window radius in px (0: off).", lower_bound=0)
  _define("float", "guided_filter_eps", matting.GUIDED_EPS, "The guided filter's ε (on [0, 1] "
          "images; larger smooths more).", check=lambda v: math.isfinite(v) and v > 0,
          message="must be a finite number > 0")


def matting_weight() -> float:
  """--matting_weight if given, else λ of --photoreal, else 0."""
  if FLAGS["matting_weight"].present or not FLAGS.photoreal:
    return FLAGS.matting_weight
  return matting.PHOTOREAL_WEIGHT


def define_reconstruct_flags():
  define_content_flags()
  _define("string", "layer", None, "Layer whose features are reconstructed (default: the "
          "backbone's content layer; VGG: relu4_2, ResNet-50: layer2.3).")
  _define("bool", "all_blocks", False, "Reconstruct at the first layer of every block "
          "(VGG: relu1_1 ... relu5_1, the paper's conv_1 ... conv_5) instead of --layer.")


def define_video_flags():
  """scripts/stylize_video.py's own flags (jnst.video, jnst.video_io)."""
  _define("string", "input", None, "Video file, animated GIF or directory of frames (default: "
          "the Big Buck Bunny demo clip).")
  _define("integer", "start", 0, "First frame (index after --fps resampling).", lower_bound=0)
  _define("integer", "max_frames", None, "At most this many frames (default: all).",
          lower_bound=1)
  _define("float", "fps", None, "Resample the input to this frame rate (default: its own).",
          check=lambda v: math.isfinite(v) and v > 0, message="must be a finite number > 0")
  _define("enum", "temporal", "sequential", ["none", "sequential", "batch"], "none: frame by "
          "frame (naive); sequential: Ruder et al. (warped init + temporal loss); batch: all "
          "frames of a window at once, coupled by --coupling (jnst/video.py).")
  _define("float", "temporal_weight", None, "Weight of the temporal loss (a mean squared "
          f"difference in RGB 0-255 steps; default {video.DEFAULT_TEMPORAL_WEIGHT:g}, batch "
          f"mode's joint coupling {video.JOINT_TEMPORAL_WEIGHT:g}; tuned at 256 px, smaller "
          "frames need more).", check=_finite_nonneg,
          message="must be a finite number >= 0")
  _define("enum", "coupling", "joint", list(video.COUPLINGS), "Batch mode: joint (one "
          "objective over the window, each frame's temporal term towards its previous frame's "
          "current iterate) or passes (multi-pass, towards the neighbours' previous-pass "
          "results: --passes, --blend, --first_pass, --carry_optimizer).")
  _define("list", "temporal_offsets", ["1"], "Sequential mode: earlier frames the temporal "
          "loss compares with (1 = previous; 1,2,4 adds Ruder's long-term terms).")
  _define("integer", "passes", 4, "Batch mode, --coupling=passes: passes (--steps are split "
          "over them).", lower_bound=2)
  _define("float", "blend", 0.5, "Batch mode, --coupling=passes: δ, weight of a frame's own "
          "previous pass in its next initial image.", check=lambda v: 0 <= v <= 1,
          message="must be in [0, 1]")
  _define("integer", "window", 0, "Batch mode: frames per batch (0: the whole clip).",
          lower_bound=0)
  _define("float", "first_pass", 0.0, "Batch mode, --coupling=passes: share of --steps for "
          "pass 0 (the rest split evenly over the later passes; 0: an even split).",
          check=lambda v: 0 <= v < 1, message="must be in [0, 1)")
  _define("bool", "carry_optimizer", True, "Batch mode, --coupling=passes: each pass keeps the "
          "last pass's optimiser state (L-BFGS history, Adam moments); --nocarry_optimizer "
          "restarts it.")
  _define("string", "cache_dir", None, "Finished frames are kept here per run id, to resume "
          "(default: <output>.cache).")
  _define("bool", "camera_move", False, "Instead of --input: a synthetic pan and zoom over "
          "--content (default: the demo photo) with known flow; --max_frames frames (default 8).")
  _define("string", "fast_model", None, "A feed-forward model (scripts/train_feedforward.py's "
          "--output dir or a checkpoint): its frames start the optimisation (sequential: where "
          "the warped previous frame is unreliable), or with --fast_only are the result.")
  _define("string", "fast_network", "0", "Which network of --fast_model: index or label.")
  _define("bool", "fast_only", False, "With --fast_model: the network's frames are the result "
          "(no optimisation; losses and warping error still recorded).")


def video_config():
  """The video flags -> ``video.VideoConfig`` (validated against the optimiser flags)."""
  offsets = _ints(FLAGS.temporal_offsets, "temporal_offsets")
  return video.VideoConfig(mode=FLAGS.temporal, temporal_weight=FLAGS.temporal_weight,
                           offsets=offsets, coupling=FLAGS.coupling, passes=FLAGS.passes,
                           blend=FLAGS.blend, window=FLAGS.window, first_pass=FLAGS.first_pass,
                           fill_from_init=bool(FLAGS.fast_model),
                           carry=FLAGS.carry_optimizer).validate(opt_config())


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
      tol=FLAGS.tol, chunk=chunk, loop=FLAGS.loop, lbfgs_rules=FLAGS.lbfgs_rules,
      lbfgs_first_step=FLAGS.lbfgs_first_step, ema_decay=FLAGS.ema_decay).validate()


def _common() -> dict:
  return dict(backbone=FLAGS.backbone, pooling=FLAGS.pooling, compute_dtype=FLAGS.compute_dtype,
              variant=FLAGS.variant, seed=FLAGS.seed, opt=opt_config(), remat=FLAGS.remat,
              conv=FLAGS.conv, winograd_channels=FLAGS.winograd_channels)


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
      color_transfer=FLAGS.color_transfer, matting_weight=matting_weight(),
      guided_filter_radius=FLAGS.guided_filter_radius,
      guided_filter_eps=FLAGS.guided_filter_eps).validate()


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


def _side(size: int, what: str) -> int:
  if size > images.MAX_SIDE:
    raise JnstError(f"{what} is {size} px, over the maximum {images.MAX_SIDE} px: lower it")
  if size < images.MIN_SIDE:
    raise JnstError(f"{what} must be at least {images.MIN_SIDE} px, got {size}")
  return size


def style_side(spec: InputSpec) -> int:
  side = round(spec.style_scale * spec.size)
  if side > images.MAX_SIDE:
    raise JnstError(f"the style images' side --style_scale x --size = {side} px is over the "
                    f"maximum {images.MAX_SIDE} px: lower --style_scale")
  return max(images.MIN_SIDE, side)


def _planned(path: str, side: int, warn: bool = True) -> tuple[int, int, int]:
  """The (H, W, 3) ``path`` will have at longer side ``side`` (from its header); warns
  when that enlarges it more than ``images.UPSCALE_WARN`` times."""
  w, h = images.header_size(path)
  if warn and side > images.UPSCALE_WARN * max(w, h):
    print(f"warning: {path} is {w}x{h} px, enlarged {side / max(w, h):.0f}x to {side} px: the "
          f"result will look blurry (lower --size)", file=sys.stderr, flush=True)
  s = side / max(w, h)
  return max(1, round(h * s)), max(1, round(w * s)), 3


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


def _check_init(spec: InputSpec) -> None:
  if spec.init is not None and not Path(spec.init).is_file():
    raise JnstError(f"--init={spec.init!r} is neither content, noise, style nor an "
                    f"existing image file ({records.describe(spec.init)})")


def load_inputs(spec: InputSpec, experiment: str) -> tuple[experiments.Inputs, dict]:
  """(the images ``experiment`` reads, {"content": path, "style": [paths]}); the demo pair
  by default. Each file is read once per size."""
  _side(spec.size, "--size")
  paths, content, styles, init = {}, None, (), None
  if experiment != "synthesize":
    paths["content"] = str(spec.content or demo.content_path())
    content = _load(paths["content"], spec.size)
  if experiment != "reconstruct":
    paths["style"] = [str(p) for p in (spec.styles or [demo.style_path()])]
    if experiment == "synthesize" and len(paths["style"]) > 1:
      raise JnstError(f"synthesize takes one --style image, got {len(paths['style'])}")
    styles = tuple(_load(p, style_side(spec)) for p in paths["style"])
  if spec.content_mask or spec.style_masks:
    if experiment != "stylize":
      raise JnstError(f"--content_mask/--style_mask apply to stylize, not {experiment}")
    paths["content_mask"], paths["style_mask"] = spec.content_mask, list(spec.style_masks or ())
    mask_c, mask_s = _load_masks(spec, paths, content, styles)
  else:
    mask_c, mask_s = None, ()
  if spec.init is not None:
    _check_init(spec)
    init = _load(spec.init, spec.size)
  return experiments.Inputs(content, styles, init, mask_c, mask_s), paths


def estimate(spec: InputSpec, cfg: experiments.Config, experiment: str, *, batch: int = 1,
             members: int = 1, warn: bool = True) -> memory.Estimate:
  """What one run of ``experiment`` on ``spec``'s files needs (``jnst.memory``), from the
  files' headers (nothing decoded), at the output size (a pyramid's last scale, with that
  scale's L-BFGS history); ``members``: images a study keeps on the host; ``warn``
  about inputs enlarged a lot. Checks the user's files before fetching the demo pair."""
  _side(spec.size, "--size")
  _check_init(spec)
  shapes = []
  if experiment != "synthesize":
    shapes.append(_planned(str(spec.content or demo.content_path()), spec.size, warn))
  if experiment != "reconstruct":
    shapes += [_planned(str(p), style_side(spec), warn)
               for p in (spec.styles or [demo.style_path()])]
  if spec.init is not None and Path(spec.init).is_file():
    shapes.append(_planned(spec.init, spec.size, warn))
  out = shapes[0]
  sched = schedule(spec.size)  # The output scale decides (a pyramid's largest); checks flags.
  lbfgs = sched.lbfgs_memory[-1] if sched.lbfgs_memory else cfg.opt.lbfgs_memory
  return memory.estimate(cfg.get_backbone(), out, inputs=shapes, batch=batch,
                         optimizer=cfg.opt.optimizer, lbfgs_memory=lbfgs,
                         extra={"results": 3 * members * 4 * math.prod(out)} if members > 1
                         else None)


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


def job(experiment: str, default_output: str,
        targets: Callable[[Path], list[Path]] | None = None) -> Job:
  """Checks the output path, builds ``experiment``'s config from the flags, checks a given
  --weights file's arch (its header), checks the run fits in memory (``jnst.memory``, from
  the inputs' headers), loads its inputs and the backbone's weights — in that order, so bad
  input fails before anything heavy.
  ``targets(out)``: the images the script writes, if not just ``out``."""
  out = output_path(default_output, targets)
  cfg = CONFIGS[experiment]()
  cfg.get_backbone().check_file(FLAGS.weights)  # Before the estimate (may fetch the demo pair).
  spec = input_spec()
  memory.check_fits(estimate(spec, cfg, experiment))
  inputs, paths = load_inputs(spec, experiment)
  return Job(out, cfg, inputs, paths, load_params(cfg))


# ------------------------------------------------------------------ studies


def study_plan(variants, sweep, experiment: str, first_seed: int, num_seeds: int, per_batch,
               out_dir: Path, member_name: Callable) -> list[int]:
  """Checks a seed study before any compute — the seed range, --weights (its header), the
  output directory, memory (``jnst.memory``: batch members and the images kept on the host),
  every member file — and returns the seeds. ``member_name(value, seed)``: a member's file
  name without ``.png``."""
  from jnst.batched import CPU_BATCH_MAX_PIXELS, MAX_SEED
  last = first_seed + num_seeds - 1
  if last > MAX_SEED:
    raise JnstError(f"seeds run to --first_seed + --num_seeds - 1 = {last}, over {MAX_SEED}: "
                    f"lower --num_seeds or --first_seed")
  values = list(sweep.values) if sweep else [None]
  names = list(dict.fromkeys(v.cfg.backbone for v in variants))
  if len(names) == 1:  # A sweep over backbones uses their default files (variant_params).
    variants[0].cfg.get_backbone().check_file(FLAGS.weights)
  for name in ("grid.png", "losses.png", "summary.json"):  # The directory, before the
    records.ensure_writable(out_dir / name)  # estimate (which may fetch the demo pair).
  total = num_seeds * len(values)
  one_run = num_seeds * (len(values) if sweep and sweep.batched else 1)
  for v in variants:
    est = estimate(v.inputs, v.cfg, experiment, members=total)
    batch = min(one_run, per_batch) if isinstance(per_batch, int) and per_batch > 0 else one_run
    if per_batch == "auto" and not (jax.default_backend() == "cpu"
                                    and est.shape[0] * est.shape[1] <= CPU_BATCH_MAX_PIXELS):
      batch = 1  # auto_batch_size: one at a time on CPU, memory-bounded on accelerators.
    if batch > 1:
      est = estimate(v.inputs, v.cfg, experiment, batch=batch, members=total, warn=False)
    memory.check_fits(est,
                      flags={"batch": "--seeds_per_batch", "results": "--num_seeds"},
                      what="this study")
  for name in (f"{member_name(v, s)}.png" for v in values for s in range(first_seed, last + 1)):
    records.ensure_writable(out_dir / name)
  return list(range(first_seed, last + 1))


def write_study(out_dir: Path, res, files: dict) -> None:
  """A study's member images and ``files`` ({name: RGB array or a dict for JSON}), all
  together or none; members whose run diverged get no image, and then ``Diverged``."""
  bad = [m for m in res.members if m["status"] == "nonfinite"]
  named = {m["file"]: im for m, im in zip(res.members, res.images) if m["status"] != "nonfinite"}
  named.update(files)
  with records.atomic_paths(*(out_dir / n for n in named)) as tmps:
    for tmp, value in zip(tmps, named.values()):
      if isinstance(value, dict):
        tmp.write_text(records.dumps(value))
      else:
        PIL.Image.fromarray(images.to_uint8(value)).save(tmp, format="PNG")
  snapshots.clear_study(snapshots.study_dir(out_dir))  # Done: nothing left to resume.
  print(f"wrote {len(named) - len(files)} images, {', '.join(files)} to {out_dir}", flush=True)
  if bad:
    raise Diverged(f"{len(bad)} of {len(res.members)} runs diverged (non-finite loss or "
                   f"gradient: {', '.join(m['label'] for m in bad[:5])}): no images for them, "
                   f"statuses in {out_dir / 'summary.json'}; lower --learning_rate or the loss "
                   f"weights")


# ------------------------------------------------------------------ resuming


def _settings(defaults: bool = False) -> dict:
  """The flags a snapshot must agree with on --resume (snapshots.py); ``defaults``: their
  default values instead."""
  skip = {"steps", "print_every", "save_every", "resume", "verbosity"}
  values = {n: FLAGS[n].default for n in _OURS if n in FLAGS} if defaults else flag_values()
  return {k: v for k, v in values.items() if k not in skip}


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


def solve(cfg: experiments.Config, params, inputs: experiments.Inputs, out: Path,
          label: str = "", experiment: str = "stylize") -> tuple:
  """Runs ``cfg`` once over the flags' pyramid schedule, with progress lines, --save_every
  images (and, single-scale, resumable snapshots) and --resume: (RGB image, the output
  scale's ``optimize.RunResult``, extra record entries {"schedule", "pyramid"?,
  "resumed_from"?}). One scale is exactly ``experiments.run``; a pyramid reloads the input
  files at every scale's size."""
  sched = schedule()
  extra = {"schedule": sched.describe()}
  if cfg.opt.ema_decay:
    extra["ema"] = {"decay": cfg.opt.ema_decay, "image": "the bias-corrected moving average "
                    "of the iterates (final_loss is its loss; loss_history before it: the "
                    "iterates')"}
  if len(sched.sides) > 1:
    if FLAGS.resume:
      raise JnstError("--resume continues single-scale runs only: drop --resume (and run the "
                      "pyramid again) or drop --scales/--min_size")
    spec = input_spec()
    at = lambda side: inputs if side == spec.size else load_inputs(
        dataclasses.replace(spec, size=side), experiment)[0]
    print(f"coarse-to-fine: {len(sched.sides)} scales {', '.join(map(str, sched.sides))} px, "
          f"steps {', '.join(map(str, sched.steps))}", flush=True)
    res = pyramid.run(cfg, params, at, sched, progress=Printer(out, label))
    return res.problem.rgb(res.x), res.result, {**extra, "pyramid": res.describe()}
  cfg = line_chunks(cfg, inputs)
  if not FLAGS.resume:
    return (*experiments.run(cfg, params, inputs, Printer(out, label)), extra)
  snap = snapshots.load(snapshots.path_for(out), _settings(), _settings(defaults=True))
  if snap.step >= cfg.opt.steps:
    raise JnstError(f"the snapshot is at step {snap.step}, --steps={cfg.opt.steps}: raise "
                    f"--steps to continue")
  opt = dataclasses.replace(cfg.opt, steps=cfg.opt.steps - snap.step,
                            chunk=min(cfg.opt.chunk, cfg.opt.steps - snap.step))
  print(f"resuming from step {snap.step} ({snapshots.path_for(out)})", flush=True)
  rgb, res = experiments.solve(cfg.build(params, inputs), opt, cfg.seed,
                               Printer(out, label, offset=snap.step), x0=snap.x)
  return rgb, res, {**extra, "resumed_from": {"step": snap.step,
                                              "evaluations": snap.evaluations,
                                              "snapshot": str(snapshots.path_for(out))}}


def line_chunks(cfg: experiments.Config, inputs: experiments.Inputs) -> experiments.Config:
  """``cfg`` with its chunk cut so that a single-scale run reports (``Printer``) at least
  every ~``pyramid.LINE_SECONDS`` (the pyramid's cost model, ``pyramid.chunk_for``): a
  divisor of the chunk, so --print_every and --save_every still land. Only when and how
  often the host looks changes, not the result."""
  h, w = pyramid.output_hw(cfg, inputs)
  return dataclasses.replace(cfg, opt=dataclasses.replace(
      cfg.opt, chunk=pyramid.chunk_for(cfg.opt, h * w)))


STUDY_FLAGS = ("experiment", "num_seeds", "first_seed", "seeds_per_batch", "sweep")


def study_settings() -> dict:
  """The flags a resumed seed study must agree with: ``_settings()``, --steps and the
  study's own flags (``STUDY_FLAGS``)."""
  return {**_settings(), "steps": FLAGS.steps,
          **{k: FLAGS[k].value for k in STUDY_FLAGS if k in FLAGS}}


def run_study(variants, inputs, params, sweep, seeds, per_batch, experiment: str,
              out_dir: Path | None = None):
  """``study.run`` with a ``Printer`` and the flags' pyramid (``study_pyramids``). With
  ``out_dir``, every finished member batch and variant is checkpointed to
  ``<out_dir>/.resume/`` (process 0; ``snapshots.save_batch``/``save_variant``) and --resume
  reuses what an interrupted run with the same flags (``study_settings``) finished;
  ``write_study`` removes the state."""
  if out_dir is None:
    return study.run(variants, inputs, params, sweep, seeds, per_batch, Printer(),
                     study_pyramids(variants, experiment))
  settings, state = study_settings(), snapshots.study_dir(out_dir)
  done, batches = {}, {}
  if FLAGS.resume:
    done, batches = snapshots.load_study(state, settings)
    parts = sum(len(b) for b in batches.values())
    print(f"resuming: {len(done)} of {len(variants)} variant(s) done"
          + (f", {parts} batch(es) of the next" if parts else "") + f" ({state})", flush=True)
  elif jax.process_index() == 0:
    snapshots.start_study(state, settings)

  def saved(save, *args):
    if jax.process_index() == 0:
      save(state, settings, *args)
      if state / "state.json" not in _WRITTEN:
        _WRITTEN.append(state / "state.json")

  return study.run(variants, inputs, params, sweep, seeds, per_batch, Printer(),
                   study_pyramids(variants, experiment), done=done, batches=batches,
                   on_variant=lambda *a: saved(snapshots.save_variant, *a),
                   on_batch=lambda *a: saved(snapshots.save_batch, *a))


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

  def __init__(self, output: Path | None = None, label: str = "", offset: int = 0):
    self.print_every, self.save_every = FLAGS.print_every, FLAGS.save_every
    self.output, self.label, self.offset = output, label, offset
    self._last_line = time.monotonic()
    self._last_saved = offset // self.save_every if self.save_every else 0

  def __call__(self, r: optimize.Report) -> None:
    total = r.num_runs * r.num_batches * r.total_steps
    done = (r.run * r.num_batches + r.batch) * r.total_steps + r.step
    if self.offset:  # A resumed run: steps count from the start of the first segment.
      r = dataclasses.replace(r, step=r.step + self.offset,
                              total_steps=r.total_steps + self.offset)
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
      path = intermediate_path(self.output, step)
      images.save_image(path, r.image())
      _WRITTEN.append(path)
      if (r.iterate is not None and r.loss.ndim == 0 and r.num_scales == 1
          and np.isfinite(r.loss)):
        snap = snapshots.path_for(self.output)
        snapshots.save(snap, r.iterate(), r.step, int(r.evals), _settings())
        _WRITTEN.append(snap)


def intermediate_path(output: Path, step: int) -> Path:
  return output.with_name(f"{output.stem}_{step:05d}.png")


def flag_values() -> dict:
  return {n: FLAGS[n].value for n in _OURS if n in FLAGS}


def record(res: optimize.RunResult, cfg: experiments.Config, **extra) -> dict:
  """``records.run_record`` with the flags, the resolved backbone and the loss in effect
  (``loss_settings``)."""
  extra.setdefault("loss", loss_settings(cfg))
  return records.run_record(res, flags=flag_values(), backbone=cfg.get_backbone().describe(),
                            **extra)


def loss_settings(cfg: experiments.Config) -> dict:
  """The loss normalisation that ran and, for style transfer, the loss weights in effect
  (α resolved from the variant's default when not given)."""
  out = {"variant": cfg.variant}
  if isinstance(cfg, experiments.StylizeConfig):
    out.update(content_weight=cfg.alpha, style_weight=cfg.style_weight,
               tv_weight=cfg.tv_weight)
  return out


def output_files(out: Path) -> list[Path]:
  """Every file a run writing ``out`` may create: the image, its record, a failed run's
  record, and with --save_every the snapshot and intermediate images."""
  files = [out, out.with_suffix(".json"), failed_path(out)]
  if FLAGS.save_every:
    files.append(snapshots.path_for(out))
    steps = range(FLAGS.save_every, FLAGS.steps, FLAGS.save_every)[:1000]  # Enough to check.
    files += [intermediate_path(out, s) for s in steps]
  return files


def failed_path(out: Path) -> Path:
  return out.with_name(out.stem + ".failed.json")


def output_path(default_name: str, names: Callable[[Path], list[Path]] | None = None) -> Path:
  """--output (default out/``default_name``), checked with every file the run will write
  (``output_files``; ``names(out)``: the outputs, if not just ``out``) before any compute.
  Creates nothing: directories are made when the first file is written."""
  out = Path(FLAGS.output or Path("out") / default_name)
  if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
    raise JnstError(f"--output={out} must end in .png or .jpg")
  for target in (names(out) if names else [out]):
    for f in output_files(target):
      records.ensure_writable(f)
  return out


def write_outputs(out: Path, rgb, rec: dict, res: optimize.RunResult | None = None) -> None:
  """The image and its record, together or not at all. A diverged run (``res.status`` is
  "nonfinite") writes no image, only its record as ``<stem>.failed.json``, and raises
  ``Diverged`` (exit status 3)."""
  if res is not None and res.status == "nonfinite":
    rec = {**rec, "diverged": divergence(res)}
    records.save_json(failed_path(out), rec)
    d = rec["diverged"]
    raise Diverged(f"the run diverged: {d['what']} became non-finite at step {d['step']} "
                   f"(last finite step {d['last_finite_step']}); no image written, the record "
                   f"is {failed_path(out)}: lower --learning_rate or the loss weights")
  json_path = out.with_suffix(".json")
  text = records.dumps(rec)
  fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(out.suffix.lower(), "PNG")
  with records.atomic_paths(out, json_path) as (tmp_image, tmp_json):
    PIL.Image.fromarray(images.to_uint8(rgb)).save(tmp_image, format=fmt)
    tmp_json.write_text(text)
  snap = snapshots.path_for(out)
  if snap in _WRITTEN or FLAGS.resume:
    snap.unlink(missing_ok=True)  # Done: a later --resume must not restart an old run.
  print(f"wrote {out} and {json_path}")


def divergence(res: optimize.RunResult) -> dict:
  """What became non-finite in a run whose status is "nonfinite", and when (steps from 1)."""
  loss = np.asarray(res.metrics["loss"], np.float64)
  bad = np.flatnonzero(~np.isfinite(loss))
  step = int(bad[0]) + 1 if bad.size else int(res.steps)
  what = "the gradient"
  if bad.size:
    terms = [k for k, v in res.metrics["terms"].items() if not np.isfinite(v[step - 1])]
    what = "the loss" + (f" ({', '.join(terms)} term)" if terms else "")
  return {"what": what, "step": step, "last_finite_step": step - 1,
          "last_finite_loss": float(loss[step - 2]) if step >= 2 else None,
          "note": "the optimiser stopped at the last finite iterate; no image was written"}


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
  for side in sizes + seed_sizes:
    _side(side, "--sizes/--seed_sizes")
  seed_counts = (_ints(FLAGS.seed_counts, "seed_counts") if FLAGS.seed_counts
                 else ((1, 2) if q else (1, 2, 4, 8, 16)))
  return suite.BenchConfig(
      sizes=sizes, frameworks=frameworks, steps=pick(FLAGS.steps, 50, 4),
      repeats=pick(FLAGS.repeats, 3, 1), e2e_repeats=FLAGS.e2e_repeats,
      warmup=1 if q else 3, num_seeds=pick(FLAGS.num_seeds, 8, 2), seed_size=FLAGS.seed_size,
      loops=tuple(FLAGS.loops), torch_compile=pick(FLAGS.torch_compile, True, False),
      threads=FLAGS.threads, matmul_n=256 if q else 2048, seed_scaling=mode,
      seed_sizes=seed_sizes, seed_counts=seed_counts,
      seed_steps=pick(FLAGS.seed_steps, 10, 2), backbone=FLAGS.backbone,
      end_to_end=FLAGS.end_to_end, conv=FLAGS.conv,
      winograd_channels=FLAGS.winograd_channels).validate()


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
    _WRITTEN.clear()
    try:
      check_empty_flags()
      main(argv)
    except Diverged as e:
      _fail(str(e), EXIT_DIVERGED)
    except JnstError as e:
      _fail(str(e))
    except KeyboardInterrupt:
      where = sorted({str(p.parent) for p in _WRITTEN})
      print("interrupted; " + (f"intermediate files are in {', '.join(where)} (--resume "
                               f"continues from the last snapshot)" if where
                               else "nothing written"), file=sys.stderr, flush=True)
      sys.exit(EXIT_INTERRUPTED)

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


def check_empty_flags() -> None:
  """An explicitly empty string or list flag of ours (``--style=``, ``--output=``) is an
  error, never a silent default."""
  for module, defined in FLAGS.flags_by_module_dict().items():
    if module.startswith(("jnst", "scripts")) or module.endswith(".py"):
      for flag in defined:
        if flag.present and not flag.value and isinstance(flag.value, (str, list)):
          raise JnstError(f"--{flag.name}= is empty: give a value, or leave the flag out for "
                          f"its default")


def _fail(msg: str, status: int = EXIT_BAD_INPUT) -> None:
  print(f"error: {msg}", file=sys.stderr, flush=True)
  sys.exit(status)

