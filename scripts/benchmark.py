r"""Benchmark jnst (JAX) against the PyTorch reference: same algorithm, same weights, one run.

  python scripts/benchmark.py                               # 128,256 px (512 too on a GPU)
  python scripts/benchmark.py --sizes=128,256 --steps=50 --repeats=3 --output_dir=bench_out
  python scripts/benchmark.py --quick                       # tiny sizes, a smoke test
  python scripts/benchmark.py --seed_scaling=only           # issue 4: N seeds vmapped vs one by one

Writes <output_dir>/benchmark.json ({"machine": ..., "results": [{"framework", "size",
"metric", "value", "unit"}, ...]}) and benchmark.md (tables). Metrics: BENCHMARKS.md.
The torch columns need the `bench` extra (pip install 'jnst[bench]').
"""

from pathlib import Path

import jax
from absl import flags

from jnst import cli, vgg
from jnst.bench import suite
from jnst.errors import JnstError

_SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "images"

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
flags.DEFINE_string("weights", None, "Weights file (default: the converted VGG-19, fetched "
                    "on first use).")
flags.DEFINE_bool("random_weights", False, "Random VGG-19 weights instead of a file (timing "
                  "is the same; losses are not comparable with real-weight runs).")
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
flags.DEFINE_bool("quick", False, "Tiny sizes and few repeats: checks the script runs.")
FLAGS = flags.FLAGS


def _ints(values, name):
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise JnstError(f"--{name} must be integers, got {','.join(values)}") from None


def bench_config() -> suite.BenchConfig:
  q = FLAGS.quick
  pick = lambda value, normal, quick: value if value is not None else (quick if q else normal)
  default_sizes = (128, 256) + ((512,) if jax.default_backend() == "gpu" else ())
  sizes = _ints(FLAGS.sizes, "sizes") if FLAGS.sizes else ((32,) if q else default_sizes)
  mode = pick(FLAGS.seed_scaling, "off", "on")
  frameworks = ("jax",) if mode == "only" else tuple(FLAGS.frameworks)
  seed_sizes = (_ints(FLAGS.seed_sizes, "seed_sizes") if FLAGS.seed_sizes
                else ((32,) if q else (64, 128, 256)))
  seed_counts = (_ints(FLAGS.seed_counts, "seed_counts") if FLAGS.seed_counts
                 else ((1, 2) if q else (1, 2, 4, 8, 16)))
  return suite.BenchConfig(
      sizes=sizes, frameworks=frameworks, steps=pick(FLAGS.steps, 50, 4),
      repeats=pick(FLAGS.repeats, 3, 1), e2e_repeats=FLAGS.e2e_repeats,
      warmup=1 if q else 3, num_seeds=pick(FLAGS.num_seeds, 8, 2), seed_size=FLAGS.seed_size,
      loops=tuple(FLAGS.loops), torch_compile=pick(FLAGS.torch_compile, True, False),
      threads=FLAGS.threads, matmul_n=256 if q else 2048, seed_scaling=mode,
      seed_sizes=seed_sizes, seed_counts=seed_counts,
      seed_steps=pick(FLAGS.seed_steps, 10, 2)).validate()


def images() -> tuple[str, str]:
  from jnst import demo
  content = FLAGS.content or (_SHARED / "tubingen.jpg")
  style = FLAGS.style or (_SHARED / "starry_night.jpg")
  if not FLAGS.content and not Path(content).is_file():
    content = demo.content_path()
  if not FLAGS.style and not Path(style).is_file():
    style = demo.style_path()
  return str(content), str(style)


def main(argv):
  del argv
  cfg = bench_config()
  out = Path(FLAGS.output_dir)
  cli.io.ensure_writable(out / "benchmark.json")
  if "torch" in cfg.frameworks:
    from jnst.bench import torch_ref
    torch_ref.torch()  # A clear error now if torch is missing.
  content, style = images()
  if FLAGS.random_weights:
    params = vgg.init_random(jax.random.key(0))
  else:
    params = vgg.load_params(FLAGS.weights)
  what = (f"sizes {list(cfg.sizes)}, {cfg.steps} evaluations per run"
          if cfg.seed_scaling != "only" else "seed scaling only")
  print(f"benchmark: {content} + {style}, {what}, "
        f"{'random' if FLAGS.random_weights else 'real'} weights", flush=True)
  machine, records = suite.run(params, content, style, cfg,
                               log=lambda s: print(s, flush=True))
  machine.update(content=content, style=style,
                 weights="random" if FLAGS.random_weights else str(FLAGS.weights or "default"))
  js, md = suite.write(out, machine, records)
  print(suite.markdown(machine, records))
  print(f"wrote {js} and {md}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
