r"""Seed-diversity studies and sweeps: many noise seeds (or loss weights) in one vmapped,
device-sharded run (jnst.seeds).

  # Content reconstruction at conv_1 ... conv_5 (relu1_1 ... relu5_1) from two noise maps:
  python scripts/seed_study.py --experiment=reconstruct --num_seeds=2 \
      --sweep=layer:relu1_1,relu2_1,relu3_1,relu4_1,relu5_1 --output_dir=out/rec_blocks
  # Texture from the Grams of each block, from two noise maps:
  python scripts/seed_study.py --experiment=synthesize --num_seeds=2 \
      --sweep=style_layers:block1,block2,block3,block4,block5 --output_dir=out/tex_blocks
  # Style transfer from noise with 8 seeds, 4 per batch:
  python scripts/seed_study.py --experiment=stylize --num_seeds=8 --seeds_per_batch=4 \
      --output_dir=out/stylize_seeds
  # The α/β trade-off (α/β = 1e-1 ... 1e-4 with α = 1), one vmapped batch:
  python scripts/seed_study.py --experiment=stylize --sweep=style_weight:1e1,1e2,1e3,1e4 \
      --output_dir=out/alpha_beta

Every experiment flag has the same name and default as in stylize.py / reconstruct.py /
synthesize.py, except that ``--init`` defaults to ``noise`` here. Seed k's image equals a
single run of that script with ``--seed=k`` (and ``--init=noise`` for stylize), up to float
rounding (see jnst/seeds.py).

``--sweep=FLAG:v1,v2,...``: loss weights (content_weight, style_weight, tv_weight) are
batched with the seeds in one vmapped run; flags that change the graph (layer,
content_layers, style_layers, init, pooling, variant, dtype, size, style_scale,
optimizer, linesearch, learning_rate) run one value after another. Inside a value,
separate list items with '+': ``--sweep=style_layers:relu1_1,relu1_1+relu2_1``.

Writes to --output_dir: seed_XXXX.png per seed (with a sweep: FLAG_VALUE.png, or
FLAG_VALUE_seed_XXXX.png with several seeds), grid.png (inputs first, then every result,
labelled), losses.png (loss vs evaluation, every run, mean and spread) and summary.json.

Multi-host: start one process per host with --distributed (or JNST_DISTRIBUTED=1) and
--coordinator_address/--num_processes/--process_id, or let JAX auto-detect the cluster
(Cloud TPU, SLURM, ...); the seed axis then spans every host's devices and process 0 writes
the outputs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from pathlib import Path

import jax
import numpy as np
from absl import flags

from jnst import cli, io, seeds, transfer, vgg
from jnst.errors import JnstError

cli.define_common_flags()
cli.define_stylize_flags()
cli.define_reconstruct_flags()
cli.define_synthesize_flags()
flags.FLAGS.set_default("init", "noise")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Multi-host: call "
                                 "jax.distributed.initialize() first (also JNST_DISTRIBUTED=1).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process "
                                   "0 (default: $JAX_COORDINATOR_ADDRESS or auto-detected).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: process count "
                                      "(default: auto-detected).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's id "
                                   "(default: auto-detected).")
_EXPERIMENT = flags.DEFINE_enum("experiment", "stylize", ["reconstruct", "synthesize", "stylize"],
                                "Which experiment to run for every seed.")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 4, "Number of seeds (members per sweep value).")
_FIRST_SEED = flags.DEFINE_integer("first_seed", 0, "Seeds are first_seed ... "
                                   "first_seed + num_seeds - 1.")
_PER_BATCH = flags.DEFINE_integer("seeds_per_batch", 0, "Members per vmapped batch (memory "
                                  "bound; batches run one after another); 0: all at once.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/seed_study", "Directory for the images, "
                                  "grid.png, losses.png and summary.json.")
_SWEEP = flags.DEFINE_string("sweep", None, "FLAG:v1,v2,... run every value (see the module "
                             "docstring); list items inside a value are joined with '+'.")
_DIVERSITY_LAYERS = flags.DEFINE_list("diversity_layers", list(seeds.DIVERSITY_LAYERS),
                                      "VGG layers for the feature-diversity metrics.")
FLAGS = flags.FLAGS

SEQUENTIAL = {  # Graph-changing flags -> experiments they apply to.
    "layer": ("reconstruct",), "content_layers": ("stylize",),
    "style_layers": ("synthesize", "stylize"), "init": ("stylize",),
    "style_scale": ("synthesize", "stylize"),
    **{f: ("reconstruct", "synthesize", "stylize") for f in (
        "pooling", "variant", "dtype", "size", "optimizer", "linesearch", "learning_rate")}}
BATCHED = {"content_weight": ("stylize",), "style_weight": ("stylize",),
           "tv_weight": ("stylize",)}
NOT_HERE = {"output": "--output_dir", "seed": "--first_seed and --num_seeds",
            "all_blocks": "--sweep=layer:relu1_1,relu2_1,relu3_1,relu4_1,relu5_1",
            "save_every": "nothing (intermediate images are not written here)"}


@dataclasses.dataclass(frozen=True)
class Sweep:
  flag: str
  values: tuple[str, ...]  # As given (used in file names and labels).

  @property
  def batched(self) -> bool:
    return self.flag in BATCHED


# ------------------------------------------------------------------ flags


def parse_sweep(spec: str | None, experiment: str) -> Sweep | None:
  """'FLAG:v1,v2' -> Sweep; raises JnstError naming what is wrong."""
  if not spec:
    return None
  flag, sep, rest = spec.partition(":")
  values = tuple(v.strip() for v in rest.split(",") if v.strip())
  if not sep or not values:
    raise JnstError(f"--sweep={spec!r} must look like FLAG:v1,v2,... (e.g. style_weight:1e2,1e3)")
  allowed = {**SEQUENTIAL, **BATCHED}
  if flag not in allowed:
    raise JnstError(f"--sweep over {flag!r} is not supported: use one of "
                    f"{', '.join(sorted(allowed))}")
  if experiment not in allowed[flag]:
    raise JnstError(f"--sweep={flag}:... does not apply to --experiment={experiment}: use it "
                    f"with {' or '.join(allowed[flag])}")
  if len(set(values)) != len(values):
    raise JnstError(f"--sweep values repeat: {','.join(values)}; give each value once")
  if flag in BATCHED:
    try:
      ok = all(math.isfinite(float(v)) and float(v) >= 0 for v in values)
    except ValueError:
      ok = False
    if not ok:
      raise JnstError(f"--sweep={flag}:... values must be finite numbers >= 0, got "
                      f"{','.join(values)}")
  return Sweep(flag, values)


def check_flags() -> list[int]:
  """Validates the study's own flags; returns the seeds."""
  for name, use in NOT_HERE.items():
    if FLAGS[name].present:
      raise JnstError(f"--{name} is not used by seed_study: use {use}")
  if _NUM_SEEDS.value < 1:
    raise JnstError(f"--num_seeds must be at least 1, got {_NUM_SEEDS.value}")
  if _FIRST_SEED.value < 0:
    raise JnstError(f"--first_seed must be >= 0, got {_FIRST_SEED.value}")
  if _PER_BATCH.value < 0:
    raise JnstError(f"--seeds_per_batch must be >= 1 (or 0 for all), got {_PER_BATCH.value}")
  vgg.validate_layers(_DIVERSITY_LAYERS.value)
  return seeds.check_seeds(range(_FIRST_SEED.value, _FIRST_SEED.value + _NUM_SEEDS.value))


