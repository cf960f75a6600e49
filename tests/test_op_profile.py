"""The per-op profiler of issue 16 (jnst.bench.op_profile): its op classes on a real compiled
evaluation, torch's aten-op table, and one tiny profile of both frameworks end to end."""

import jax
import numpy as np
import pytest
from PIL import Image

from jnst.bench import op_profile
from jnst.experiments import Inputs, StylizeConfig


@pytest.fixture(scope="module")
def tiny_problem(random_params):
  rng = np.random.default_rng(0)
  content = rng.random((24, 32, 3), dtype=np.float32)
  style = rng.random((32, 32, 3), dtype=np.float32)
  return StylizeConfig().validate().build(random_params, Inputs(content, (style,)))


def _classes(compiled) -> dict[str, int]:
  text = compiled.as_text()
  ops, bodies = op_profile.hlo_ops(text), op_profile._fusion_bodies(text)
  counts = {}
  for op in ops.values():
    if op["opcode"] in ("parameter", "constant", "tuple", "get-tuple-element", "bitcast"):
      continue
    body = bodies.get(op["calls"], "") if op["calls"] else ""
    c = op_profile.classify_jax(op, body)
    counts[c] = counts.get(c, 0) + 1
  return counts


def test_classes_of_a_compiled_evaluation(tiny_problem):
  vg = jax.jit(jax.value_and_grad(tiny_problem.objective, has_aux=True))
  counts = _classes(vg.lower(tiny_problem.init_x, tiny_problem.data).compile())
  # The default stylize loss reaches relu5_1: 13 convs forward; the input gradient runs back
  # through every one of them but conv1_1 (whose input gradient is the image's: also needed).
  assert counts.get("conv_fwd", 0) >= 13, counts
  assert counts.get("conv_bwd", 0) >= 12, counts
  # Five style layers: a Gram each way.
  assert counts.get("gram_fwd", 0) >= 5 and counts.get("gram_bwd", 0) >= 5, counts
  assert counts.get("pool_fwd", 0) >= 1, counts


def test_a_forward_only_program_has_no_backward_class(tiny_problem):
  f = jax.jit(lambda x, d: tiny_problem.objective(x, d)[0])
  counts = _classes(f.lower(tiny_problem.init_x, tiny_problem.data).compile())
  assert counts.get("conv_fwd", 0) >= 13, counts
  assert not {"conv_bwd", "gram_bwd", "pool_bwd", "elementwise_bwd"} & set(counts), counts


@pytest.mark.parametrize("name,backward,expected", [
    ("aten::mkldnn_convolution", False, "conv_fwd"),
    ("aten::convolution_backward", True, "conv_bwd"),
    ("aten::max_pool2d_with_indices", False, "pool_fwd"),
    ("aten::max_pool2d_with_indices_backward", True, "pool_bwd"),
    ("aten::mm", False, "gram_fwd"),
    ("aten::mm", True, "gram_bwd"),
    ("aten::threshold_backward", True, "elementwise_bwd"),
    ("aten::relu_", False, "relu_bias_fwd"),
    ("aten::sum", False, "loss"),
    ("aten::copy_", False, "copy"),
])
def test_torch_classes(name, backward, expected):
  assert op_profile.classify_torch(name, backward) == expected


def test_profile_both_frameworks_tiny(random_params, tmp_path):
  pytest.importorskip("torch")
  rng = np.random.default_rng(1)
  for name in ("c.png", "s.png"):
    Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / name)
  r = op_profile.profile_size(random_params, tmp_path / "c.png", tmp_path / "s.png", 32,
                              repeats=2, chunk=2)
  assert r["hw"] == [24, 32]
  for k in ("jax_alone", "jax_loop", "torch"):
    ms = r[k]["thread_ms"]
    assert r[k]["wall_ms"] > 0
    assert ms.get("conv_fwd", 0) > 0 and ms.get("conv_bwd", 0) > 0, (k, ms)
  assert "| conv_fwd |" in op_profile.table(r) and "| **wall** |" in op_profile.table(r)


def test_single_conv_rates():
  pytest.importorskip("torch")
  r = op_profile.single_conv(size=16, channels=8, repeats=1)
  assert set(r) == {"jax_float32", "jax_bfloat16", "torch_float32", "torch_bfloat16"}
  assert all(v > 0 for v in r.values()), r
