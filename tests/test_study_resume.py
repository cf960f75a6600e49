"""Resuming an interrupted seed study (scripts/seed_study.py --resume; jnst.snapshots' study
state, jnst.study.run's and jnst.batched.run_seeds' hooks): a study stopped by Ctrl-C in the
second batch of its second sweep variant and resumed (the first variant and the finished
batch reused) gives the same members and summary as one run straight through;
other flags or no state are refused with one line (exit 2). Random weights, 32 px."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

# Runs seed_study in-process with the progress callback raising KeyboardInterrupt (as a
# Ctrl-C would) at the first report of variant sys.argv[1]'s batch sys.argv[2] (0-based).
DRIVER = """
import sys
sys.path.insert(0, {repo!r})
from jnst import cli
import scripts.seed_study as script
run, batch, call = int(sys.argv[1]), int(sys.argv[2]), cli.Printer.__call__
def interrupting(self, r):
  call(self, r)
  if (r.run, r.batch) >= (run, batch):
    raise KeyboardInterrupt
if run >= 0:
  cli.Printer.__call__ = interrupting
sys.argv = ["seed_study.py"] + sys.argv[3:]
script.run()
"""


def study(*args, stop_at=(-1, -1)):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
  return subprocess.run([sys.executable, "-c", DRIVER.format(repo=str(REPO)), *map(str, stop_at),
                         *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, random_weights_file):
  """One study straight through ("full"), and the same study ("resumed") interrupted in the
  second batch of its second variant: (dir, flags, its output dir, that run, its listing)."""
  d = tmp_path_factory.mktemp("resume")
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(d / "c.png")
  args = [f"--weights={random_weights_file}", "--size=32", "--steps=3", "--print_every=1",
          "--experiment=reconstruct", f"--content={d / 'c.png'}", "--num_seeds=2",
          "--sweep=layer:relu1_1,relu2_1,relu3_1", "--seeds_per_batch=1"]
  full = study(*args, f"--output_dir={d / 'full'}")
  assert full.returncode == 0, full.stderr
  out = d / "resumed"
  stopped = study(*args, f"--output_dir={out}", stop_at=(1, 1))
  listing = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
  return d, args, out, stopped, listing


def test_interrupted_study_keeps_finished_variants_and_batches(runs):
  d, args, out, stopped, listing = runs
  assert stopped.returncode == 130, stopped.stderr
  line = stopped.stderr.strip().splitlines()[-1]
  assert line.startswith("interrupted; intermediate files are in") and ".resume" in line, line
  assert listing == [".resume", ".resume/batch_001_000.json", ".resume/batch_001_000.npz",
                     ".resume/state.json", ".resume/variant_000.json",
                     ".resume/variant_000.npz"]


def test_resume_with_other_flags_is_refused(runs):
  d, args, out, *_ = runs
  for changed, flag in ((["--steps=4"], "--steps"), (["--first_seed=1"], "--first_seed"),
                        (["--layer=relu2_1"], "--layer")):
    p = study(*[a for a in args if not a.startswith(changed[0].split("=")[0] + "=")],
              *changed, f"--output_dir={out}", "--resume")
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the study in") and flag in lines[0], \
        lines
  p = study(*args, f"--output_dir={d / 'empty'}", "--resume")
  assert p.returncode == 2 and p.stderr.strip().startswith("error: nothing to resume in"), \
      p.stderr


def test_resumed_study_matches_uninterrupted(runs):
  d, args, out, *_ = runs
  p = study(*args, f"--output_dir={out}", "--resume")
  assert p.returncode == 0, p.stderr
  assert "resuming: 1 of 3 variant(s) done, 1 batch(es) of the next" in p.stdout
  assert "layer=relu1_1" not in p.stdout  # Only the rest ran.
  assert "layer=relu2_1 batch 1/2" not in p.stdout and "layer=relu2_1 batch 2/2" in p.stdout
  assert "layer=relu3_1 batch 1/2" in p.stdout
  full = d / "full"
  names = sorted(f.name for f in full.iterdir())
  assert sorted(f.name for f in out.iterdir()) == names  # The .resume state is gone.
  assert not (out / ".resume").exists()
  for name in names:
    if name.startswith("layer_"):
      a, b = (np.asarray(Image.open(x / name), np.int32) for x in (full, out))
      assert np.array_equal(a, b), name
  s, r = (json.loads((x / "summary.json").read_text()) for x in (full, out))
  for key in ("seeds", "files", "labels", "values", "final_loss", "loss_history",
              "eval_history", "terms", "status", "evaluations", "steps", "diversity",
              "diversity_per_value", "batches", "image_size", "sweep"):
    assert s[key] == r[key], key
  assert r["flags"]["resume"] is True