def set_flag(flag: str, value: str) -> None:
  try:
    FLAGS[flag].parse(value.replace("+", ","))
  except (flags.Error, ValueError) as e:
    raise JnstError(f"--sweep value {value!r} is not a valid --{flag}: {e}") from None


# ------------------------------------------------------------------ experiments


@dataclasses.dataclass
class Setup:
  """One experiment per the current flags: its config, inputs and reference image."""
  cfg: object
  inputs: dict        # name -> RGB (H, W, 3), shown first in the grid
  paths: dict
  reference: np.ndarray  # diversity reference: the content (or, for textures, style) image


def setup(experiment: str) -> Setup:
  """Reads the inputs and builds the config exactly as the single-run script does."""
  opt = cli.opt_config()
  if experiment == "reconstruct":
    content, path = cli.load_content()
    (layer,) = vgg.validate_layers([FLAGS.layer])
    cfg = transfer.ReconstructConfig(layer=layer, pooling=FLAGS.pooling, variant=FLAGS.variant,
                                     dtype=FLAGS.dtype, opt=opt)
    return Setup(cfg, {"content": content}, {"content": path}, content)
  if experiment == "synthesize":
    if FLAGS.style and len(FLAGS.style) > 1:
      raise JnstError(f"synthesize takes one --style image, got {len(FLAGS.style)}")
    (style,), (path,) = cli.load_styles()
    cfg = transfer.SynthesizeConfig(
        style_layers=vgg.expand_layers(FLAGS.style_layers),
        style_layer_weights=cli.floats_flag("style_layer_weights"), pooling=FLAGS.pooling,
        variant=FLAGS.variant, dtype=FLAGS.dtype, opt=opt)
    return Setup(cfg, {"style": style}, {"style": path}, style)
  content, styles, init_image, paths = cli.load_stylize_inputs()
  cfg = cli.stylize_config(init_is_path=init_image is not None)
  inputs = {"content": content, **{f"style {i + 1}" if len(styles) > 1 else "style": s
                                   for i, s in enumerate(styles)}}
  return Setup((cfg, init_image), inputs, paths, content)


