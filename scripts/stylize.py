r"""Neural style transfer (Gatys et al.): the main job.

  python scripts/stylize.py                     # the demo pair, 512 px, L-BFGS 500 steps
  python scripts/stylize.py --content=photo.jpg --style=painting.jpg --output=out.png --size=256
"""

from absl import flags

from jnst import cli, transfer, vgg

cli.define_common_flags()
cli.define_stylize_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  out = cli.output_path("stylized.png")
  content, styles, init_image, paths = cli.load_stylize_inputs()
  cfg = cli.stylize_config(init_is_path=init_image is not None)
  params = vgg.load_params(FLAGS.weights, dtype="float32")
  print(f"stylizing {paths['content']} ({content.shape[1]}x{content.shape[0]}) with "
        f"{', '.join(paths['style'])}: {cfg.opt.optimizer}, {cfg.opt.steps} steps", flush=True)
  rgb, res = transfer.stylize(params, content, styles, cfg, init_image,
                              on_chunk=cli.Progress(cfg.opt.steps, params, out))
  cli.write_outputs(out, rgb, cli.run_record(
      res, inputs=paths, image_size={"content": list(content.shape[:2]),
                                     "style": [list(s.shape[:2]) for s in styles],
                                     "output": list(rgb.shape[:2])}))


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
