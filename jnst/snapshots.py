"""Resumable snapshots of a run: what ``--save_every`` writes beside the intermediate images
and ``--resume`` reads back; and a seed study's per-variant resume state (at the end).

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


# Settings that older snapshots do not record, with the value those runs had: a snapshot
# made before --lbfgs_rules existed ran optax's L-BFGS rules, one made before
# --lbfgs_first_step torch's first step (l1).
LEGACY_SETTINGS = {"lbfgs_rules": "optax", "lbfgs_first_step": "l1"}


def _flag(k, v) -> str:
  return f"--{k}={'' if v is None else v}"


def load(path: str | os.PathLike, settings: dict | None = None,
         defaults: dict | None = None) -> Snapshot:
  """Reads a snapshot; with ``settings``, JnstError if they differ from the snapshot's,
  naming each differing flag with the snapshot's value. A setting the snapshot does not
  record (a flag added after it was made) counts as ``LEGACY_SETTINGS``'s value, else as
  its value in ``defaults`` (the flags' defaults: a new flag left at its default changes
  nothing)."""
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
    norm = lambda d: json.loads(json.dumps(d or {}, sort_keys=True, default=str))
    mine = norm(settings)
    old = {**norm(defaults), **LEGACY_SETTINGS}
    theirs = {**{k: old.get(k) for k in mine}, **snap.settings}
    diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if diff:
      same = " ".join(_flag(k, theirs.get(k)) for k in diff)
      raise JnstError(f"snapshot {path} was made with other settings (--{', --'.join(diff)}): "
                      f"resume with the same flags ({same}), or leave out --resume")
  return snap


# ------------------------------------------------------------------ seed studies
#
# A study (scripts/seed_study.py) is checkpointed per batch of members and per variant (one
# value of a sequential --sweep; a study without one is a single variant).
# ``<output_dir>/.resume/`` holds
#
#   state.json            {"run_id", "settings"}: the flags the study must be resumed with
#   variant_VVV.npz/json  a finished variant's ``batched.BatchResult`` and pyramid description
#   batch_VVV_BBB.npz/json  a finished batch of an unfinished one-scale variant (the part
#                         ``batched.run_seeds``' ``on_batch`` gets; removed when the variant
#                         is saved)
#
# npz: x (N, H, W, 3) final images in input space, evaluations, steps (N,), term_<name> (N,)
# final weighted terms, metrics_loss / metrics_evals / metrics_term_<name> (steps, N); JSON:
# the run id, histories, statuses, and (variants) seeds, values, seconds, batching, (batches)
# the member span. Each pair is written together (``records.atomic_paths``). Not kept: Adam's
# final optimiser state (``BatchResult.opt_state``, unused by a study).

STUDY_DIR = ".resume"
_MEMBER_KEYS = ("x", "evaluations", "steps", "terms", "metrics", "loss_history",
                "eval_history", "status")
_RESULT_KEYS = ("seeds", "values", "seconds", "batch_size", "num_batches", "batch_choice",
                "devices", "sharding")


def study_dir(out_dir: str | os.PathLike) -> Path:
  """Where a study writing to ``out_dir`` keeps its resume state."""
  return Path(out_dir) / STUDY_DIR


def run_id(settings: dict) -> str:
  """A short hash of ``settings`` (JSON, keys sorted)."""
  import hashlib
  text = json.dumps(settings, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(settings: dict) -> dict:
  return json.loads(json.dumps(settings, sort_keys=True, default=str))


def start_study(directory: str | os.PathLike, settings: dict) -> Path:
  """A fresh resume state for a study with ``settings``: earlier variant files go."""
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  for f in list(directory.glob("variant_*")) + list(directory.glob("batch_*")):
    f.unlink()
  with atomic_path(directory / "state.json") as tmp:
    tmp.write_text(json.dumps({"run_id": run_id(settings), "settings": _plain(settings)},
                              sort_keys=True))
  return directory


def _save(stem: Path, d: dict, meta: dict) -> None:
  """Members' data ``d`` (``_MEMBER_KEYS``) and ``meta`` as ``stem``.npz + ``stem``.json."""
  from jnst.records import atomic_paths
  arrays = {"x": np.asarray(d["x"], np.float32), "evaluations": np.asarray(d["evaluations"]),
            "steps": np.asarray(d["steps"]),
            "metrics_loss": np.asarray(d["metrics"]["loss"], np.float64),
            "metrics_evals": np.asarray(d["metrics"]["evals"], np.float64)}
  arrays.update({f"term_{k}": np.asarray(v) for k, v in d["terms"].items()})
  arrays.update({f"metrics_term_{k}": np.asarray(v, np.float64)
                 for k, v in d["metrics"]["terms"].items()})
  meta = {**meta, "loss_history": [list(map(float, h)) for h in d["loss_history"]],
          "eval_history": [list(map(int, h)) for h in d["eval_history"]],
          "status": list(d["status"]), "terms": list(d["terms"]),
          "metric_terms": list(d["metrics"]["terms"])}
  with atomic_paths(stem.with_suffix(".npz"), stem.with_suffix(".json")) as (t_npz, t_json):
    with open(t_npz, "wb") as f:
      np.savez(f, **arrays)
    t_json.write_text(json.dumps(meta, default=float))


