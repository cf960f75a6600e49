"""How stylised a result looks, measured: the calibration behind the default loss weights.

Two measures of a result x against its content image c and style image s, both on VGG-19
features (``backbone``, default layers), written here with NumPy, independently of
``jnst.losses``:

* ``style_ratio`` = D(x) / D(c), D(y) = Σ_l w_l ‖G_l(y)/M_l(y) − G_l(s)/M_l(s)‖²_F with
  G_l = F_lᵀ F_l the Gram of layer l (style layers relu1_1 … relu5_1, w_l = 1/5) and M_l its
  positions: the distance of x's second moments to the painting's, relative to the photo's.
  1 = no closer to the style than the photo; 0 = the style's statistics.
* ``content_corr``: the Pearson correlation of x's and c's features at relu4_2 (all
  positions and channels); 1 = the photo's content representation.

``calibrate`` runs a grid (pairs × sizes × content weights α, β fixed) with any
``StylizeConfig`` (any backbone: the results of every backbone are measured on VGG-19, so
their looks compare) and returns one row per run. The commands and the table are in BENCHMARKS.md
("The look of the defaults"). No file I/O here; ``main`` (``python -m jnst.bench.look``)
reads the images and writes the table, the rows (JSON) and a contact sheet.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence

import numpy as np

import jnst.experiments as experiments
import jnst.optimize as optimize
from jnst.backbones import vgg


def _feats(backbone, params, rgb, layers) -> dict:
  f = backbone.extract(params, np.asarray(rgb, np.float32)[None], layers)
  return {l: np.asarray(f[l][0], np.float64) for l in layers}


def _moments(f: np.ndarray) -> np.ndarray:
  m = f.reshape(-1, f.shape[-1])
  return m.T @ m / m.shape[0]


def measures(backbone, params, result, content, style) -> dict[str, float]:
  """{"style_ratio", "content_corr"} of ``result`` (module docstring); RGB [0, 1] (H, W, 3)
  images, ``result`` the content's shape."""
  s_layers = backbone.expand_layers(backbone.default_style_layers)
  (c_layer,) = backbone.expand_layers(backbone.default_content_layers)[:1]
  target = {l: _moments(f) for l, f in _feats(backbone, params, style, s_layers).items()}
  layers = tuple(dict.fromkeys((*s_layers, c_layer)))
  fx, fc = _feats(backbone, params, result, layers), _feats(backbone, params, content, layers)
  dist = lambda f: sum(np.sum((_moments(f[l]) - target[l]) ** 2) for l in s_layers) / len(
      s_layers)
  corr = np.corrcoef(fx[c_layer].ravel(), fc[c_layer].ravel())[0, 1]
  return {"style_ratio": float(dist(fx) / dist(fc)), "content_corr": float(corr)}


@dataclasses.dataclass(frozen=True)
class Pair:
  name: str
  content: np.ndarray | None  # RGB [0, 1]; resized per size (or None with ``load``).
  style: np.ndarray | None


def calibrate(params, pairs: Sequence[Pair], sizes: Sequence[int],
              content_weights: Sequence[float], base: experiments.StylizeConfig,
              load=None, log=print, vgg19_params=None) -> tuple[list[dict], list[np.ndarray]]:
  """One run of ``base`` (its backbone with ``params``, variant, β, γ, optimiser) per pair,
  size (longer side, px) and α in ``content_weights``: (rows {pair, backbone, size, variant,
  α, β, style_ratio, content_corr, loss, seconds}, result images). The measures use VGG-19
  with ``vgg19_params`` (default: ``params``, for a VGG-19 run). ``load(pair, side)`` ->
  (content, style) at that size (default: ``jax.image`` resize of the pair's arrays, aspect
  kept)."""
  if vgg19_params is None and base.backbone != "vgg19":
    raise ValueError(f"a {base.backbone} run is measured on VGG-19: pass vgg19_params")
  measure_params = params if vgg19_params is None else vgg19_params
  rows, images = [], []
  for pair in pairs:
    for side in sizes:
      content, style = (load or _resized)(pair, side)
      for a in content_weights:
        cfg = dataclasses.replace(base, content_weight=float(a))
        t0 = time.perf_counter()
        rgb, res = experiments.stylize(params, content, [style], cfg)
        row = {"pair": pair.name, "backbone": cfg.backbone, "size": side,
               "variant": cfg.variant, "alpha": float(a), "beta": float(cfg.style_weight),
               "steps": cfg.opt.steps,
               **measures(vgg.VGG19, measure_params, rgb, content, style),
               "loss": float(res.loss_history[-1]),
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        images.append(rgb)
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in row.items()))
  return rows, images


