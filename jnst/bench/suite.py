"""The benchmark itself: jnst (JAX) and the PyTorch reference on the same problem, in one
process, as a list of records ``{"framework", "size", "metric", "value", "unit"}``.

The problem at each size: the content image resized so its longer side is ``size``, one
style image at the same size, jnst's stylize defaults (content relu4_2, style relu1_1 ...
relu5_1 with w_l = 1/5, paper normalisation, α = 1, β = 1e3, max pooling, init = content).
Metric names are documented in BENCHMARKS.md. Every time is a median over ``repeats``
calls after warm-up, with the device synced before the clock is read.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

import jnst.images as images
import jnst.optimize as optimize
from jnst.records import cpu_count, cpu_label, save_json, save_text, versions
import jnst.backbones as backbones
from jnst.bench import flops, seed_scaling, timing
from jnst.bench.recorder import OPTIMIZERS, Recorder, opt_config
from jnst.experiments import Inputs, StylizeConfig
from jnst.errors import JnstError

FRAMEWORKS = ("jax", "torch")
LOOPS = ("step", "scan")
SEED_SCALING = ("off", "on", "only")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
  """What to measure.

  sizes: longer image side, pixels. steps: evaluations per end-to-end run. repeats: timed
  calls per median (after warm-up); e2e_repeats: the same for whole runs. num_seeds / seed_size: the seed-throughput problem
  (seed_size 0 = skip; None = the smallest size). loops: JAX loop designs to time end to
  end. scan_chunk: steps per compiled scan call. torch_compile: also time torch.compile.
  threads: torch intra-op threads (0 = every CPU, as XLA:CPU uses). matmul_n: side of the
  matmul that measures the peak. seed_scaling: "off", "on" (after the rest) or "only" —
  the issue-4 figure (``seed_scaling.py``) at ``seed_sizes`` (px) for ``seed_counts`` seeds
  of ``seed_steps`` L-BFGS steps each. backbone: the network (``jnst.backbones`` name); the
  params passed to ``run`` must be its. end_to_end: False measures per-evaluation figures
  only (no optimiser runs, no time to a common loss). conv, winograd_channels: the VGG
  convs' algorithm and Winograd threshold (``StylizeConfig``'s; torch's side is unchanged).
  """
  sizes: tuple[int, ...] = (128, 256)
  frameworks: tuple[str, ...] = FRAMEWORKS
  steps: int = 50
  repeats: int = 3
  e2e_repeats: int = 1
  warmup: int = 3
  num_seeds: int = 8
  seed_size: int | None = None
  loops: tuple[str, ...] = LOOPS
  scan_chunk: int = 10
  torch_compile: bool = True
  threads: int = 0
  matmul_n: int = 2048
  seed_scaling: str = "off"
  seed_sizes: tuple[int, ...] = (64, 128, 256)
  seed_counts: tuple[int, ...] = (1, 2, 4, 8, 16)
  seed_steps: int = 10
  backbone: str = "vgg19"
  end_to_end: bool = True
  conv: str = "auto"
  winograd_channels: int = 0

  def validate(self) -> BenchConfig:
    bad = [f for f in self.frameworks if f not in FRAMEWORKS]
    if bad or not self.frameworks:
      raise JnstError(f"unknown framework(s) {bad or '(none)'}: use --frameworks=jax,torch")
    bad = [l for l in self.loops if l not in LOOPS]
    if bad:
      raise JnstError(f"unknown loop(s) {bad}: use --loops=step,scan")
    if not self.sizes or min(self.sizes) < images.MIN_SIDE:
      raise JnstError(f"--sizes must be at least {images.MIN_SIDE} pixels, got {list(self.sizes)}")
    for name in ("steps", "repeats", "e2e_repeats", "num_seeds", "scan_chunk", "matmul_n"):
      if getattr(self, name) < 1:
        raise JnstError(f"--{name} must be at least 1, got {getattr(self, name)}")
    if self.warmup < 0 or self.threads < 0:
      raise JnstError("--warmup and --threads must be >= 0")
    if self.seed_scaling not in SEED_SCALING:
      raise JnstError(f"unknown seed_scaling {self.seed_scaling!r}: use off, on or only")
    if self.seed_scaling != "off":
      if not self.seed_sizes or min(self.seed_sizes) < images.MIN_SIDE:
        raise JnstError(f"--seed_sizes must be at least {images.MIN_SIDE} pixels, got "
                        f"{list(self.seed_sizes)}")
      if not self.seed_counts or min(self.seed_counts) < 1 or self.seed_steps < 1:
        raise JnstError(f"--seed_counts and --seed_steps must be at least 1, got "
                        f"{list(self.seed_counts)} and {self.seed_steps}")
    return self


def machine_info(cfg: BenchConfig) -> dict:
  """CPU, cores, GPU, versions and load (``records.versions`` plus these): what the figures
  were measured on."""
  info = versions()
  info.update(jax_backend=info.pop("backend"), jax_devices=info.pop("devices"),
              load_average_1_5_15=list(os.getloadavg()),
              xla_flags=os.environ.get("XLA_FLAGS", ""), config=dataclasses.asdict(cfg))
  if "torch" in cfg.frameworks:
    from jnst.bench import torch_ref
    t = torch_ref.torch()
    info.update(torch=t.__version__, torch_threads=t.get_num_threads(),
                torch_device=torch_ref.default_device(),
                gpu=t.cuda.get_device_name() if t.cuda.is_available() else None)
  return info


# ------------------------------------------------------------------ JAX side


def _jax_sync(tree):
  return jax.block_until_ready(tree)


def _jax_warm(problem, x0, cfg: optimize.OptConfig, vmap: optimize.Vmap | None = None) -> float:
  """Compiles (and runs once) exactly the programs ``optimize.drive`` will call; seconds."""
  t0 = time.perf_counter()
  init, _ = optimize.CACHE.get("init", None, cfg, 0, vmap, x0)
  state = init(x0)
  scan = cfg.loop == "scan"
  fn, _ = optimize.CACHE.get("chunk" if scan else "step", problem.objective, cfg,
                             min(cfg.chunk, cfg.steps) if scan else 0, vmap, state, problem.data)
  state, _ = fn(state, problem.data)
  loss, _ = optimize.CACHE.get("loss", problem.objective, None, 0, vmap, state.x, problem.data)
  _jax_sync(loss(state.x, problem.data))
  return time.perf_counter() - t0


def _gflops(n_flops: int | None, seconds: float) -> float | None:
  """GFLOP/s of ``n_flops`` in ``seconds`` (None when the count is unknown)."""
  return None if n_flops is None else n_flops / seconds / 1e9


def jax_eval(rec: Recorder, problem, size: int, cfg: BenchConfig, n_flops: int | None) -> None:
  """One loss + gradient evaluation, jitted alone: eval_ms, first_call_s, memory, GFLOP/s."""
  f = jax.jit(jax.value_and_grad(problem.objective, has_aux=True))
  x0 = problem.init_x
  first, _ = timing.timed(lambda: _jax_sync(f(x0, problem.data)))
  with timing.PeakRss() as mem:
    sec, _ = timing.median_seconds(lambda: _jax_sync(f(x0, problem.data)), cfg.repeats,
                                   max(0, cfg.warmup - 1))
  rec.add("jax", size, "eval_ms", 1e3 * sec, "ms")
  rec.add("jax", size, "first_call_s", first, "s", "trace + compile + one evaluation")
  rec.add("jax", size, "eval_gflops", _gflops(n_flops, sec), "GFLOP/s")
  _memory(rec, "jax", size, mem)
  # The evaluation as an optimiser pays it: one call of the optimiser's own compiled Adam chunk
  # of k steps (what ``optimize.run`` calls), per step, so per-call costs are paid once per k.
  # Not a hand-written loop of bare evaluations: that measured a program no run executes
  # (BENCHMARKS.md, issue 16).
  k = cfg.scan_chunk
  sec = jax_loop_seconds(problem, k, cfg.repeats)
  rec.add("jax", size, "eval_ms_loop", 1e3 * sec / k, "ms",
          f"{k} Adam steps in the optimiser's compiled scan chunk")
  rec.add("jax", size, "eval_gflops_loop", _gflops(n_flops, sec / k), "GFLOP/s")


def jax_loop_seconds(problem, k: int, repeats: int) -> float:
  """Median seconds of one call of ``optimize``'s compiled Adam chunk of ``k`` steps on
  ``problem`` (compiled and run once first; each timed call gets a fresh copy of the donated
  state, made before the clock starts)."""
  ocfg = optimize.OptConfig(optimizer="adam", steps=k, chunk=k).validate()
  state = optimize.init_state(problem.init_x, ocfg)
  chunk, _ = optimize.CACHE.get("chunk", problem.objective, ocfg, k, None, state, problem.data)
  fresh = lambda: _jax_sync(jax.tree.map(lambda a: a.copy(), state))
  _jax_sync(chunk(fresh(), problem.data))
  samples = []
  for _ in range(max(1, repeats)):
    s = fresh()
    t0 = time.perf_counter()
    _jax_sync(chunk(s, problem.data))
    samples.append(time.perf_counter() - t0)
  return float(np.median(samples))


def jax_end_to_end(rec: Recorder, problem, size: int, cfg: BenchConfig) -> dict:
  """L-BFGS and Adam, ``steps`` evaluations, per loop design; {optimizer: (s, history)}
  of the default loop (``OptConfig().loop``)."""
  out, auto = {}, optimize.OptConfig().loop
  x0 = problem.init_x
  for opt in OPTIMIZERS:
    for loop in cfg.loops:
      ocfg = opt_config(opt, cfg.steps, loop, cfg.scan_chunk)
      warm = _jax_warm(problem, x0, ocfg)
      runs = [optimize.run(problem.objective, x0, problem.data, ocfg)
              for _ in range(cfg.e2e_repeats)]
      sec = float(np.median([r.seconds["total"] for r in runs]))
      per_call = sec / cfg.steps * (min(ocfg.chunk, cfg.steps) if loop == "scan" else 1)
      rec.add("jax", size, f"{opt}_s_{loop}", sec, "s", f"{cfg.steps} evaluations")
      rec.add("jax", size, f"{opt}_compile_s_{loop}", max(0.0, warm - per_call), "s")
      if loop == auto or (loop == cfg.loops[0] and auto not in cfg.loops):
        out[opt] = (sec, runs[0].loss_history)
  for opt, (sec, hist) in out.items():
    rec.add("jax", size, f"{opt}_s", sec, "s", f"{cfg.steps} evaluations")
    rec.add("jax", size, f"{opt}_loss", hist[-1])
  return out


def jax_seeds(rec: Recorder, problem, size: int, cfg: BenchConfig, x0s) -> None:
  """N seeds vmapped (``optimize.drive`` over a batch of states): seed runs per second."""
  vmap = optimize.Vmap(None)
  for opt in OPTIMIZERS:
    ocfg = opt_config(opt, cfg.steps, optimize.OptConfig().loop, cfg.scan_chunk)
    _jax_warm(problem, x0s, ocfg, vmap)
    with timing.PeakRss() as mem:
      out = optimize.drive(problem.objective, x0s, problem.data, ocfg, vmap=vmap)
    rec.add("jax", size, f"seed_runs_per_s_{opt}", cfg.num_seeds / out.seconds["total"], "runs/s",
            f"{cfg.num_seeds} seeds vmapped, {cfg.steps} evaluations each")
    _memory(rec, "jax", size, mem, f"seeds_{opt}")


def _memory(rec: Recorder, framework: str, size: int, mem: timing.PeakRss, what: str = "eval"):
  """Host RSS growth during the block; on a GPU, the device's peak allocation as well."""
  rec.add(framework, size, f"{what}_rss_mb", mem.delta_mb, "MiB", "peak RSS minus RSS before")
  if framework == "jax" and jax.default_backend() != "cpu":
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      rec.add("jax", size, f"{what}_device_mb", stats["peak_bytes_in_use"] / 2**20, "MiB",
              "process peak so far")
  if framework == "torch":
    from jnst.bench import torch_ref
    t = torch_ref.torch()
    if t.cuda.is_available():
      rec.add("torch", size, f"{what}_device_mb", t.cuda.max_memory_allocated() / 2**20, "MiB",
              "process peak so far")


