"""The scripts end to end in subprocesses (random weights, tiny images): outputs, the JSON
record's keys, and one-line errors with exit status 2 for bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import script_runner

REPO = Path(__file__).resolve().parent.parent


def make_images(d: Path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(d / "content.png")
  Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(d / "style.jpg")
  Image.fromarray(rng.integers(0, 255, (10, 40, 3), dtype=np.uint8)).save(d / "tiny.png")
  (d / "notimage.png").write_text("hello")
  data = (d / "style.jpg").read_bytes()
  (d / "truncated.jpg").write_bytes(data[: len(data) // 3])


def run_script(name, *args, env_extra=None, fresh=False):
  """The script in a reused worker process (tests/script_runner.py); ``fresh``: as a program."""
  return script_runner.run_script(name, *args, env=env_extra, fresh=fresh)


@pytest.fixture()
def setup(tmp_path, random_weights_file):
  make_images(tmp_path)
  common = [f"--weights={random_weights_file}", "--size=32", "--steps=4", "--print_every=2"]
  return tmp_path, common


def test_stylize_writes_image_and_record(setup):
  d, common = setup
  out = d / "out" / "result.png"
  p = run_script("stylize", *common, f"--content={d/'content.png'}", f"--style={d/'style.jpg'}",
                 f"--output={out}", "--content_layers=relu2_1", "--style_layers=relu1_1,relu2_1",
                 "--save_every=2", fresh=True)  # Once as a program: `python scripts/x.py`.
  assert p.returncode == 0, p.stderr
  assert "step     2/4" in p.stdout and "eta" in p.stdout
  assert Image.open(out).size == (32, 27)
  assert (d / "out" / "result_00002.png").is_file()  # Intermediate image.
  rec = json.loads(out.with_suffix(".json").read_text())
  for key in ("flags", "versions", "loss_history", "evaluations", "seconds", "image_size"):
    assert key in rec, key
  assert rec["evaluations"] == 5 and len(rec["loss_history"]) == 5
  assert {"compile", "run"} <= set(rec["seconds"]) and rec["flags"]["steps"] == 4
  assert {"jax", "flax", "optax"} <= set(rec["versions"])
  assert not [p for p in (d / "out").iterdir() if ".tmp" in p.name]


def test_reconstruct_all_blocks_and_synthesize(setup):
  d, common = setup
  p = run_script("reconstruct", *common, f"--content={d/'content.png'}", "--all_blocks",
                 f"--output={d/'rec.png'}", "--steps=2")
  assert p.returncode == 0, p.stderr
  for layer in ("relu1_1", "relu3_1", "relu5_1"):
    assert (d / f"rec_{layer}.png").is_file() and (d / f"rec_{layer}.json").is_file()
  p = run_script("synthesize", *common, f"--style={d/'style.jpg'}", "--style_layers=block1",
                 f"--output={d/'tex.png'}")
  assert p.returncode == 0, p.stderr
  assert Image.open(d / "tex.png").size == (32, 32)


@pytest.mark.parametrize("args,message", [
    (["--content={d}/missing.png"], "does not exist"),
    (["--content={d}/notimage.png"], "not a readable image"),
    (["--style={d}/truncated.jpg"], "not a readable image"),
    (["--content={d}/tiny.png"], "smaller than 16 px"),
    (["--style_layers=relu1_1,relu9_9"], "unknown vgg19 layer name(s) 'relu9_9'"),
    (["--style_blend_weights=1,2"], "2 style blend weights for 1 style images"),
    (["--style_weight=-1"], "style_weight must be"),
    (["--content_layer_weights=-2"], "content_layer_weights must be finite numbers >= 0"),
    (["--content_layer_weights=1,1"], "2 content layer weights for 1 content layers"),
    (["--tv_weight=nan"], "tv_weight must be a finite number"),
    (["--seed=-1"], "seed"),
    (["--init={d}/nothere.png"], "neither content, noise, style nor an existing image"),
    (["--backbone=vgg16"], "holds vgg19 weights, not vgg16: pass --backbone=vgg19"),
    (["--weights={d}/none.h5"], "does not exist"),
    (["--compute_dtype=float64"], "compute_dtype"),
    (["--output={d}/notadir/x.png"], "cannot write to"),
    (["--steps=abc"], "steps"),
    (["--optimizer=sgd"], "optimizer"),
])
def test_bad_input_is_one_line_exit_2(setup, args, message):
  d, common = setup
  (d / "notadir").write_text("a file where a directory should be")
  args = [a.format(d=d) for a in args]
  base = [f"--content={d/'content.png'}", f"--style={d/'style.jpg'}", f"--output={d/'o.png'}"]
  p = run_script("stylize", *common, *base, *args)
  assert p.returncode == 2, (p.returncode, p.stderr)
  err = p.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error:") and message in err[0], p.stderr
  assert "Traceback" not in p.stderr
  assert not (d / "o.png").exists() and not (d / "o.json").exists()
  assert not [f for f in d.iterdir() if ".tmp" in f.name]


def test_fetch_weights_bad_local_file(tmp_path):
  (tmp_path / "bad.h5").write_text("not hdf5")
  p = run_script("fetch_weights", f"--keras_h5={tmp_path/'bad.h5'}",
                 f"--output={tmp_path/'w.h5'}", "--force")
  assert p.returncode == 2 and p.stderr.strip().startswith("error:") and "HDF5" in p.stderr
  assert not (tmp_path / "w.h5").exists()


@pytest.mark.parametrize("command", ["jnst-stylize", "jnst-reconstruct", "jnst-synthesize",
                                     "jnst-seed-study", "jnst-benchmark", "jnst-fetch-weights"])
def test_console_entry_points_are_installed(command):
  exe = Path(sys.executable).parent / command
  assert exe.is_file(), f"{command} missing: reinstall with pip install -e ."
  p = subprocess.run([str(exe), "--helpshort"], capture_output=True, text=True, timeout=120,
                     env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert "--weights" in p.stdout or "--output" in p.stdout, (p.stdout, p.stderr)  # Our flags listed.
  assert "Traceback" not in p.stderr
