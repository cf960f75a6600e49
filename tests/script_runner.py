"""Runs ``scripts/<name>.py`` for the tests without paying a fresh Python + JAX start-up (and
the script's compiles) on every call: one long-lived worker process per script (absl flags
are process-global and the scripts define overlapping flags with different defaults, so two
scripts never share a process). The worker resets the flags, sets the environment, working
directory and ``sys.argv`` the call asks for, calls ``scripts.<name>.run()`` (``jnst.cli.run``
around ``main``) and captures file descriptors 1 and 2 (so C-level output counts, as it would
in a subprocess). A ``SystemExit`` becomes the exit status (``sys.exit("msg")``: the message
on stderr and status 1, as Python does), any other exception a traceback on stderr and status
1. The answer is a ``subprocess.CompletedProcess``, as ``subprocess.run(..., text=True)``
gives.

Environment variables read when jax or jnst is imported (``XLA_*``, ``JAX_*``,
``JNST_COMPILE_CACHE``, ``PYTHON*``) cannot change inside a process: a call whose values of
them differ gets a worker of its own. Calls that start ``jax.distributed`` (``--distributed``
or ``JNST_DISTRIBUTED=1``) run as real subprocesses, as does any call given ``fresh=True``.

Workers are per pytest process (xdist-safe), at most ``MAX_WORKERS`` live (the least recently
used is stopped), and end with the session. Tests that are about the program itself (console
entry points, ``python scripts/x.py`` as a program, tracebacks at start-up) use
``subprocess`` directly.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_WORKERS = 4
_IMPORT_TIME = ("XLA_", "JAX_", "TF_", "PYTHON", "JNST_COMPILE_CACHE", "LD_", "OMP_", "MKL_")


def _import_time_env(env: dict) -> tuple:
  return tuple(sorted((k, v) for k, v in env.items() if k.startswith(_IMPORT_TIME)))


class _Worker:

  def __init__(self, name: str, env: dict):
    self.name = name
    self.log = tempfile.TemporaryFile()  # The worker's own output, outside any call.
    self.proc = subprocess.Popen([sys.executable, __file__, name], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=self.log, env=env, cwd=REPO,
                                 text=True, bufsize=1)

  def call(self, argv, env, cwd, timeout):
    self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "cwd": str(cwd)}) + "\n")
    self.proc.stdin.flush()
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(self.proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
      self.close()
      raise subprocess.TimeoutExpired([self.name, *argv], timeout)
    line = self.proc.stdout.readline()
    if not line:
      code = self.proc.wait()
      self.log.seek(0)
      raise RuntimeError(f"the {self.name} worker died (status {code}) running {argv}:\n"
                         + self.log.read().decode("utf-8", "replace")[-3000:])
    return json.loads(line)

  def close(self):
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()
    self.log.close()


_WORKERS: OrderedDict = OrderedDict()
WORKER_CPU_S = [0.0]  # CPU seconds the workers spent in calls (for measuring the suite).


@atexit.register
def close_all():
  while _WORKERS:
    _WORKERS.popitem()[1].close()


def run_script(name: str, *args, env: dict | None = None, cwd=REPO, timeout: float = 300,
               fresh: bool = False) -> subprocess.CompletedProcess:
  """``python scripts/<name>.py *args`` with ``os.environ`` + JAX_PLATFORMS=cpu + this
  checkout on PYTHONPATH + ``env``: in a reused worker (see the module docstring) unless
  ``fresh`` or it starts jax.distributed."""
  args = [str(a) for a in args]
  full = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO), **(env or {})}
  if fresh or full.get("JNST_DISTRIBUTED") == "1" or any(
      a == "--distributed" or a.startswith("--distributed=t") for a in args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / f"{name}.py"), *args],
                          capture_output=True, text=True, env=full, cwd=cwd, timeout=timeout)
  key = (name, _import_time_env(full))
  worker = _WORKERS.pop(key, None)
  if worker is None or worker.proc.poll() is not None:
    while len(_WORKERS) >= MAX_WORKERS:
      _WORKERS.popitem(last=False)[1].close()
    worker = _Worker(name, full)
  _WORKERS[key] = worker
  got = worker.call(args, full, cwd, timeout)
  WORKER_CPU_S[0] += got["cpu_s"]
  return subprocess.CompletedProcess([name, *args], got["code"], got["stdout"], got["stderr"])


# ------------------------------------------------------------------ the worker


def _serve(name: str):
  import importlib
  import resource
  import traceback

  reply = os.fdopen(os.dup(1), "w", buffering=1)  # Answers go here only.
  os.dup2(2, 1)  # Output outside a call (import-time warnings) goes to the worker's log.
  requests = sys.stdin
  devnull = os.open(os.devnull, os.O_RDONLY)
  sys.path.insert(0, str(REPO))
  from absl import flags
  module = importlib.import_module(f"scripts.{name}")
  script = str(REPO / "scripts" / f"{name}.py")
  def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

  for line in requests:
    req = json.loads(line)
    cpu0 = cpu()
    flags.FLAGS.unparse_flags()
    os.environ.clear()
    os.environ.update(req["env"])
    os.chdir(req["cwd"])
    sys.argv = [script, *req["argv"]]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
      sys.stdout.flush()
      sys.stderr.flush()
      saved = [os.dup(0), os.dup(1), os.dup(2)]
      os.dup2(devnull, 0)
      os.dup2(out.fileno(), 1)
      os.dup2(err.fileno(), 2)
      code = 0
      try:
        module.run()
      except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
          code = e.code or 0
        else:
          print(e.code, file=sys.stderr)
          code = 1
      except BaseException:  # noqa: BLE001 — what an uncaught exception does to a process.
        traceback.print_exc()
        code = 1
      finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, s in enumerate(saved):
          os.dup2(s, fd)
          os.close(s)
      texts = []
      for f in (out, err):
        f.seek(0)
        texts.append(f.read().decode("utf-8", "replace"))
    reply.write(json.dumps({"code": code, "stdout": texts[0], "stderr": texts[1],
                            "cpu_s": cpu() - cpu0}) + "\n")


if __name__ == "__main__":
  _serve(sys.argv[1])
