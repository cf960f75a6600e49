"""--style_loss, --color_transfer and the region masks through the scripts (subprocesses,
random weights, tiny images): a guided run end to end, and bad input as one line, exit 2."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import script_runner

REPO = Path(__file__).resolve().parent.parent


def run_script(name, *args):  # In a reused worker process: tests/script_runner.py.
  return script_runner.run_script(name, *args)


def save_mask(path, h, w, split, colours=((255, 0, 0), (0, 0, 255))):
  m = np.zeros((h, w, 3), np.uint8)
  m[:] = colours[0]
  m[:, split:] = colours[1]
  Image.fromarray(m).save(path)


@pytest.fixture()
def setup(tmp_path, random_weights_file):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "c.png")
  Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(tmp_path / "s.png")
  save_mask(tmp_path / "cm.png", 40, 48, 20)
  save_mask(tmp_path / "sm.png", 30, 30, 10)
  save_mask(tmp_path / "small.png", 20, 24, 10)  # Half the content's size.
  save_mask(tmp_path / "green.png", 30, 30, 10, ((255, 0, 0), (0, 255, 0)))
  common = [f"--weights={random_weights_file}", "--size=32", "--steps=2", "--print_every=2",
            f"--content={tmp_path/'c.png'}", f"--style={tmp_path/'s.png'}"]
  return tmp_path, common


def test_guided_wasserstein_with_histogram_colours(setup):
  d, common = setup
  out = d / "out.png"
  p = run_script("stylize", *common, "--style_loss=wasserstein", "--color_transfer=histogram",
                 f"--content_mask={d/'cm.png'}", f"--style_mask={d/'sm.png'}",
                 "--style_layers=relu1_1,relu2_1", f"--output={out}")
  assert p.returncode == 0, p.stderr
  assert Image.open(out).size == (32, 27)
  rec = json.loads(out.with_suffix(".json").read_text())
  assert rec["flags"]["style_loss"] == "wasserstein"
  assert rec["flags"]["color_transfer"] == "histogram"
  assert rec["flags"]["content_mask"] == str(d / "cm.png")
  assert np.isfinite(rec["loss_history"]).all()


@pytest.mark.parametrize("args,message", [
    (["--style_loss=w3"], "--style_loss=w3: value should be one of <gram|wasserstein|mean_std>"),
    (["--content_mask={d}/small.png", "--style_mask={d}/sm.png"],
     "small.png is 24x20 px but its image"),
    (["--content_mask={d}/cm.png", "--style_mask={d}/green.png"],
     "mask colours must match: #0000ff only in the content mask; #00ff00 only in the style"),
    (["--content_mask={d}/cm.png"], "0 --style_mask files for 1 --style images"),
    (["--style_mask={d}/sm.png"], "--style_mask needs --content_mask too"),
    (["--content_mask={d}/cm.png", "--style_mask={d}/none.png"], "none.png does not exist"),
    (["--original_colors", "--color_transfer=histogram"], "cannot be combined"),
    (["--color_transfer=sepia"], "--color_transfer=sepia: value should be one of"),
])
def test_bad_input_is_one_line_exit_2(setup, args, message):
  d, common = setup
  p = run_script("stylize", *common, f"--output={d/'o.png'}", *[a.format(d=d) for a in args])
  assert p.returncode == 2, (p.returncode, p.stderr)
  err = p.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error:") and message in err[0], p.stderr
  assert "Traceback" not in p.stderr and not (d / "o.png").exists()


def test_seed_study_rejects_bad_style_loss_sweep(setup):
  d, common = setup
  p = run_script("seed_study", *common, "--sweep=style_loss:gram,w9", f"--output_dir={d/'st'}")
  assert p.returncode == 2 and "'w9' is not a valid --style_loss" in p.stderr, p.stderr
  assert not (d / "st").exists()
