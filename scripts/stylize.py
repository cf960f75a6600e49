r"""Neural style transfer (Gatys et al.): the main job.

  python scripts/stylize.py                     # the demo pair, 512 px, L-BFGS 500 steps
  python scripts/stylize.py --content=photo.jpg --style=painting.jpg --output=out.png --size=256
"""

from jnst import cli, experiments

cli.define_common_flags()
cli.define_stylize_flags()


def main(argv):
  del argv
  out = cli.output_path("stylized.png")
  cfg = cli.stylize_config()
  inputs, paths = cli.load_inputs(cli.input_spec(), "stylize")
  params = cli.load_params(cfg)
  content = inputs.content
  print(f"stylizing {paths['content']} ({content.shape[1]}x{content.shape[0]}) with "
        f"{', '.join(paths['style'])}: {cfg.opt.optimizer}, {cfg.opt.steps} steps", flush=True)
  rgb, res = experiments.run(cfg, params, inputs, cli.Printer(out))
  cli.write_outputs(out, rgb, cli.record(
      res, cfg, inputs=paths, image_size={"content": list(content.shape[:2]),
                                          "style": [list(s.shape[:2]) for s in inputs.styles],
                                          "output": list(rgb.shape[:2])}))


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
