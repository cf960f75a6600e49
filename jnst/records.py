"""Files that must appear whole or not at all, and what a run record says about the run.

* ``atomic_path``: a temp file beside the target, renamed onto it only on success.
* ``save_json``: a JSON record written that way (NumPy values converted; strict JSON: a
  non-finite number is written as ``null``, never as a bare ``NaN``/``Infinity``).
* ``atomic_paths``: several files (an image and its record) that appear together or not at all.
* ``ensure_writable``: checks, before any compute, that a file can be created, creating nothing.
* ``versions``: library versions, backend, devices and CPU, shared by every script's record
  and the benchmark's machine description.
* ``run_record``: the JSON record of one optimisation (``optimize.RunResult``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import json
import os
import platform
import stat
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jnst.errors import JnstError


@contextlib.contextmanager
def _temp_beside(dst: Path, suffix: str = ""):
  """A temp file beside ``dst`` (parents made now), removed on exit unless renamed."""
  try:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp" + suffix,
                               dir=dst.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions.
  except OSError as e:
    raise JnstError(f"cannot write to {dst.parent} ({e.strerror or e}): choose a writable "
                    f"location") from None
  try:
    yield Path(tmp)
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(dst: str | os.PathLike, suffix: str = ""):
  """Yields a temp path beside ``dst``; renames it onto ``dst`` only if the block succeeds,
  so ``dst`` is never left half-written. Raises JnstError if the directory is unwritable
  or ``dst`` cannot be replaced (e.g. it is a directory)."""
  dst = Path(dst)
  with _temp_beside(dst, suffix) as tmp:
    yield tmp
    try:
      os.replace(tmp, dst)
    except OSError as e:
      raise JnstError(f"cannot write {dst} ({e.strerror or e}): choose another path") from None


def _nearest_existing(path: Path) -> Path:
  p = path
  while not os.path.lexists(p) and p != p.parent:
    p = p.parent
  return p


def ensure_writable(path: str | os.PathLike) -> None:
  """Raises JnstError now (before any compute) if a file cannot be created at ``path``;
  creates nothing (missing parent directories are made only when the file is written).

  Refused: ``path`` is a directory or another non-file (FIFO, socket, device), a parent is
  a file, or the nearest existing directory is not writable."""
  path = Path(path)
  if path.name == "":
    raise JnstError(f"output path {str(path)!r} names no file: give a file name")
  if os.path.lexists(path):
    try:
      st = os.stat(path)
    except OSError as e:
      raise JnstError(f"cannot write {path} ({e.strerror or e}): remove it or choose another "
                      f"path") from None
    if not stat.S_ISREG(st.st_mode):
      raise JnstError(f"cannot write {path}: it is {describe(path)}, not a file; remove it or "
                      f"choose another path")
    if not os.access(path.parent, os.W_OK | os.X_OK):
      raise JnstError(f"cannot write to {path.parent} (permission denied): choose a writable "
                      f"location")
    return
  base = _nearest_existing(path.parent)
  if not base.is_dir():
    raise JnstError(f"cannot write to {path.parent}: {base} is {describe(base)}, not a "
                    f"directory; choose another location")
  if not os.access(base, os.W_OK | os.X_OK):
    raise JnstError(f"cannot write to {path.parent} ({base} is not writable): choose a "
                    f"writable location")


def describe(path: str | os.PathLike) -> str:
  """What is at ``path``, in words: "a directory", "a FIFO", "a symlink loop", "missing", ..."""
  path = Path(path)
  try:
    st = os.stat(path)
  except FileNotFoundError:
    return "a broken symlink" if os.path.islink(path) else "missing"
  except OSError as e:
    if e.errno == errno.ELOOP:
      return "a symlink loop"
    if e.errno == errno.ENOTDIR:
      return "under a file, not a directory"
    return f"unreadable ({e.strerror or e})"
  for test, what in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a directory"),
                     (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                     (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
    if test(st.st_mode):
      return what
  return "not a regular file"


def check_input_file(path: str | os.PathLike, what: str, fix: str = "check the path") -> Path:
  """``path`` as a Path if it is a readable regular file; else JnstError saying what it is
  (missing, a directory, a FIFO, a symlink loop, ...) and ``fix``."""
  path = Path(path)
  if str(path) == "":
    raise JnstError(f"{what}: the path is empty: {fix}")
  kind = describe(path)
  if kind == "missing":
    raise JnstError(f"{what} {path} does not exist: {fix}")
  if kind != "a file":
    raise JnstError(f"{what} {path} is {kind}, not a file: {fix}")
  if not os.access(path, os.R_OK):
    raise JnstError(f"{what} {path} is not readable (permission denied): {fix}")
  return path


@contextlib.contextmanager
def atomic_paths(*dsts: str | os.PathLike):
  """Like ``atomic_path`` for several files that must appear together or not at all (an
  image and its record): yields one temp path per target; only when the block succeeds
  are they renamed onto their targets, and if a rename fails the ones already renamed are
  removed again (a previous file they replaced is then gone too: the pair stays consistent)."""
  with contextlib.ExitStack() as stack:
    tmps = [stack.enter_context(_temp_beside(Path(d))) for d in dsts]
    yield tmps
    done = []
    try:
      for tmp, dst in zip(tmps, dsts):
        os.replace(tmp, dst)
        done.append(dst)
    except OSError as e:
      for dst in done:
        with contextlib.suppress(OSError):
          os.unlink(dst)
      raise JnstError(f"cannot write {dst} ({e.strerror or e}); nothing was written: "
                      f"choose another output path") from None


def _json_default(o):
  if isinstance(o, np.ndarray):
    return o.tolist()
  if isinstance(o, np.generic):
    return o.item()
  if isinstance(o, Path):
    return str(o)
  raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def strict(o):
  """``o`` with every non-finite float (NaN, ±inf; NumPy included) replaced by None, so
  it serialises as strict JSON (``null``)."""
  if isinstance(o, Mapping):
    return {k: strict(v) for k, v in o.items()}
  if isinstance(o, (list, tuple)):
    return [strict(v) for v in o]
  if isinstance(o, np.ndarray):
    return strict(o.tolist())
  if isinstance(o, (float, np.floating)):
    return float(o) if math.isfinite(o) else None
  if isinstance(o, np.generic):
    return o.item()
  return o


def dumps(record) -> str:
  """Strict JSON text of ``record`` (non-finite numbers as null; NumPy values and paths
  converted)."""
  return json.dumps(strict(record), indent=2, default=_json_default, allow_nan=False) + "\n"


def save_json(path: str | os.PathLike, record: Mapping) -> Path:
  """Writes a JSON record atomically. Strict JSON: NaN and ±inf are written as ``null``
  (a run's ``status`` says why a loss is missing); NumPy scalars/arrays and paths converted."""
  text = dumps(record)
  with atomic_path(path) as tmp:
    tmp.write_text(text)
  return Path(path)


def save_text(path: str | os.PathLike, text: str) -> Path:
  with atomic_path(path) as tmp:
    tmp.write_text(text)
  return Path(path)


@functools.cache
def _cpuinfo() -> str:
  """/proc/cpuinfo's text, read once per process ("" where there is none)."""
  try:
    with open("/proc/cpuinfo") as f:
      return f.read()
  except OSError:
    return ""


def _first_cpu(text: str) -> dict[str, str]:
  """The first processor's ``key: value`` lines of a /proc/cpuinfo text."""
  out = {}
  for line in text.splitlines():
    if not line.strip():
      if out:
        break
      continue
    key, _, value = line.partition(":")
    out.setdefault(key.strip(), value.strip())
  return out


def cpu_model() -> str:
  """The CPU's model name (Linux /proc/cpuinfo; ``platform.processor()`` elsewhere)."""
  name = _first_cpu(_cpuinfo()).get("model name")
  return name or platform.processor() or platform.machine()


# (vendor, family) -> [(first model, last model, name)], the first range that holds the model
# wins: the x86 server cores jnst has been measured on or is likely to meet. Virtual machines
# often hide the model name ("AMD EPYC").
_ARCHS = {
    ("AuthenticAMD", 23): [(0x00, 0x2F, "Zen/Zen+"), (0x30, 0xFF, "Zen 2")],
    ("AuthenticAMD", 25): [(0x10, 0x1F, "Zen 4"), (0x60, 0x7F, "Zen 4"), (0xA0, 0xAF, "Zen 4"),
                           (0x00, 0xFF, "Zen 3")],
    ("AuthenticAMD", 26): [(0x00, 0xFF, "Zen 5")],
    ("GenuineIntel", 6): [(85, 85, "Skylake/Cascade Lake"), (106, 106, "Ice Lake"),
                          (108, 108, "Ice Lake"), (143, 143, "Sapphire Rapids"),
                          (207, 207, "Emerald Rapids"), (173, 174, "Granite Rapids")],
}
# The flags that decide which kernels are fast: vector width, bf16 dot products, AMX tiles.
_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def cpu_arch(cpuinfo: str | None = None) -> dict:
  """{"vendor", "family", "model", "arch" (microarchitecture name or None), "flags" (those of
  ``_FLAGS`` present)} of the first CPU in a /proc/cpuinfo text (this machine's by default);
  {} where there is none (not Linux, not x86)."""
  cpu = _first_cpu(_cpuinfo() if cpuinfo is None else cpuinfo)
  try:
    vendor, family, model = cpu["vendor_id"], int(cpu["cpu family"]), int(cpu["model"])
  except (KeyError, ValueError):
    return {}
  arch = next((name for lo, hi, name in _ARCHS.get((vendor, family), ()) if lo <= model <= hi),
              None)
  present = set(cpu.get("flags", "").split())
  return {"vendor": vendor, "family": family, "model": model, "arch": arch,
          "flags": [f for f in _FLAGS if f in present]}


def cpu_label(name: str, arch: Mapping) -> str:
  """One line naming a CPU for tables from its model ``name`` and ``cpu_arch`` dict ({}: the
  name alone): e.g. "AMD EPYC (Zen 5; family 26, model 2)"."""
  if not arch:
    return name
  micro = f"{arch['arch']}; " if arch.get("arch") else ""
  return f"{name} ({micro}family {arch['family']}, model {arch['model']})"


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
          "cpu": cpu_model(), "cpu_arch": cpu_arch(), "cpus": cpu_count()}


def run_record(res, **extra) -> dict:
  """The JSON record written beside every output image; ``res`` is an
  ``optimize.RunResult``. Keys are stable; ``extra`` adds flags, inputs, sizes, ..."""
  return {"versions": versions(),
          "loss_history": [float(v) for v in res.loss_history],
          "evaluations": int(res.evaluations), "steps": int(res.steps), "status": res.status,
          "final_loss": float(res.loss_history[-1]),
          "final_terms": {k: float(v) for k, v in res.terms.items()},
          "seconds": {k: float(v) for k, v in res.seconds.items()}, **extra}
