"""The catalogue of bad inputs (issue 15): the scripts' main functions driven in-process over
a table of bad inputs, one or more rows per failure class, asserting the message, the exit
status and that the output directory holds exactly what it should (usually: nothing new).

absl flags are process-global and the scripts define overlapping ones, so each script's rows
run in one worker process of their own (this file run as a program), in-process there: the
worker resets the flags, calls ``scripts.<name>.run()`` (``jnst.cli.run`` around ``main``)
and records the exit status and standard error. Random weights, 32 px images.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------ the worker


def _worker(rows_file):
  import contextlib
  import importlib
  import io
  import traceback

  from absl import flags

  rows = json.loads(Path(rows_file).read_text())
  module = importlib.import_module(f"scripts.{rows[0]['script']}")
  from jnst import cli
  results = {}
  printer_call = cli.Printer.__call__
  for row in rows:
    flags.FLAGS.unparse_flags()
    saved_env = dict(os.environ)
    os.environ.update(row.get("env", {}))
    for k in row.get("unset", []):
      os.environ.pop(k, None)
    if row.get("interrupt_at"):  # Ctrl-C during the run: after that step's progress.
      def interrupting(self, r, _at=row["interrupt_at"]):
        printer_call(self, r)
        if r.step >= _at:
          raise KeyboardInterrupt
      cli.Printer.__call__ = interrupting
    err, out = io.StringIO(), io.StringIO()
    sys.argv = [f"{row['script']}.py", *row["argv"]]
    code = None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
      try:
        module.run()
      except SystemExit as e:
        code = e.code
      except BaseException:  # noqa: BLE001 — a traceback is exactly what must not happen.
        code, err = "traceback", io.StringIO(traceback.format_exc())
    cli.Printer.__call__ = printer_call
    os.environ.clear()
    os.environ.update(saved_env)
    results[row["id"]] = {"code": code, "stderr": err.getvalue(), "stdout": out.getvalue()}
  print(json.dumps(results))


if __name__ == "__main__":
  sys.path.insert(0, str(REPO))
  _worker(sys.argv[1])
  sys.exit(0)

# ------------------------------------------------------------------ inputs


def _images(d: Path):
  rng = np.random.default_rng(0)
  d.mkdir(parents=True, exist_ok=True)
  Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(d / "content.png")
  Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(d / "style.png")
  Image.new("P", (13000, 13000)).save(d / "huge_palette.png")  # 20 KB file, 169 MP.
  (d / "a_dir.png").mkdir()
  os.mkfifo(d / "fifo.png")
  os.symlink(d / "loop_b.png", d / "loop_a.png")
  os.symlink(d / "loop_a.png", d / "loop_b.png")


def _bad_weights(good: Path, d: Path):
  """Copies of a good weights file, each broken one way."""
  import shutil
  d.mkdir(parents=True, exist_ok=True)
  for name in ("no_mean", "string_data", "nan"):
    shutil.copy(good, d / f"{name}.h5")
  with h5py.File(d / "no_mean.h5", "a") as f:
    del f.attrs["input_mean"]
  with h5py.File(d / "string_data.h5", "a") as f:
    del f["conv1_1/bias"]
    f["conv1_1"].create_dataset("bias", data=np.array([b"x"] * 64))
  with h5py.File(d / "nan.h5", "a") as f:
    b = f["conv3_1/bias"][()]
    b[0] = np.nan
    f["conv3_1/bias"][...] = b


# ------------------------------------------------------------------ the table

IN, OUT = "{IN}", "{OUT}"
COMMON = ["--weights={W}", "--size=32", "--steps=4", "--print_every=2"]
PAIR = [f"--content={IN}/content.png", f"--style={IN}/style.png"]
O = f"--output={OUT}/o.png"

# (id, class, script, argv, exit status, message, files the output dir holds afterwards,
#  extra: {"setup": [dirs to make in OUT], "env": {...}, "interrupt_at": step, "no_weights"})
# COMMON comes first in every experiment script's arguments (absl: a later flag wins).
ROWS = [
    # 1. Half-written results: every output checked before compute.
    ("record_is_dir", 1, "stylize", [*PAIR, O], 2, "o.json: it is a directory",
     ["o.json/"], {"setup": ["o.json"]}),
    ("image_is_dir", 1, "stylize", [*PAIR, O], 2, "o.png: it is a directory",
     ["o.png/"], {"setup": ["o.png"]}),
    ("intermediate_is_dir", 1, "stylize", [*PAIR, O, "--save_every=2"], 2,
     "o_00002.png: it is a directory", ["o_00002.png/"], {"setup": ["o_00002.png"]}),
    ("all_blocks_record_is_dir", 1, "reconstruct",
     [f"--content={IN}/content.png", "--all_blocks", f"--output={OUT}/r.png"], 2,
     "r_relu3_1.json: it is a directory", ["r_relu3_1.json/"], {"setup": ["r_relu3_1.json"]}),
    ("study_grid_is_dir", 1, "seed_study", [*PAIR, f"--output_dir={OUT}", "--num_seeds=2"], 2,
     "grid.png: it is a directory", ["grid.png/"], {"setup": ["grid.png"]}),
    # 2. Resource limits: refused before allocating, naming the flag.
    ("size_over_max", 2, "stylize", [*PAIR, O, "--size=100000"], 2, "--size", [], {}),
    ("style_scale_huge", 2, "stylize", [*PAIR, O, "--style_scale=2000"], 2,
     "lower --style_scale", [], {}),
    ("lbfgs_memory_huge", 2, "stylize", [*PAIR, O, "--lbfgs_memory=1000000000"], 2,
     "lower --lbfgs_memory", [], {}),
    ("little_memory", 2, "stylize", [*PAIR, O, "--size=256"], 2, "is available: lower --size", [],
     {"env": {"JNST_MEMORY_BYTES": "1.7e9"}}),  # Weights + runtime 1.33 GiB, the run 1.64.
    ("huge_png", 2, "stylize", [f"--content={IN}/huge_palette.png", f"--style={IN}/style.png",
                                O], 2, "169 MP), over the 67 MP", [], {}),
    ("num_seeds_huge", 2, "seed_study", [*PAIR, f"--output_dir={OUT}/s",
                                         "--num_seeds=100000000"], 2, "lower --num_seeds", [], {}),
    ("sweep_size_huge", 2, "seed_study", [*PAIR, f"--output_dir={OUT}/s", "--num_seeds=1",
                                          "--sweep=size:32,100000"], 2,
     "over the maximum 8192 px", [], {}),
    # 3. Divergence and float32 overflow.
    ("style_weight_overflows", 3, "stylize", [*PAIR, O, "--style_weight=1e39"], 2,
     "style_weight must be", [], {}),
    ("learning_rate_inf", 3, "stylize", [*PAIR, O, "--learning_rate=inf"], 2,
     "learning_rate must be", [], {}),
    ("tol_nan", 3, "stylize", [*PAIR, O, "--tol=nan"], 2, "tol must be", [], {}),
    ("diverges", 3, "stylize", [*PAIR, O, "--optimizer=adam", "--learning_rate=1e30"], 3,
     "the run diverged", ["o.failed.json"], {}),
    ("study_diverges", 3, "seed_study", [*PAIR, f"--output_dir={OUT}", "--num_seeds=2",
                                         "--optimizer=adam", "--learning_rate=1e30"], 3,
     "2 of 2 runs diverged", ["grid.png", "losses.png", "summary.json"], {}),
    # 4. Malformed weights files.
    ("weights_no_mean", 4, "stylize", [*PAIR, O, "--weights={BAD}/no_mean.h5"], 2,
     "root attribute 'input_mean' is missing", [], {}),
    ("weights_string_data", 4, "stylize", [*PAIR, O, "--weights={BAD}/string_data.h5"], 2,
     "conv1_1/bias holds |S1 data, not floating point", [], {}),
    ("weights_nan", 4, "stylize", [*PAIR, O, "--weights={BAD}/nan.h5"], 2,
     "conv3_1/bias holds NaN", [], {}),
    ("jnst_weights_dir", 4, "stylize", [*PAIR, O], 2, "is a directory: point it at a weights",
     ["wdir/"], {"setup": ["wdir"], "env": {"JNST_WEIGHTS": f"{OUT}/wdir"}, "no_weights": True}),
    ("keras_h5_missing", 4, "fetch_weights", [f"--keras_h5={IN}/none.h5",
                                              f"--output={OUT}/w.h5"], 2,
     "Keras weights file", [], {}),
    ("fetch_output_dir", 4, "fetch_weights", [f"--output={OUT}/wdir", "--force"], 2,
     "wdir: it is a directory", ["wdir/"], {"setup": ["wdir"]}),
    # 5. Silent acceptance.
    ("empty_style", 5, "stylize", [f"--content={IN}/content.png", "--style=", O], 2,
     "--style= is empty", [], {}),
    ("empty_output", 5, "stylize", [*PAIR, "--output="], 2, "--output= is empty", [], {}),
    ("empty_output_dir", 5, "seed_study", [*PAIR, "--output_dir="], 2, "--output_dir= is empty",
     [], {}),
    ("seed_too_big", 5, "stylize", [*PAIR, O, f"--seed={2**32}"], 2, "--seed", [], {}),
    ("content_is_dir", 5, "stylize", [f"--content={IN}/a_dir.png", f"--style={IN}/style.png",
                                      O], 2, "a_dir.png is a directory", [], {}),
    ("style_is_fifo", 5, "stylize", [f"--content={IN}/content.png", f"--style={IN}/fifo.png",
                                     O], 2, "fifo.png is a FIFO", [], {}),
    ("content_symlink_loop", 5, "stylize", [f"--content={IN}/loop_a.png",
                                            f"--style={IN}/style.png", O], 2,
     "loop_a.png is a symlink loop", [], {}),
    ("study_seed_range", 5, "seed_study", [*PAIR, f"--output_dir={OUT}/s", "--num_seeds=2",
                                           f"--first_seed={2**32 - 1}"], 2, "over 4294967295",
     [], {}),
    # 6. Leftovers: no directories made by failing runs; Ctrl-C.
    ("no_empty_dirs", 6, "stylize", [f"--content={IN}/missing.png", f"--style={IN}/style.png",
                                     f"--output={OUT}/new/sub/o.png"], 2, "does not exist", [], {}),
    ("no_empty_dirs_synthesize", 6, "synthesize", [f"--style={IN}/missing.png",
                                                   f"--output={OUT}/new/t.png"], 2,
     "does not exist", [], {}),
    ("no_empty_dirs_benchmark", 6, "benchmark", ["--quick", "--sizes=100000",
                                                 f"--output_dir={OUT}/new/b"], 2,
     "over the maximum", [], {}),
    ("ctrl_c", 6, "stylize", [*PAIR, f"--output={OUT}/new/o.png"], 130,
     "interrupted; nothing written", [], {"interrupt_at": 2}),
    ("ctrl_c_snapshots", 6, "stylize", [*PAIR, O, "--save_every=2"], 130,
     "interrupted; intermediate files are in", ["o_00002.png", "o.resume.npz"],
     {"interrupt_at": 2}),
]

@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, random_weights_file):
  """Runs every row (one worker per script) and returns {id: (result, output dir)}."""
  base = tmp_path_factory.mktemp("bad_inputs")
  inputs, bad = base / "in", base / "bad_weights"
  _images(inputs)
  _bad_weights(Path(random_weights_file), bad)
  by_script, dirs = {}, {}
  for rid, _, script, argv, _, _, _, extra in ROWS:
    out = base / "out" / rid
    out.mkdir(parents=True)
    for d in extra.get("setup", []):
      (out / d).mkdir()
    fill = lambda s: (s.replace(IN, str(inputs)).replace(OUT, str(out))
                      .replace("{W}", str(random_weights_file)).replace("{BAD}", str(bad)))
    args = [fill(a) for a in argv]
    if script not in ("fetch_weights", "benchmark"):  # A row's own --weights comes later: wins.
      args = [fill(a) for a in COMMON if not (extra.get("no_weights") and "weights" in a)] + args
    by_script.setdefault(script, []).append({
        "id": rid, "script": script, "argv": args, "interrupt_at": extra.get("interrupt_at"),
        "env": {k: fill(v) for k, v in extra.get("env", {}).items()},
        "unset": ["JNST_WEIGHTS"] if "JNST_WEIGHTS" not in extra.get("env", {}) else []})
    dirs[rid] = out
  results = {}
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
  for script, rows in by_script.items():
    rows_file = base / f"{script}.json"
    rows_file.write_text(json.dumps(rows))
    p = subprocess.run([sys.executable, __file__, str(rows_file)], capture_output=True,
                       text=True, env=env, cwd=REPO, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    results.update(json.loads(p.stdout.strip().splitlines()[-1]))
  return {rid: (results[rid], dirs[rid]) for rid in dirs}


def _listing(d: Path) -> list[str]:
  return sorted(str(p.relative_to(d)) + ("/" if p.is_dir() else "") for p in d.rglob("*"))


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(catalogue, row):
  rid, _, _, _, status, message, left, _ = row
  res, out = catalogue[rid]
  err = res["stderr"]
  assert res["code"] == status, (res["code"], err[-2000:])
  assert "Traceback" not in err, err
  lines = [l for l in err.strip().splitlines() if not l.startswith("warning:")]
  assert len(lines) == 1, err
  assert message in lines[0], lines[0]
  assert lines[0].startswith("interrupted;" if status == 130 else "error:"), lines[0]
  assert _listing(out) == sorted(left), _listing(out)


def test_diverged_record_is_strict_json(catalogue):
  """A diverged run's record says what diverged and when, in strict JSON (no NaN)."""
  _, out = catalogue["diverges"]
  text = (out / "o.failed.json").read_text()
  rec = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in the record"))
  assert rec["status"] == "nonfinite"
  d = rec["diverged"]
  assert d["step"] >= 1 and d["last_finite_step"] == d["step"] - 1 and "loss" in d["what"]


def test_interrupted_run_resumes(catalogue, random_weights_file):
  """The snapshot a Ctrl-C left behind (step 2 of 4) is resumed to the end: the image and its
  record appear, the record says where it resumed, the snapshot is gone."""
  _, out = catalogue["ctrl_c_snapshots"]
  inputs = out.parent.parent / "in"
  args = [f"--weights={random_weights_file}", "--size=32", "--steps=4", "--print_every=2",
          f"--content={inputs}/content.png", f"--style={inputs}/style.png",
          f"--output={out}/o.png", "--save_every=2", "--resume"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
  env.pop("JNST_WEIGHTS", None)
  p = subprocess.run([sys.executable, str(REPO / "scripts" / "stylize.py"), *args],
                     capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
  assert p.returncode == 0, p.stderr
  assert "resuming from step 2" in p.stdout and "step     4/4" in p.stdout
  rec = json.loads((out / "o.json").read_text())
  assert rec["resumed_from"]["step"] == 2 and rec["steps"] == 2
  assert _listing(out) == ["o.json", "o.png", "o_00002.png"]
