"""scripts/seed_study.py as a command (random weights, tiny images, subprocesses): one run end
to end (files, summary.json, progress lines, a seed reproduced by the single-run script) and
bad input as a one-line error with exit status 2. The study logic itself: test_study.py."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import script_runner

REPO = Path(__file__).resolve().parent.parent


def run_script(name, *args, env=None):  # In a reused worker process: tests/script_runner.py.
  return script_runner.run_script(name, *args, env=env)


def NO_FETCH(d):  # An empty download cache and an unreachable package index.
  return {"JNST_CACHE": str(d / "empty_cache"), "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
          "PIP_RETRIES": "0", "PIP_TIMEOUT": "2", "PIP_NO_CACHE_DIR": "1"}


@pytest.fixture()
def setup(tmp_path, random_weights_file):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "c.png")
  Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(tmp_path / "s.png")
  common = [f"--weights={random_weights_file}", "--size=32", "--steps=3", "--print_every=3",
            "--diversity_layers=relu1_1,relu2_1"]
  return tmp_path, common


def pixels(path):
  return np.asarray(Image.open(path), np.int32)


def test_reconstruct_seeds_match_single_script(setup):
  d, common = setup
  out = d / "study"
  p = run_script("seed_study", *common, "--experiment=reconstruct", "--layer=relu2_1",
                 f"--content={d/'c.png'}", "--num_seeds=3", "--first_seed=2",
                 "--seeds_per_batch=2", f"--output_dir={out}")
  assert p.returncode == 0, p.stderr
  assert "batch 2/2 step     3/3" in p.stdout and "eta" in p.stdout
  assert "wrote 3 images" in p.stdout
  names = sorted(f.name for f in out.iterdir())
  assert names == ["grid.png", "losses.png", "seed_0002.png", "seed_0003.png", "seed_0004.png",
                   "summary.json"]
  s = json.loads((out / "summary.json").read_text())
  assert s["seeds"] == [2, 3, 4] and len(s["final_loss"]) == 3
  assert s["evaluations"] == [4, 4, 4] and len(s["loss_history"][0]) == 4
  assert set(s["terms"]) == {"content"}  # A reconstruction has only a content term.
  assert s["images_per_second"] > 0 and {"compile", "run", "total"} <= set(s["seconds"])
  assert s["devices"] and s["batches"] == [{"batch_size": 2, "count": 2, "choice": "2 (given)"}]
  assert s["flags"]["compute_dtype"] == "float32" and s["flags"]["loop"] == "scan"
  assert s["inputs"] == {"content": str(d / "c.png")} and s["versions"]
  assert s["image_size"]["content"] == [27, 32] and s["image_size"]["output"] == [[27, 32]] * 3
  div = s["diversity"]
  assert div["pixel"]["pairwise"]["count"] == 3 and div["pixel"]["pairwise"]["mean"] > 0
  assert div["features"]["layers"] == ["relu1_1", "relu2_1"] and div["reference"] == "content"
  assert len(div["pixel"]["to_reference"]["per_image"]) == 3
  # A single run of the matching script with --seed=3 reproduces seed_0003.png.
  p = run_script("reconstruct", *common[:4], "--layer=relu2_1", f"--content={d/'c.png'}",
                 "--seed=3", f"--output={d/'single.png'}")
  assert p.returncode == 0, p.stderr
  assert np.abs(pixels(out / "seed_0003.png") - pixels(d / "single.png")).max() <= 1
  assert np.abs(pixels(out / "seed_0002.png") - pixels(d / "single.png")).max() > 1
  assert Image.open(out / "grid.png").size[0] > 128


@pytest.mark.parametrize("args,message", [
    (["--num_seeds=0"], "--num_seeds=0: 0 is not a positive integer"),  # absl's bounds.
    (["--first_seed=-1"], "--first_seed=-1: -1 is not a non-negative integer"),
    (["--seeds_per_batch=some"], "--seeds_per_batch must be auto or an integer >= 0"),
    (["--seeds_per_batch=-1"], "--seeds_per_batch must be auto or an integer >= 0"),
    (["--loop=auto"], "--loop"),
    (["--compute_dtype=float64"], "--compute_dtype"),
    (["--dtype=float32"], "dtype"),  # Renamed --compute_dtype.
    (["--output_dir={d}/afile"], "is a file"),
    (["--output_dir={d}/afile/sub"], "cannot write to"),
    (["--sweep=layer:relu1_1"], "does not apply to --experiment=stylize"),
    (["--sweep=style_weight:1,-2"], "finite numbers >= 0"),
    (["--seed=3"], "--first_seed and --num_seeds"),
    (["--init={d}/missing.png"], "is neither content, noise, style nor an existing image file"),
    (["--diversity_layers=relu9_9"], "unknown vgg19 layer"),
    (["--experiment=reconstruct", "--content={d}/missing.png"], "does not exist"),
    (["--experiment=reconstruct", "--sweep=layer:relu1_1,relu9_9"],
     "'relu9_9' is not a valid --layer: unknown vgg19 layer"),
])
def test_bad_input_is_one_line_exit_2(setup, args, message):
  d, common = setup
  (d / "afile").write_text("a file where a directory should be")
  args = [a.format(d=d) for a in args]
  # The demo pair is the default input: bad flags must fail before it is fetched (an empty
  # cache, no network: a fetch would print pip's progress and fail).
  p = run_script("seed_study", *common, f"--output_dir={d/'out'}", *args, env=NO_FETCH(d))
  assert p.returncode == 2, (p.returncode, p.stderr)
  err = p.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error:") and message in err[0], p.stderr
  assert not (d / "out").exists()
  assert not [f for f in d.iterdir() if ".tmp" in f.name]
