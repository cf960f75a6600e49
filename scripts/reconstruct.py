r"""Content reconstruction from white noise at a backbone layer (Gatys et al., Fig. 1).

  python scripts/reconstruct.py --content=photo.jpg --layer=relu4_2 --output=out/rec.png
  python scripts/reconstruct.py --all_blocks --output=out/rec.png   # rec_relu1_1.png ... rec_relu5_1.png
"""

from absl import flags

from jnst import cli, metrics

cli.define_common_flags()
cli.define_reconstruct_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  j = cli.job("reconstruct", "reconstruct.png")
  out, inputs, paths, params, content = j.out, j.inputs, j.paths, j.params, j.inputs.content
  layers = j.cfg.get_backbone().block_layers if FLAGS.all_blocks else (j.cfg.layer,)
  for layer in layers:
    target = out.with_name(f"{out.stem}_{layer}{out.suffix}") if FLAGS.all_blocks else out
    cfg = cli.reconstruct_config(layer)
    print(f"reconstructing {paths['content']} ({content.shape[1]}x{content.shape[0]}) from "
          f"noise (seed {cfg.seed}) at {layer}", flush=True)
    rgb, res, extra = cli.solve(cfg, params, inputs, "reconstruct",
                                cli.Printer(target, f"{layer} "))
    cli.write_outputs(target, rgb, cli.record(
        res, cfg, **extra, layer=layer, inputs=paths, psnr_db=metrics.psnr(rgb, content),
        image_size={"content": list(content.shape[:2]), "output": list(rgb.shape[:2])}))


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
