"""Memory of one compiled optimisation step, from XLA's own accounting (no run needed).

``step_memory(size, ...)`` lowers and compiles ``jnst.optimize``'s chunk program for a
stylize problem (random VGG-19 weights; the shapes are what matters) with the content image
at longer side ``size`` (4:3), and reads ``compiled.memory_analysis()``: arguments (the
optimiser state incl. the L-BFGS history, the network params and targets), outputs and
temporaries (the activations kept for the backward pass, with or without
rematerialisation). Compiling a 2048 px step allocates nothing of that size, so the numbers
for sizes this machine cannot run still come out (BUILD.md, "Pyramid and high resolution").

  python -m jnst.bench.step_memory 256 512 1024 2048
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import jnst.experiments as experiments
import jnst.optimize as optimize
from jnst.backbones import vgg


def step_memory(size: int, *, remat: bool = False, lbfgs_memory: int = 100,
                compute_dtype: str = "float32", optimizer: str = "lbfgs",
                winograd_channels: int = 0) -> dict:
  """{"shape", "megapixels", "argument", "output", "temp", "alias", "total"} bytes of one
  scan step (chunk of 1) at longer side ``size``, aspect 4:3; "total" = argument + output
  + temp - alias (donated state reused). winograd_channels: as ``StylizeConfig``'s (0: by CPU)."""
  h, w = round(size * 3 / 4), size
  params = vgg.VGG19.init_random(jax.random.key(0))
  content = np.zeros((h, w, 3), np.float32)
  cfg = experiments.StylizeConfig(remat=remat, compute_dtype=compute_dtype,
                                  winograd_channels=winograd_channels,
                                  opt=optimize.OptConfig(optimizer=optimizer, steps=1, chunk=1,
                                                         lbfgs_memory=lbfgs_memory))
  # Shapes only: the style image at the same size, targets from it.
  problem = cfg.build(params, experiments.Inputs(content, (content,)))
  x0 = jax.ShapeDtypeStruct((h, w, 3), np.float32)
  state = jax.eval_shape(lambda x: optimize.init_state(x, cfg.opt), x0)
  prog = optimize._program("chunk", problem.objective, cfg.opt, 1, None)
  m = prog.lower(state, problem.data).compile().memory_analysis()
  out = {"shape": [h, w], "megapixels": h * w / 1e6, "remat": remat,
         "lbfgs_memory": lbfgs_memory, "argument": m.argument_size_in_bytes,
         "output": m.output_size_in_bytes, "temp": m.temp_size_in_bytes,
         "alias": m.alias_size_in_bytes}
  out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
  return out


def main(argv) -> None:
  sizes = [int(a) for a in argv[1:]] or [256, 512]
  print("size  HxW        MP    remat  history  args MB  temp MB  total MB  temp MB/MP")
  for size in sizes:
    for remat in (False, True):
      for mem in (100, 10):
        r = step_memory(size, remat=remat, lbfgs_memory=mem)
        print(f"{size:5d} {r['shape'][0]:4d}x{r['shape'][1]:<5d} {r['megapixels']:5.2f} "
              f"{str(remat):6s} {mem:7d} {r['argument'] / 2**20:8.0f} {r['temp'] / 2**20:8.0f} "
              f"{r['total'] / 2**20:9.0f} {r['temp'] / 2**20 / r['megapixels']:10.0f}",
              flush=True)


if __name__ == "__main__":
  main(sys.argv)
