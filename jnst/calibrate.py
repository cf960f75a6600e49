"""Calibrating a backbone's ``term_scales``: the multipliers that put its raw content and
style terms in a reference backbone's units (VGG-19 with the Caffe weights), so that the
default loss weights α = 1, β = 1e3 give a comparable stylisation on any backbone. One set
per loss variant (``jnst.backbones.scales_for``). Pure computation on arrays; no file I/O
(``scripts/calibrate_backbone.py`` loads the pairs and prints the numbers to keep).

Two steps, each backbone on its own default layers and layer weights (the stylize defaults):

1. *Units* (``term_scales``, ``start_scales``): each raw term is measured at the opposite
   end of the optimisation path, where it is largest — the content term of the style image
   (resized to the content) against the content image, the style term of the content image
   against the style image's Grams — and the scale of a term is reference value / backbone
   value (median over the pairs). This puts the terms in the reference's units at the start
   of a run. It fixes the content scale (the only term whose absolute size matters beside
   TV and matting, which are measured on the image).

2. *Balance* (``balance``): matching units at the start does not give the same result: the
   backbones' style terms fall at different rates. So the style scale is then multiplied by
   m, found per pair so that the backbone's run ends where the reference's does: the same
   *style reduction* r = style term of the result / style term of the content image (the
   start of the run), after the same number of L-BFGS steps from the content image with the
   default α, β. r is unit-free, so it compares across backbones; it falls as m grows, and m
   is found by a secant search on (log m, log r) (each probe one run; the loss weights are
   data, so the runs share one compiled program). The style scale is the start scale times
   the geometric mean of the pairs' m.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jnst.experiments as experiments
import jnst.losses as losses
import jnst.objective as objective
import jnst.optimize as optimize
from jnst.backbones import scales_for, with_scales
from jnst.errors import JnstError

TERMS = ("content", "style")
DEFAULT_BETA = experiments.StylizeConfig.style_weight
M_RANGE = 1e4  # The style multiplier is searched in [1/M_RANGE, M_RANGE].


def raw_terms(backbone, params, content, style, variant: str = "paper") -> dict[str, float]:
  """{"content": content term of ``style`` (resized to the content's shape, as
  ``init="style"`` does) vs ``content``, "style": style term of ``content`` vs ``style``},
  unscaled, on ``backbone``'s default layers (content w_l = 1, style 1/n). Images: RGB
  [0, 1], (H, W, 3), any sizes."""
  c_layers = backbone.expand_layers(backbone.default_content_layers)
  s_layers = backbone.expand_layers(backbone.default_style_layers)
  content, style = objective.check_image(content, "content"), objective.check_image(style, "style")
  p = objective.content_target(backbone, params, content, c_layers)
  a = objective.style_target(backbone, params, [style], s_layers)
  style_x = jnp.clip(jax.image.resize(style, content.shape, "lanczos3"), 0.0, 1.0)
  f_style = backbone.extract(params, style_x[None], c_layers)
  f_content = backbone.extract(params, content[None], s_layers)
  cw = {l: jnp.float32(1.0) for l in c_layers}
  sw = {l: jnp.float32(1.0 / len(s_layers)) for l in s_layers}
  return {"content": float(losses.content(f_style, None, p, cw, variant)),
          "style": float(losses.style(f_content, None, a, sw, variant))}


def term_scales(reference, ref_params, backbone, params, content, style,
                variant: str = "paper") -> tuple[tuple[str, float], ...]:
  """``backbone``'s unit scales against ``reference`` on one pair (step 1 of the module
  docstring), as the backbone dataclass stores them: (("content", s_c), ("style", s_s))."""
  ref = raw_terms(reference, ref_params, content, style, variant)
  own = raw_terms(backbone, params, content, style, variant)
  return tuple((t, ref[t] / own[t]) for t in TERMS)


def start_scales(reference, ref_params, backbone, params, pairs: Sequence,
                 variant: str = "paper") -> dict:
  """Step 1 over ``pairs`` [(content, style), ...]: {"per_pair": [{term: s}, ...],
  "median": {term: s}}."""
  per = [dict(term_scales(reference, ref_params, backbone, params, c, s, variant))
         for c, s in pairs]
  return {"per_pair": per, "median": {t: float(np.median([p[t] for p in per])) for t in TERMS}}


def _problem(backbone, params, content, style, variant: str, opt: optimize.OptConfig,
             style_weight: float):
  """The stylize defaults' problem (β = ``style_weight``) with ``backbone`` (its term scales
  as given) in place of the registry's."""
  cfg = experiments.StylizeConfig(backbone=backbone.name, variant=variant, opt=opt,
                                  pooling=backbone.pooling, style_weight=style_weight)
  problem = cfg.build(params, experiments.Inputs(content, (style,)))
  obj = problem.objective.__class__(backbone, problem.objective.terms, variant)
  return obj, problem


