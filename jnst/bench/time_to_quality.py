"""Time to quality (issue 10): how long each way takes to reach the full-resolution loss
that single-scale PyTorch L-BFGS (``torch_ref``, history 100, no line search) reaches
within 500 evaluations — (a) jnst single scale, (b) jnst pyramids, (c) that PyTorch run.

The target is the lowest loss among PyTorch's first ``steps`` evaluations. The loss is the
same function in both frameworks (tests/test_torch_parity.py). For a pyramid only the
output scale's losses count (they are full-resolution losses); its coarse evaluations are
counted as full-size equivalents (evaluations x pixels / output pixels, the cost of an
evaluation being about proportional to its pixels). Times: the coarse scales' run seconds
plus the output scale's run seconds up to the crossing (per-evaluation cost taken as
uniform within a scale); compile seconds are reported apart. Evaluation counts do not depend
on the machine; seconds do. The loss is today's default stylize loss (``--variant``,
invariant normalisation); each jnst result also gets ``jnst.bench.look``'s measures (style
distance ratio, content correlation) and, with ``--save_dir``, is written as PNG.

  python -m jnst.bench.time_to_quality --size=512 --out=out/ttq_512.json
  python -m jnst.bench.time_to_quality --size=256 --min_sizes=128,64 --final_steps=300
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


import numpy as np

import jnst.experiments as experiments
import jnst.images as images
import jnst.optimize as optimize
import jnst.pyramid as pyramid
from jnst.records import save_json, versions
from jnst.backbones import vgg

SHARED = Path(__file__).resolve().parents[3] / "shared" / "images"


def crossing(losses, evals, target) -> int | None:
  """The evaluation count at which ``losses`` first reach ``target`` (None: never)."""
  for l, e in zip(losses, evals):
    if l <= target:
      return int(e)
  return None


def torch_reference(params, content, style, cfg, steps: int) -> dict:
  from jnst.bench import torch_ref
  loss, xc = torch_ref.stylize_problem(params, content, [style], cfg)
  res = torch_ref.run(loss, xc, optimize.OptConfig(steps=steps, lbfgs_memory=100))
  hist = res.loss_history
  return {"seconds": res.seconds, "loss_history": hist, "evaluations": res.evaluations,
          "target": float(min(hist[:steps]))}


def single(params, inputs, cfg, target) -> dict:
  rgb, res = experiments.run(cfg, params, inputs)
  hit = crossing(res.loss_history, res.eval_history, target)
  per_eval = res.seconds["run"] / res.evaluations
  return {"evaluations_to_target": hit, "full_size_evaluations_to_target": hit,
          "seconds_to_target": None if hit is None else hit * per_eval,
          "compile_seconds": res.seconds["compile"], "run_seconds": res.seconds["run"],
          "final_loss": res.loss_history[-1], "evaluations": res.evaluations,
          "loss_history": res.loss_history, "rgb": rgb}


def pyramid_run(params, content_path, style_path, size, cfg, sched, target) -> dict:
  at = lambda side: experiments.Inputs(images.load_image(content_path, side),
                                       (images.load_image(style_path, side),))
  out = pyramid.run(cfg, params, at, sched)
  px = [s["shape"][0] * s["shape"][1] for s in out.scales]
  coarse = out.scales[:-1]
  coarse_eq = sum(s["evaluations"] * p / px[-1] for s, p in zip(coarse, px))
  coarse_s = sum(s["seconds"]["run"] for s in coarse)
  last = out.scales[-1]
  evals = out.result.eval_history
  hit = crossing(last["loss_history"], evals, target)
  per_eval = last["seconds"]["run"] / last["evaluations"]
  return {"schedule": sched.describe(), "evaluations_to_target": hit,
          "full_size_evaluations_to_target": None if hit is None else hit + coarse_eq,
          "coarse_full_size_equivalent": coarse_eq,
          "seconds_to_target": None if hit is None else coarse_s + hit * per_eval,
          "compile_seconds": out.seconds["compile"], "run_seconds": out.seconds["run"],
          "final_loss": last["final_loss"],
          "scales": [{k: v for k, v in s.items() if k != "loss_history"} for s in out.scales],
          "loss_history": last["loss_history"], "rgb": out.problem.rgb(out.x)}


def look(params, r: dict, content, style, save_dir: str | None, name: str) -> None:
  """Replaces ``r["rgb"]`` by ``jnst.bench.look``'s measures of it (and saves it as PNG)."""
  from jnst.bench import look as look_lib
  rgb = np.asarray(r.pop("rgb"))
  r["look"] = look_lib.measures(vgg.VGG19, params, rgb, content, style)
  if save_dir:
    images.save_image(Path(save_dir) / f"{name}.png", rgb)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--size", type=int, default=512)
  p.add_argument("--steps", type=int, default=500, help="PyTorch / single-scale evaluations")
  p.add_argument("--min_sizes", default="128", help="pyramids to try, by --min_size (empty: none)")
  p.add_argument("--final_steps", type=int, default=500, help="pyramid output-scale cap")
  p.add_argument("--content", default=str(SHARED / "tubingen.jpg"))
  p.add_argument("--style", default=str(SHARED / "starry_night.jpg"))
  p.add_argument("--weights", default=None)
  p.add_argument("--variant", default="invariant", help="loss normalisation (today's default)")
  p.add_argument("--conv", default="auto", help="the VGG convs' algorithm (auto, winograd, direct)")
  p.add_argument("--winograd_channels", type=int, default=0, help="fewest channels of a "
                 "Winograd conv (0: by CPU)")
  p.add_argument("--save_dir", default=None, help="write each jnst result as PNG here")
  p.add_argument("--torch_json", default=None, help="reuse a PyTorch reference record")
  p.add_argument("--skip_single", action="store_true")
  p.add_argument("--torch_threads", type=int, default=0, help="0: torch's default")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  params = vgg.VGG19.load(a.weights)
  content = images.load_image(a.content, a.size)
  style = images.load_image(a.style, a.size)
  cfg = experiments.StylizeConfig(opt=optimize.OptConfig(steps=a.steps, chunk=50),
                                 variant=a.variant, conv=a.conv,
                                 winograd_channels=a.winograd_channels)
  rec = {"size": a.size, "shape": list(content.shape), "content": a.content, "style": a.style,
         "variant": a.variant, "versions": versions()}
  if a.torch_threads:
    from jnst.bench import torch_ref
    torch_ref.torch().set_num_threads(a.torch_threads)
  if a.torch_json:
    rec["torch"] = json.loads(Path(a.torch_json).read_text())["torch"]
  else:
    rec["torch"] = torch_reference(params, content, style, cfg, a.steps)
  target = rec["torch"]["target"]
  print(f"target {target:.6g} (torch, {a.steps} evaluations, {rec['torch']['seconds']:.0f} s)",
        flush=True)
  if not a.skip_single:
    rec["single"] = single(params, experiments.Inputs(content, (style,)), cfg, target)
    look(params, rec["single"], content, style, a.save_dir, "single")
    print("single", {k: v for k, v in rec["single"].items() if k != "loss_history"}, flush=True)
  rec["pyramids"] = []
  for m in (int(v) for v in a.min_sizes.split(",") if v.strip()):
    sides = pyramid.sides(a.size, min_size=m)
    steps = pyramid.default_steps(len(sides), a.steps)[:-1] + (a.final_steps,)
    sched = dataclasses.replace(pyramid.schedule(a.size, a.steps, min_size=m,
                                                 steps_per_scale=steps), rule=f"min_size {m}")
    r = pyramid_run(params, a.content, a.style, a.size, cfg, sched, target)
    look(params, r, content, style, a.save_dir, f"pyramid_{m}")
    rec["pyramids"].append(r)
    print("pyramid", {k: v for k, v in r.items() if k not in ("loss_history", "scales")},
          flush=True)
  if a.out:
    save_json(a.out, rec)
  return rec


if __name__ == "__main__":
  main(sys.argv[1:])
