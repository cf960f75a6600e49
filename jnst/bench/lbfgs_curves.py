"""L-BFGS per evaluation: loss against evaluations for torch.optim.LBFGS (``torch_ref``)
and jnst's fixed-step L-BFGS under each rule (``RULES``: "torch": ``jnst.lbfgs`` with torch's
first step, "linf": the same with the per-value first step, "optax": ``optax.lbfgs``), on the
same stylize problem (the loss is the same function,
tests/test_torch_parity.py), history 100, lr 1, no line search.

Single scale starts from the content image. ``--from_side=S`` measures one pyramid scale
instead: the problem at ``S`` px is solved first (jnst, ``--from_steps`` steps,
``OptConfig``'s defaults), its result upsampled bicubically to ``--size``
(``jnst.pyramid``'s init), and every optimiser starts the ``--size`` scale from that image.

Loss values do not depend on the machine (no timings here).

  python -m jnst.bench.lbfgs_curves --size=128 --steps=500
  python -m jnst.bench.lbfgs_curves --size=256 --steps=500 --from_side=128 --from_steps=200
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

import jnst.experiments as experiments
import jnst.images as images
import jnst.optimize as optimize
import jnst.pyramid as pyramid
from jnst.backbones import vgg
from jnst.bench.time_to_quality import SHARED

AT = (10, 25, 50, 100, 200, 500)
# Name -> the OptConfig fields it sets.
RULES = {"torch": {"lbfgs_rules": "torch", "lbfgs_first_step": "l1"},
         "linf": {"lbfgs_rules": "torch", "lbfgs_first_step": "linf"},
         "optax": {"lbfgs_rules": "optax"}}


def at_evals(history, at=AT) -> dict:
  """{e: the loss of the e-th evaluation} for each e in ``at`` the history reaches
  (``history[i]``: the loss at the i-th iterate, evaluated by the (i+1)-th evaluation)."""
  return {e: float(history[e - 1]) for e in at if e <= len(history)}


def climbs(history) -> int:
  """How many evaluations' losses are above the previous one."""
  h = np.asarray(history)
  return int(np.sum(h[1:] > h[:-1]))


def curves(params, content, style, steps: int, x0=None, rules=("torch", "optax"),
           torch_too=True, variant="paper") -> dict:
  """{"torch": loss history, "jnst_<rules>": loss history, ...; "skipped_pairs": n} from
  ``x0`` (network space, (H, W, 3); default: the content image). ``variant``: the loss
  normalisation (``jnst.losses``; "paper", the earlier tables' units, by default)."""
  cfg = experiments.StylizeConfig(opt=optimize.OptConfig(steps=steps, chunk=min(50, steps)),
                                  variant=variant)
  problem = cfg.build(params, experiments.Inputs(content, (style,)))
  x0 = problem.init_x if x0 is None else x0
  out = {}
  if torch_too:
    from jnst.bench import torch_ref
    tl, _ = torch_ref.stylize_problem(params, content, [style], cfg)
    res = torch_ref.run(tl, torch_ref.to_nchw(np.asarray(x0)), cfg.opt)
    out["torch"] = res.loss_history
  for r in rules:
    opt = dataclasses.replace(cfg.opt, **RULES[r])
    loop = optimize.drive(problem.objective, x0, problem.data, opt)
    hist, _, _ = optimize.member_history(loop.metrics, loop.final_loss, 0, False)
    out[f"jnst_{r}"] = hist
    if r != "optax":
      out["skipped_pairs" + ("" if r == "torch" else f"_{r}")] = int(loop.state.opt.skipped)
  return out


def table(rec: dict, at=AT) -> str:
  names = [k for k in rec if k == "torch" or k.startswith("jnst_")]
  rows = ["| evaluations | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
  for e in at:
    if all(e <= len(rec[n]) for n in names):  # Histories hold steps + 1 losses.
      rows.append(f"| {e} | " + " | ".join(f"{rec[n][e - 1]:.4g}" for n in names) + " |")
  rows.append("| evaluations with a higher loss than the previous | "
              + " | ".join(str(climbs(rec[n])) for n in names) + " |")
  return "\n".join(rows)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--steps", type=int, default=500)
  p.add_argument("--from_side", type=int, default=0, help="measure the pyramid scale that "
                 "starts from this side's result (0: single scale)")
  p.add_argument("--from_steps", type=int, default=200)
  p.add_argument("--content", default=str(SHARED / "tubingen.jpg"))
  p.add_argument("--style", default=str(SHARED / "starry_night.jpg"))
  p.add_argument("--weights", default=None)
  p.add_argument("--rules", default="torch,linf,optax", help="comma-separated, of " + ",".join(RULES))
  p.add_argument("--no_torch", action="store_true")
  p.add_argument("--variant", default="paper", help="loss normalisation (jnst.losses)")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  params = vgg.VGG19.load(a.weights)
  content = images.load_image(a.content, a.size)
  style = images.load_image(a.style, a.size)
  x0 = None
  rec = {"size": a.size, "shape": list(content.shape), "from_side": a.from_side,
         "variant": a.variant}
  if a.from_side:
    cfg = experiments.StylizeConfig(opt=optimize.OptConfig(steps=a.from_steps),
                                    variant=a.variant)
    at = pyramid.resizer(experiments.Inputs(content, (style,)))(a.from_side)
    _, coarse = experiments.run(cfg, params, at)
    x0 = pyramid.resize(coarse.x, content.shape[:2], "cubic")
    rec["from_loss"] = coarse.loss_history[-1]
  rec.update(curves(params, content, style, a.steps, x0, a.rules.split(","), not a.no_torch,
                    a.variant))
  print(table(rec), flush=True)
  print({k: v for k, v in rec.items() if not isinstance(v, list)}, flush=True)
  if a.out:
    from jnst.records import save_json
    save_json(a.out, rec)
  return rec


if __name__ == "__main__":
  main(sys.argv[1:])
