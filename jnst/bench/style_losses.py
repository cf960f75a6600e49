"""The style losses measured (BENCHMARKS.md, "Style losses"): cost per evaluation of each
``--style_loss`` (and of masked Grams) relative to the Gram loss, the scale calibration of
``style_stats.UNITS`` (each loss and its gradient at the content image vs the Gram's), and the
Newton–Schulz square root's accuracy on real covariances.

  python -m jnst.bench.style_losses --size=128 [--weights=weights/vgg19.h5] [--repeats=5]
  python -m jnst.bench.style_losses --size=128 --steps=100 --output_dir=out/style_losses

With ``--steps`` it also stylises the demo pair once per loss (default α, β) and writes the
images side by side with each result's Gram style distance.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

import jnst.demo as demo
import jnst.experiments as experiments
import jnst.images as images
import jnst.losses as losses
import jnst.optimize as optimize
import jnst.style_stats as style_stats
from jnst.backbones import vgg
from jnst.bench import timing


def _halves(h: int, w: int) -> np.ndarray:
  m = np.zeros((h, w, 3), np.uint8)
  m[:, w // 2:] = 255
  return m


def problems(params, content, style, steps: int = 1) -> dict:
  """name -> Problem: the three style losses, and the Gram loss with two mask regions."""
  opt = optimize.OptConfig(steps=steps, chunk=steps)
  out = {k: experiments.StylizeConfig(style_loss=k, opt=opt, variant="paper").build(
      params, experiments.Inputs(content, (style,))) for k in style_stats.KINDS}
  out["gram, 2 regions"] = experiments.StylizeConfig(opt=opt, variant="paper").build(
      params, experiments.Inputs(content, (style,), content_mask=_halves(*content.shape[:2]),
                                 style_masks=(_halves(*style.shape[:2]),)))
  return out


def cost(problems_: dict, repeats: int) -> dict:
  """name -> median seconds of one jitted value-and-gradient evaluation."""
  out = {}
  for name, p in problems_.items():
    f = jax.jit(jax.value_and_grad(lambda x, d, p=p: p.objective(x, d)[0]))
    x = p.init_x
    out[name] = timing.median_seconds(lambda: jax.block_until_ready(f(x, p.data)), repeats)[0]
  return out


def calibration(problems_: dict) -> dict:
  """name -> (style term, |∇ style term|) at the content image (x = the problem's init)."""
  out = {}
  for name, p in problems_.items():
    style = lambda x, p=p: p.objective(x, p.data)[1]["style"]
    v, g = jax.value_and_grad(style)(p.init_x)
    out[name] = (float(v), float(jnp.linalg.norm(g)))
  return out


def ns_accuracy(params, style, layers=("relu3_1", "relu4_1", "relu5_1")) -> dict:
  """layer -> relative Frobenius error of ``sqrtm_ns`` vs eigh on the style's covariance
  (+ ε I) and of W₂²(style, style) / (unit · tr Σ) (0 if exact)."""
  bb = vgg.VGG19
  feats = bb.extract(params, jnp.asarray(style)[None], list(layers))
  out = {}
  for l in layers:
    t = style_stats.from_features(np.asarray(feats[l]), "wasserstein")
    cov = np.asarray(t.stats["cov"][0], np.float64)
    ref = style_stats.sqrtm_eigh(cov)
    got = np.asarray(style_stats.sqrtm_ns(jnp.asarray(cov, jnp.float32)), np.float64)
    self_w2 = float(t.loss(feats[l], "paper")) / (float(t.stats["unit"][0]) * np.trace(cov))
    out[l] = {"sqrtm_rel_err": float(np.linalg.norm(got - ref) / np.linalg.norm(ref)),
              "w2_self_rel": self_w2}
  return out


def gram_distance(params, rgb, style) -> float:
  """The plain Gram style loss (default layers, paper units) of ``rgb`` against ``style``."""
  bb = vgg.VGG19
  layers = list(bb.default_style_layers)
  fx = bb.extract(params, jnp.asarray(rgb)[None], layers)
  fs = bb.extract(params, jnp.asarray(style)[None], layers)
  return float(sum(losses.style_layer_loss(fx[l], losses.gram(fs[l][0])) for l in layers) /
               len(layers))


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--size", type=int, default=128)
  ap.add_argument("--weights", default=None)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--steps", type=int, default=0)
  ap.add_argument("--output_dir", default="out/style_losses")
  args = ap.parse_args(argv)
  params = vgg.VGG19.load(args.weights)
  content = images.load_image(demo.content_path(), args.size)
  style = images.load_image(demo.style_path(), args.size)
  probs = problems(params, content, style, max(1, args.steps))
  secs = cost(probs, args.repeats)
  cal = calibration(probs)
  res = {"size": list(content.shape[:2]), "backend": jax.default_backend(),
         "seconds_per_eval": secs,
         "relative_to_gram": {k: v / secs["gram"] for k, v in secs.items()},
         "style_term_at_content": {k: v[0] for k, v in cal.items()},
         "style_grad_norm_at_content": {k: v[1] for k, v in cal.items()},
         "units": style_stats.UNITS, "ns_iters": style_stats.NS_ITERS,
         "ns_accuracy": ns_accuracy(params, style)}
  if args.steps:
    import jnst.plots as plots
    from pathlib import Path
    cells, labels, dist = [content, style], ["content", "style"], {}
    for k in style_stats.KINDS:
      rgb, _ = experiments.solve(probs[k], optimize.OptConfig(steps=args.steps, chunk=args.steps))
      dist[k] = gram_distance(params, rgb, style)
      cells.append(rgb)
      labels.append(f"{k} (Gram dist {dist[k]:.3g})")
    res["gram_style_distance_of_result"] = dist
    out = Path(args.output_dir)
    images.save_image(out / "side_by_side.png", plots.contact_sheet(
        cells, labels, columns=5, cell=max(content.shape[:2])))
  print(json.dumps(res, indent=1))
  return res


if __name__ == "__main__":
  main()
