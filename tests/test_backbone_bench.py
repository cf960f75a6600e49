"""ResNet-50's analytic FLOP count (against a hand count and XLA's own count) and the
per-evaluation benchmark of a backbone against its PyTorch reference (tiny sizes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnst.backbones import resnet, vgg
from jnst.bench import flops

REPO = Path(__file__).resolve().parent.parent


def test_resnet_flops_by_hand():
  """32x32 input: conv1 -> 16x16, stem pool -> 8x8, stage 2 -> 4x4 (written out by hand)."""
  conv1 = 2 * 49 * 3 * 64 * 16 * 16
  layer1_0 = (2 * 64 * 64 * 64          # conv1 1x1 64->64 at 8x8
              + 2 * 9 * 64 * 64 * 64    # conv2 3x3 64->64 at 8x8
              + 2 * 64 * 256 * 64       # conv3 1x1 64->256 at 8x8
              + 2 * 64 * 256 * 64)      # downsample 1x1 64->256 at 8x8
  layer1_b = 2 * 256 * 64 * 64 + 2 * 9 * 64 * 64 * 64 + 2 * 64 * 256 * 64  # blocks 1, 2
  # layer2.0, v1.5 (stride in the 3x3): the first 1x1 at 8x8, the rest at 4x4.
  layer2_0 = (2 * 256 * 128 * 64 + 2 * 9 * 128 * 128 * 16 + 2 * 128 * 512 * 16
              + 2 * 256 * 512 * 16)
  # v1 (stride in the first 1x1): that 1x1 runs at 4x4.
  layer2_0_v1 = layer2_0 - 2 * 256 * 128 * 64 + 2 * 256 * 128 * 16
  assert flops.resnet_conv_forward_flops(32, 32, ["relu"]) == conv1
  assert flops.resnet_conv_forward_flops(32, 32, ["maxpool", "layer1.0"]) == conv1 + layer1_0
  assert flops.resnet_conv_forward_flops(32, 32, ["layer2.0"]) == (
      conv1 + layer1_0 + 2 * layer1_b + layer2_0)
  assert flops.resnet_conv_forward_flops(32, 32, ["layer2.0"], stride_in_1x1=True) == (
      conv1 + layer1_0 + 2 * layer1_b + layer2_0_v1)
  grams = 2 * 256 * 64 ** 2 + 2 * 16 * 512 ** 2  # relu (16x16, 64 ch), layer2.0 (4x4, 512)
  assert flops.resnet_gram_flops(32, 32, ["relu", "layer2.0"]) == grams
  assert flops.resnet_eval_flops(32, 32, ["relu", "layer2.0"], ["relu", "layer2.0"]) == (
      2 * (conv1 + layer1_0 + 2 * layer1_b + layer2_0) + 2 * grams)
  # Odd sides round up at each stride 2: 33 -> 17 -> 9 -> 5 -> 3 -> 2.
  assert [flops.resnet_shapes(33, 33)[l][0] for l in
          ("relu", "maxpool", "layer2.0", "layer3.0", "layer4.0")] == [17, 9, 5, 3, 2]
  # for_backbone picks the family.
  assert flops.for_backbone(resnet.RESNET50_V1, 32, 32, ["layer2.0"], ["relu"]) == (
      flops.resnet_eval_flops(32, 32, ["layer2.0"], ["relu"], True))
  assert flops.for_backbone(vgg.VGG16, 32, 32, ["relu4_2"], ["relu1_1"]) == flops.eval_flops(
      32, 32, ["relu4_2"], ["relu1_1"], vgg.ARCHS["vgg16"])
  assert flops.for_backbone(object(), 32, 32, ["x"], ["x"]) is None


@pytest.mark.parametrize("name", ["resnet50", "resnet50_v1"])
def test_resnet_flops_match_xla(name):
  """The shapes our count walks are the network's: XLA's cost analysis of the compiled
  forward pass (a static count of the HLO, the same on any backend) agrees within 15 %.
  XLA counts only kernel taps that land inside the (unpadded) image, we count every tap of
  every output (what a dense conv computes), so XLA's is lower by the borders' share, which
  shrinks as the image grows."""
  bb = resnet.RESNET50 if name == "resnet50" else resnet.RESNET50_V1
  params = bb.init_random(jax.random.key(0))
  layers = ("layer2.1",)
  ratios = []
  for h, w in ((40, 24), (96, 80)):
    fwd = jax.jit(lambda x: bb.features(params, x, layers)["layer2.1"].sum())
    cost = fwd.lower(jnp.zeros((1, h, w, 3))).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    ratios.append(cost["flops"] / flops.resnet_conv_forward_flops(h, w, layers,
                                                                  bb.stride_in_1x1))
  assert 0.85 <= ratios[0] < ratios[1] <= 1.01, ratios


def test_per_eval_benchmark_resnet_vs_torch(tmp_path, images_dir):
  """The per-evaluation benchmark command of the report, at a tiny size: ResNet-50 in JAX
  and its PyTorch reference, per-evaluation metrics only, FLOPs counted."""
  pytest.importorskip("torch")
  out = tmp_path / "bench"
  p = subprocess.run(
      [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--quick", "--backbone=resnet50",
       "--random_weights", "--sizes=32", "--noend_to_end", "--seed_size=0",
       "--seed_scaling=off", f"--content={images_dir / 'c.png'}",
       f"--style={images_dir / 's.png'}", f"--output_dir={out}"],
      capture_output=True, text=True, timeout=600, cwd=REPO,
      env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)})
  assert p.returncode == 0, p.stderr[-3000:]
  record = json.loads((out / "benchmark.json").read_text())
  assert record["machine"]["config"]["backbone"] == "resnet50"
  assert record["machine"]["config"]["end_to_end"] is False
  got = {(r["framework"], r["metric"]): r["value"] for r in record["results"] if r["size"] == 32}
  for fw in ("jax", "torch"):
    assert got[fw, "eval_ms"] > 0 and got[fw, "eval_ms_loop"] > 0
  assert not any(m.startswith(("lbfgs", "adam")) for _, m in got)  # No optimiser runs.
  h, w = record["machine"]["image_shapes_hw"]["32"]
  bb = resnet.RESNET50
  expect = flops.resnet_eval_flops(h, w, bb.default_style_layers + bb.default_content_layers,
                                   bb.default_style_layers)
  assert got["jax", "gflop_per_eval"] == pytest.approx(expect / 1e9, rel=1e-6)
  assert got["jax", "eval_gflops"] > 0
  assert "Backbone: resnet50." in (out / "benchmark.md").read_text()
