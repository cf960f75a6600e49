"""Checkpoints of a train state: one msgpack file per saved step (``flax.serialization``),
written atomically (``records.atomic_path``), the last K kept.

A file holds {"meta": JSON text (format, config, network shape, member labels, …), "state":
the state pytree as ``flax.serialization.to_state_dict``, "history": small host arrays}.
Restoring checks the meta against what the caller expects (one line naming the mismatch) and
fills a template state, so shapes and tree structure are checked too.

Why not Orbax: the state is small (1.7 M params per network, ×3 with Adam's moments, about
20 MB), fully replicated, and saved by process 0 alone; a single msgpack file written
through the temp-file-and-rename every other jnst output uses is all that needs, with no
new dependency (orbax-checkpoint, tensorstore) and no async machinery to reason about. Orbax
is the choice once states are sharded across hosts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from jnst.errors import JnstError
from jnst.records import atomic_path

FORMAT = "jnst-feedforward-1"
_NAME = re.compile(r"ckpt_(\d{8})\.msgpack$")


def path_for(directory, step: int) -> Path:
  return Path(directory) / f"ckpt_{step:08d}.msgpack"


def list_steps(directory) -> list[int]:
  """Steps of the checkpoints in ``directory``, ascending."""
  d = Path(directory)
  if not d.is_dir():
    return []
  return sorted(int(m.group(1)) for p in d.iterdir() if (m := _NAME.match(p.name)))


def save(directory, step: int, state, meta: dict, history=None, keep: int = 3) -> Path:
  """Writes ``state`` (device or host pytree) at ``step`` atomically and removes all but the
  newest ``keep`` checkpoints. Returns the file."""
  host = jax.tree.map(np.asarray, jax.device_get(state))
  blob = serialization.msgpack_serialize({
      "meta": json.dumps({**meta, "format": FORMAT, "step": int(step)}),
      "state": serialization.to_state_dict(host),
      "history": {k: np.asarray(v) for k, v in (history or {}).items()}})
  out = path_for(directory, step)
  with atomic_path(out) as tmp:
    tmp.write_bytes(blob)
  for old in list_steps(directory)[:-keep] if keep > 0 else []:
    path_for(directory, old).unlink(missing_ok=True)
  return out


def find(path) -> Path:
  """The newest checkpoint file: ``path`` itself if a file, else the newest under
  ``path`` or ``path/checkpoints``. JnstError if there is none."""
  p = Path(path)
  if p.is_file():
    return p
  for d in (p / "checkpoints", p):
    steps = list_steps(d)
    if steps:
      return path_for(d, steps[-1])
  raise JnstError(f"{p} holds no checkpoint (ckpt_XXXXXXXX.msgpack): give the --output "
                  f"directory of scripts/train_feedforward.py")


def read(path) -> tuple[dict, dict, dict]:
  """(meta, raw state dict, history) of a checkpoint file; JnstError if it is not one."""
  try:
    raw = serialization.msgpack_restore(Path(path).read_bytes())
    meta = json.loads(raw["meta"])
    if meta.get("format") != FORMAT:
      raise ValueError(f"format {meta.get('format')!r}")
    return meta, raw["state"], dict(raw.get("history") or {})
  except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
    raise JnstError(f"{path} is not a jnst feed-forward checkpoint ({type(e).__name__}): give a "
                    f"ckpt_XXXXXXXX.msgpack written by scripts/train_feedforward.py") from None
  except Exception as e:  # msgpack raises its own exception types for garbage.
    raise JnstError(f"{path} is not a jnst feed-forward checkpoint ({type(e).__name__}): give a "
                    f"ckpt_XXXXXXXX.msgpack written by scripts/train_feedforward.py") from None


def check_meta(meta: dict, expected: dict, path) -> None:
  """JnstError naming the first key of ``expected`` whose value ``meta`` does not share."""
  plain = lambda v: json.loads(json.dumps(v))
  for k, v in expected.items():
    have = plain(meta.get(k))
    if have != plain(v):
      if isinstance(v, dict) and isinstance(have, dict):  # Name the differing entry.
        k, have, v = next((f"{k}.{j}", have.get(j), w) for j, w in plain(v).items()
                          if have.get(j) != w)
      raise JnstError(f"checkpoint {path} is incompatible: its {k} is {have!r}, this run's "
                      f"is {v!r}; use a new --output directory or matching flags")


def restore(template, raw_state: dict, path):
  """``raw_state`` (from ``read``) into the structure of ``template``, shapes checked."""
  try:
    state = serialization.from_state_dict(template, raw_state)
  except (ValueError, KeyError, TypeError) as e:
    raise JnstError(f"checkpoint {path} does not fit this network ({str(e)[:120]}): use a new "
                    f"--output directory or matching flags") from None
  bad = [(np.shape(a), np.shape(b)) for a, b in zip(jax.tree.leaves(template),
                                                    jax.tree.leaves(state))
         if np.shape(a) != np.shape(b)]
  if bad:
    raise JnstError(f"checkpoint {path} does not fit this network (array {bad[0][1]} where "
                    f"{bad[0][0]} is expected): use a new --output directory or matching flags")
  return state
