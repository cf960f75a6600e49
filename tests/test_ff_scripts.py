"""scripts/train_feedforward.py and scripts/stylize_fast.py end to end in subprocesses (random
VGG weights, 32 px, a tiny network), and their one-line errors (exit status 2)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import script_runner

REPO = Path(__file__).resolve().parent.parent
TINY = ["--image_size=32", "--width=4", "--num_res_blocks=1", "--content_layers=relu1_2",
        "--style_layers=relu1_2,relu2_1", "--batch_size=2", "--learning_rate=0.01"]


def run_script(name, *args):  # In a reused worker process: tests/script_runner.py.
  return script_runner.run_script(name, *args)


def one_line_error(p, match):
  assert p.returncode == 2, p.stderr[-2000:]
  lines = p.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], p.stderr
  assert "Traceback" not in p.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory, random_weights_file):
  d = tmp_path_factory.mktemp("ff")
  photos = d / "photos"
  photos.mkdir()
  rng = np.random.default_rng(0)
  for i in range(3):
    Image.fromarray(rng.integers(0, 255, (40, 44 + i, 3), np.uint8)).save(photos / f"p{i}.jpg")
  (photos / "notimage.png").write_text("hello")
  Image.fromarray(rng.integers(0, 255, (30, 36, 3), np.uint8)).save(d / "style.png")
  out = d / "model"
  p = run_script("train_feedforward", f"--style={d / 'style.png'}", f"--data_dir={photos}",
                 f"--output={out}", f"--weights={random_weights_file}", "--steps=3",
                 "--log_every=1", "--sample_every=3", "--checkpoint_every=2", "--hold_out=1",
                 "--sweep=style_weight:1,10", *TINY)
  assert p.returncode == 0, p.stderr[-3000:]
  return d, out, p.stdout, random_weights_file


def test_train_writes_checkpoints_samples_record(trained):
  d, out, stdout, _ = trained
  assert "skipped 1 unreadable" in stdout and "eta" in stdout and "images/s" in stdout
  assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
      "ckpt_00000002.msgpack", "ckpt_00000003.msgpack"]
  assert (out / "samples" / "step_00000003.png").is_file() and (out / "losses.png").is_file()
  rec = json.loads((out / "record.json").read_text())
  assert rec["members"] == ["style_weight=1", "style_weight=10"]
  assert np.shape(rec["loss_history"]) == (3, 2) and len(rec["data"]["skipped"]) == 1
  assert rec["data"]["train"] == 2 and len(rec["data"]["held"]) == 1
  for key in ("versions", "config", "seconds", "images_per_second", "checkpoint", "devices"):
    assert key in rec, key
  assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_stylize_fast_any_size_and_directory(trained):
  d, out, _, _ = trained
  content = d / "content"
  content.mkdir()
  rng = np.random.default_rng(1)
  Image.fromarray(rng.integers(0, 255, (37, 29, 3), np.uint8)).save(content / "odd.png")
  Image.fromarray(rng.integers(0, 255, (64, 48, 3), np.uint8)).save(content / "even.jpg")
  p = run_script("stylize_fast", f"--model={out}", f"--content={content}",
                 f"--output={d / 'fast'}", "--network=style_weight=10")
  assert p.returncode == 0, p.stderr[-3000:]
  assert Image.open(d / "fast" / "odd.png").size == (29, 37)
  assert Image.open(d / "fast" / "even.png").size == (48, 64)
  rec = json.loads((d / "fast" / "record.json").read_text())
  assert rec["network"] == "style_weight=10" and rec["step"] == 3 and len(rec["images"]) == 2
  p = run_script("stylize_fast", f"--model={out / 'checkpoints'}",
                 f"--content={content / 'odd.png'}", f"--output={d / 'one.png'}", "--size=20")
  assert p.returncode == 0, p.stderr[-3000:]
  assert Image.open(d / "one.png").size == (16, 20) and (d / "one.json").is_file()


def test_public_api(trained):
  import jnst
  d, out, _, _ = trained
  model = jnst.load_fast_model(out)
  x = np.random.default_rng(0).uniform(size=(19, 23, 3)).astype(np.float32)
  y = jnst.stylize_fast(x, model, network=1)
  assert y.shape == x.shape and 0 < y.min() and y.max() < 1
  np.testing.assert_array_equal(jnst.stylize_fast(x, out, network="style_weight=10"), y)
  assert model.config(1).style_weight == 10.0 and model.config(0).style_weight == 1.0
  assert model.config(0).width == 4 and model.config(0).content_layers == ("relu1_2",)
  with pytest.raises(jnst.JnstError, match="no network"):
    jnst.stylize_fast(x, model, network="nope")


def test_bad_inputs_one_line(trained, tmp_path):
  d, out, _, weights = trained
  style = f"--style={d / 'style.png'}"
  common = [style, f"--weights={weights}", "--steps=4", *TINY]
  (tmp_path / "empty").mkdir()
  one_line_error(run_script("train_feedforward", f"--data_dir={tmp_path / 'empty'}",
                            f"--output={tmp_path / 'o1'}", *common), "no image files")
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "a.jpg").write_text("not a jpeg")
  one_line_error(run_script("train_feedforward", f"--data_dir={bad}",
                            f"--output={tmp_path / 'o2'}", *common), "none of the 1 image files")
  one_line_error(run_script("train_feedforward", f"--data_dir={d / 'photos'}", f"--output={out}",
                            "--resume", *common, "--width=8", "--sweep=style_weight:1,10"),
                 "incompatible")
  one_line_error(run_script("stylize_fast", f"--model={tmp_path}",
                            f"--content={d / 'style.png'}"), "holds no checkpoint")
  (tmp_path / "ckpt_00000001.msgpack").write_bytes(b"\x81\xa1a\x01")
  one_line_error(run_script("stylize_fast", f"--model={tmp_path}",
                            f"--content={d / 'style.png'}"), "not a jnst feed-forward checkpoint")