def problem(params, s: Setup) -> transfer.Problem:
  if isinstance(s.cfg, transfer.ReconstructConfig):
    return transfer.reconstruct_problem(params, s.inputs["content"], s.cfg)
  if isinstance(s.cfg, transfer.SynthesizeConfig):
    return transfer.synthesize_problem(params, s.inputs["style"], s.cfg)
  cfg, init_image = s.cfg
  styles = [v for k, v in s.inputs.items() if k.startswith("style")]
  return transfer.stylize_problem(params, s.inputs["content"], styles, cfg, init_image)


def opt_of(s: Setup):
  return (s.cfg[0] if isinstance(s.cfg, tuple) else s.cfg).opt


def original_colors(s: Setup) -> bool:
  return isinstance(s.cfg, tuple) and s.cfg[0].original_colors


# ------------------------------------------------------------------ progress and naming


class Progress:
  """``on_chunk`` for seeds.run_*: one line per chunk with the loss spread and an ETA."""

  def __init__(self, steps: int, runs: int):
    self.steps, self.runs, self.t0 = steps, runs, time.perf_counter()
    self.run_index, self.label = 0, ""

  def __call__(self, batch, num_batches, step, state, host):
    del state
    units_total = self.runs * num_batches * self.steps
    done = (self.run_index * num_batches + batch) * self.steps + step
    elapsed = time.perf_counter() - self.t0
    eta = elapsed / done * (units_total - done) if done else float("nan")
    loss = host["loss"][-1]
    if FLAGS.print_every and (step % FLAGS.print_every == 0 or step == self.steps):
      print(f"{self.label}batch {batch + 1}/{num_batches} step {step:5d}/{self.steps} loss "
            f"mean {np.mean(loss):.5g} [min {np.min(loss):.4g} max {np.max(loss):.4g}] evals "
            f"{int(np.max(host['evals'][-1]))} elapsed {elapsed:.1f}s eta {eta:.0f}s",
            flush=True)


def token(value: str) -> str:
  """A sweep value as a file-name part."""
  return re.sub(r"[^A-Za-z0-9._+-]", "_", value)