# ------------------------------------------------------------------ PyTorch side


def torch_eval(rec: Recorder, tp, size: int, cfg: BenchConfig, n_flops: int | None) -> None:
  """Eager (and torch.compile) loss + gradient: eval_ms, first_call_s, memory, GFLOP/s."""
  from jnst.bench import torch_ref
  loss, x0 = tp
  dev = x0.device

  def ev(fn=loss):
    v, g = torch_ref.value_and_grad(fn, x0)
    torch_ref.sync(dev)
    return v, g

  first, _ = timing.timed(ev)
  with timing.PeakRss() as mem:
    sec, _ = timing.median_seconds(ev, cfg.repeats, cfg.warmup)
  rec.add("torch", size, "eval_ms", 1e3 * sec, "ms", "eager")
  rec.add("torch", size, "first_call_s", first, "s", "eager, first evaluation")
  rec.add("torch", size, "eval_gflops", _gflops(n_flops, sec), "GFLOP/s")
  _memory(rec, "torch", size, mem)
  k = cfg.scan_chunk  # As jax's eval_ms_loop: k chained eager evaluations.

  def chained():
    x = x0
    for _ in range(k):
      x = (x - 1e-12 * torch_ref.value_and_grad(loss, x)[1]).detach()
    torch_ref.sync(dev)

  sec, _ = timing.median_seconds(chained, cfg.repeats, 1)
  rec.add("torch", size, "eval_ms_loop", 1e3 * sec / k, "ms", f"{k} chained eager evaluations")
  rec.add("torch", size, "eval_gflops_loop", _gflops(n_flops, sec / k), "GFLOP/s")
  if not cfg.torch_compile:
    return
  t = torch_ref.torch()
  try:
    compiled = t.compile(lambda x: loss(x))
    first, _ = timing.timed(lambda: ev(compiled))
    sec, _ = timing.median_seconds(lambda: ev(compiled), cfg.repeats, cfg.warmup)
  except Exception as e:  # Backend/compiler failures vary; report them, do not stop.
    msg = f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:150]}"
    rec.add("torch", size, "eval_ms_compiled", None, "ms", msg)
    return
  rec.add("torch", size, "eval_ms_compiled", 1e3 * sec, "ms", "torch.compile (inductor)")
  rec.add("torch", size, "compile_s_compiled", first, "s", "torch.compile first call")


