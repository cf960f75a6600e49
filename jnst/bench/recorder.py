"""Benchmark records and the optimiser settings every benchmark shares."""

from __future__ import annotations

import math
from collections.abc import Callable

import jnst.optimize as optimize

OPTIMIZERS = {"lbfgs": 1.0, "adam": 10.0}  # optimizer -> learning rate (the CLI defaults)


def opt_config(optimizer: str, steps: int, loop: str, scan_chunk: int) -> optimize.OptConfig:
  """``steps`` evaluations of ``optimizer`` at the CLI's rate; a scan loop in chunks of
  gcd(steps, scan_chunk) steps."""
  chunk = math.gcd(steps, scan_chunk) if loop == "scan" else steps
  return optimize.OptConfig(optimizer=optimizer, steps=steps,
                            learning_rate=OPTIMIZERS[optimizer], chunk=chunk, loop=loop).validate()


class Recorder:
  """Collects records and echoes each to ``log``."""

  def __init__(self, log: Callable[[str], None] = print):
    self.records: list[dict] = []
    self.log = log

  def add(self, framework: str, size: int, metric: str, value, unit: str = "", note: str = ""):
    rec = {"framework": framework, "size": size, "metric": metric,
           "value": None if value is None else float(value), "unit": unit}
    if note:
      rec["note"] = note
    self.records.append(rec)
    shown = "n/a" if value is None else f"{value:.4g}"
    self.log(f"  {framework:5s} {size:4d} {metric:28s} {shown} {unit} {note}".rstrip())
