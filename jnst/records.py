"""Files that must appear whole or not at all, and what a run record says about the run.

* ``atomic_path``: a temp file beside the target, renamed onto it only on success.
* ``save_json``: a JSON record written that way (NumPy values converted).
* ``versions``: library versions, backend, devices and CPU, shared by every script's record
  and the benchmark's machine description.
* ``run_record``: the JSON record of one optimisation (``optimize.RunResult``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jnst.errors import JnstError


@contextlib.contextmanager
def atomic_path(dst: str | os.PathLike, suffix: str = ""):
  """Yields a temp path beside ``dst``; renames it onto ``dst`` only if the block succeeds,
  so ``dst`` is never left half-written. Raises JnstError if the directory is unwritable."""
  dst = Path(dst)
  try:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp" + suffix, dir=dst.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions.
  except OSError as e:
    raise JnstError(f"cannot write to {dst.parent} ({e.strerror or e}): choose a writable "
                    f"location") from None
  try:
    yield Path(tmp)
    os.replace(tmp, dst)
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)


class _Abort(Exception):
  pass


def ensure_writable(path: str | os.PathLike) -> None:
  """Raises JnstError now (before any compute) if a file cannot be created at ``path``;
  leaves nothing behind."""
  try:
    with atomic_path(path):
      raise _Abort
  except _Abort:
    pass


def _json_default(o):
  if isinstance(o, np.ndarray):
    return o.tolist()
  if isinstance(o, np.generic):
    return o.item()
  if isinstance(o, Path):
    return str(o)
  raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_json(path: str | os.PathLike, record: Mapping) -> Path:
  """Writes a JSON record atomically (NumPy scalars/arrays and paths converted)."""
  with atomic_path(path) as tmp:
    tmp.write_text(json.dumps(record, indent=2, default=_json_default, allow_nan=True) + "\n")
  return Path(path)


def save_text(path: str | os.PathLike, text: str) -> Path:
  with atomic_path(path) as tmp:
    tmp.write_text(text)
  return Path(path)


def cpu_model() -> str:
  """The CPU's model name (Linux /proc/cpuinfo; ``platform.processor()`` elsewhere)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def cpu_count() -> int:
  """CPUs this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def versions() -> dict:
  """What produced a result: library versions, Python, JAX backend, devices and CPU."""
  import flax
  import jax
  import jaxlib
  import optax
  return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "python": sys.version.split()[0],
          "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
          "cpu": cpu_model(), "cpus": cpu_count()}


def run_record(res, **extra) -> dict:
  """The JSON record written beside every output image; ``res`` is an
  ``optimize.RunResult``. Keys are stable; ``extra`` adds flags, inputs, sizes, ..."""
  return {"versions": versions(),
          "loss_history": [float(v) for v in res.loss_history],
          "evaluations": int(res.evaluations), "steps": int(res.steps), "status": res.status,
          "final_loss": float(res.loss_history[-1]),
          "final_terms": {k: float(v) for k, v in res.terms.items()},
          "seconds": {k: float(v) for k, v in res.seconds.items()}, **extra}
