"""--backbone everywhere: the single-run scripts, a seed-study sweep over backbones, the
benchmark and its PyTorch reference, with VGG-16 (random weights in a torchvision-convention
file, tiny images)."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

import jnst.experiments as experiments
import jnst.optimize as optimize
import jnst.study as study
from jnst import records
from jnst.backbones import vgg, winograd
from jnst.errors import JnstError
from tests import script_runner

REPO = Path(__file__).resolve().parent.parent
OPT = optimize.OptConfig(steps=2, chunk=2)


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
  """A full VGG-16 file with random weights in torchvision's input convention (float16)."""
  params = vgg.VGG16.init_random(jax.random.key(11))
  kernels = {n: (np.asarray(p["kernel"]), np.asarray(p["bias"]))
             for n, p in params["conv"].items()}
  path = tmp_path_factory.mktemp("w16") / "random_vgg16.h5"
  return vgg.write(path, kernels, arch=vgg.ARCHS["vgg16"], source="random (tests)",
                   source_sha256="0" * 64, convention="torch_rgb", mean=vgg.TORCH_MEAN,
                   std=vgg.TORCH_STD, storage_dtype="float16")


def run_script(name, *args, env=None):  # In a reused worker process: tests/script_runner.py.
  return script_runner.run_script(name, *args, env=env)


def arrays(seed=0):
  rng = np.random.default_rng(seed)
  return (rng.uniform(size=(24, 32, 3)).astype(np.float32),
          rng.uniform(size=(24, 32, 3)).astype(np.float32))


# ---------------------------------------------------------------- single-run scripts


@pytest.mark.parametrize("script,extra", [
    ("stylize", ["--content_layers=relu3_3", "--style_layers=relu1_1,block3"]),
    ("reconstruct", ["--layer=relu3_3"]),
    ("synthesize", ["--style_layers=relu1_2,relu3_3"]),
])
def test_single_run_scripts_take_vgg16(tmp_path, vgg16_file, images_dir, script, extra):
  out = tmp_path / f"{script}.png"
  p = run_script(script, "--backbone=vgg16", f"--weights={vgg16_file}", "--size=32",
                 "--steps=2", f"--output={out}",
                 *([] if script == "synthesize" else [f"--content={images_dir / 'c.png'}"]),
                 *([] if script == "reconstruct" else [f"--style={images_dir / 's.png'}"]),
                 *extra)
  assert p.returncode == 0, p.stderr[-2000:]
  rec = json.loads(out.with_suffix(".json").read_text())
  assert rec["backbone"]["name"] == "vgg16" and rec["flags"]["backbone"] == "vgg16"
  assert out.is_file()


def test_vgg16_layer_names_are_checked(tmp_path, vgg16_file):
  p = run_script("stylize", "--backbone=vgg16", f"--weights={vgg16_file}", "--size=32",
                 "--steps=1", "--style_layers=relu3_4", f"--output={tmp_path / 'x.png'}")
  assert p.returncode == 2 and "unknown vgg16 layer name(s) 'relu3_4'" in p.stderr
  assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- a sweep over backbones


def test_parse_backbone_sweep():
  sweep = study.parse_sweep("backbone:vgg19,vgg16", "stylize")
  assert sweep.flag == "backbone" and not sweep.batched
  vs = study.variants(sweep, experiments.StylizeConfig(opt=OPT), None)
  assert [v.cfg.backbone for v in vs] == ["vgg19", "vgg16"]
  assert [v.cfg.get_backbone() for v in vs] == [vgg.VGG19, vgg.VGG16]
  with pytest.raises(JnstError, match="'vgg11' is not a valid --backbone: unknown backbone"):
    study.variants(study.parse_sweep("backbone:vgg19,vgg11", "reconstruct"),
                   experiments.ReconstructConfig(), None)


def test_backbone_sweep_in_process(random_params):
  """Each variant runs its own network with its own params; the per-value diversity uses it."""
  content, style = arrays()
  inputs = experiments.Inputs(content, (style,))
  p16 = vgg.VGG16.init_random(jax.random.key(5))
  sweep = study.parse_sweep("backbone:vgg19,vgg16", "stylize")
  cfg = experiments.StylizeConfig(content_layers=("relu2_1",), style_layers=("relu1_1",),
                                  init="noise", opt=OPT)
  vs = study.variants(sweep, cfg, None)
  res = study.run(vs, [inputs, inputs], [random_params, p16], sweep, [0, 1])
  assert [p.backbone.name for p in res.problems] == ["vgg19", "vgg16"]
  assert res.problems[1].params is p16
  assert [m["file"] for m in res.members] == [
      "backbone_vgg19_seed_0000.png", "backbone_vgg19_seed_0001.png",
      "backbone_vgg16_seed_0000.png", "backbone_vgg16_seed_0001.png"]
  one, _ = experiments.run(vs[1].cfg, p16, inputs)  # Seed 0 of VGG-16 = its single run.
  np.testing.assert_allclose(res.images[2], one, rtol=0, atol=1e-3)
  s = study.summary("stylize", sweep, res, [inputs, inputs], None, 2, ("relu1_1",))
  assert s["sweep"] == {"flag": "backbone", "values": ["vgg19", "vgg16"], "mode": "sequential"}
  per = s["diversity_per_value"]
  assert per["vgg19"]["features"]["backbone"]["name"] == "vgg19"
  assert per["vgg16"]["features"]["backbone"]["name"] == "vgg16"
  with pytest.raises(ValueError, match="holds vgg19 convs|params hold vgg19 convs"):
    study.run(vs, [inputs, inputs], random_params, sweep, [0])  # One VGG-19 params for both.


