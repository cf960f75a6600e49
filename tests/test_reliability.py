"""The pieces behind issue 15, in-process: jnst.memory's estimate and check (available memory
mocked), image decoding limits and conversions, output checks that create nothing, image +
record written together, strict JSON records, snapshots, JNST_WEIGHTS. End to end through the
scripts: test_bad_inputs.py."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import jnst.backbones as backbones
import jnst.cli as cli
import jnst.images as images
import jnst.memory as memory
import jnst.records as records
import jnst.snapshots as snapshots
from jnst.backbones import vgg
from jnst.errors import JnstError

VGG = backbones.get("vgg19")


# ------------------------------------------------------------------ memory


def test_estimate_parts_scale_as_documented():
  bb = VGG.with_options(winograd_channels=256)  # Not by CPU: the counts below are its.
  a = memory.estimate(bb, (64, 64, 3), lbfgs_memory=10)
  b = memory.estimate(bb, (128, 128, 3), lbfgs_memory=10)
  c = memory.estimate(bb, (64, 64, 3), lbfgs_memory=20, batch=3)
  assert a.parts["lbfgs"] == 2 * 10 * 64 * 64 * 3 * 4 and a.bytes == sum(a.parts.values())
  assert b.parts["activations"] == pytest.approx(4 * a.parts["activations"], rel=0.01)
  assert c.parts["lbfgs"] == 3 * 2 * a.parts["lbfgs"]
  assert c.parts["activations"] == 3 * a.parts["activations"]
  assert a.parts["params"] == c.parts["params"]
  # Params as prepare holds them: the weights, the grad kernels, and (CPU) 4x twice the
  # Winograd convs' kernels; counted from the conv shapes here, not from prepare.
  kernels = {n: 4 * int(np.prod(s)) for n, s in VGG.arch.kernel_shapes().items()}
  plain = sum(kernels.values()) + 4 * sum(s[3] for s in VGG.arch.kernel_shapes().values()) + 24
  wino = {n for n, s in VGG.arch.kernel_shapes().items() if min(s[2:]) >= 256}
  assert len(wino) == 11 and bb.conv_algorithm == "winograd"
  assert a.parts["params"] == plain + sum(kernels.values()) + 8 * sum(kernels[n] for n in wino)
  direct = memory.estimate(bb.with_options(conv="direct"), (64, 64, 3), lbfgs_memory=10)
  assert direct.parts["params"] == plain + sum(kernels.values())  # Weights and grad kernels.
  upto = memory.estimate(bb, (64, 64, 3), lbfgs_memory=10, layers=["relu4_1"])
  assert upto.parts["params"] == plain + sum(kernels.values()) + 8 * sum(
      kernels[n] for n in ("conv3_2", "conv3_3", "conv3_4", "conv4_1"))
  avx2 = memory.estimate(bb.with_options(winograd_channels=128), (64, 64, 3), lbfgs_memory=10)
  assert avx2.parts["params"] == a.parts["params"] + 8 * (kernels["conv2_2"] + kernels["conv3_1"])
  adam = memory.estimate(VGG, (64, 64, 3), optimizer="adam")
  assert adam.parts["lbfgs"] == 0 and adam.parts["image"] == 8 * 64 * 64 * 3 * 4
  remat = memory.estimate(VGG, (64, 64, 3), remat=True)
  assert remat.parts["activations"] < a.parts["activations"] / 2
  shallow = memory.estimate(VGG, (64, 64, 3), layers=["relu1_1"])
  assert shallow.parts["activations"] < a.parts["activations"] / 4
  # Activations: 1.5 x every layer's output (conv, relu, pool) to the deepest used.
  first = memory.activation_shapes(VGG, (64, 64, 3), ["relu1_1"])
  assert first == {"conv1_1": (1, 64, 64, 64), "relu1_1": (1, 64, 64, 64)}
  assert shallow.parts["activations"] == 1.5 * 2 * 64 * 64 * 64 * 4


@pytest.mark.parametrize("shape,lbfgs_memory,measured_gib", [
    ((288, 384, 3), 100, 1.38),    # Peak RSS of scripts/stylize.py runs (BUILD.md, "Pyramid and
    ((576, 768, 3), 100, 2.93),    # high resolution"): the estimate stays above each, within
    ((1536, 2048, 3), 10, 9.80),   # 1.5x, so the 2048 px runs fit a 24 GiB machine.
    ((2048, 2048, 3), 10, 12.30),
])
def test_estimate_is_calibrated_on_measured_runs(shape, lbfgs_memory, measured_gib):
  layers = ("relu4_2", "relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # The defaults.
  direct = VGG.with_options(conv="direct")  # As the runs were measured.
  est = memory.estimate(direct, shape, inputs=[shape, shape], lbfgs_memory=lbfgs_memory,
                        layers=layers)
  assert measured_gib * 2**30 < est.bytes < 1.5 * measured_gib * 2**30
  assert est.parts["runtime"] == memory.RUNTIME_BYTES
  on_24_gib = int(22.9 * 2**30)  # MemAvailable of the 24 GiB CI machine, idle.
  assert memory.check_fits(est, available=on_24_gib) is est
  with pytest.raises(JnstError, match="lower --size"):
    memory.check_fits(memory.estimate(VGG, (3072, 4096, 3), lbfgs_memory=10, layers=layers),
                      available=on_24_gib)


def test_check_fits_names_the_flag(monkeypatch):
  est = memory.estimate(VGG, (64, 64, 3), lbfgs_memory=100_000)
  with pytest.raises(JnstError, match=r"available: lower --lbfgs_memory"):
    memory.check_fits(est, available=2**31)  # The weights and runtime take 1.26 GiB.
  big = memory.estimate(VGG, (4096, 4096, 3), lbfgs_memory=1)
  monkeypatch.setattr(memory, "available_bytes", lambda: 2**31)  # The mock tests use.
  with pytest.raises(JnstError, match=r"lower --size"):
    memory.check_fits(big)
  batch = memory.estimate(VGG, (256, 256, 3), batch=64)
  with pytest.raises(JnstError, match=r"lower --seeds_per_batch"):
    memory.check_fits(batch, flags={"batch": "--seeds_per_batch"})
  with pytest.raises(JnstError, match=r"weights and XLA.s runtime alone"):
    memory.check_fits(est, available=10**6)
  small = memory.estimate(VGG, (32, 32, 3))
  assert memory.check_fits(small) is small
  monkeypatch.setattr(memory, "available_bytes", lambda: None)  # Unknown: no check.
  assert memory.check_fits(big) is big


def test_available_bytes_sources(monkeypatch):
  monkeypatch.setenv("JNST_MEMORY_BYTES", "1.5e9")
  assert memory.available_bytes() == 1_500_000_000
  monkeypatch.setenv("JNST_MEMORY_BYTES", "lots")
  with pytest.raises(JnstError, match="JNST_MEMORY_BYTES"):
    memory.available_bytes()
  monkeypatch.delenv("JNST_MEMORY_BYTES")
  assert memory.available_bytes() > 0  # /proc/meminfo or sysconf on this machine.


# ------------------------------------------------------------------ images


def test_float_tiff_is_converted_not_black(tmp_path):
  ramp = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
  Image.fromarray(ramp, "F").save(tmp_path / "unit.tif")
  Image.fromarray(ramp * 255, "F").save(tmp_path / "bytes.tif")
  for name in ("unit.tif", "bytes.tif"):
    rgb = images.load_image(tmp_path / name)
    assert rgb.shape == (32, 32, 3) and rgb.max() == 1.0 and rgb.mean() == pytest.approx(0.5, 0.01)
  with_nan = ramp.copy()
  with_nan[0, 0] = np.nan
  Image.fromarray(with_nan, "F").save(tmp_path / "nan.tif")
  assert images.load_image(tmp_path / "nan.tif")[0, 0, 0] == 0.0


def test_huge_image_refused_from_its_header(tmp_path):
  Image.new("P", (13000, 13000)).save(tmp_path / "big.png")
  assert (tmp_path / "big.png").stat().st_size < 100_000
  with pytest.raises(JnstError, match=r"13000x13000 px \(169 MP\), over the 67 MP"):
    images.load_image(tmp_path / "big.png", 64)
  assert images.header_size(tmp_path / "big.png") == (13000, 13000)


def test_large_image_reduced_then_resized(tmp_path):
  """A large image is box-reduced to 3x the target first, then Lanczos-resized: within 1/255
  of a Lanczos-only resize on average."""
  rng = np.random.default_rng(0)
  base = rng.integers(0, 255, (25, 50, 3), dtype=np.uint8)
  big = Image.fromarray(base).resize((2000, 1000), Image.BILINEAR)
  big.save(tmp_path / "big.png")
  got = images.load_image(tmp_path / "big.png", 64)
  ref = np.asarray(big.resize((64, 32), Image.LANCZOS), np.float32) / 255
  assert got.shape == (32, 64, 3) and np.abs(got - ref).mean() < 1 / 255


def test_input_kinds_are_named(tmp_path):
  (tmp_path / "d.png").mkdir()
  os.mkfifo(tmp_path / "f.png")
  os.symlink(tmp_path / "b.png", tmp_path / "a.png")
  os.symlink(tmp_path / "a.png", tmp_path / "b.png")
  os.symlink(tmp_path / "nowhere.png", tmp_path / "broken.png")
  for name, kind in (("d.png", "is a directory"), ("f.png", "is a FIFO"),
                     ("a.png", "is a symlink loop"), ("broken.png", "is a broken symlink"),
                     ("missing.png", "does not exist")):
    with pytest.raises(JnstError, match=kind):
      images.load_image(tmp_path / name)


def test_upscale_warning(tmp_path, capsys):
  Image.new("RGB", (20, 16)).save(tmp_path / "small.png")
  assert cli._planned(str(tmp_path / "small.png"), 40) == (32, 40, 3)
  assert capsys.readouterr().err == ""
  assert cli._planned(str(tmp_path / "small.png"), 512) == (410, 512, 3)
  assert "enlarged 26x to 512 px" in capsys.readouterr().err


# ------------------------------------------------------------------ outputs


def test_ensure_writable_creates_nothing(tmp_path):
  records.ensure_writable(tmp_path / "a" / "b" / "c.png")
  assert list(tmp_path.iterdir()) == []
  (tmp_path / "file").write_text("x")
  (tmp_path / "dir.png").mkdir()
  with pytest.raises(JnstError, match="is a file, not a directory"):
    records.ensure_writable(tmp_path / "file" / "c.png")
  with pytest.raises(JnstError, match="it is a directory"):
    records.ensure_writable(tmp_path / "dir.png")


def test_image_and_record_together_or_not_at_all(tmp_path):
  (tmp_path / "o.json").mkdir()  # Appeared after the up-front check: the rename fails.
  with pytest.raises(JnstError, match="nothing was written"):
    with records.atomic_paths(tmp_path / "o.png", tmp_path / "o.json") as (a, b):
      a.write_text("image")
      b.write_text("record")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["o.json"]
  with records.atomic_paths(tmp_path / "p.png", tmp_path / "p.json") as (a, b):
    a.write_text("image")
    b.write_text("record")
  assert (tmp_path / "p.png").read_text() == "image" and (tmp_path / "p.json").is_file()
  assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_records_are_strict_json(tmp_path):
  rec = {"loss_history": [1.0, float("nan")], "x": np.float32("inf"), "a": np.arange(2),
         "nested": {"y": -np.inf}}
  records.save_json(tmp_path / "r.json", rec)
  text = (tmp_path / "r.json").read_text()
  assert "NaN" not in text and "Infinity" not in text
  assert json.loads(text) == {"loss_history": [1.0, None], "x": None, "a": [0, 1],
                              "nested": {"y": None}}


def test_snapshot_round_trip_and_mismatch(tmp_path):
  path = snapshots.path_for(tmp_path / "o.png")
  assert path.name == "o.resume.npz"
  x = np.random.default_rng(0).normal(size=(8, 9, 3)).astype(np.float32)
  snapshots.save(path, x, 20, 21, {"size": 32, "content": "c.png"})
  snap = snapshots.load(path, {"size": 32, "content": "c.png"})
  assert snap.step == 20 and snap.evaluations == 21 and np.array_equal(snap.x, x)
  with pytest.raises(JnstError, match=r"other settings \(--size\)"):
    snapshots.load(path, {"size": 64, "content": "c.png"})
  with pytest.raises(JnstError, match="run with --save_every"):
    snapshots.load(tmp_path / "none.resume.npz")
  (tmp_path / "bad.resume.npz").write_text("not npz")
  with pytest.raises(JnstError, match="unreadable"):
    snapshots.load(tmp_path / "bad.resume.npz")



def test_snapshot_from_before_a_flag_existed(tmp_path):
  """An old snapshot lacks the flags added since: a new flag at its default matches; one
  whose introduction changed the default (--lbfgs_rules, --lbfgs_first_step) counts as the
  value the old run had, and the error says which flags and values resume it."""
  path = snapshots.path_for(tmp_path / "o.png")
  x = np.zeros((8, 9, 3), np.float32)
  snapshots.save(path, x, 20, 21, {"size": 32})  # No lbfgs_rules, no ema_decay then.
  defaults = {"size": 512, "lbfgs_rules": "torch", "ema_decay": 0.0}
  now = {"size": 32, "lbfgs_rules": "torch", "ema_decay": 0.0}
  with pytest.raises(JnstError, match=r"\(--lbfgs_rules\): resume with the same flags "
                     r"\(--lbfgs_rules=optax\)"):
    snapshots.load(path, now, defaults)
  snap = snapshots.load(path, {**now, "lbfgs_rules": "optax"}, defaults)
  assert snap.step == 20
  with pytest.raises(JnstError, match=r"--ema_decay, --lbfgs_rules\).*--ema_decay=0.0"):
    snapshots.load(path, {**now, "ema_decay": 0.9}, defaults)
  # --lbfgs_first_step changed its default (l1 -> linf): an old run had l1.
  first = {**now, "lbfgs_rules": "optax", "lbfgs_first_step": "linf"}
  with pytest.raises(JnstError, match=r"\(--lbfgs_first_step\).*\(--lbfgs_first_step=l1\)"):
    snapshots.load(path, first, {**defaults, "lbfgs_first_step": "linf"})
  assert snapshots.load(path, {**first, "lbfgs_first_step": "l1"}, defaults).step == 20

# ------------------------------------------------------------------ weights paths


def test_jnst_weights_must_be_usable(tmp_path, monkeypatch):
  (tmp_path / "dir").mkdir()
  for value, message in ((str(tmp_path / "dir"), "is a directory"),
                         (str(tmp_path / "new"), "no new .h5 file"),
                         ("", "is set but empty"),
                         (str(tmp_path / "nofile.txt" / "w.h5"), "under a file")):
    if value.endswith("w.h5"):
      (tmp_path / "nofile.txt").write_text("x")
    monkeypatch.setenv("JNST_WEIGHTS", value)
    with pytest.raises(JnstError, match=message):
      vgg.default_path()
  monkeypatch.setenv("JNST_WEIGHTS", str(tmp_path / "sub" / "vgg19.h5"))
  assert vgg.default_path() == tmp_path / "sub" / "vgg19.h5"  # Made once, where asked.
  assert not (tmp_path / "sub").exists()


def test_weights_attributes_checked_one_by_one():
  from jnst import params_file
  good = {"arch": "vgg19", "source": "s", "source_sha256": "0", "input_convention": "caffe_bgr",
          "input_mean": np.zeros(3), "input_std": np.ones(3)}
  params_file.check_attrs(good, vgg.ATTRS, "w.h5")
  for change, message in (({"arch": 3}, "'arch' must be a string"),
                          ({"input_mean": np.zeros(4)},
                           r"'input_mean' must be numbers of shape \(3,\)"),
                          ({"input_mean": np.array([0, np.nan, 0])}, "not finite numbers"),
                          ({"input_std": np.array([1.0, 0.0, 1.0])}, "not finite positive"),
                          ({"input_std": np.array([b"a", b"b", b"c"])}, "must be numbers")):
    with pytest.raises(JnstError, match=message):
      params_file.check_attrs({**good, **change}, vgg.ATTRS, "w.h5")
  with pytest.raises(JnstError, match="w.h5: root attribute 'source' is missing: re-fetch"):
    params_file.check_attrs({k: v for k, v in good.items() if k != "source"}, vgg.ATTRS, "w.h5")


def test_large_palette_and_alpha_images_shrunk_correctly(tmp_path):
  """Shrunk before the RGB conversion (memory), with the same result: transparent palette
  entries composite on white, opaque ones keep their colour."""
  im = Image.new("P", (1200, 600), 1)
  im.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
  im.paste(0, (0, 0, 600, 600))
  im.info["transparency"] = 0
  im.save(tmp_path / "p.png", transparency=0)
  rgb = images.load_image(tmp_path / "p.png", 64)
  assert rgb.shape == (32, 64, 3)
  assert np.allclose(rgb[16, 10], 1.0, atol=0.01)  # Transparent: white.
  assert np.allclose(rgb[16, 50], np.array([200, 10, 10]) / 255, atol=0.01)