def _load(meta_file: Path) -> tuple[dict, dict]:
  """(members' data as ``_save`` was given it, the JSON) of one checkpoint."""
  meta = json.loads(meta_file.read_text())
  with np.load(meta_file.with_suffix(".npz"), allow_pickle=False) as z:
    d = {"x": np.asarray(z["x"], np.float32), "evaluations": z["evaluations"],
         "steps": z["steps"], "terms": {k: z[f"term_{k}"] for k in meta["terms"]},
         "metrics": {"loss": z["metrics_loss"], "evals": z["metrics_evals"],
                     "terms": {k: z[f"metrics_term_{k}"] for k in meta["metric_terms"]}}}
  d.update({k: meta[k] for k in ("loss_history", "eval_history", "status")})
  return d, meta


def save_batch(directory: str | os.PathLike, settings: dict, variant: int, batch: int,
               part: dict) -> None:
  """Checkpoints batch ``batch`` of variant ``variant`` (``batched.run_seeds``' part)."""
  _save(Path(directory) / f"batch_{variant:03d}_{batch:03d}", part,
        {"run_id": run_id(settings), "variant": variant, "batch": batch,
         "span": [int(i) for i in part["span"]]})


def save_variant(directory: str | os.PathLike, settings: dict, index: int, res,
                 pyramid=None) -> None:
  """Checkpoints variant ``index``'s ``batched.BatchResult`` (and pyramid description);
  its batch checkpoints go."""
  directory = Path(directory)
  _save(directory / f"variant_{index:03d}", {k: getattr(res, k) for k in _MEMBER_KEYS},
        {"run_id": run_id(settings), "index": index, "pyramid": pyramid,
         **{k: getattr(res, k) for k in _RESULT_KEYS}})
  for f in directory.glob(f"batch_{index:03d}_*"):
    f.unlink()


def load_study(directory: str | os.PathLike, settings: dict) -> tuple[dict, dict]:
  """What an interrupted study with ``settings`` finished: ({variant: (BatchResult, pyramid
  description)}, {variant: {batch: part}}). JnstError if there is no state, or it was made
  with other flags (naming them)."""
  import jnst.batched as batched
  directory = Path(directory)
  state_file = directory / "state.json"
  if not state_file.is_file():
    raise JnstError(f"nothing to resume in {directory.parent} (no {STUDY_DIR}/state.json): run "
                    f"the study without --resume")
  try:
    state = json.loads(state_file.read_text())
    theirs = state["settings"]
  except (OSError, ValueError, KeyError) as e:
    raise JnstError(f"resume state {state_file} is unreadable ({e}): delete {directory} and "
                    f"run without --resume") from None
  mine = _plain(settings)
  diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
  if diff:
    raise JnstError(f"the study in {directory.parent} was started with other settings "
                    f"(--{', --'.join(diff)}): resume with the same flags, or leave out --resume")
  done, batches = {}, {}
  for meta_file in sorted(directory.glob("*.json")):
    if not meta_file.name.startswith(("variant_", "batch_")):
      continue
    try:
      d, meta = _load(meta_file)
      if meta["run_id"] != state["run_id"]:
        continue
      if "span" in meta:
        batches.setdefault(int(meta["variant"]), {})[int(meta["batch"])] = {
            **d, "opt": None, "span": tuple(meta["span"])}
      else:
        res = batched.BatchResult(**d, **{k: meta[k] for k in _RESULT_KEYS})
        done[int(meta["index"])] = (res, meta["pyramid"])
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise JnstError(f"resume state {meta_file} is unreadable ({e}): delete {directory} and "
                      f"run without --resume") from None
  return done, batches


def clear_study(directory: str | os.PathLike) -> None:
  """Removes a study's resume state (after its outputs are written)."""
  import shutil
  shutil.rmtree(directory, ignore_errors=True)