def member_name(sweep: Sweep | None, value: str | None, seed: int, num_seeds: int) -> str:
  if sweep is None:
    return f"seed_{seed:04d}"
  name = f"{sweep.flag}_{token(value)}"
  return f"{name}_seed_{seed:04d}" if num_seeds > 1 else name


def member_label(sweep: Sweep | None, value: str | None, seed: int, num_seeds: int) -> str:
  if sweep is None:
    return f"seed {seed}"
  return f"{sweep.flag}={value}" + (f" seed {seed}" if num_seeds > 1 else "")


# ------------------------------------------------------------------ main


def make_setups(experiment: str, sweep: Sweep | None) -> list[Setup]:
  """One Setup per sequential sweep value (else one); validates every value up front."""
  values = sweep.values if sweep and not sweep.batched else (None,)
  setups = []
  for v in values:
    if v is not None:
      set_flag(sweep.flag, v)
    setups.append(setup(experiment))
  return setups


def run_study(seed_list: list[int], sweep: Sweep | None, setups: list[Setup], params,
              progress: Progress) -> tuple[list[dict], list, list]:
  """Runs every member; returns (member records, their RGB images, one seeds.SeedsResult
  per setup)."""
  values = sweep.values if sweep and not sweep.batched else (None,)
  members, images, results = [], [], []
  for i, (v, s) in enumerate(zip(values, setups)):
    progress.run_index, progress.label = i, "" if v is None else f"{sweep.flag}={v} "
    prob = problem(params, s)
    if sweep and sweep.batched:
      floats = [float(x) for x in sweep.values]
      res = seeds.run_sweep(prob, sweep.flag, floats, opt_of(s), seed_list,
                            seeds_per_batch=_PER_BATCH.value or None, on_chunk=progress)
      labels = [x for x in sweep.values for _ in seed_list]
    else:
      res = seeds.run_seeds(prob, seed_list, opt_of(s), seeds_per_batch=_PER_BATCH.value or None,
                            on_chunk=progress)
      labels = [v] * len(seed_list)
    results.append(res)
    rgb = res.rgb(params)
    if original_colors(s):
      rgb = np.stack([transfer.original_colors(s.inputs["content"], im) for im in rgb])
    images += list(rgb)
    for k, (seed, value) in enumerate(zip(res.seeds, labels)):
      members.append({
          "seed": seed, "value": value, "setup": i,
          "file": member_name(sweep, value, seed, len(seed_list)) + ".png",
          "label": member_label(sweep, value, seed, len(seed_list)),
          "final_loss": float(res.loss_history[k][-1]),
          "terms": {t: float(a[k]) for t, a in res.terms.items()},
          "evaluations": int(res.evaluations[k]), "steps": int(res.steps[k]),
          "status": res.status[k], "loss_history": res.loss_history[k],
          "eval_history": res.eval_history[k]})
  return members, images, results


def summary(experiment, sweep, members, images, setups, params, results, wall) -> dict:
  seconds = {k: sum(r.seconds[k] for r in results) for k in ("compile", "run", "total")}
  layers = vgg.validate_layers(_DIVERSITY_LAYERS.value)
  div = None  # Images of different sizes (a size sweep) only get per-value metrics.
  if len({im.shape for im in images}) == 1:
    div = seeds.diversity_metrics(params, images, setups[0].reference, layers)
    div["reference"] = "content" if experiment != "synthesize" else "style"
  out = {
      "experiment": experiment,
      "seeds": [m["seed"] for m in members],
      "final_loss": [m["final_loss"] for m in members],
      "terms": {t: [m["terms"][t] for m in members] for t in members[0]["terms"]},
      "evaluations": [m["evaluations"] for m in members],
      "steps": [m["steps"] for m in members],
      "status": [m["status"] for m in members],
      "files": [m["file"] for m in members],
      "labels": [m["label"] for m in members],
      "diversity": div,
      "images_per_second": len(members) / seconds["total"],
      "seconds": {**seconds, "wall": wall},
      "batches": [{"batch_size": r.batch_size, "count": r.num_batches} for r in results],
      "devices": results[0].devices, "sharding": results[0].sharding,
      "process_count": jax.process_count(),
      "loss_history": [m["loss_history"] for m in members],
      "eval_history": [m["eval_history"] for m in members],
      "inputs": setups[0].paths,
      "image_size": {"output": [list(im.shape[:2]) for im in images],
                     **{k: list(v.shape[:2]) for k, v in setups[0].inputs.items()}},
      "flags": cli.flag_values(), "versions": cli.versions()}
  if sweep is not None:
    out["sweep"] = {"flag": sweep.flag, "values": list(sweep.values),
                    "mode": "vmapped" if sweep.batched else "sequential"}
    out["values"] = [m["value"] for m in members]
    if _NUM_SEEDS.value > 1:
      out["diversity_per_value"] = {}
      for v in sweep.values:
        idx = [i for i, m in enumerate(members) if m["value"] == v]
        s = setups[members[idx[0]]["setup"]]
        out["diversity_per_value"][v] = seeds.diversity_metrics(
            params, [images[i] for i in idx], s.reference, layers)
  return out


