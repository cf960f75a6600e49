"""Photorealism measurements (BENCHMARKS.md "Photorealism (issue 14)"): the matting energy
and the style loss of the output at several matting weights λ relative to plain Gatys (λ = 0)
at the same α, β, and the cost of the matting term per evaluation.

  python -m jnst.bench.photoreal --content=a.jpg --style=b.png --size=256 --steps=300 \\
      --matting_weights=0,1e8,1e9 --output_dir=out/photoreal
  python -m jnst.bench.photoreal --timing_only --size=512 --content=a.jpg --style=b.png

Writes photoreal.json (and one PNG per λ) to --output_dir.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

import jnst.experiments as experiments
import jnst.images as images
import jnst.matting as matting
import jnst.optimize as optimize
import jnst.plots as plots
import jnst.records as records
from jnst.bench import timing


def raw_terms(params, content, style, rgb, cfg: experiments.StylizeConfig) -> dict:
  """The unweighted content, style and matting terms of an RGB image (H, W, 3) in [0, 1] for
  the problem of ``cfg`` (content/style layers and variant as there)."""
  unit = dataclasses.replace(cfg, content_weight=1.0, style_weight=1.0, tv_weight=0.0,
                             matting_weight=1.0, guided_filter_radius=0)
  prob = unit.build(params, experiments.Inputs(content, (style,)))
  x = prob.backbone.preprocess(params, jax.numpy.asarray(rgb, jax.numpy.float32))
  _, terms = jax.jit(prob.objective)(x, prob.data)
  return {k: float(v) for k, v in terms.items()}


def quality(params, content, style, weights, cfg: experiments.StylizeConfig, out_dir=None):
  """One run per λ in ``weights`` from ``cfg``; the raw terms of each (clipped RGB) output
  and their ratios to the first λ's (give 0 first: plain Gatys)."""
  rows = []
  for lam in weights:
    c = dataclasses.replace(cfg, matting_weight=float(lam))
    t0 = time.perf_counter()
    rgb, res = experiments.run(c, params, experiments.Inputs(content, (style,)))
    row = {"matting_weight": float(lam), "seconds": time.perf_counter() - t0,
           "evaluations": int(res.evaluations), **raw_terms(params, content, style, rgb, cfg)}
    if out_dir is not None:
      images.save_image(Path(out_dir) / f"matting_weight_{lam:g}.png", rgb)
    rows.append(row)
    print({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
  for row in rows:
    for k in ("matting", "style", "content"):
      row[f"{k}_vs_first"] = row[k] / rows[0][k]
  return rows


def figure(content, style, out_dir, weights, guided_radius: int = 2) -> Path:
  """grid.jpg in ``out_dir``: content, style, the output of each λ (read back from its PNG)
  and the last one guided-filtered with the content (radius ``guided_radius``)."""
  out_dir = Path(out_dir)
  outs = [images.load_image(out_dir / f"matting_weight_{w:g}.png", max(content.shape))
          for w in weights]
  cells = [content, style, *outs,
           matting.post_filter(content, guided_radius)(outs[-1])]
  labels = ["content", "style", *[f"lambda={w:g}" if w else "plain Gatys" for w in weights],
            f"lambda={weights[-1]:g} + guided r={guided_radius}"]
  path = out_dir / "grid.jpg"
  images.save_image(path, plots.contact_sheet(cells, labels, columns=len(cells),
                                              cell=max(content.shape)))
  return path


def eval_cost(params, content, style, cfg: experiments.StylizeConfig, repeats: int = 5) -> dict:
  """Median seconds of one value-and-gradient evaluation: the whole objective with the
  matting term, and the matting term alone (both compiled)."""
  c = dataclasses.replace(cfg, matting_weight=1.0)
  prob = c.build(params, experiments.Inputs(content, (style,)))
  x = prob.init_x
  full = jax.jit(jax.value_and_grad(lambda x, d: prob.objective(x, d)[0]))
  tgt = prob.data["targets"]["matting"]
  term = jax.jit(jax.value_and_grad(lambda x, t: matting.energy(t, x / 255.0)))
  t_full, _ = timing.median_seconds(lambda: jax.block_until_ready(full(x, prob.data)), repeats)
  t_term, _ = timing.median_seconds(lambda: jax.block_until_ready(term(x, tgt)), repeats)
  return {"shape": list(x.shape), "full_eval_s": t_full, "matting_eval_s": t_term,
          "matting_fraction": t_term / t_full}


def main(argv):
  from absl import flags
  F = flags.FLAGS
  del argv
  params = experiments.StylizeConfig().get_backbone().load(F.weights)
  content = images.load_image(F.content, F.size)
  style = images.load_image(F.style, F.size)
  cfg = experiments.StylizeConfig(  # Measured with the paper's normalisation (BENCHMARKS.md).
      variant="paper", content_weight=F.content_weight, style_weight=F.style_weight,
      opt=optimize.OptConfig(steps=F.steps, chunk=F.steps)).validate()
  out = Path(F.output_dir)
  out.mkdir(parents=True, exist_ok=True)
  rec = {"content": F.content, "style": F.style, "size": list(content.shape[:2]),
         "steps": F.steps, "content_weight": F.content_weight, "style_weight": F.style_weight,
         "eps": matting.EPS, "versions": records.versions()}
  if not F.timing_only:
    weights = [float(w) for w in F.matting_weights]
    rec["quality"] = quality(params, content, style, weights, cfg, out)
    figure(content, style, out, weights)
  rec["cost"] = eval_cost(params, content, style, cfg, F.repeats)
  print(rec["cost"], flush=True)
  records.save_json(out / "photoreal.json", rec)


def _flags():
  from absl import flags
  flags.DEFINE_string("content", None, "Content photo.", required=True)
  flags.DEFINE_string("style", None, "Style photo.", required=True)
  flags.DEFINE_string("weights", None, "Network weights file (default: $JNST_WEIGHTS).")
  flags.DEFINE_integer("size", 256, "Max side in px.")
  flags.DEFINE_integer("steps", 300, "L-BFGS steps per run.")
  flags.DEFINE_float("content_weight", 1.0, "α.")
  flags.DEFINE_float("style_weight", 1e3, "β.")
  flags.DEFINE_list("matting_weights", ["0", "1e8", "1e9"], "λ values; 0 (plain) first.")
  flags.DEFINE_integer("repeats", 5, "Timed repeats per evaluation.")
  flags.DEFINE_bool("timing_only", False, "Only the per-evaluation cost.")
  flags.DEFINE_string("output_dir", "out/photoreal", "Output directory.")


if __name__ == "__main__":
  from absl import app
  _flags()
  app.run(main)
