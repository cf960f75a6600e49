"""jnst.backbones.resnet against an independent PyTorch ResNet-50 written for the tests
(tests/torch_resnet.py; random weights with non-trivial batch-norm statistics), the
converters by round trip (torchvision state dict file / synthetic Keras h5 -> our file ->
the same features as the torch module), layer names, and bad input."""

import shutil
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")  # The reference; CI installs the CPU build (.ci/run).

import jnst.backbones as backbones  # noqa: E402
from jnst.backbones import resnet, vgg  # noqa: E402
from jnst.bench import torch_ref  # noqa: E402
from jnst.errors import JnstError  # noqa: E402
from jnst.experiments import Inputs, StylizeConfig  # noqa: E402
from tests import script_runner, torch_resnet  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ALL = resnet.LAYER_NAMES


def rel_err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / (np.max(np.abs(b)) + 1e-30))


def params_from(kernels, input_=None):
  return {"conv": {n: {"kernel": k, "bias": b} for n, (k, b) in kernels.items()},
          "input": input_ or resnet.torch_input()}


@pytest.fixture(scope="module")
def torch_v15():
  return torch_resnet.ResNet50().randomize(0)


@pytest.fixture(scope="module")
def torch_pth(torch_v15, tmp_path_factory):
  path = tmp_path_factory.mktemp("pth") / "resnet50.pth"
  torch.save(torch_v15.state_dict(), path)
  return path


@pytest.fixture(scope="module")
def our_file(torch_pth, tmp_path_factory):
  dst = tmp_path_factory.mktemp("ours") / "resnet50.h5"
  return resnet.fetch_and_convert(dst, torch_pth=torch_pth, log=lambda m: None)


def write_keras_h5(model, path, extra_empty=("conv1_pad", "pool1_pad", "conv2_block1_add")):
  """A Keras-applications-layout ResNet-50 notop file from the torch v1 module: groups
  ``<prefix>_conv/<prefix>_conv/{kernel:0, bias:0}`` (HWIO) and ``<prefix>_bn/<prefix>_bn/
  {gamma:0, beta:0, moving_mean:0, moving_variance:0}``, plus weightless layers."""
  def np_(t):
    return t.detach().float().numpy()

  with h5py.File(path, "w") as f:
    names = []
    for name in resnet.CONV_NAMES:
      prefix = resnet.keras_name(name)
      conv_path, bn_path = resnet._torch_key(name)
      conv, bn = model.get_submodule(conv_path), model.get_submodule(bn_path)
      g = f.create_group(f"{prefix}_conv").create_group(f"{prefix}_conv")
      g["kernel:0"] = np_(conv.weight).transpose(2, 3, 1, 0)
      g["bias:0"] = np_(conv.bias)
      g = f.create_group(f"{prefix}_bn").create_group(f"{prefix}_bn")
      for key, t in (("gamma", bn.weight), ("beta", bn.bias), ("moving_mean", bn.running_mean),
                     ("moving_variance", bn.running_var)):
        g[f"{key}:0"] = np_(t)
      names += [f"{prefix}_conv", f"{prefix}_bn"]
    for n in extra_empty:
      f.create_group(n)
    f.attrs["layer_names"] = np.array([n.encode() for n in names + list(extra_empty)])
  return path


# ---------------------------------------------------------------------------- parity


def test_every_layer_matches_torch(torch_v15):
  """Batch norm folded by the converter, odd non-square size: every exposed layer."""
  params = params_from(resnet.from_torch_state(torch_v15.state_dict()))
  rgb = np.random.default_rng(1).uniform(size=(1, 45, 62, 3)).astype(np.float32)
  x = np.asarray(resnet.RESNET50.preprocess(params, rgb))
  ref = torch_resnet.run(torch_v15, x)
  got = resnet.RESNET50.extract(params, rgb, ALL)
  assert set(got) == set(ALL)
  for name in ALL:
    assert got[name].shape == ref[name].shape, name
    assert rel_err(got[name], ref[name]) < 1e-5, (name, rel_err(got[name], ref[name]))


def test_avg_pooling_matches_torch(torch_v15):
  avg = torch_resnet.ResNet50(pooling="avg")
  avg.load_state_dict(torch_v15.state_dict())
  params = params_from(resnet.from_torch_state(torch_v15.state_dict()))
  x = np.random.default_rng(2).normal(size=(2, 33, 32, 3)).astype(np.float32)
  ref = torch_resnet.run(avg.eval(), x)
  got = resnet.RESNET50.with_options(pooling="avg").features(params, x, ["maxpool", "layer1.2"])
  for name in ("maxpool", "layer1.2"):
    assert rel_err(got[name], ref[name]) < 1e-5, name