def _resized(pair: Pair, side: int):
  import jnst.pyramid as pyramid  # Only the resizing.
  out = []
  for im in (pair.content, pair.style):
    shape = pyramid.shape_at(im.shape, side)
    out.append(np.clip(np.asarray(pyramid.resize(im, shape[:2], "lanczos3")), 0.0, 1.0))
  return tuple(out)


def measure_files(params, content_path, style_path, paths: Sequence[str]) -> list[dict]:
  """``measures`` of existing result images (e.g. a run's ``--save_every`` images) against
  one pair, each against the pair loaded at the image's own longer side (VGG-19 ``params``)."""
  import jnst.images as images
  rows = []
  for path in paths:
    x = images.load_image(path)
    side = max(x.shape[:2])
    pair = (images.load_image(content_path, side), images.load_image(style_path, side))
    rows.append({"image": str(path), **measures(vgg.VGG19, params, x, *pair)})
  return rows


def markdown(rows: Sequence[Mapping]) -> str:
  """Rows -> a table: one line per (pair, backbone, variant, α, β), style_ratio /
  content_corr per size."""
  sizes = sorted({r["size"] for r in rows})
  key_of = lambda r: (r["pair"], r.get("backbone", "vgg19"), r["variant"], r["alpha"], r["beta"])
  keys = list(dict.fromkeys(key_of(r) for r in rows))
  head = "| pair | backbone | variant | α | β | " + " | ".join(
      f"{s} px: style / corr" for s in sizes)
  lines = [head + " |", "|" + "---|" * (5 + len(sizes))]
  for key in keys:
    cells = []
    for s in sizes:
      r = [r for r in rows if key_of(r) == key and r["size"] == s]
      cells.append(f"{r[0]['style_ratio']:.3f} / {r[0]['content_corr']:.3f}" if r else "")
    lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]:g} | {key[4]:g} | "
                 + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None):
  """python -m jnst.bench.look --pairs=photo.jpg:painting.jpg,... --sizes=128,256
  --alphas=1e3,1e4 [--variant=invariant --steps=200 --backbone=vgg19 --out=out/look];
  or, with no runs, --pairs=photo.jpg:painting.jpg --measure='out/demo/out*.png' (each
  image's measures)"""
  import argparse
  import json
  from pathlib import Path

  import jnst
  import jnst.images as images
  import jnst.records as records

  ap = argparse.ArgumentParser(description=main.__doc__)
  ap.add_argument("--pairs", required=True)
  ap.add_argument("--sizes", default="128,256")
  ap.add_argument("--alphas", default=None)
  ap.add_argument("--measure", default=None, help="a glob of result images to measure")
  ap.add_argument("--beta", type=float, default=1e3)
  ap.add_argument("--variant", default="invariant")
  ap.add_argument("--steps", type=int, default=200)
  ap.add_argument("--backbone", default="vgg19", help="the network the runs use (the "
                  "measures always use VGG-19)")
  ap.add_argument("--out", default="out/look")
  args = ap.parse_args(argv)
  if args.measure:
    import glob
    c, s = args.pairs.split(":")
    for r in measure_files(jnst.load_backbone("vgg19")[1], c, s, sorted(glob.glob(args.measure))):
      print(f"{r['image']}: style {r['style_ratio']:.3f} / corr {r['content_corr']:.3f}")
    return
  if not args.alphas:
    ap.error("--alphas is required (or --measure)")
  sizes = [int(s) for s in args.sizes.split(",")]
  paths = {}
  for spec in args.pairs.split(","):
    c, s = spec.split(":")
    paths[f"{Path(c).stem}+{Path(s).stem}"] = (c, s)
  pairs = [Pair(name, None, None) for name in paths]
  load = lambda pair, side: tuple(images.load_image(f, side) for f in paths[pair.name])
  base = experiments.StylizeConfig(backbone=args.backbone, variant=args.variant,
                                   style_weight=args.beta,
                                   opt=optimize.OptConfig(steps=args.steps, chunk=args.steps))
  _, params = jnst.load_backbone(args.backbone)
  rows, ims = calibrate(params, pairs, sizes, [float(a) for a in args.alphas.split(",")], base,
                        load=load, vgg19_params=jnst.load_backbone("vgg19")[1])
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  tag = (f"{args.backbone}_{args.variant}_{args.sizes.replace(',', '-')}_{len(rows)}_"
         f"{int(time.time())}")
  records.save_json(out / f"look_{tag}.json", {"args": vars(args), "rows": rows})
  for r, im in zip(rows, ims):
    images.save_image(out / f"{r['pair']}_{args.backbone}_{r['size']}_{r['variant']}_"
                      f"a{r['alpha']:g}.png", im)
  print(markdown(rows))
  print(json.dumps({"rows": len(rows), "out": str(out)}))


if __name__ == "__main__":
  main()