def torch_end_to_end(rec: Recorder, tp, size: int, cfg: BenchConfig) -> dict:
  """torch.optim.LBFGS / Adam for ``steps`` evaluations; {optimizer: (s, history)}."""
  from jnst.bench import torch_ref
  loss, x0 = tp
  out = {}
  for opt in OPTIMIZERS:
    ocfg = opt_config(opt, cfg.steps, "step", cfg.scan_chunk)
    runs = [torch_ref.run(loss, x0, ocfg) for _ in range(cfg.e2e_repeats)]
    sec = float(np.median([r.seconds for r in runs]))
    rec.add("torch", size, f"{opt}_s", sec, "s", f"{cfg.steps} evaluations")
    rec.add("torch", size, f"{opt}_loss", runs[0].loss_history[-1])
    out[opt] = (sec, runs[0].loss_history)
  return out


def torch_seeds(rec: Recorder, tp, size: int, cfg: BenchConfig, x0s) -> None:
  """N seeds as a Python loop of single runs; Adam also with the seeds stacked in a batch."""
  from jnst.bench import torch_ref
  loss, _ = tp
  dev = tp[1].device
  xs = torch_ref.to_nchw(np.asarray(x0s), dev)  # network-space (N, 3, H, W)
  for opt in OPTIMIZERS:
    ocfg = opt_config(opt, cfg.steps, "step", cfg.scan_chunk)
    with timing.PeakRss() as mem:
      sec, _ = timing.timed(lambda: [torch_ref.run(loss, xs[i:i + 1], ocfg)
                                     for i in range(cfg.num_seeds)])
    rec.add("torch", size, f"seed_runs_per_s_{opt}", cfg.num_seeds / sec, "runs/s",
            f"{cfg.num_seeds} sequential runs")
    _memory(rec, "torch", size, mem, f"seeds_{opt}")
  ocfg = opt_config("adam", cfg.steps, "step", cfg.scan_chunk)
  for _ in range(max(1, cfg.warmup)):  # oneDNN sets up per input shape.
    torch_ref.value_and_grad(loss, xs)
  res = torch_ref.run(loss, xs, ocfg)
  rec.add("torch", size, "seed_runs_per_s_adam_stacked", cfg.num_seeds / res.seconds, "runs/s",
          f"{cfg.num_seeds} seeds in one batch (Adam only)")


