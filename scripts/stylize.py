r"""Neural style transfer (Gatys et al.): the main job.

  python scripts/stylize.py                     # the demo pair, 512 px, L-BFGS 500 steps
  python scripts/stylize.py --content=photo.jpg --style=painting.jpg --output=out.png --size=256
"""

from jnst import cli

cli.define_common_flags()
cli.define_stylize_flags()


def main(argv):
  del argv
  j = cli.job("stylize", "stylized.png")
  content = j.inputs.content
  print(f"stylizing {j.paths['content']} ({content.shape[1]}x{content.shape[0]}) with "
        f"{', '.join(j.paths['style'])}: {j.cfg.opt.optimizer}, {sum(cli.schedule().steps)} steps",
        flush=True)
  rgb, res, extra = cli.solve(j.cfg, j.params, j.inputs, j.out, experiment="stylize")
  cli.write_outputs(j.out, rgb, cli.record(
      res, j.cfg, **extra, inputs=j.paths, image_size={"content": list(content.shape[:2]),
                                              "style": [list(s.shape[:2]) for s in j.inputs.styles],
                                              "output": list(rgb.shape[:2])}), res)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
