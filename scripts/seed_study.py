r"""Seed-diversity studies and sweeps: many noise seeds (or loss weights) in one vmapped,
device-sharded run (jnst.study, jnst.batched).

  python scripts/seed_study.py --experiment=stylize --num_seeds=8 --output_dir=out/stylize_seeds
  python scripts/seed_study.py --experiment=stylize --sweep=style_weight:1e1,1e2,1e3,1e4

Experiment flags are those of stylize.py / reconstruct.py / synthesize.py (``--init``
defaults to ``noise`` here); seed k's image equals a single run with ``--seed=k``.
``--sweep=FLAG:v1,v2,...``: loss weights are vmapped with the seeds; other flags run one
value after another (jnst/study.py). Writes seed_XXXX.png (or FLAG_VALUE[_seed_XXXX].png),
grid.png, losses.png and summary.json to --output_dir. Multi-host: --distributed (or
JNST_DISTRIBUTED=1) with the coordinator flags or JAX's auto-detection; process 0 writes.
Finished member batches and sweep variants are kept in --output_dir/.resume/; after an
interruption, --resume with the same flags runs only the unfinished ones (README).
"""

import os
from pathlib import Path

import jax
from absl import flags

from jnst import cli, records, study
from jnst.errors import JnstError

cli.define_common_flags()
cli.define_stylize_flags()
cli.define_reconstruct_flags()
flags.FLAGS.set_default("init", "noise")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Multi-host: call "
                                 "jax.distributed.initialize() first (also JNST_DISTRIBUTED=1).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-host: process 0's host:port.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: process count.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's id.")
_EXPERIMENT = flags.DEFINE_enum("experiment", "stylize", list(study.ALL), "The experiment.")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 4, "Seeds per sweep value.", lower_bound=1)
_FIRST_SEED = flags.DEFINE_integer("first_seed", 0, "Seeds are first_seed ... "
                                   "first_seed + num_seeds - 1.", lower_bound=0)
_PER_BATCH = flags.DEFINE_string("seeds_per_batch", "auto", "Members per vmapped batch: auto "
                                 "(cost model, jnst/batched.py), N (memory bound) or 0 (all).")
flags.register_validator("seeds_per_batch", lambda v: v == "auto" or v.isdigit(),
                         "--seeds_per_batch must be auto or an integer >= 0")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/seed_study", "Output directory.")
_SWEEP = flags.DEFINE_string("sweep", None, "FLAG:v1,v2,...; list items in a value join with '+'.")
_DIVERSITY_LAYERS = flags.DEFINE_list("diversity_layers", None, "Layers of the feature-diversity "
                                      "metrics (default: the backbone's first ReLU per block).")
FLAGS = flags.FLAGS
NOT_HERE = {"output": "--output_dir", "seed": "--first_seed and --num_seeds",
            "all_blocks": "--sweep=layer:relu1_1,relu2_1,relu3_1,relu4_1,relu5_1",
            "save_every": "nothing (finished batches are kept for --resume anyway)"}


def main(argv):
  del argv
  if _DISTRIBUTED.value or os.environ.get("JNST_DISTRIBUTED") == "1":
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  for name, use in NOT_HERE.items():
    if FLAGS[name].present:
      raise JnstError(f"--{name} is not used by seed_study: use {use}")
  experiment, out_dir = _EXPERIMENT.value, Path(_OUTPUT_DIR.value)
  if out_dir.exists() and not out_dir.is_dir():
    raise JnstError(f"--output_dir={out_dir} is a file: choose a directory")
  sweep = study.parse_sweep(_SWEEP.value, experiment)
  cfg = cli.CONFIGS[experiment]()
  if _DIVERSITY_LAYERS.value:
    cfg.get_backbone().validate_layers(_DIVERSITY_LAYERS.value)
  variants = study.variants(sweep, cfg, cli.input_spec())
  per_batch = "auto" if _PER_BATCH.value == "auto" else int(_PER_BATCH.value)
  seeds = cli.study_plan(variants, sweep, experiment, _FIRST_SEED.value, _NUM_SEEDS.value,
                         per_batch, out_dir, lambda v, s: study.member_name(
                             sweep, v, s, _NUM_SEEDS.value))  # Memory, outputs: before compute.
  loaded = [cli.load_inputs(v.inputs, experiment) for v in variants]  # Bad inputs fail here.
  params = cli.variant_params(variants)
  what = f"{len(seeds)} seeds ({seeds[0]}...{seeds[-1]})" + (
      f" x {sweep.flag} in {','.join(sweep.values)} "
      f"({'vmapped' if sweep.batched else 'one after another'})" if sweep else "")
  print(f"seed study: {experiment}, {what} on {jax.device_count()} device(s)", flush=True)
  res = cli.run_study(variants, [i for i, _ in loaded], params, sweep, seeds, per_batch,
                      experiment, out_dir)
  summary = study.summary(experiment, sweep, res, [i for i, _ in loaded], params,
                          len(seeds), _DIVERSITY_LAYERS.value)
  first, paths = loaded[0]
  shown = {"content": first.content} if first.content is not None else {}
  shown.update({f"style {i + 1}" if len(first.styles) > 1 else "style": s
                for i, s in enumerate(first.styles)})
  summary["image_size"].update({k: list(v.shape[:2]) for k, v in shown.items()})
  summary.update(inputs=paths, flags=cli.flag_values(), versions=records.versions())
  if jax.process_index() == 0:
    print(f"{summary['images_per_second']:.3g} images/s", flush=True)
    cli.write_study(out_dir, res, {"grid.png": study.grid(shown, res, sweep, len(seeds)),
                                   "losses.png": study.loss_curves(res, experiment),
                                   "summary.json": summary})


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