# ------------------------------------------------------------------ both


def time_to_common_loss(rec: Recorder, size: int, runs: dict) -> None:
  """For each optimiser: the higher of the frameworks' final losses (a loss both reach) and
  the time each needs to first reach it — its run time x (evaluations to reach it) /
  (evaluations in the run), i.e. assuming every evaluation costs the same."""
  for opt in OPTIMIZERS:
    if not all(opt in r for r in runs.values()) or len(runs) < 2:
      return
    target = max(r[opt][1][-1] for r in runs.values())
    for fw, r in runs.items():
      sec, hist = r[opt]
      k = timing.first_index_at_most(hist, target)
      rec.add(fw, size, f"{opt}_common_loss", target)
      rec.add(fw, size, f"{opt}_s_to_common_loss",
              None if k is None else sec * (k + 1) / len(hist), "s",
              f"reached at evaluation {k + 1} of {len(hist)}" if k is not None else "not reached")


def load_pair(content_path, style_path, size: int):
  """(content, style) RGB [0, 1], each with longer side ``size``."""
  return images.load_image(content_path, size), images.load_image(style_path, size)


def run(params, content_path, style_path, cfg: BenchConfig,
        log: Callable[[str], None] = print) -> tuple[dict, list[dict]]:
  """Measures everything in ``cfg``; returns (machine info, records)."""
  cfg = cfg.validate()
  if "torch" in cfg.frameworks:
    from jnst.bench import torch_ref
    torch_ref.torch().set_num_threads(cfg.threads or cpu_count())
  machine = machine_info(cfg)
  bb = backbones.get(cfg.backbone, conv=cfg.conv, winograd_channels=cfg.winograd_channels)
  machine["conv_algorithm"] = bb.describe().get("conv")  # None: the backbone has one.
  machine["winograd_min_channels"] = bb.describe().get("winograd_min_channels")
  rec = Recorder(log)
  if cfg.seed_scaling != "only":
    shapes = _main_suite(rec, params, content_path, style_path, cfg, log)
  else:
    shapes = {}
  if cfg.seed_scaling != "off":
    for size in cfg.seed_sizes:
      content, style = load_pair(content_path, style_path, size)
      shapes.setdefault(size, list(content.shape[:2]))
      log(f"seed scaling at {size} px ({content.shape[1]}x{content.shape[0]}): seeds "
          f"{list(cfg.seed_counts)}, {cfg.seed_steps} L-BFGS steps each")
      seed_scaling.seed_scaling(rec, params, content, style, size, cfg.seed_counts,
                                cfg.seed_steps, "lbfgs", cfg.scan_chunk, cfg.backbone)
  machine["image_shapes_hw"] = {str(k): v for k, v in shapes.items()}
  machine["load_average_after"] = list(os.getloadavg())
  return machine, rec.records


