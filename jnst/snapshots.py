"""Resumable snapshots of a run: what ``--save_every`` writes beside the intermediate images
and ``--resume`` reads back.

A snapshot (``<output stem>.resume.npz``, NumPy's npz, read without pickle) holds:

  x            the iterate at the snapshot, in the backbone's input space, float32 (H, W, 3)
  step         optimiser steps done (absolute, counting earlier resumed segments)
  evaluations  loss/gradient evaluations done
  settings     JSON of the run's settings that must not change on resume (every flag but
               the step budget, progress/snapshot cadence and --resume itself)

Restored: the image and the step count, so a resumed run does the remaining
``steps - step`` steps. Not restored: the optimiser's state — L-BFGS's curvature history
(the first resumed step is a scaled gradient step, as at the start of a run) and Adam's
moments and schedule position — nor the loss history before the snapshot. A resumed
L-BFGS run therefore does not retrace the uninterrupted run exactly; it continues from
the same image.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from jnst.errors import JnstError
from jnst.records import atomic_path, check_input_file

SUFFIX = ".resume.npz"


@dataclasses.dataclass(frozen=True)
class Snapshot:
  x: np.ndarray
  step: int
  evaluations: int
  settings: dict


def path_for(output: str | os.PathLike) -> Path:
  """Where the snapshot of a run writing ``output`` lives."""
  output = Path(output)
  return output.with_name(output.stem + SUFFIX)


def save(path: str | os.PathLike, x, step: int, evaluations: int, settings: dict) -> Path:
  """Writes a snapshot atomically (replacing the previous one)."""
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    np.savez(f, x=np.asarray(x, np.float32), step=np.int64(step),
             evaluations=np.int64(evaluations),
             settings=np.asarray(json.dumps(settings, sort_keys=True, default=str)))
  return Path(path)


def load(path: str | os.PathLike, settings: dict | None = None) -> Snapshot:
  """Reads a snapshot; with ``settings``, JnstError if they differ from the snapshot's
  (naming the differing settings)."""
  path = check_input_file(path, "snapshot", "run with --save_every=N first (snapshots are "
                          "written every N steps), or leave out --resume")
  try:
    with np.load(path, allow_pickle=False) as z:
      snap = Snapshot(np.asarray(z["x"], np.float32), int(z["step"]), int(z["evaluations"]),
                      json.loads(str(z["settings"])))
  except (OSError, KeyError, ValueError) as e:
    raise JnstError(f"snapshot {path} is unreadable ({e}): delete it and start again") from None
  if snap.x.ndim != 3 or not np.all(np.isfinite(snap.x)):
    raise JnstError(f"snapshot {path} holds no finite image: delete it and start again")
  if settings is not None:
    mine = json.loads(json.dumps(settings, sort_keys=True, default=str))
    diff = sorted(k for k in set(mine) | set(snap.settings) if mine.get(k) != snap.settings.get(k))
    if diff:
      raise JnstError(f"snapshot {path} was made with other settings (--{', --'.join(diff)}): "
                      f"resume with the same flags, or leave out --resume")
  return snap
