r"""Content reconstruction from white noise at a VGG layer (Gatys et al., Fig. 1).

  python scripts/reconstruct.py --content=photo.jpg --layer=relu4_2 --output=out/rec.png
  python scripts/reconstruct.py --all_blocks --output=out/rec.png   # rec_relu1_1.png ... rec_relu5_1.png
"""

from absl import flags

from jnst import cli, transfer, vgg

cli.define_common_flags()
cli.define_reconstruct_flags()
FLAGS = flags.FLAGS

ALL_BLOCKS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def main(argv):
  del argv
  out = cli.output_path("reconstruct.png")
  layers = ALL_BLOCKS if FLAGS.all_blocks else vgg.validate_layers([FLAGS.layer])
  content, content_path = cli.load_content()
  opt = cli.opt_config()
  params = vgg.load_params(FLAGS.weights)
  for layer in layers:
    target = out.with_name(f"{out.stem}_{layer}{out.suffix}") if FLAGS.all_blocks else out
    cfg = transfer.ReconstructConfig(layer=layer, seed=FLAGS.seed, pooling=FLAGS.pooling,
                                     variant=FLAGS.variant, dtype=FLAGS.dtype, opt=opt)
    print(f"reconstructing {content_path} ({content.shape[1]}x{content.shape[0]}) from noise "
          f"(seed {FLAGS.seed}) at {layer}", flush=True)
    rgb, res = transfer.reconstruct(params, content, cfg,
                                    on_chunk=cli.Progress(opt.steps, params, target, f"{layer} "))
    cli.write_outputs(target, rgb, cli.run_record(
        res, layer=layer, inputs={"content": content_path},
        psnr_db=transfer.psnr(rgb, content),
        image_size={"content": list(content.shape[:2]), "output": list(rgb.shape[:2])}))


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
