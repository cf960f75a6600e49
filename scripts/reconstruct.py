r"""Content reconstruction from white noise at a backbone layer (Gatys et al., Fig. 1).

  python scripts/reconstruct.py --content=photo.jpg --layer=relu4_2 --output=out/rec.png
  python scripts/reconstruct.py --all_blocks --output=out/rec.png   # rec_relu1_1.png ... rec_relu5_1.png
"""

from absl import flags

from jnst import cli, metrics

cli.define_common_flags()
cli.define_reconstruct_flags()
FLAGS = flags.FLAGS


def targets(out):
  """The images written: one per block with --all_blocks, else ``out``."""
  layers = cli.reconstruct_config().get_backbone().block_layers
  return [out.with_name(f"{out.stem}_{l}{out.suffix}") for l in layers] if FLAGS.all_blocks \
      else [out]


def main(argv):
  del argv
  j = cli.job("reconstruct", "reconstruct.png", targets)
  out, inputs, paths, params, content = j.out, j.inputs, j.paths, j.params, j.inputs.content
  layers = j.cfg.get_backbone().block_layers if FLAGS.all_blocks else (j.cfg.layer,)
  for layer, target in zip(layers, targets(out)):
    cfg = cli.reconstruct_config(layer)
    print(f"reconstructing {paths['content']} ({content.shape[1]}x{content.shape[0]}) from "
          f"noise (seed {cfg.seed}) at {layer}", flush=True)
    rgb, res, extra = cli.solve(cfg, params, inputs, target, f"{layer} ", "reconstruct")
    cli.write_outputs(target, rgb, cli.record(
        res, cfg, layer=layer, inputs=paths, psnr_db=metrics.psnr(rgb, content),
        image_size={"content": list(content.shape[:2]), "output": list(rgb.shape[:2])},
        **extra), res)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
