"""Backbones side by side on one content/style pair (``scripts/compare_backbones.py``). The
backbones' ``term_scales`` are calibrated by ``jnst.calibrate``.

For each backbone, the stylize defaults (its default layers, α = 1, β = 1e3, L-BFGS from the
content image) are built on the same pair and measured:

  eval_ms            median wall time of one jitted loss + gradient evaluation
  xla_temp_mb        XLA's scratch memory for that evaluation (compiled memory analysis: the
                     peak working set beyond arguments and outputs; CPU and GPU alike)
  eval_rss_mb        host RSS growth while evaluating (what the process really needed, CPU)
  evals_to_balance   evaluations until the weighted style term first falls to ``balance`` ×
                     the weighted content term (both in VGG-19 Caffe units via term_scales):
                     the same style/content balance for every backbone
  run_s, final terms the whole ``steps``-step run, for the side-by-side images

No file I/O: the caller loads the images and params and writes what comes back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np

import jnst.experiments as experiments
import jnst.optimize as optimize
import jnst.plots as plots
from jnst.backbones import scales_for
from jnst.bench import timing
from jnst.errors import JnstError


@dataclasses.dataclass(frozen=True)
class CompareConfig:
  """steps: L-BFGS steps per backbone; balance: the weighted style/content ratio the
  evaluation count is taken at; repeats: timed evaluations per median."""
  steps: int = 300
  balance: float = 1.0
  repeats: int = 5

  def validate(self) -> CompareConfig:
    if self.steps < 1 or self.repeats < 1:
      raise JnstError(f"--steps and --repeats must be at least 1, got {self.steps}, "
                      f"{self.repeats}")
    if not np.isfinite(self.balance) or self.balance <= 0:
      raise JnstError(f"--balance must be a finite number > 0, got {self.balance}")
    return self


def first_balanced(metrics: Mapping, balance: float) -> int | None:
  """Index of the first step whose weighted style term is <= balance × content term."""
  style, content = np.asarray(metrics["terms"]["style"]), np.asarray(metrics["terms"]["content"])
  hit = np.nonzero(style <= balance * content)[0]
  return int(hit[0]) if hit.size else None


def measure(name: str, params, content: np.ndarray, style: np.ndarray, cfg: CompareConfig,
            log: Callable[[str], None] = print) -> tuple[dict, np.ndarray]:
  """(record, RGB result) of one backbone on the pair (module docstring)."""
  opt = optimize.OptConfig(steps=cfg.steps, chunk=min(cfg.steps, 50))
  scfg = experiments.StylizeConfig(backbone=name, opt=opt,  # BENCHMARKS.md: paper units.
                                   variant="paper").validate()
  problem = scfg.build(params, experiments.Inputs(content, (style,)))
  x0 = problem.init_x
  vg = jax.jit(jax.value_and_grad(problem.objective, has_aux=True))
  compiled = vg.lower(x0, problem.data).compile()
  mem = compiled.memory_analysis()
  temp_mb = None if mem is None else mem.temp_size_in_bytes / 2**20
  jax.block_until_ready(compiled(x0, problem.data))
  with timing.PeakRss() as rss:
    sec, _ = timing.median_seconds(lambda: jax.block_until_ready(compiled(x0, problem.data)),
                                   cfg.repeats, 1)
  log(f"{name}: {1e3 * sec:.1f} ms per evaluation; running {cfg.steps} L-BFGS steps")
  rgb, res = experiments.solve(problem, opt)
  k = first_balanced(res.metrics, cfg.balance)
  rec = {"backbone": name, "eval_ms": 1e3 * sec, "xla_temp_mb": temp_mb,
         "eval_rss_mb": rss.delta_mb,
         "evals_to_balance": None if k is None else int(res.metrics["evals"][k]),
         "run_s": res.seconds["run"], "compile_s": res.seconds["compile"],
         "evaluations": res.evaluations, "final_terms": res.terms,
         "final_loss": res.loss_history[-1],
         "layers": {"content": list(problem.data["layer_weights"]["content"]),
                    "style": list(problem.data["layer_weights"]["style"])},
         "term_scales": scales_for(problem.backbone, problem.objective.variant)}
  return rec, rgb


def run(entries: Sequence[tuple[str, object]], content, style, cfg: CompareConfig,
        log: Callable[[str], None] = print) -> tuple[list[dict], list[np.ndarray]]:
  """``measure`` of each (backbone name, params) in ``entries``."""
  cfg = cfg.validate()
  out = [measure(name, params, content, style, cfg, log) for name, params in entries]
  return [r for r, _ in out], [im for _, im in out]


def markdown(records: Sequence[dict], cfg: CompareConfig, shape, machine: str) -> str:
  """The comparison table."""
  f = lambda v, fmt: "–" if v is None else format(v, fmt)
  lines = [f"{shape[1]}x{shape[0]} px, stylize defaults, L-BFGS {cfg.steps} steps from the "
           f"content image; balance: weighted style ≤ {cfg.balance:g} × content. {machine}", "",
           "| backbone | eval ms | XLA temp MiB | RSS growth MiB | evals to balance | run s | "
           "final content | final style |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in records:
    lines.append(f"| {r['backbone']} | {f(r['eval_ms'], '.1f')} | {f(r['xla_temp_mb'], '.0f')} | "
                 f"{f(r['eval_rss_mb'], '.0f')} | {f(r['evals_to_balance'], 'd')} | "
                 f"{r['run_s']:.1f} | {r['final_terms'].get('content', 0):.3g} | "
                 f"{r['final_terms'].get('style', 0):.3g} |")
  return "\n".join(lines)


def grid(content, style, records: Sequence[dict], images: Sequence[np.ndarray]) -> np.ndarray:
  """Contact sheet: content, style, then each backbone's result, labelled."""
  labels = ["content", "style"] + [
      f"{r['backbone']} ({r['eval_ms']:.0f} ms/eval)" for r in records]
  return plots.contact_sheet([content, style, *images], labels, columns=2 + len(images),
                             cell=256)