def _main_suite(rec: Recorder, params, content_path, style_path, cfg: BenchConfig,
                log: Callable[[str], None]) -> dict:
  """Everything but seed scaling; returns {size: [H, W]}."""
  seed_size = min(cfg.sizes) if cfg.seed_size is None else cfg.seed_size
  if "jax" in cfg.frameworks:
    gflops = timing.jax_matmul_peak_gflops(cfg.matmul_n)
    rec.add("jax", 0, "matmul_peak_gflops", gflops, "GFLOP/s",
            f"{cfg.matmul_n}^2 float32 matmul, default precision")
  scfg = StylizeConfig(backbone=cfg.backbone, variant="paper",  # Paper units, as before.
                       conv=cfg.conv, winograd_channels=cfg.winograd_channels).validate()
  sizes = list(cfg.sizes) + ([seed_size] if seed_size and seed_size not in cfg.sizes else [])
  shapes = {}
  for size in sizes:
    content, style = load_pair(content_path, style_path, size)
    h, w = content.shape[:2]
    shapes[size] = [h, w]
    problem = scfg.build(params, Inputs(content, (style,)))
    n_flops = flops.for_backbone(problem.backbone, h, w, problem.objective.layers,
                                 problem.data["layer_weights"]["style"])
    log(f"size {size} ({w}x{h}): " + ("FLOPs not counted for this backbone" if n_flops is None
                                      else f"{n_flops / 1e9:.2f} GFLOP per evaluation"))
    tp = None
    if "torch" in cfg.frameworks:
      from jnst.bench import torch_ref
      tp = torch_ref.stylize_problem(params, content, [style], scfg, torch_ref.default_device())
    runs = {}
    for fw in cfg.frameworks:
      rec.add(fw, size, "gflop_per_eval", _gflops(n_flops, 1.0), "GFLOP", f"{w}x{h}, analytic")
    if size in cfg.sizes:
      if "jax" in cfg.frameworks:
        jax_eval(rec, problem, size, cfg, n_flops)
        if cfg.end_to_end:
          runs["jax"] = jax_end_to_end(rec, problem, size, cfg)
      if tp is not None:
        torch_eval(rec, tp, size, cfg, n_flops)
        if cfg.end_to_end:
          runs["torch"] = torch_end_to_end(rec, tp, size, cfg)
      time_to_common_loss(rec, size, runs)
    if size == seed_size:
      noise = dataclasses.replace(scfg, init="noise").build(params, Inputs(content, (style,)))
      keys = jax.random.split(jax.random.key(0), cfg.num_seeds)
      x0s = jax.vmap(noise.x0)(keys)
      if "jax" in cfg.frameworks:
        jax_seeds(rec, noise, size, cfg, x0s)
      if tp is not None:
        torch_seeds(rec, tp, size, cfg, x0s)
  return shapes


