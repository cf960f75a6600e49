"""scripts/seed_study.py end to end in subprocesses (random weights, tiny images): the files,
summary.json, a seed reproduced by the single-run script, sweeps, and one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def run_script(name, *args):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, str(REPO / "scripts" / f"{name}.py"), *args],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


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
  names = sorted(f.name for f in out.iterdir())
  assert names == ["grid.png", "losses.png", "seed_0002.png", "seed_0003.png", "seed_0004.png",
                   "summary.json"]
  s = json.loads((out / "summary.json").read_text())
  assert s["seeds"] == [2, 3, 4] and len(s["final_loss"]) == 3
  assert s["evaluations"] == [4, 4, 4] and len(s["loss_history"][0]) == 4
  assert set(s["terms"]) == {"content", "style", "tv"}
  assert s["images_per_second"] > 0 and {"compile", "run", "total", "wall"} <= set(s["seconds"])
  assert s["devices"] and s["batches"] == [{"batch_size": 2, "count": 2}]
  div = s["diversity"]
  assert div["pixel"]["pairwise"]["count"] == 3 and div["pixel"]["pairwise"]["mean"] > 0
  assert div["features"]["layers"] == ["relu1_1", "relu2_1"] and div["reference"] == "content"
  assert len(div["pixel"]["to_reference"]["per_image"]) == 3
  # A single run of the matching script with --seed=3 reproduces seed_0003.png.
  p = run_script("reconstruct", *common[:4], "--layer=relu2_1", f"--content={d/'c.png'}",
                 "--seed=3", f"--output={d/'single.png'}")
  assert p.returncode == 0, p.stderr
  assert np.abs(pixels(out / "seed_0003.png") - pixels(d / "single.png")).max() <= 1
  assert Image.open(out / "grid.png").size[0] > 128


def test_weight_sweep_is_vmapped_and_named_by_value(setup):
  d, common = setup
  out = d / "alpha_beta"
  p = run_script("seed_study", *common, "--experiment=stylize", f"--content={d/'c.png'}",
                 f"--style={d/'s.png'}", "--content_layers=relu2_1",
                 "--style_layers=relu1_1,relu2_1", "--num_seeds=2", "--seeds_per_batch=10",
                 "--sweep=style_weight:1e1,1e4", "--optimizer=adam", f"--output_dir={out}")
  assert p.returncode == 0, p.stderr
  for v in ("1e1", "1e4"):
    for seed in (0, 1):
      assert (out / f"style_weight_{v}_seed_{seed:04d}.png").is_file()
  s = json.loads((out / "summary.json").read_text())
  assert s["sweep"] == {"flag": "style_weight", "values": ["1e1", "1e4"], "mode": "vmapped"}
  assert s["values"] == ["1e1", "1e1", "1e4", "1e4"] and s["seeds"] == [0, 1, 0, 1]
  assert s["batches"] == [{"batch_size": 4, "count": 1}]  # seeds_per_batch > N is fine.
  assert set(s["diversity_per_value"]) == {"1e1", "1e4"}
  assert s["labels"][0] == "style_weight=1e1 seed 0"


def test_graph_sweep_runs_one_after_another(setup):
  d, common = setup
  out = d / "tex"
  p = run_script("seed_study", *common, "--experiment=synthesize", f"--style={d/'s.png'}",
                 "--num_seeds=1", "--sweep=style_layers:relu1_1,relu1_1+relu2_1",
                 f"--output_dir={out}")
  assert p.returncode == 0, p.stderr
  assert (out / "style_layers_relu1_1.png").is_file()
  assert (out / "style_layers_relu1_1+relu2_1.png").is_file()
  s = json.loads((out / "summary.json").read_text())
  assert s["sweep"]["mode"] == "sequential" and s["diversity"]["reference"] == "style"
  assert "style_layers=relu1_1 batch 1/1" in p.stdout


@pytest.mark.parametrize("args,message", [
    (["--num_seeds=0"], "--num_seeds must be at least 1"),
    (["--first_seed=-1"], "--first_seed must be >= 0"),
    (["--output_dir={d}/afile"], "is a file"),
    (["--output_dir={d}/afile/sub"], "cannot write to"),
    (["--sweep=layer:relu1_1"], "does not apply to --experiment=stylize"),
    (["--sweep=style_weight:1,-2"], "finite numbers >= 0"),
    (["--seed=3"], "--first_seed and --num_seeds"),
    (["--experiment=reconstruct", "--content={d}/missing.png"], "does not exist"),
    (["--experiment=reconstruct", "--sweep=layer:relu1_1,relu9_9"], "unknown layer name"),
])
def test_bad_input_is_one_line_exit_2(setup, args, message):
  d, common = setup
  (d / "afile").write_text("a file where a directory should be")
  args = [a.format(d=d) for a in args]
  p = run_script("seed_study", *common, f"--output_dir={d/'out'}", *args)
  assert p.returncode == 2, (p.returncode, p.stderr)
  err = p.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error:") and message in err[0], p.stderr
  assert not (d / "out").exists()
  assert not [f for f in d.iterdir() if ".tmp" in f.name]
