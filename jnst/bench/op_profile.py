"""Where one evaluation's time goes, per op class, in jnst (XLA:CPU) and in the PyTorch reference.

  python -m jnst.bench.op_profile --sizes=256,512,1024 --repeats=3 --out=out/op_profile.json
  python -m jnst.bench.op_profile --sizes= --conv     # one 3x3 conv, float32 and bfloat16

Both sides evaluate the stylize benchmark problem (``jnst.bench.suite``: loss + gradient with
respect to the image). JAX is profiled with ``jax.profiler.trace`` twice: jitted alone, and
inside the optimiser's own compiled loop (``optimize``'s Adam scan chunk of ``--chunk`` steps,
per step). Each traced XLA op is put in a class from its HLO metadata (``op_name`` says whether
it came from the forward pass or from ``transpose(...)``, the backward one). PyTorch is profiled
with ``torch.profiler`` (self CPU time per aten op; ops inside ``loss.backward()`` count as
backward). Classes:

  conv_fwd, conv_bwd (the input gradient), pool_fwd, pool_bwd, gram_fwd, gram_bwd (the Gram
  matmuls and their gradient), relu_bias_fwd / elementwise_bwd (everything elementwise,
  including the ReLU masks), loss (reductions of the loss terms), copy (layout copies,
  transposes, pads), other.

Thread times sum to more than the wall time when ops run side by side on several cores; the
table gives each class's share of the summed thread time and, scaled by that share, of the wall
time. Times depend on what else runs on the machine: profile alone.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from jnst.bench import timing

CLASSES = ("conv_fwd", "conv_bwd", "pool_fwd", "pool_bwd", "gram_fwd", "gram_bwd",
           "relu_bias_fwd", "elementwise_bwd", "loss", "copy", "other")

_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) .*?(?<=\s)(\w[\w\-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def hlo_ops(hlo_text: str) -> dict[str, dict]:
  """{instruction name: {"opcode", "op_name" (metadata), "shape", "calls"}} of an optimised
  HLO module's text (``compiled.as_text()``); a fusion's opcode is its kind (``__ynn_fusion``,
  ``kLoop``, ...)."""
  out = {}
  for line in hlo_text.splitlines():
    m = _INSTR.match(line)
    if not m:
      continue
    name, shape, opcode = m.groups()
    if opcode == "fusion":
      kind = re.search(r'"kind":"(\w+)"', line) or re.search(r"kind=(\w+)", line)
      opcode = kind.group(1)
    op_name, calls = _OP_NAME.search(line), re.search(r"calls=%?([\w.\-]+)", line)
    out[name] = {"opcode": opcode, "op_name": op_name.group(1) if op_name else "",
                 "shape": shape, "calls": calls.group(1) if calls else None}
  return out


def _fusion_bodies(hlo_text: str) -> dict[str, str]:
  """{computation name: its text}, to look inside fusions."""
  bodies, name, lines = {}, None, []
  for line in hlo_text.splitlines():
    m = re.match(r"^%?([\w.\-]+) .*\{$", line) if not line.startswith(" ") else None
    if m:
      name, lines = m.group(1), []
    elif line.startswith("}") and name:
      bodies[name] = "\n".join(lines)
      name = None
    elif name:
      lines.append(line)
  return bodies


def _dims(shape: str) -> list[int]:
  m = re.search(r"\[([\d,]*)\]", shape)
  return [int(d) for d in m.group(1).split(",") if d] if m else []


def classify_jax(op: dict, body: str = "") -> str:
  """The class (``CLASSES``) of one XLA op (an ``hlo_ops`` entry) and, for a fusion, the text
  of its fused computation: a fusion holding a convolution or dot is classed by that op;
  forward and backward are told apart by the ``transpose(`` of autodiff's op names; a dot
  inside the backbone (``…Net)/…``) is a 1x1 conv, and every op in the ``winograd`` name
  scope (or an unnamed dot of 36 batches) part of a Winograd conv. The Gram's own VJP
  (``losses._gram``: one (M, C) x (C, C) product) carries no op name: a dot whose result is
  not square is its backward."""
  lines = [op | {"line": ""}] if not body else []
  for line in body.splitlines():
    m = _INSTR.match(line)
    if m:
      n = _OP_NAME.search(line)
      lines.append({"opcode": m.group(3), "shape": m.group(2),
                    "op_name": n.group(1) if n else "", "line": line})
  names = " ".join(l["op_name"] for l in lines) + " " + op["op_name"]
  if re.search(r"\bwinograd[/)]", names):  # jnst.backbones.winograd's tile transforms and matmuls.
    return "conv_bwd" if "transpose(" in names else "conv_fwd"
  convs = [l for l in lines if l["opcode"] == "convolution"]
  if convs:
    return "conv_bwd" if "transpose(" in convs[0]["op_name"] else "conv_fwd"
  dots = [l for l in lines if l["opcode"] == "dot"]
  if dots and "Net" in dots[0]["op_name"]:  # A backbone's 1x1 conv written as a matmul.
    return "conv_bwd" if "transpose(" in dots[0]["op_name"] else "conv_fwd"
  if dots and not dots[0]["op_name"] and _dims(dots[0]["shape"])[:1] == [36]:
    return "conv_fwd"  # A Winograd conv's 36 batched matmuls whose name XLA dropped (1 tile).
  if dots:
    d = _dims(dots[0]["shape"])
    square = len(d) >= 2 and d[-1] == d[-2]
    return "gram_fwd" if square and "transpose(" not in dots[0]["op_name"] else "gram_bwd"
  names = " ".join(l["op_name"] for l in lines) + " " + op["op_name"]
  backward = "transpose(" in op["op_name"] or "transpose(" in names
  if "reduce_max" in names or (backward and re.search(r"/(eq|select_n)\b", names)
                               and "VGGNet" in names):
    return "pool_bwd" if backward else "pool_fwd"
  if op["opcode"] in ("copy", "transpose", "pad") or all(
      l["opcode"] in ("copy", "transpose", "pad", "bitcast", "parameter") for l in lines):
    return "copy"
  if "reduce_sum" in names and "VGGNet" not in names:
    return "loss"
  if op["opcode"] in ("__ynn_fusion", "kLoop", "kInput", "kOutput") or body:
    return "elementwise_bwd" if backward else "relu_bias_fwd"
  return "other"


def _trace_events(run, repeats: int) -> tuple[dict[str, float], float]:
  """({event name: summed µs}, wall seconds) over ``repeats`` calls of ``run`` under
  ``jax.profiler.trace``."""
  d = tempfile.mkdtemp(prefix="jnst-prof-")
  with jax.profiler.trace(d, create_perfetto_trace=True):
    t0 = time.perf_counter()
    for _ in range(repeats):
      run()
    wall = time.perf_counter() - t0
  path = glob.glob(f"{d}/**/perfetto_trace.json.gz", recursive=True)[0]
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  dur = collections.Counter()
  for e in events:
    if e.get("ph") == "X":
      dur[e["name"]] += e.get("dur", 0)
  return dur, wall


def jax_profile(compiled, args, repeats: int, per_call: int = 1) -> dict:
  """Per-class thread ms and wall ms per evaluation of ``compiled(*args)`` (an
  ``jax.stages.Compiled``), which performs ``per_call`` evaluations per call."""
  text = compiled.as_text()
  ops, bodies = hlo_ops(text), _fusion_bodies(text)
  run = lambda: jax.block_until_ready(compiled(*args))
  run()
  dur, wall = _trace_events(run, repeats)
  n = repeats * per_call
  by_class, top = collections.Counter(), []
  for name, us in dur.items():
    if name not in ops:
      continue
    op = ops[name]
    cls = classify_jax(op, bodies.get(op["calls"], "") if op["calls"] else "")
    by_class[cls] += us / 1e3 / n
    top.append((us / 1e3 / n, name, cls, op["op_name"][-60:]))
  top.sort(reverse=True)
  return {"wall_ms": 1e3 * wall / n, "thread_ms": dict(by_class),
          "top_ops": [dict(ms=t, op=o, cls=c, op_name=m) for t, o, c, m in top[:25]]}


_TORCH_COPY = {"aten::copy_", "aten::contiguous", "aten::clone", "aten::permute",
               "aten::transpose", "aten::t", "aten::constant_pad_nd", "aten::empty",
               "aten::empty_like", "aten::as_strided", "aten::as_strided_", "aten::view",
               "aten::reshape", "aten::_unsafe_view", "aten::expand", "aten::zeros",
               "aten::zeros_like", "aten::fill_", "aten::zero_", "aten::detach", "aten::to"}
_TORCH_LOSS = {"aten::sum", "aten::mean", "aten::pow", "aten::sub", "aten::mul", "aten::div",
               "aten::add", "aten::abs"}


def classify_torch(name: str, backward: bool) -> str:
  """The class of one aten op (self time) of the PyTorch reference."""
  n = name.lower()
  if "conv" in n:
    return "conv_bwd" if backward or "backward" in n else "conv_fwd"
  if "pool" in n:
    return "pool_bwd" if backward or "backward" in n else "pool_fwd"
  if n in ("aten::mm", "aten::bmm", "aten::matmul", "aten::addmm", "aten::baddbmm"):
    return "gram_bwd" if backward else "gram_fwd"
  if n in _TORCH_COPY:
    return "copy"
  if n in _TORCH_LOSS and not backward:
    return "loss"
  return "elementwise_bwd" if backward else "relu_bias_fwd"


def torch_profile(loss, x0, repeats: int) -> dict:
  """Per-class self CPU ms and wall ms per eager evaluation (forward + ``backward()``)."""
  from jnst.bench import torch_ref
  t = torch_ref.torch()
  from torch.profiler import ProfilerActivity, profile, record_function

  def ev():
    x = x0.detach().requires_grad_(True)
    with record_function("jnst_forward"):
      value, _ = loss(x)
    with record_function("jnst_backward"):
      value.backward()
    return x.grad

  ev()
  with profile(activities=[ProfilerActivity.CPU]) as prof:
    t0 = time.perf_counter()
    for _ in range(repeats):
      ev()
    wall = time.perf_counter() - t0
  events = prof.events()
  spans = [(e.time_range.start, e.time_range.end) for e in events if e.name == "jnst_backward"]
  by_class, per_op = collections.Counter(), collections.Counter()
  for e in events:
    if e.name.startswith("jnst_") or e.self_cpu_time_total <= 0:
      continue
    start = e.time_range.start
    back = any(a <= start <= b for a, b in spans) or e.thread != events[0].thread
    cls = classify_torch(e.name, back)
    by_class[cls] += e.self_cpu_time_total / 1e3 / repeats
    per_op[(e.name, cls)] += e.self_cpu_time_total / 1e3 / repeats
  top = sorted(((ms, n, c) for (n, c), ms in per_op.items()), reverse=True)[:25]
  return {"wall_ms": 1e3 * wall / repeats, "thread_ms": dict(by_class),
          "top_ops": [dict(ms=m, op=n, cls=c) for m, n, c in top]}


def _jax_programs(problem, chunk: int):
  """(alone, in_loop): the jitted evaluation, and ``optimize``'s compiled Adam chunk."""
  import jnst.optimize as optimize
  vg = jax.jit(jax.value_and_grad(problem.objective, has_aux=True))
  alone = vg.lower(problem.init_x, problem.data).compile()
  cfg = optimize.OptConfig(optimizer="adam", steps=chunk, chunk=chunk).validate()
  state = optimize.init_state(problem.init_x, cfg)
  loop, _ = optimize.CACHE.get("chunk", problem.objective, cfg, chunk, None, state, problem.data)
  return (alone, (problem.init_x, problem.data)), (loop, state)