# ------------------------------------------------------------------ report

def _speedup(metric: str, jax_v, torch_v):
  """torch/jax for times and memory, jax/torch for rates; None where it means nothing."""
  if not jax_v or not torch_v or metric.startswith("gflop_") or (
      metric.endswith("loss") and "_s_to_" not in metric):
    return None
  if "per_s" in metric or "gflops" in metric:
    return jax_v / torch_v
  return torch_v / jax_v


def _cpu_line(machine: dict) -> str:
  """The machine's CPU as ``records.cpu_label`` writes it (records from before ``cpu_arch``
  existed: the model name alone)."""
  return cpu_label(machine.get("cpu", "?"), machine.get("cpu_arch") or {})


def markdown(machine: dict, records: list[dict]) -> str:
  """Tables per size: metric | jax | torch | jax advantage (×, > 1 = JAX better)."""
  backbone = machine.get("config", {}).get("backbone", "vgg19")
  conv = machine.get("conv_algorithm")
  if conv and machine.get("winograd_min_channels"):
    conv += f" from {machine['winograd_min_channels']} channels"
  lines = [f"Backbone: {backbone}{f' (convs: {conv})' if conv else ''}. "
           f"Machine: {_cpu_line(machine)} ({machine.get('cpus')} CPUs), JAX backend "
           f"{machine.get('jax_backend')}, GPU: {machine.get('gpu') or 'none'}; jax "
           f"{machine.get('jax')}, torch {machine.get('torch', 'n/a')} "
           f"({machine.get('torch_threads', 'n/a')} threads); load average before "
           f"{machine.get('load_average_1_5_15')}, after {machine.get('load_average_after')}.",
           ""]
  for size in sorted({r["size"] for r in records}):
    rows: dict[str, dict] = {}
    for r in records:
      if r["size"] == size:
        rows.setdefault(r["metric"], {"unit": r["unit"]})[r["framework"]] = r["value"]
    title = "machine-wide" if size == 0 else f"size {size} ({machine.get('image_shapes_hw', {}).get(str(size), '?')} HxW)"
    lines += [f"### {title}", "", "| metric | unit | jax | torch | jax advantage |",
              "|---|---|---:|---:|---:|"]
    for metric, v in rows.items():
      j, t = v.get("jax"), v.get("torch")
      sp = _speedup(metric, j, t)
      fmt = lambda x: "–" if x is None else f"{x:.4g}"
      lines.append(f"| {metric} | {v['unit']} | {fmt(j)} | {fmt(t)} | "
                   f"{'' if sp is None else f'{sp:.2f}×'} |")
    lines.append("")
  return "\n".join(lines)


def write(output_dir, machine: dict, records: list[dict]) -> tuple[Path, Path]:
  """benchmark.json and benchmark.md in ``output_dir``, each written atomically."""
  out = Path(output_dir)
  js = save_json(out / "benchmark.json", {"machine": machine, "results": records})
  return js, save_text(out / "benchmark.md", markdown(machine, records) + "\n")