def style_reduction(obj, problem, opt: optimize.OptConfig, style_factor: float = 1.0) -> dict:
  """One L-BFGS run of ``problem`` (from its init, the content image) under ``obj`` with β
  times ``style_factor``: {"r": final style term / initial style term, "style_over_content":
  the final weighted style / weighted content}."""
  lw = dict(problem.data["loss_weights"])
  lw["style"] = lw["style"] * jnp.float32(style_factor)
  data = {**problem.data, "loss_weights": lw}
  _, start = obj(problem.init_x, data)
  res = optimize.run(obj, problem.init_x, data, opt)
  s0 = float(start["style"])
  if not (s0 > 0 and np.isfinite(res.terms["style"])):
    raise JnstError("the style term is 0 or not finite at the content image: pick a style "
                    "image that differs from the content")
  return {"r": res.terms["style"] / s0,
          "style_over_content": res.terms["style"] / max(res.terms["content"], 1e-30)}


def _secant(points: list[tuple[float, float]], target: float) -> float:
  """Next log m from probes [(log m, log r)]: interpolate between the bracketing pair nearest
  the target if there is one, else extrapolate from the last two (at most ×16 per probe)."""
  pts = sorted(points)
  for (a, fa), (b, fb) in zip(pts, pts[1:]):
    if (fa - target) * (fb - target) <= 0 and fa != fb:
      return a + (target - fa) * (b - a) / (fb - fa)
  (a, fa), (b, fb) = points[-2], points[-1]
  slope = (fb - fa) / (b - a) if b != a else 0.0
  step = (target - fb) / slope if slope < 0 else (math.log(4.0) if fb > target else -math.log(4.0))
  return b + float(np.clip(step, -math.log(16.0), math.log(16.0)))


def find_multiplier(run_r: Callable[[float], float], r_target: float, tol: float = 0.03,
                    max_runs: int = 6) -> tuple[float, list[tuple[float, float]]]:
  """m with run_r(m) ≈ r_target (|log ratio| <= log(1 + tol)), assuming r falls as m grows;
  starting at m = 1, then ×4 or ÷4, then secant steps in (log m, log r). Returns (m, probes
  [(m, r)]); after ``max_runs`` probes, m is the interpolated estimate. m stays within
  [1/M_RANGE, M_RANGE]: where r saturates (a run of steps can lower the style term only so
  far, however large β is), m ends at the edge and the probes show why."""
  target, pts, bound = math.log(r_target), [], math.log(M_RANGE)
  lm = 0.0
  for _ in range(max_runs):
    r = run_r(math.exp(lm))
    pts.append((lm, math.log(r)))
    if abs(math.log(r) - target) <= math.log1p(tol):
      return math.exp(lm), [(math.exp(a), math.exp(b)) for a, b in pts]
    nxt = (math.log(4.0) if r > r_target else -math.log(4.0)) if len(pts) == 1 \
        else _secant(pts, target)
    nxt = float(np.clip(nxt, -bound, bound))
    if any(abs(nxt - a) < 1e-9 for a, _ in pts):
      break  # At the edge of the range: r does not reach the target there.
    lm = nxt
  if len(pts) >= 2:
    lm = float(np.clip(_secant(pts, target), -bound, bound))
  return math.exp(lm), [(math.exp(a), math.exp(b)) for a, b in pts]