def profile_size(params, content_path, style_path, size: int, repeats: int, chunk: int,
                 frameworks=("jax", "torch"), backbone: str = "vgg19") -> dict:
  """{"jax_alone", "jax_loop", "torch": profile dicts} at one size, the stylize defaults of
  ``backbone`` (``params`` are its weights)."""
  from jnst.bench import suite
  from jnst.experiments import Inputs, StylizeConfig
  content, style = suite.load_pair(content_path, style_path, size)
  scfg = StylizeConfig(backbone=backbone, variant="paper").validate()  # As the benchmark.
  problem = scfg.build(params, Inputs(content, (style,)))
  out = {"size": size, "hw": list(content.shape[:2])}
  if "jax" in frameworks:
    (alone, args), (loop, state) = _jax_programs(problem, chunk)
    out["jax_alone"] = jax_profile(alone, args, repeats)
    # The loop donates its state: hand it a fresh copy every call.
    fresh = lambda: jax.tree.map(lambda a: a.copy(), state)
    out["jax_loop"] = jax_profile(_Fresh(loop, fresh, problem.data), (), max(1, repeats // 2),
                                  per_call=chunk)
  if "torch" in frameworks:
    from jnst.bench import torch_ref
    loss, x0 = torch_ref.stylize_problem(params, content, [style], scfg)
    out["torch"] = torch_profile(loss, x0, repeats)
  return out


class _Fresh:
  """A compiled donating loop called on a fresh copy of its state each time (the copy is
  made before the call, outside what the profile counts as the loop's ops)."""

  def __init__(self, compiled, fresh, data):
    self.compiled, self.fresh, self.data = compiled, fresh, data

  def as_text(self):
    return self.compiled.as_text()

  def __call__(self):
    return self.compiled(jax.block_until_ready(self.fresh()), self.data)


def single_conv(frameworks=("jax", "torch"), size: int = 128, channels: int = 128,
                repeats: int = 10) -> dict[str, float]:
  """GFLOP/s of one 3x3 'SAME' conv, ``size``² x ``channels`` -> ``channels``, batch 1, in
  float32 and bfloat16 (best of ``repeats``): {"jax_float32", "jax_bfloat16", "torch_...": ...}.
  Shows whether a framework has a faster bf16 kernel on this CPU (bf16 inputs, bf16 output)."""
  import jax.numpy as jnp
  flop = 2 * size * size * channels * channels * 9
  out = {}

  def best(f):
    return flop / timing.best_seconds(f, repeats) / 1e9

  if "jax" in frameworks:
    conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    x = jax.random.normal(jax.random.key(0), (1, size, size, channels))
    k = jax.random.normal(jax.random.key(1), (3, 3, channels, channels))
    for dt in (jnp.float32, jnp.bfloat16):
      xd, kd = x.astype(dt), k.astype(dt)
      out[f"jax_{dt.__name__}"] = best(lambda: jax.block_until_ready(conv(xd, kd)))
  if "torch" in frameworks:
    from jnst.bench import torch_ref
    t = torch_ref.torch()
    xt, kt = t.randn(1, channels, size, size), t.randn(channels, channels, 3, 3)
    for dt in (t.float32, t.bfloat16):
      xd, kd = xt.to(dt), kt.to(dt)
      with t.no_grad():
        out[f"torch_{str(dt).split('.')[-1]}"] = best(
            lambda: t.nn.functional.conv2d(xd, kd, padding=1))
  return out


def table(result: dict) -> str:
  """Markdown: ms per evaluation per class, jax alone / jax in loop / torch."""
  cols = [k for k in ("jax_alone", "jax_loop", "torch") if k in result]
  lines = [f"#### {result['size']} px ({result['hw'][1]}x{result['hw'][0]}): ms per evaluation "
           "(summed thread time; wall in the last row)", "",
           "| class | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
  for c in CLASSES:
    vals = [result[k]["thread_ms"].get(c, 0.0) for k in cols]
    if any(v > 0.05 for v in vals):
      lines.append(f"| {c} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
  lines.append("| **sum of threads** | " + " | ".join(
      f"{sum(result[k]['thread_ms'].values()):.1f}" for k in cols) + " |")
  lines.append("| **wall** | " + " | ".join(f"{result[k]['wall_ms']:.1f}" for k in cols) + " |")
  return "\n".join(lines)


def main(argv=None) -> list[dict]:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", default="256,512")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--chunk", type=int, default=4, help="Adam steps per compiled loop call")
  p.add_argument("--frameworks", default="jax,torch")
  p.add_argument("--backbone", default="vgg19")
  p.add_argument("--random_weights", action="store_true",
                 help="random weights (same cost; for a backbone without a weights file)")
  p.add_argument("--content", default=None)
  p.add_argument("--style", default=None)
  p.add_argument("--threads", type=int, default=0, help="torch threads (0: every CPU)")
  p.add_argument("--out", default=None, help="JSON file for the results")
  p.add_argument("--conv", action="store_true", help="also time one 3x3 conv, f32 and bf16")
  a = p.parse_args(argv)
  import jnst
  import jnst.demo as demo
  from jnst.records import cpu_count, save_json, versions
  frameworks = tuple(a.frameworks.split(","))
  if "torch" in frameworks:
    from jnst.bench import torch_ref
    torch_ref.torch().set_num_threads(a.threads or cpu_count())
  shared = Path(__file__).resolve().parents[3] / "shared" / "images"
  content = a.content or next((str(p) for p in [shared / "tubingen.jpg"] if p.is_file()),
                              None) or str(demo.content_path())
  style = a.style or next((str(p) for p in [shared / "starry_night.jpg"] if p.is_file()),
                          None) or str(demo.style_path())
  bb = jnst.backbones.get(a.backbone)
  params = (bb.init_random(jax.random.key(0)) if a.random_weights
            else jnst.load_backbone(a.backbone, None)[1])
  results = []
  if a.conv:
    conv = single_conv(frameworks)
    print("one 3x3 conv 128x128x128 -> 128, GFLOP/s: "
          + ", ".join(f"{k} {v:.0f}" for k, v in conv.items()), flush=True)
    results.append({"single_conv_gflops": conv})
  for size in (int(s) for s in a.sizes.split(",") if s):
    r = profile_size(params, content, style, size, a.repeats, a.chunk, frameworks, a.backbone)
    print(table(r) + "\n", flush=True)
    results.append(r)
  if a.out:
    save_json(a.out, {"machine": versions(), "results": results})
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
