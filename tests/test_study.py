"""jnst.study in-process (random weights, tiny images): sweep parsing, the sequential
variants, member names, running a study (seeds, a vmapped weight sweep, sequential sweeps),
its summary record and the contact sheet. The script itself: test_seed_study_script.py."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from jnst import batched, cli, experiments, optimize, study
from jnst.errors import JnstError

LAYERS = ("relu1_1", "relu2_1")  # Diversity layers, to keep the summaries fast.
OPT = optimize.OptConfig(steps=3, chunk=3)


def arrays(content_shape=(24, 32, 3), style_shape=(30, 30, 3)):
  rng = np.random.default_rng(0)
  return (rng.uniform(size=content_shape).astype(np.float32),
          rng.uniform(size=style_shape).astype(np.float32))


@pytest.fixture()
def files(tmp_path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "c.png")
  Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(tmp_path / "s.png")
  Image.fromarray(np.full((20, 20, 3), 64, np.uint8)).save(tmp_path / "i.png")
  return tmp_path


def spec(d, **kw):
  return cli.InputSpec(**{"content": str(d / "c.png"), "styles": (str(d / "s.png"),),
                          "size": 32, **kw})


def reports(seen):
  return lambda r: seen.append((r.run, r.num_runs, r.label, r.batch, r.num_batches, r.step,
                                np.shape(r.loss)))


# ------------------------------------------------------------------ parsing


def test_parse_sweep():
  assert study.parse_sweep(None, "stylize") is None and study.parse_sweep("", "stylize") is None
  s = study.parse_sweep("style_weight: 1e1, 1e4", "stylize")
  assert s == study.Sweep("style_weight", ("1e1", "1e4")) and s.batched
  s = study.parse_sweep("layer:relu1_1,relu2_1", "reconstruct")
  assert s.values == ("relu1_1", "relu2_1") and not s.batched
  assert study.parse_sweep("style_layers:relu1_1,relu1_1+relu2_1", "synthesize").values == (
      "relu1_1", "relu1_1+relu2_1")
  assert set(study.BATCHED) == {"content_weight", "style_weight", "tv_weight", "matting_weight"}
  assert set(study.BATCHED.values()) == {"content", "style", "tv", "matting"}
  assert not set(study.BATCHED) & set(study.SEQUENTIAL)


@pytest.mark.parametrize("spec_,experiment,message", [
    ("style_weight", "stylize", "must look like FLAG:v1,v2"),
    ("style_weight:", "stylize", "must look like FLAG:v1,v2"),
    ("style_weight: , ", "stylize", "must look like FLAG:v1,v2"),
    ("steps:1,2", "stylize", "--sweep over 'steps' is not supported"),
    ("layer:relu1_1", "stylize", "does not apply to --experiment=stylize: use it with reconstruct"),
    ("style_weight:1,2", "reconstruct", "does not apply to --experiment=reconstruct"),
    ("content_layers:relu1_1", "synthesize", "does not apply to --experiment=synthesize"),
    ("init:noise", "reconstruct", "does not apply"),
    ("style_weight:1,1", "stylize", "values repeat"),
    ("style_weight:1,-2", "stylize", "finite numbers >= 0"),
    ("tv_weight:1,x", "stylize", "finite numbers >= 0"),
    ("content_weight:inf", "stylize", "finite numbers >= 0"),
])
def test_parse_sweep_errors(spec_, experiment, message):
  with pytest.raises(JnstError, match=message.replace("(", r"\(")):
    study.parse_sweep(spec_, experiment)


# ------------------------------------------------------------------ variants


def test_variants_build_sequential_configs(tmp_path):
  base = experiments.StylizeConfig(init="noise", style_weight=5.0, opt=OPT)
  inputs = spec(tmp_path)
  sweep = lambda s, exp="stylize": study.parse_sweep(s, exp)

  vs = study.variants(sweep("style_layers:relu1_1,relu1_1+relu2_1"), base, inputs)
  assert [v.value for v in vs] == ["relu1_1", "relu1_1+relu2_1"]
  assert [v.cfg for v in vs] == [dataclasses.replace(base, style_layers=("relu1_1",)),
                                 dataclasses.replace(base, style_layers=("relu1_1", "relu2_1"))]
  assert all(v.inputs == inputs for v in vs)

  vs = study.variants(sweep("learning_rate:0.5,2"), base, inputs)
  assert [v.cfg.opt for v in vs] == [dataclasses.replace(OPT, learning_rate=0.5),
                                     dataclasses.replace(OPT, learning_rate=2.0)]
  assert all(dataclasses.replace(v.cfg, opt=OPT) == base for v in vs)

  vs = study.variants(sweep("size:16,24"), base, inputs)  # Goes into the inputs spec.
  assert [v.inputs.size for v in vs] == [16, 24] and all(v.cfg == base for v in vs)
  assert vs[0].inputs == dataclasses.replace(inputs, size=16)

  path = str(tmp_path / "i.png")
  vs = study.variants(sweep(f"init:noise,{path}"), base, inputs)
  assert (vs[0].cfg.init, vs[0].inputs.init) == ("noise", None)
  assert (vs[1].cfg.init, vs[1].inputs.init) == ("image", path)
  assert vs[1].value == path

  vs = study.variants(sweep("pooling:max,avg"), base, inputs)
  assert [v.cfg.pooling for v in vs] == ["max", "avg"]
  assert [v.cfg.get_backbone().pooling for v in vs] == ["max", "avg"]

  rec = experiments.ReconstructConfig(opt=OPT)
  vs = study.variants(sweep("layer:relu1_1,relu3_1", "reconstruct"), rec, inputs)
  assert [v.cfg.layer for v in vs] == ["relu1_1", "relu3_1"]

  # No sweep, or a vmapped one: a single variant with the base config, validated.
  for s in (None, sweep("style_weight:1,2")):
    (v,) = study.variants(s, base, inputs)
    assert (v.value, v.cfg, v.inputs) == (None, base, inputs)
  with pytest.raises(JnstError, match="unknown vgg19 layer"):
    study.variants(None, dataclasses.replace(base, style_layers=("relu9_1",)), inputs)


def test_init_file_variant_loads_and_starts_from_it(files, random_params):
  base = experiments.StylizeConfig(init="noise", style_layers=LAYERS, content_layers=("relu2_1",))
  path = str(files / "i.png")
  vs = study.variants(study.parse_sweep(f"init:content,{path}", "stylize"), base, spec(files))
  loaded, paths = cli.load_inputs(vs[1].inputs, "stylize")
  # Loaded at the spec's size, like the content.
  assert loaded.init.shape == (32, 32, 3) and paths["content"] == str(files / "c.png")
  problem = vs[1].cfg.build(random_params, loaded)
  assert problem.shape == (27, 32, 3)  # 40x48 resized to a max side of 32.
  np.testing.assert_allclose(problem.rgb(problem.init_x), np.full((27, 32, 3), 64 / 255),
                             atol=2e-3)
  content_start = vs[0].cfg.build(random_params, cli.load_inputs(vs[0].inputs, "stylize")[0])
  np.testing.assert_allclose(content_start.rgb(content_start.init_x), loaded.content, atol=1e-4)
  # A value that is neither an init name nor a file fails when its inputs are loaded.
  (bad,) = study.variants(study.parse_sweep("init:sideways", "stylize"), base, spec(files))
  with pytest.raises(JnstError, match="--init='sideways' is neither"):
    cli.load_inputs(bad.inputs, "stylize")


@pytest.mark.parametrize("spec_,experiment,message", [
    ("learning_rate:1,abc", "stylize",
     "'abc' is not a valid --learning_rate: 'abc' is not a number"),
    ("learning_rate:0", "stylize",
     "'0' is not a valid --learning_rate: '0' must be a finite number > 0"),
    ("size:0", "stylize", "'0' is not a valid --size"),
    ("size:1.5", "reconstruct", "'1.5' is not a valid --size"),
    ("style_scale:-1", "synthesize", "'-1' is not a valid --style_scale"),
    ("layer:relu1_1,relu9_9", "reconstruct",
     "'relu9_9' is not a valid --layer: unknown vgg19 layer"),
    ("style_layers:relu1_1,foo", "synthesize", "'foo' is not a valid --style_layers"),
    ("content_layers:relu1_1+bar", "stylize", "'relu1_1\\+bar' is not a valid --content_layers"),
    ("pooling:min", "reconstruct", "'min' is not a valid --pooling: unknown pooling"),
    ("variant:median", "synthesize", "'median' is not a valid --variant"),
    ("compute_dtype:float64", "stylize", "'float64' is not a valid --compute_dtype"),
    ("optimizer:sgd", "stylize", "'sgd' is not a valid --optimizer"),
    ("linesearch:wolfe", "stylize", "'wolfe' is not a valid --linesearch"),
])
def test_variants_reject_bad_values(tmp_path, spec_, experiment, message):
  base = {"stylize": experiments.StylizeConfig(), "reconstruct": experiments.ReconstructConfig(),
          "synthesize": experiments.SynthesizeConfig()}[experiment]
  with pytest.raises(JnstError, match=message):
    study.variants(study.parse_sweep(spec_, experiment), base, spec(tmp_path))


def test_names_and_labels():
  assert study.token("a/b c:1e-3+x") == "a_b_c_1e-3+x"
  sweep = study.Sweep("style_weight", ("1e1", "1e4"))
  assert study.member_name(None, None, 3, 4) == "seed_0003"
  assert study.member_name(sweep, "1e4", 12, 2) == "style_weight_1e4_seed_0012"
  assert study.member_name(sweep, "1e4", 0, 1) == "style_weight_1e4"
  assert study.member_name(study.Sweep("init", ("/x/y.png",)), "/x/y.png", 0, 1) == "init__x_y.png"
  assert study.member_label(None, None, 3, 4) == "seed 3"
  assert study.member_label(sweep, "1e1", 0, 2) == "style_weight=1e1 seed 0"
  assert study.member_label(sweep, "1e1", 0, 1) == "style_weight=1e1"


# ------------------------------------------------------------------ running


def test_seed_study_in_process(random_params):
  content, _ = arrays()
  inputs = experiments.Inputs(content)
  cfg = experiments.ReconstructConfig(layer="relu2_1", opt=OPT)
  vs = study.variants(None, cfg, None)
  seen = []
  res = study.run(vs, [inputs], random_params, None, [2, 3, 4], members_per_batch=2,
                  progress=reports(seen))
  assert seen == [(0, 1, "", 0, 2, 3, (2,)), (0, 1, "", 1, 2, 3, (1,))]
  assert [m["file"] for m in res.members] == ["seed_0002.png", "seed_0003.png", "seed_0004.png"]
  assert [m["label"] for m in res.members] == ["seed 2", "seed 3", "seed 4"]
  assert len(res.images) == 3 and all(im.shape == (24, 32, 3) for im in res.images)
  assert len(res.results) == 1 and res.results[0].seeds == [2, 3, 4]
  # Seed 3 equals a single run with seed=3.
  one, one_res = experiments.run(dataclasses.replace(cfg, seed=3), random_params, inputs)
  np.testing.assert_allclose(res.images[1], one, rtol=0, atol=1e-3)
  assert res.members[1]["final_loss"] == pytest.approx(one_res.loss_history[-1], rel=1e-4)
  assert np.abs(res.images[0] - res.images[1]).mean() > 1e-3

  s = study.summary("reconstruct", None, res, [inputs], random_params, 3, LAYERS)
  assert s["experiment"] == "reconstruct" and s["seeds"] == [2, 3, 4]
  assert s["files"] == [m["file"] for m in res.members] and len(s["final_loss"]) == 3
  assert s["evaluations"] == [4, 4, 4] and s["steps"] == [3, 3, 3]
  assert s["status"] == ["steps"] * 3
  assert all(len(h) == 4 for h in s["loss_history"]) and s["eval_history"][0] == [1, 2, 3, 4]
  assert set(s["terms"]) == {"content"}  # A reconstruction has only a content term.
  assert s["images_per_second"] > 0 and set(s["seconds"]) == {"compile", "run", "total"}
  assert s["devices"] and s["process_count"] == 1 and "members" in s["sharding"]
  assert s["batches"] == [{"batch_size": 2, "count": 2, "choice": "2 (given)"}]
  assert s["image_size"]["output"] == [[24, 32]] * 3
  assert "sweep" not in s and "values" not in s
  div = s["diversity"]
  assert div["pixel"]["pairwise"]["count"] == 3 and div["pixel"]["pairwise"]["mean"] > 0
  assert div["features"]["layers"] == list(LAYERS) and div["reference"] == "content"
  assert len(div["pixel"]["to_reference"]["per_image"]) == 3

  sheet = study.grid({"content": content}, res, None, 3)
  assert sheet.ndim == 3 and sheet.shape[1] > 128 and sheet.shape[2] == 3
  curves = study.loss_curves(res, "reconstruct")
  assert curves.shape == (420, 720, 3) and curves.min() < 0.5

  with pytest.raises(JnstError, match="no seeds"):
    study.run(vs, [inputs], random_params, None, [])


def test_weight_sweep_is_vmapped_and_named_by_value(random_params):
  content, style = arrays()
  inputs = experiments.Inputs(content, (style,))
  cfg = experiments.StylizeConfig(content_layers=("relu2_1",), style_layers=LAYERS, init="noise",
                                  opt=optimize.OptConfig(optimizer="adam", learning_rate=5.0,
                                                         steps=3, chunk=3))
  sweep = study.parse_sweep("style_weight:1e1,1e4", "stylize")
  vs = study.variants(sweep, cfg, None)
  seen = []
  res = study.run(vs, [inputs], random_params, sweep, [0, 1], members_per_batch=10,
                  progress=reports(seen))
  assert seen == [(0, 1, "", 0, 1, 3, (4,))]  # One vmapped batch of values x seeds.
  assert [m["file"] for m in res.members] == [
      "style_weight_1e1_seed_0000.png", "style_weight_1e1_seed_0001.png",
      "style_weight_1e4_seed_0000.png", "style_weight_1e4_seed_0001.png"]
  (r,) = res.results
  assert r.values == [10.0, 10.0, 1e4, 1e4] and r.seeds == [0, 1, 0, 1]
  # Member (1e4, seed 1) equals a single run with that weight and seed.
  one, _ = experiments.run(dataclasses.replace(cfg, style_weight=1e4, seed=1), random_params,
                           inputs)
  np.testing.assert_allclose(res.images[3], one, rtol=0, atol=1e-3)
  assert np.abs(res.images[1] - res.images[3]).mean() > 1e-3  # The weight matters.

  s = study.summary("stylize", sweep, res, [inputs], random_params, 2, LAYERS)
  assert s["sweep"] == {"flag": "style_weight", "values": ["1e1", "1e4"], "mode": "vmapped"}
  assert s["values"] == ["1e1", "1e1", "1e4", "1e4"] and s["seeds"] == [0, 1, 0, 1]
  assert s["batches"] == [{"batch_size": 4, "count": 1, "choice": "10 (given)"}]  # > N is fine.
  assert set(s["diversity_per_value"]) == {"1e1", "1e4"}
  assert s["diversity_per_value"]["1e1"]["pixel"]["pairwise"]["count"] == 1
  assert s["labels"][0] == "style_weight=1e1 seed 0"
  assert set(s["terms"]) == {"content", "style", "tv"}
  sheet = study.grid({"content": content, "style": style}, res, sweep, 2)
  assert sheet.shape[2] == 3


def test_sequential_sweep_runs_one_after_another(random_params):
  _, style = arrays()
  inputs = experiments.Inputs(styles=(style,))
  cfg = experiments.SynthesizeConfig(opt=OPT)
  sweep = study.parse_sweep("style_layers:relu1_1,relu1_1+relu2_1", "synthesize")
  vs = study.variants(sweep, cfg, None)
  seen = []
  res = study.run(vs, [inputs, inputs], random_params, sweep, [0], progress=reports(seen))
  assert seen == [(0, 2, "style_layers=relu1_1 ", 0, 1, 3, (1,)),
                  (1, 2, "style_layers=relu1_1+relu2_1 ", 0, 1, 3, (1,))]
  assert [m["file"] for m in res.members] == ["style_layers_relu1_1.png",
                                              "style_layers_relu1_1+relu2_1.png"]
  assert [m["variant"] for m in res.members] == [0, 1] and len(res.results) == 2
  assert [list(p.data["targets"]["style"]) for p in res.problems] == [
      ["relu1_1"], ["relu1_1", "relu2_1"]]
  for k, v in enumerate(vs):  # Each member equals its variant's single run.
    one, _ = experiments.run(v.cfg, random_params, inputs)
    np.testing.assert_allclose(res.images[k], one, rtol=0, atol=1e-3)
  s = study.summary("synthesize", sweep, res, [inputs, inputs], random_params, 1, LAYERS)
  assert s["sweep"]["mode"] == "sequential" and s["diversity"]["reference"] == "style"
  assert s["values"] == ["relu1_1", "relu1_1+relu2_1"] and "diversity_per_value" not in s
  assert s["labels"] == ["style_layers=relu1_1", "style_layers=relu1_1+relu2_1"]
  assert len(s["batches"]) == 2 and s["terms"].keys() == {"style"}


def test_size_sweep_loads_each_size(files, random_params):
  cfg = experiments.ReconstructConfig(layer="relu1_1", opt=optimize.OptConfig(steps=2, chunk=2))
  sweep = study.parse_sweep("size:20,32", "reconstruct")
  vs = study.variants(sweep, cfg, spec(files))
  loaded = [cli.load_inputs(v.inputs, "reconstruct")[0] for v in vs]
  assert [i.content.shape for i in loaded] == [(17, 20, 3), (27, 32, 3)]
  res = study.run(vs, loaded, random_params, sweep, [0, 1])
  assert [im.shape[:2] for im in res.images] == [(17, 20)] * 2 + [(27, 32)] * 2
  s = study.summary("reconstruct", sweep, res, loaded, random_params, 2, LAYERS)
  assert s["diversity"] is None  # Images of different sizes: only per-value metrics.
  assert set(s["diversity_per_value"]) == {"20", "32"}
  for v in ("20", "32"):
    d = s["diversity_per_value"][v]
    assert d["pixel"]["pairwise"]["count"] == 1 and d["pixel"]["to_reference"] is not None
  assert s["image_size"]["output"] == [[17, 20]] * 2 + [[27, 32]] * 2
  assert s["files"] == ["size_20_seed_0000.png", "size_20_seed_0001.png",
                        "size_32_seed_0000.png", "size_32_seed_0001.png"]


def test_auto_batch_choice_in_summary(random_params, monkeypatch):
  content, _ = arrays((16, 16, 3))
  inputs = experiments.Inputs(content)
  cfg = experiments.ReconstructConfig(layer="relu1_1", opt=optimize.OptConfig(steps=2, chunk=2))
  vs = study.variants(None, cfg, None)
  res = study.run(vs, [inputs], random_params, None, [0, 1])  # Default: "auto".
  s = study.summary("reconstruct", None, res, [inputs], random_params, 2, LAYERS)
  (b,) = s["batches"]
  assert (b["batch_size"], b["count"]) == (2, 1) and b["choice"].startswith("auto: all 2 (CPU")
  monkeypatch.setattr(batched, "CPU_BATCH_MAX_PIXELS", 16 * 16 - 1)
  res = study.run(vs, [inputs], random_params, None, [0, 1], members_per_batch="auto")
  s = study.summary("reconstruct", None, res, [inputs], random_params, 2, LAYERS)
  (b,) = s["batches"]
  assert (b["batch_size"], b["count"]) == (1, 2)
  assert b["choice"] == "auto: 1 (CPU, 16x16 > 255 px: batching does not pay)"
