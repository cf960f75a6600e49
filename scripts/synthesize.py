r"""Texture synthesis from the Gram matrices of VGG layers (Gatys et al. 2015), from noise.

  python scripts/synthesize.py --style=painting.jpg --style_layers=block1,block2,block3 --output=out/tex.png
"""

from absl import flags

from jnst import cli, transfer, vgg
from jnst.errors import JnstError

cli.define_common_flags()
cli.define_synthesize_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  out = cli.output_path("texture.png")
  if FLAGS.style and len(FLAGS.style) > 1:
    raise JnstError(f"synthesize takes one --style image, got {len(FLAGS.style)}")
  (style,), (style_path,) = cli.load_styles()
  opt = cli.opt_config()
  cfg = transfer.SynthesizeConfig(
      style_layers=vgg.expand_layers(FLAGS.style_layers),
      style_layer_weights=cli.floats_flag("style_layer_weights"), seed=FLAGS.seed,
      pooling=FLAGS.pooling, variant=FLAGS.variant, dtype=FLAGS.dtype, opt=opt)
  params = vgg.load_params(FLAGS.weights)
  print(f"synthesizing the texture of {style_path} ({style.shape[1]}x{style.shape[0]}) from "
        f"{', '.join(cfg.style_layers)} (seed {FLAGS.seed})", flush=True)
  rgb, res = transfer.synthesize(params, style, cfg, on_chunk=cli.Progress(opt.steps, params, out))
  cli.write_outputs(out, rgb, cli.run_record(
      res, inputs={"style": style_path},
      image_size={"style": list(style.shape[:2]), "output": list(rgb.shape[:2])}))


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