def test_torch_file_round_trip(torch_v15, our_file):
  """torch state dict file -> our file -> load -> the torch module's features."""
  bb, params = backbones.get("resnet50"), resnet.RESNET50.load(our_file)
  attrs = resnet.read(our_file)[1]
  assert attrs["arch"] == "resnet50" and attrs["input_convention"] == "torch_rgb"
  rgb = np.random.default_rng(3).uniform(size=(1, 64, 64, 3)).astype(np.float32)
  ref = torch_resnet.run(torch_v15, np.asarray(bb.preprocess(params, rgb)))
  got = bb.extract(params, rgb, ["relu", "layer2.3", "layer4.2"])
  for name in got:
    assert rel_err(got[name], ref[name]) < 1e-5, name
  # float16 storage: the same network to float16 precision.
  f16 = resnet.write(our_file.with_name("f16.h5"), resnet.read(our_file)[0], name="resnet50",
                     source="t", source_sha256="0", convention="torch_rgb",
                     mean=resnet.TORCH_MEAN, std=resnet.TORCH_STD, storage_dtype="float16")
  assert rel_err(bb.extract(resnet.RESNET50.load(f16), rgb, ["layer2.3"])["layer2.3"],
                 ref["layer2.3"]) < 3e-2


def test_keras_file_round_trip(tmp_path):
  """A Keras-layout notop h5 (v1 blocks, conv biases, eps 1.001e-5, Caffe BGR input) ->
  our resnet50_v1 file -> the torch v1 module on Caffe-preprocessed BGR."""
  model = torch_resnet.ResNet50(stride_in_1x1=True, bias=True, eps=resnet.KERAS_BN_EPS)
  model = model.randomize(4)
  src = write_keras_h5(model, tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
  dst = resnet.fetch_and_convert(tmp_path / "v1.h5", keras_h5=src, log=lambda m: None)
  assert resnet.read(dst)[1]["arch"] == "resnet50_v1"
  bb = backbones.get("resnet50_v1")
  params = bb.load(dst)
  rgb = np.random.default_rng(5).uniform(size=(1, 48, 40, 3)).astype(np.float32)
  bgr = rgb[..., ::-1] * 255.0 - np.array(resnet.CAFFE_MEAN_BGR)
  ref = torch_resnet.run(model, bgr)
  got = bb.extract(params, rgb, ALL)
  for name in ALL:
    assert rel_err(got[name], ref[name]) < 1e-5, (name, rel_err(got[name], ref[name]))
  # The v1.5 graph on the same weights is a different network.
  v15 = resnet.RESNET50.features(params, bb.preprocess(params, rgb), ["layer2.0"])["layer2.0"]
  assert rel_err(v15, ref["layer2.0"]) > 1e-2


def test_features_stop_at_deepest_requested_layer():
  params = resnet.RESNET50.init_random(jax.random.key(0))
  x = np.zeros((1, 32, 32, 3), np.float32)
  jaxpr = jax.make_jaxpr(lambda im: resnet.RESNET50.extract(params, im, ["layer1.0"]))(x)
  # conv1 + one block: its 3x3 conv, and three 1x1 convs (two + the shortcut) as matmuls.
  assert str(jaxpr).count("conv_general_dilated") == 2
  assert str(jaxpr).count("dot_general") == 3
  out = resnet.RESNET50.extract(params, x + 0.5, ["relu", "layer4.2"])
  assert out["layer4.2"].shape == (1, 1, 1, 2048) and out["relu"].shape == (1, 16, 16, 64)
  assert all(np.isfinite(v).all() for v in out.values())


def test_bfloat16_close_to_float32():
  params = resnet.RESNET50.init_random(jax.random.key(1))
  rgb = np.random.default_rng(6).uniform(size=(1, 32, 32, 3)).astype(np.float32)
  f32 = resnet.RESNET50.extract(params, rgb, ["layer2.3"])["layer2.3"]
  bf16 = resnet.RESNET50.with_options(compute_dtype="bfloat16").extract(params, rgb, ["layer2.3"])
  assert bf16["layer2.3"].dtype == np.float32
  assert rel_err(bf16["layer2.3"], np.asarray(f32, np.float64)) < 0.1


@pytest.mark.parametrize("name,pooling", [("resnet50", "max"), ("resnet50_v1", "avg")])
def test_bench_torch_reference_matches(name, pooling):
  """jnst.bench.torch_ref's ResNet-50 (the benchmark's reference): features at every layer,
  and the stylize loss and gradient, equal jnst's."""
  params = resnet.RESNET50.init_random(jax.random.key(5))
  rng = np.random.default_rng(9)
  content = rng.uniform(size=(40, 36, 3)).astype(np.float32)
  style = rng.uniform(size=(32, 32, 3)).astype(np.float32)
  bb = backbones.get(name, pooling=pooling)
  x = np.asarray(bb.preprocess(params, content))[None]
  ref = torch_ref.TorchResNet(params, bb.stride_in_1x1).features(torch_ref.to_nchw(x), ALL,
                                                                  pooling)
  got = bb.features(params, x, ALL)
  for layer in ALL:
    assert rel_err(got[layer], torch_ref.to_nhwc(ref[layer]).astype(np.float64)) < 1e-5, layer
  cfg = StylizeConfig(backbone=name, pooling=pooling, tv_weight=1e-3,
                      content_layers=("layer1.2",), style_layers=("relu", "layer2.0"))
  problem = cfg.build(params, Inputs(content, (style,)))
  xj = problem.init_x + 0.3 * jax.random.normal(jax.random.key(2), problem.init_x.shape)
  (loss, _), grad = jax.value_and_grad(problem.objective, has_aux=True)(xj, problem.data)
  tl, _ = torch_ref.stylize_problem(params, content, [style], cfg)
  t_loss, t_grad = torch_ref.value_and_grad(tl, torch_ref.to_nchw(np.asarray(xj)))
  np.testing.assert_allclose(float(t_loss), float(loss), rtol=1e-4)
  np.testing.assert_allclose(torch_ref.to_nhwc(t_grad)[0], np.asarray(grad), rtol=1e-4,
                             atol=1e-4 * float(np.abs(grad).max()))


# ---------------------------------------------------------------------------- names


def test_layer_names_and_aliases():
  bb = backbones.get("resnet50")
  assert bb.expand_layers("relu,layer2") == ("relu", "layer2.0", "layer2.1", "layer2.2", "layer2.3")
  assert bb.expand_layers(["res2a", "conv3_block4_out", "pool1_pool", "conv1_relu",
                           "res5c"]) == ("layer1.0", "layer2.3", "maxpool", "relu", "layer4.2")
  assert bb.expand_layers("layer1.0,res2a") == ("layer1.0",)
  for layers in (bb.default_style_layers, bb.default_content_layers, bb.block_layers,
                 bb.diversity_layers):
    assert bb.validate_layers(layers) == layers
  with pytest.raises(JnstError, match="unknown resnet50 layer name.*'relu4_2'"):
    bb.expand_layers("relu4_2")
  with pytest.raises(JnstError, match="empty layer list"):
    bb.expand_layers("")
  with pytest.raises(JnstError, match="unknown pooling"):
    backbones.get("resnet50", pooling="median")
  assert backbones.get("resnet50", pooling="avg").describe() == {
      "name": "resnet50", "pooling": "avg", "compute_dtype": "float32"}
  assert hash(backbones.get("resnet50")) == hash(resnet.RESNET50)


# ---------------------------------------------------------------------------- bad input


def test_wrong_architecture_files_refused(our_file, tmp_path, random_params):
  kernels = {n: (np.asarray(p["kernel"]), np.asarray(p["bias"]))
             for n, p in random_params["conv"].items()}
  vgg_file = vgg.write(tmp_path / "vgg.h5", kernels, arch=vgg.ARCHS["vgg19"], source="t",
                       source_sha256="0", convention="caffe_bgr", mean=vgg.CAFFE_MEAN_BGR,
                       storage_dtype="float16")
  with pytest.raises(JnstError, match="holds vgg19 weights, not resnet50: pass --backbone=vgg19"):
    resnet.RESNET50.load(vgg_file)
  with pytest.raises(JnstError, match="holds resnet50 weights, not resnet50_v1: pass "
                                      "--backbone=resnet50"):
    resnet.RESNET50_V1.load(our_file)
  with pytest.raises(JnstError):
    vgg.VGG19.load(our_file)
  with pytest.raises(JnstError, match="not ResNet-50's"):
    resnet.RESNET50.features(random_params, np.zeros((1, 8, 8, 3), np.float32), ["relu"])
  with pytest.raises(JnstError, match="no default resnet50 weights"):
    resnet.RESNET50.load()


def test_truncated_and_incomplete_files_refused(our_file, tmp_path, torch_v15):
  cut = tmp_path / "cut.h5"
  cut.write_bytes(our_file.read_bytes()[: our_file.stat().st_size // 2])
  with pytest.raises(JnstError, match="cut.h5.*(truncated|not a readable HDF5)"):
    resnet.RESNET50.load(cut)
  # A Keras file missing a layer, and a torch state dict missing a key.
  src = write_keras_h5(torch_resnet.ResNet50(True, True), tmp_path / "k.h5")
  with h5py.File(src, "a") as f:
    del f["conv4_block3_2_bn"]
  with pytest.raises(JnstError, match="layer conv4_block3_2_bn is missing"):
    resnet.convert_keras_h5(src, tmp_path / "out.h5", log=lambda m: None)
  state = {k: v for k, v in torch_v15.state_dict().items() if k != "layer3.1.bn2.running_var"}
  with pytest.raises(JnstError, match="layer3.1.bn2.running_var is missing"):
    resnet.from_torch_state(state)
  bad = tmp_path / "bad.pth"
  bad.write_bytes(b"not a pickle")
  with pytest.raises(JnstError, match="not a readable PyTorch state dict"):
    resnet.convert_torch_pth(bad, tmp_path / "out.h5")
  with pytest.raises(JnstError, match="exactly one of"):
    resnet.fetch_and_convert(tmp_path / "out.h5")
  assert not list(tmp_path.glob("out*"))  # Nothing half-written.


# ---------------------------------------------------------------------------- scripts


def run_script(name, *args):  # In a reused worker process: tests/script_runner.py.
  return script_runner.run_script(name, *args)


@pytest.fixture(scope="module")
def random_resnet_file(tmp_path_factory):
  params = resnet.RESNET50.init_random(jax.random.key(7))
  kernels = {n: (np.asarray(p["kernel"]), np.asarray(p["bias"])) for n, p in params["conv"].items()}
  return resnet.write(tmp_path_factory.mktemp("w") / "random_resnet50.h5", kernels,
                      name="resnet50", source="random (tests)", source_sha256="0" * 64,
                      convention="torch_rgb", mean=resnet.TORCH_MEAN, std=resnet.TORCH_STD,
                      storage_dtype="float16")


def test_stylize_script_with_resnet(random_resnet_file, tmp_path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "c.png")
  Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(tmp_path / "s.png")
  io = [f"--content={tmp_path/'c.png'}", f"--style={tmp_path/'s.png'}", "--size=32"]
  p = run_script("stylize", "--backbone=resnet50", f"--weights={random_resnet_file}", *io,
                 "--steps=2", "--print_every=1", f"--output={tmp_path/'out.png'}")
  assert p.returncode == 0, p.stderr
  assert Image.open(tmp_path / "out.png").size == (32, 27)
  p = run_script("stylize", "--backbone=vgg19", f"--weights={random_resnet_file}", *io,
                 f"--output={tmp_path/'bad.png'}")
  assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
  assert p.stderr.strip().startswith("error:") and len(p.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "bad.png").exists()


def test_fetch_weights_script_converts_resnet(torch_pth, torch_v15, tmp_path):
  out = tmp_path / "r50.h5"
  p = run_script("fetch_weights", "--backbone=resnet50", f"--torch_pth={torch_pth}",
                 f"--output={out}")
  assert p.returncode == 0, p.stderr
  params = resnet.RESNET50.load(out)
  x = np.random.default_rng(8).normal(size=(1, 16, 16, 3)).astype(np.float32)
  got = resnet.RESNET50.features(params, x, ["layer1.0"])["layer1.0"]
  assert rel_err(got, torch_resnet.run(torch_v15, x)["layer1.0"]) < 1e-5
  p = run_script("fetch_weights", "--backbone=resnet50", f"--from_jnst={out}",
                 "--storage_dtype=float16", f"--output={tmp_path/'f16.h5'}")
  assert p.returncode == 0, p.stderr
  assert h5py.File(tmp_path / "f16.h5")["layer4.2.conv3/kernel"].dtype == np.float16
  p = run_script("fetch_weights", "--backbone=resnet50_v1", f"--torch_pth={torch_pth}",
                 f"--output={tmp_path/'v1.h5'}")
  assert p.returncode == 2 and "pass --backbone=resnet50" in p.stderr, p.stderr
  assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "v1.h5").exists()
