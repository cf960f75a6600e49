"""Image files (modes converted, huge images resized on load), atomic records, run records,
contact sheets, the demo files' pins."""

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jnst import demo, fetch, images, plots, records
from jnst.errors import JnstError


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "CMYK"])
def test_modes_are_converted(tmp_path, mode):
  rng = np.random.default_rng(0)
  rgb = Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
  if mode == "I;16":
    im = Image.fromarray((rng.integers(0, 65535, (20, 24))).astype(np.uint16))
  else:
    im = rgb.convert(mode)
  im.save(tmp_path / ("x.tif" if mode == "CMYK" else "x.png"))
  out = images.load_image(tmp_path / ("x.tif" if mode == "CMYK" else "x.png"))
  assert out.shape == (20, 24, 3) and out.dtype == np.float32
  assert 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 0.01


def test_rgba_composited_on_white(tmp_path):
  Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(tmp_path / "clear.png")
  np.testing.assert_allclose(images.load_image(tmp_path / "clear.png"), 1.0)


def test_sixteen_bit_scaled(tmp_path):
  Image.fromarray(np.full((20, 20), 65535, np.uint16)).save(tmp_path / "w.png")
  np.testing.assert_allclose(images.load_image(tmp_path / "w.png"), 1.0)


def test_huge_jpeg_resized_on_load(tmp_path):
  Image.new("RGB", (4000, 3000), (10, 200, 30)).save(tmp_path / "big.jpg", quality=50)
  out = images.load_image(tmp_path / "big.jpg", max_side=64)
  assert out.shape == (48, 64, 3)
  np.testing.assert_allclose(out[24, 32], np.array([10, 200, 30]) / 255, atol=0.03)


def test_small_image_rejected(tmp_path):
  Image.new("RGB", (15, 40)).save(tmp_path / "s.png")
  with pytest.raises(JnstError, match="smaller than 16 px"):
    images.load_image(tmp_path / "s.png")


def test_save_is_atomic_and_keeps_old_file_on_failure(tmp_path):
  images.save_image(tmp_path / "a.png", np.zeros((4, 4, 3)))
  before = (tmp_path / "a.png").read_bytes()
  with pytest.raises(TypeError):
    records.save_json(tmp_path / "a.png", {"x": object()})
  assert (tmp_path / "a.png").read_bytes() == before
  assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_contact_sheet_shape():
  sheet = plots.contact_sheet([np.zeros((10, 20, 3)), np.ones((20, 10, 3))], ["a", "b"], cell=32)
  assert sheet.shape == (4 + 32 + 4 + 14, 2 * 36 + 4, 3)


def test_versions_names_the_machine():
  v = records.versions()
  assert {"jax", "jaxlib", "flax", "optax", "python", "backend", "devices", "cpu", "cpus"} <= set(v)
  assert v["backend"] == "cpu" and v["cpus"] >= 1


def test_ensure_writable_leaves_nothing(tmp_path):
  records.ensure_writable(tmp_path / "sub" / "x.json")
  assert not (tmp_path / "sub").exists()  # Directories are made only when writing.
  (tmp_path / "file").write_text("")
  with pytest.raises(JnstError, match="cannot write to"):
    records.ensure_writable(tmp_path / "file" / "x.json")


def test_json_record_converts_numpy(tmp_path):
  records.save_json(tmp_path / "r.json", {"a": np.float32(1.5), "b": np.arange(3), "c": tmp_path})
  assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1.5, "b": [0, 1, 2],
                                                           "c": str(tmp_path)}


def test_loss_plot_draws_every_curve():
  empty = plots.loss_plot([], title="t")
  drawn = plots.loss_plot([([1, 2, 3], [10.0, 5.0, 1.0]), ([1, 2], [8.0, 4.0])], title="t")
  assert drawn.shape == empty.shape == (420, 720, 3)
  assert np.abs(drawn - empty).sum() > 100  # The curves and the band were drawn.


@pytest.mark.parametrize("entry", ["CONTENT", "STYLE", "MONA_LISA", "VIDEO"])
def test_demo_files_are_pinned(entry):
  spec = getattr(demo, entry)
  package, _, version = spec["requirement"].partition("==")
  assert package and version, "an unpinned archive can change under the checksum"
  assert Path(spec["member"]).name == spec["name"] and len(spec["expected_sha256"]) == 64


def test_demo_style_builds_nothing_but_reads_opencvs_sdist(tmp_path, monkeypatch):
  """The demo painting comes from OpenCV's sdist. pip must be told to take only that package
  as source: with ``--no-binary :all:`` it would build OpenCV's build requirements (numpy)
  from source just to read the metadata, which fails without a C toolchain. The member is
  then taken from the archive pip wrote, checksum-verified."""
  monkeypatch.setenv("JNST_CACHE", str(tmp_path / "cache"))
  data, cmds = b"a painting", []

  def run(cmd, **kw):
    cmds.append(cmd)
    dest = Path(cmd[cmd.index("-d") + 1])
    with tarfile.open(dest / "opencv_python_headless-5.0.0.93.tar.gz", "w:gz") as tar:
      info = tarfile.TarInfo(demo.STYLE["member"])
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
    return subprocess.CompletedProcess(cmd, 0, "", "")

  monkeypatch.setattr(fetch.subprocess, "run", run)
  monkeypatch.setitem(demo.STYLE, "expected_sha256", hashlib.sha256(data).hexdigest())
  path = demo.style_path(log=lambda m: None)
  assert path == tmp_path / "cache" / "starry_night.jpg" and path.read_bytes() == data
  (cmd,) = cmds
  assert cmd[cmd.index("--no-binary") + 1] == "opencv-python-headless" and "--no-deps" in cmd
  assert cmd[-1] == "opencv-python-headless==5.0.0.93"
