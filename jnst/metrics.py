"""Image comparisons: PSNR and the diversity of a set of results (NumPy; backbone
features for the feature-space distances). No file I/O."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import numpy as np


def psnr(a, b) -> float:
  """Peak signal-to-noise ratio in dB between RGB images in [0, 1]."""
  mse = float(np.mean(np.square(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
  return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)
def rms_distance(a, b) -> float:
  """Root-mean-square difference of two equally shaped arrays (their own units)."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  return float(np.sqrt(np.mean(np.square(d))))


def pairwise_distances(items: Sequence) -> np.ndarray:
  """(N, N) symmetric matrix of ``rms_distance`` between all pairs (zero diagonal)."""
  n = len(items)
  out = np.zeros((n, n))
  for i, j in itertools.combinations(range(n), 2):
    out[i, j] = out[j, i] = rms_distance(items[i], items[j])
  return out


def _stats(values) -> dict:
  v = np.asarray(values, np.float64)
  if v.size == 0:
    return {"mean": None, "std": None, "min": None, "max": None, "count": 0}
  return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
          "max": float(v.max()), "count": int(v.size)}


def pairwise_stats(items: Sequence) -> dict:
  """Mean/std/min/max of the RMS distance over the N(N-1)/2 pairs (None if N < 2)."""
  d = pairwise_distances(items)
  return _stats(d[np.triu_indices(len(items), 1)])


def reference_stats(items: Sequence, reference) -> dict:
  """Mean/std/min/max of each item's RMS distance to ``reference``, plus the list."""
  d = [rms_distance(x, reference) for x in items]
  return {**_stats(d), "per_image": d}


def diversity(images: Sequence, reference=None, features: dict | None = None,
              reference_features: dict | None = None) -> dict:
  """Diversity of N RGB images in [0, 1] (each (H, W, 3)).

  ``pixel``: RMS pixel distance (RGB in [0, 1]) over all pairs, and to ``reference``.
  ``features``: the same per VGG layer, on raw activations ({layer: [N arrays]}), with
  ``reference_features`` ({layer: array}) for the distances to the reference.
  References of another shape are skipped (None).
  """
  ref_ok = reference is not None and np.shape(reference) == np.shape(images[0])
  out = {"pixel": {"pairwise": pairwise_stats(images),
                   "to_reference": reference_stats(images, reference) if ref_ok else None}}
  if features is not None:
    out["features"] = {
        "layers": list(features),
        "pairwise": {l: pairwise_stats(f) for l, f in features.items()},
        "to_reference": ({l: reference_stats(f, reference_features[l])
                          for l, f in features.items()}
                         if ref_ok and reference_features is not None else None)}
  return out


def backbone_features(backbone, params, images: Sequence,
                      layers: Sequence[str]) -> dict[str, list[np.ndarray]]:
  """{layer: [(H', W', C) float32 per image]}, one image at a time (bounded memory)."""
  layers = backbone.validate_layers(layers)
  fn = jax.jit(lambda p, im: backbone.extract(p, im[None], layers))
  out: dict[str, list[np.ndarray]] = {l: [] for l in layers}
  for im in images:
    feats = jax.device_get(fn(params, np.asarray(im, np.float32)))
    for l in layers:
      out[l].append(feats[l][0])
  return out


def diversity_metrics(backbone, params, images: Sequence, reference=None,
                      layers: Sequence[str] | None = None) -> dict:
  """``diversity`` with the backbone's features of ``layers`` (default: its
  ``diversity_layers``) computed here, raw activations."""
  layers = tuple(layers or backbone.diversity_layers)
  feats = backbone_features(backbone, params, images, layers)
  ref_feats = None
  if reference is not None and np.shape(reference) == np.shape(images[0]):
    ref_feats = {l: v[0] for l, v in backbone_features(backbone, params, [reference],
                                                       layers).items()}
  out = diversity(images, reference, feats, ref_feats)
  out["features"].update(backbone=backbone.describe(),
                         units=f"RMS difference of raw {backbone.name} activations")
  return out
