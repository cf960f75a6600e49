"""Backbones: the networks whose features define the losses, found by name.

A backbone is a frozen (hashable) dataclass in a module of its family (``vgg.py``,
``resnet.py``; more come with their issues) with:

  name, describe()                      its name and options, for records
  with_options(pooling=, compute_dtype=, remat=)  a copy with other options (validated;
                                        remat: jax.checkpoint of its blocks, less memory;
                                        VGG also conv=, winograd_channels=: its convs'
                                        algorithm, and from how many channels Winograd)
  layer_names, validate_layers(layers), expand_layers(spec)   its layer naming
  default_content_layers, default_style_layers, diversity_layers, block_layers
  preprocess(params, rgb) / deprocess(params, x)   RGB [0, 1] <-> its input space
  pixel_scale(params)                   input-space steps -> RGB 0-255 steps (for TV)
  features(params, x, layers) / extract(params, rgb, layers)   {layer: (N, H', W', C)}
  prepare(params, layers=None)          params with its speed tricks applied (per problem;
                                        layers: the deepest one read bounds the work)
  term_scales                           loss-term multipliers into VGG-19 Caffe units, for
                                        every loss variant without its own entry in
  variant_term_scales                   ((variant, ((term, scale), ...)), ...); see scales_for
  init_random(key), load(path=None, dtype)   params: random, or from our weights file

``params`` is always the plain pytree of the network's weights the family documents.
"""

from __future__ import annotations

import dataclasses
import importlib

from jnst.errors import JnstError

# name -> (module, attribute); modules are imported on first use.
_REGISTRY = {"vgg19": ("jnst.backbones.vgg", "VGG19"), "vgg16": ("jnst.backbones.vgg", "VGG16")}
_REGISTRY |= {"resnet50": ("jnst.backbones.resnet", "RESNET50"),  # torchvision (v1.5)
              "resnet50_v1": ("jnst.backbones.resnet", "RESNET50_V1")}  # Caffe/Keras (v1)
NAMES = tuple(_REGISTRY)


def get(name: str, pooling: str | None = None, compute_dtype: str | None = None,
        remat: bool | None = None, conv: str | None = None, winograd_channels: int = 0):
  """The backbone called ``name`` with the given options; JnstError if unknown. ``conv``
  (the VGG convs' algorithm: auto, winograd, direct) other than auto, and
  ``winograd_channels`` (the fewest channels of a Winograd conv; 0: by CPU) other than 0,
  need a VGG."""
  if name not in _REGISTRY:
    raise JnstError(f"unknown backbone {name!r}: use one of {', '.join(NAMES)}")
  module, attr = _REGISTRY[name]
  bb = getattr(importlib.import_module(module), attr)
  extra = {"remat": remat} if remat else {}
  if conv not in (None, "auto"):
    if not hasattr(bb, "conv"):
      raise JnstError(f"--conv={conv} is for the VGG backbones; {name} has one conv "
                      "algorithm: leave --conv at auto")
    extra["conv"] = conv
  if winograd_channels:
    if not hasattr(bb, "winograd_channels"):
      raise JnstError(f"--winograd_channels is for the VGG backbones; {name} has no Winograd "
                      "convs: leave it at 0")
    extra["winograd_channels"] = winograd_channels
  return bb.with_options(pooling, compute_dtype, **extra)


def scales_for(backbone, variant: str) -> dict[str, float]:
  """{term: multiplier} that put ``backbone``'s raw terms of loss ``variant`` in VGG-19 Caffe
  units: its ``variant_term_scales`` entry for ``variant`` if it has one, else its
  ``term_scales`` (missing terms: 1). Calibrated per variant by jnst.calibrate
  (scripts/calibrate_backbone.py), since a variant's per-layer normalisation changes how a
  backbone's layers add up."""
  own = dict(getattr(backbone, "variant_term_scales", ()) or ())
  return dict(own.get(variant, getattr(backbone, "term_scales", ()) or ()))


def with_scales(backbone, variant: str, scales) -> object:
  """``backbone`` with ``scales`` ({term: s} or ((term, s), ...)) as its entry for loss
  ``variant`` (``variant_term_scales``); its other variants' scales are kept."""
  entry = tuple(sorted(dict(scales).items()))
  kept = tuple((v, s) for v, s in backbone.variant_term_scales if v != variant)
  return dataclasses.replace(backbone, variant_term_scales=kept + ((variant, entry),))