def grid(setups: list[Setup], members: list[dict], images, sweep) -> np.ndarray:
  inputs = list(setups[0].inputs.items())
  cells = [im for _, im in inputs] + list(images)
  labels = [k for k, _ in inputs] + [m["label"] for m in members]
  columns = None
  if sweep is not None and _NUM_SEEDS.value > 1:  # One row per value.
    columns = max(_NUM_SEEDS.value, 2)
    blanks = -len(inputs) % columns
    cells = cells[:len(inputs)] + [np.ones((1, 1, 3), np.float32)] * blanks + cells[len(inputs):]
    labels = labels[:len(inputs)] + [""] * blanks + labels[len(inputs):]
  side = max(max(np.shape(c)[:2]) for c in cells)
  return io.contact_sheet(cells, labels, columns=columns, cell=int(min(256, max(128, side))))


def main(argv):
  del argv
  t0 = time.perf_counter()
  if _DISTRIBUTED.value or os.environ.get("JNST_DISTRIBUTED") == "1":
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  experiment = _EXPERIMENT.value
  seed_list = check_flags()
  sweep = parse_sweep(_SWEEP.value, experiment)
  out_dir = Path(_OUTPUT_DIR.value)
  if out_dir.exists() and not out_dir.is_dir():
    raise JnstError(f"--output_dir={out_dir} is a file: choose a directory")
  flag_record = cli.flag_values()
  setups = make_setups(experiment, sweep)  # Bad inputs fail here, before any output.
  io.ensure_writable(out_dir / "summary.json")
  params = vgg.load_params(FLAGS.weights, dtype="float32")
  steps = cli.opt_config().steps
  runs = len(sweep.values) if sweep and not sweep.batched else 1
  what = f"{len(seed_list)} seeds ({seed_list[0]}...{seed_list[-1]})"
  if sweep:
    what += f" x {sweep.flag} in {','.join(sweep.values)} ({'vmapped' if sweep.batched else 'one after another'})"
  print(f"seed study: {experiment}, {what} on {jax.device_count()} device(s)", flush=True)
  members, images, results = run_study(seed_list, sweep, setups, params, Progress(steps, runs))
  wall = time.perf_counter() - t0
  record = summary(experiment, sweep, members, images, setups, params, results, wall)
  record["flags"] = flag_record
  if jax.process_index() != 0:
    return
  for m, im in zip(members, images):
    io.save_image(out_dir / m["file"], im)
  io.save_image(out_dir / "grid.png", grid(setups, members, images, sweep))
  io.save_image(out_dir / "losses.png", io.loss_plot(
      [(m["eval_history"], m["loss_history"]) for m in members],
      title=f"{experiment}: loss vs evaluation, {len(members)} runs"))
  io.save_json(out_dir / "summary.json", record)
  print(f"wrote {len(members)} images, grid.png, losses.png and summary.json to {out_dir} "
        f"({record['images_per_second']:.3g} images/s)", flush=True)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