def balance(reference, ref_params, backbone, params, pairs: Sequence, variant: str = "paper",
            steps: int = 300, tol: float = 0.03, max_runs: int = 6,
            start: dict | None = None, style_weight: float = DEFAULT_BETA,
            log: Callable[[str], None] = lambda s: None) -> dict:
  """Both steps of the module docstring over ``pairs`` [(content, style), ...] (RGB [0, 1]).

  start: {term: s} to skip step 1 (e.g. to re-balance given units). style_weight: the β (α is
  1) at which the runs are matched, the stylize default unless testing. Returns a record:
  {"variant", "steps", "start": step 1's record or the given scales, "pairs": [{"r_reference",
  "multiplier", "probes": [(m, r)], "reference_style_over_content", "converged"}],
  "multiplier" and "converged" (``combine``), "term_scales": {"content": s_c, "style": s_s · m}}.
  """
  losses.check_variant(variant)
  if not pairs:
    raise JnstError("calibration needs at least one content/style pair")
  opt = optimize.OptConfig(steps=steps, chunk=min(steps, 50)).validate()
  first = start_scales(reference, ref_params, backbone, params, pairs, variant) \
      if start is None else {"given": dict(start)}
  s0 = first["median"] if start is None else dict(start)
  log(f"{backbone.name} units ({variant}): content {s0['content']:.3g}, style {s0['style']:.3g}")
  scaled = with_scales(backbone, variant, s0)
  out = []
  for i, (content, style) in enumerate(pairs):
    ref_obj, ref_problem = _problem(reference, ref_params, content, style, variant, opt,
                                     style_weight)
    ref = style_reduction(ref_obj, ref_problem, opt)
    log(f"pair {i}: {reference.name} style reduction r = {ref['r']:.4g}")
    obj, problem = _problem(scaled, params, content, style, variant, opt, style_weight)

    def run_r(m, obj=obj, problem=problem, i=i):
      r = style_reduction(obj, problem, opt, m)["r"]
      log(f"pair {i}: {backbone.name} with style scale ×{m:.4g}: r = {r:.4g}")
      return r

    m, probes = find_multiplier(run_r, ref["r"], tol, max_runs)
    out.append({"r_reference": ref["r"], "reference_style_over_content":
                ref["style_over_content"], "multiplier": m, "probes": probes,
                "converged": reached(probes, ref["r"], tol)})
  m, converged = combine(out)
  return {"variant": variant, "steps": steps, "start": first, "pairs": out, "multiplier": m,
          "converged": converged,
          "term_scales": {"content": s0["content"], "style": s0["style"] * m}}


def reached(probes: Sequence[tuple[float, float]], r_target: float, tol: float) -> bool:
  """Whether a probe (m, r) ended within ``tol`` of ``r_target`` (find_multiplier's test)."""
  return any(abs(math.log(r / r_target)) <= math.log1p(tol) for _, r in probes)


def combine(pairs: Sequence[dict]) -> tuple[float, bool]:
  """(multiplier, converged) over balance's per-pair records: the geometric mean of the
  multipliers of the pairs that reached the reference's style reduction. If none did, 1
  (the unit scales stand) and False: where the style term already dominates, a run's style
  reduction is set by how fast the optimiser descends on that network, not by β, so no
  style scale matches it (measured for VGG-16: weights/README.md, "Calibrating
  term_scales"); an extrapolated multiplier would only push β up without effect."""
  ok = [p["multiplier"] for p in pairs if p["converged"]]
  if not ok:
    return 1.0, False
  return float(np.exp(np.mean(np.log(ok)))), len(ok) == len(pairs)


def rounded(scales: dict, digits: int = 2) -> tuple[tuple[str, float], ...]:
  """{term: s} as the backbone dataclass stores it, each to ``digits`` significant figures."""
  return tuple((t, float(f"{scales[t]:.{digits}g}")) for t in TERMS if t in scales)


def current(backbone, variant: str) -> dict[str, float]:
  """The scales ``backbone`` applies now for ``variant`` (for comparison in reports)."""
  return scales_for(backbone, variant)