def test_seed_study_backbone_sweep_script(tmp_path, random_weights_file, vgg16_file, images_dir):
  out = tmp_path / "study"
  env = {"JNST_WEIGHTS": str(random_weights_file), "JNST_WEIGHTS_VGG16": str(vgg16_file)}
  common = ["--experiment=stylize", "--sweep=backbone:vgg19,vgg16", "--size=32", "--steps=2",
            "--num_seeds=1", f"--content={images_dir / 'c.png'}",
            f"--style={images_dir / 's.png'}", "--content_layers=relu2_1",
            "--style_layers=relu1_1,relu2_1"]
  p = run_script("seed_study", *common, f"--output_dir={out}", env=env)
  assert p.returncode == 0, p.stderr[-2000:]
  s = json.loads((out / "summary.json").read_text())
  assert s["values"] == ["vgg19", "vgg16"] and s["sweep"]["mode"] == "sequential"
  assert sorted(f.name for f in out.iterdir()) == ["backbone_vgg16.png", "backbone_vgg19.png",
                                                   "grid.png", "losses.png", "summary.json"]
  # One --weights file cannot serve two networks: one line, exit 2, nothing written.
  p = run_script("seed_study", *common, f"--weights={random_weights_file}",
                 f"--output_dir={tmp_path / 'no'}", env=env)
  assert p.returncode == 2 and p.stderr.strip().splitlines() == [
      "error: --weights names one file, but the sweep uses vgg19, vgg16: omit --weights (each "
      "backbone then uses its default file, e.g. $JNST_WEIGHTS, $JNST_WEIGHTS_VGG16)"]
  assert not (tmp_path / "no").exists() or list((tmp_path / "no").iterdir()) == []


# ---------------------------------------------------------------- the PyTorch reference


def test_torch_reference_uses_the_configs_backbone(vgg16_file):
  """torch_ref.stylize_problem builds VGG-16 with its term_scales: the same loss and terms as
  jnst's objective; params of another network are refused."""
  torch_ref = pytest.importorskip("jnst.bench.torch_ref")
  pytest.importorskip("torch")
  params = vgg.VGG16.load(vgg16_file)
  content, style = arrays(1)
  cfg = experiments.StylizeConfig(backbone="vgg16", tv_weight=1e-3, style_weight=1e3)
  problem = cfg.build(params, experiments.Inputs(content, (style,)))
  loss, xc = torch_ref.stylize_problem(params, content, [style], cfg)
  x = np.asarray(problem.init_x) + np.random.default_rng(2).normal(size=content.shape) * 5.0
  jv, jterms = problem.objective(x.astype(np.float32), problem.data)
  tv, tterms = loss(torch_ref.to_nchw(x))
  assert float(jterms["style"]) > 0 and float(jterms["content"]) > 0
  for k in ("content", "style", "tv"):
    assert float(tterms[k]) == pytest.approx(float(jterms[k]), rel=2e-4), k
  assert float(tv) == pytest.approx(float(jv), rel=2e-4)
  with pytest.raises(JnstError, match="these params hold vgg16 convs, not vgg19's"):
    torch_ref.stylize_problem(params, content, [style], experiments.StylizeConfig())


def test_benchmark_script_backbone(tmp_path, vgg16_file, images_dir):
  """The script's wiring: --backbone reaches the config, the weights and the report. (That the
  PyTorch reference computes the same VGG-16 loss: the test above.)"""
  out = tmp_path / "bench"
  p = run_script("benchmark", "--quick", "--backbone=vgg16", f"--weights={vgg16_file}",
                 "--frameworks=jax", "--loops=scan", "--seed_size=0", "--seed_scaling=off",
                 f"--content={images_dir / 'c.png'}", f"--style={images_dir / 's.png'}",
                 f"--output_dir={out}")
  assert p.returncode == 0, p.stderr[-3000:]
  record = json.loads((out / "benchmark.json").read_text())
  assert record["machine"]["config"]["backbone"] == "vgg16"
  got = {(r["framework"], r["metric"]): r["value"] for r in record["results"] if r["size"] == 32}
  assert record["machine"]["conv_algorithm"] == "winograd"  # --conv=auto on CPU.
  md = (out / "benchmark.md").read_text()
  least = winograd.auto_min_channels(records.cpu_arch())  # By CPU: the record says which.
  assert record["machine"]["winograd_min_channels"] == least
  assert got["jax", "eval_ms"] > 0
  assert f"Backbone: vgg16 (convs: winograd from {least} channels)." in md
  # VGG-16's analytic FLOPs (13 convs), not VGG-19's.
  from jnst.bench import flops
  layers = ("relu4_2",) + vgg.VGG16.default_style_layers
  h, w = record["machine"]["image_shapes_hw"]["32"]
  assert got["jax", "gflop_per_eval"] == pytest.approx(flops.eval_flops(
      h, w, layers, vgg.VGG16.default_style_layers, vgg.ARCHS["vgg16"]) / 1e9, rel=1e-6)
  p = run_script("benchmark", "--quick", "--backbone=vgg19", f"--weights={vgg16_file}",
                 "--frameworks=jax", f"--output_dir={tmp_path / 'no'}")
  assert p.returncode == 2 and "holds vgg16 weights, not vgg19" in p.stderr
