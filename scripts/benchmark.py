r"""Benchmark jnst (JAX) against the PyTorch reference: same algorithm, same weights, one run.

  python scripts/benchmark.py                               # 128,256 px (512 too on a GPU)
  python scripts/benchmark.py --sizes=128,256 --steps=50 --repeats=3 --output_dir=bench_out
  python scripts/benchmark.py --quick                       # tiny sizes, a smoke test
  python scripts/benchmark.py --seed_scaling=only           # issue 4: N seeds vmapped vs one by one
  python scripts/benchmark.py --backbone=resnet50 --random_weights --sizes=256,512 \
      --noend_to_end --seed_size=0                          # per evaluation only, one backbone

Writes <output_dir>/benchmark.json ({"machine": ..., "results": [{"framework", "size",
"metric", "value", "unit"}, ...]}) and benchmark.md (tables). Metrics: BENCHMARKS.md.
The torch columns need the `bench` extra (pip install 'jnst[bench]').
"""

from pathlib import Path

import jax
from absl import flags

import jnst
from jnst import cli, records
from jnst.bench import suite

flags.DEFINE_list("sizes", None, "Longer image side(s), pixels (default 128,256; plus 512 "
                  "on a GPU; --quick: 32).")
flags.DEFINE_list("frameworks", ["jax", "torch"], "Frameworks to measure: jax, torch.")
flags.DEFINE_integer("steps", None, "Evaluations per end-to-end run (default 50; --quick 4).")
flags.DEFINE_integer("repeats", None, "Timed calls per median (default 3; --quick 1).")
flags.DEFINE_integer("e2e_repeats", 1, "Timed end-to-end runs per median (after compiling).")
flags.DEFINE_integer("num_seeds", None, "Seeds for the seed-throughput figure (default 8; "
                     "--quick 2).")
flags.DEFINE_integer("seed_size", None, "Image side for the seed figure (default: smallest "
                     "--sizes; 0 skips it).")
flags.DEFINE_list("loops", ["step", "scan"], "JAX loop designs to time end to end.")
flags.DEFINE_bool("torch_compile", None, "Also time torch.compile (default on; --quick off).")
flags.DEFINE_integer("threads", 0, "torch intra-op threads (0: every CPU, as XLA:CPU uses).")
flags.DEFINE_string("output_dir", "bench_out", "Where benchmark.json and benchmark.md go.")
flags.DEFINE_enum("backbone", "vgg19", list(jnst.backbones.NAMES), "Network (JAX and torch).")
flags.DEFINE_string("weights", None, "Weights file (default: the backbone's converted file, "
                    "fetched on first use).")
flags.DEFINE_bool("random_weights", False, "Random weights instead of a file (timing is the "
                  "same; losses are not comparable with real-weight runs).")
flags.DEFINE_string("content", None, "Content image (default: ../shared/images/tubingen.jpg "
                    "if present, else the demo photo).")
flags.DEFINE_string("style", None, "Style image (default: ../shared/images/starry_night.jpg "
                    "if present, else the demo painting).")
flags.DEFINE_enum("seed_scaling", None, suite.SEED_SCALING, "Seed scaling (vmapped vs "
                  "sequential seeds, JAX only): off, on (after the rest) or only (default off; "
                  "--quick: on).")
flags.DEFINE_list("seed_counts", None, "Seed counts N for seed scaling (default 1,2,4,8,16; "
                  "--quick: 1,2).")
flags.DEFINE_list("seed_sizes", None, "Longer image side(s) for seed scaling, pixels (default "
                  "64,128,256; --quick: 32).")
flags.DEFINE_integer("seed_steps", None, "L-BFGS steps per seed for seed scaling (default 10; "
                     "--quick: 2).")
flags.DEFINE_bool("end_to_end", True, "Also time whole optimiser runs (off: per-evaluation "
                  "figures only).")
flags.DEFINE_enum("conv", "auto", ["auto", "winograd", "direct"], "The VGG convs' algorithm "
                  "(auto: winograd on CPU).")
flags.DEFINE_integer("winograd_channels", 0, "Fewest channels of a Winograd VGG conv (0: by "
                     "CPU).", lower_bound=0)
flags.DEFINE_bool("quick", False, "Tiny sizes and few repeats: checks the script runs.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cfg = cli.benchmark_config()
  out = Path(FLAGS.output_dir)
  records.ensure_writable(out / "benchmark.json")
  records.ensure_writable(out / "benchmark.md")
  if "torch" in cfg.frameworks:
    from jnst.bench import torch_ref
    torch_ref.torch()  # A clear error now if torch is missing.
  content, style = cli.benchmark_images()
  bb, params = (jnst.backbones.get(FLAGS.backbone), None) if FLAGS.random_weights else \
      jnst.load_backbone(FLAGS.backbone, FLAGS.weights)
  params = bb.init_random(jax.random.key(0)) if params is None else params
  what = (f"sizes {list(cfg.sizes)}, {cfg.steps} evaluations per run"
          if cfg.seed_scaling != "only" else "seed scaling only")
  print(f"benchmark: {bb.name}, {content} + {style}, {what}, "
        f"{'random' if FLAGS.random_weights else 'real'} weights", flush=True)
  machine, results = suite.run(params, content, style, cfg,
                               log=lambda s: print(s, flush=True))
  machine.update(content=content, style=style,
                 weights="random" if FLAGS.random_weights else str(FLAGS.weights or "default"))
  js, md = suite.write(out, machine, results)
  print(suite.markdown(machine, results))
  print(f"wrote {js} and {md}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
