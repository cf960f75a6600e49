r"""Texture synthesis from the Gram matrices of backbone layers (Gatys et al. 2015), from noise.

  python scripts/synthesize.py --style=painting.jpg --style_layers=block1,block2,block3 --output=out/tex.png
"""

from jnst import cli

cli.define_common_flags()
cli.define_style_flags()


def main(argv):
  del argv
  j = cli.job("synthesize", "texture.png")
  (style,), (style_path,), bb = j.inputs.styles, j.paths["style"], j.cfg.get_backbone()
  layers = bb.expand_layers(j.cfg.style_layers or bb.default_style_layers)  # Validated: not empty.
  print(f"synthesizing the texture of {style_path} ({style.shape[1]}x{style.shape[0]}) from "
        f"{', '.join(layers)} (seed {j.cfg.seed})", flush=True)
  rgb, res, extra = cli.solve(j.cfg, j.params, j.inputs, j.out, experiment="synthesize")
  cli.write_outputs(j.out, rgb, cli.record(
      res, j.cfg, inputs={"style": style_path},
      image_size={"style": list(style.shape[:2]), "output": list(rgb.shape[:2])}, **extra), res)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
