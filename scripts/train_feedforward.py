r"""Train feed-forward stylisation networks (Johnson et al. 2016) with jnst's loss terms.

  python scripts/train_feedforward.py --style=painting.jpg --output=out/ff  # demo photos
  python scripts/train_feedforward.py --style=a.jpg,b.jpg --data_dir=coco/train2014 \
      --output=out/ff --steps=40000 --image_size=256 --batch_size=4
  python scripts/train_feedforward.py --style=a.jpg --sweep=style_weight:3,10,30 ...

One network per --style image × --sweep value, all in one vmapped step; the batch is sharded
over all devices (BUILD.md). Writes checkpoints/, samples/, losses.png and record.json to
--output; --resume continues from its newest checkpoint. Multi-host: --distributed.
"""

import os

import jax
from absl import flags

from jnst import cli, data, demo, feedforward, ff_train
from jnst.errors import JnstError

F = flags
_STYLE = F.DEFINE_list("style", None, "Style image(s) (default: the demo painting).")
_DATA = F.DEFINE_string("data_dir", None, "Folder of training photos (default: the demo photos).")
_OUT = F.DEFINE_string("output", "out/feedforward", "Output directory.")
_RESUME = F.DEFINE_bool("resume", False, "Continue from the newest checkpoint in --output.")
_WEIGHTS = F.DEFINE_string("weights", None, "Loss-network weights file (default: VGG-19's).")
_BACKBONE = F.DEFINE_string("backbone", "vgg19", "Loss network (vgg19, vgg16, ...).")
_STEPS = F.DEFINE_integer("steps", 2000, "Training steps (Johnson: 40000 on COCO).", lower_bound=1)
_BATCH = F.DEFINE_integer("batch_size", 4, "Global batch (a multiple of the device count).",
                          lower_bound=1)
_SIZE = F.DEFINE_integer("image_size", 256, "Training crop side (px).", lower_bound=8)
_STYLE_SIZE = F.DEFINE_integer("style_size", None, "Style image max side (default image_size).")
_LR = F.DEFINE_float("learning_rate", 1e-3, "Adam step size.", lower_bound=0)
_CW = F.DEFINE_float("content_weight", 1.0, "α (content).", lower_bound=0)
_SW = F.DEFINE_float("style_weight", 10.0, "β (style).", lower_bound=0)
_TW = F.DEFINE_float("tv_weight", 0.0, "γ (TV, RGB 0-255 steps).", lower_bound=0)
_CL = F.DEFINE_list("content_layers", ["relu2_2"], "Content layers.")
_SL = F.DEFINE_list("style_layers", ["relu1_2", "relu2_2", "relu3_3", "relu4_3"], "Style layers.")
_VARIANT = F.DEFINE_enum("variant", "mean", ["paper", "mean"], "Loss normalisation.")
_WIDTH = F.DEFINE_integer("width", 32, "Network width (first conv's channels).", lower_bound=1)
_RES = F.DEFINE_integer("num_res_blocks", 5, "Residual blocks.", lower_bound=0)
_SEED = F.DEFINE_integer("seed", 0, "Seed of the initial params and the data order.", lower_bound=0)
_SWEEP = F.DEFINE_string("sweep", None, "FLAG:v1,v2,... over content/style/tv_weight, vmapped.")
_CKPT = F.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.", lower_bound=0)
_KEEP = F.DEFINE_integer("keep", 3, "Checkpoints kept.", lower_bound=1)
_SAMPLE = F.DEFINE_integer("sample_every", 500, "Steps between sample sheets.", lower_bound=0)
_LOG = F.DEFINE_integer("log_every", 50, "Steps between progress lines.", lower_bound=0)
_HOLD = F.DEFINE_integer("hold_out", 2, "Photos held back for samples.", lower_bound=0)
_MAP = F.DEFINE_enum("member_map", "auto", ["auto", "vmap", "unroll", "map"], "N networks: "
                     "vmap (batched; grouped convs), unroll (written out one after another "
                     "in one program), map (a lax.map loop); auto: unroll on CPU, else vmap.")
_DIST = F.DEFINE_bool("distributed", False, "Multi-host: jax.distributed.initialize() first.")


def sweep():
  if not _SWEEP.value:
    return None
  flag, _, values = _SWEEP.value.partition(":")
  try:
    return flag, tuple(float(v) for v in values.split(","))
  except ValueError:
    raise JnstError(f"--sweep={_SWEEP.value}: use FLAG:v1,v2,... with numbers") from None


def main(argv):
  del argv
  if _DIST.value or os.environ.get("JNST_DISTRIBUTED") == "1":
    jax.distributed.initialize()
  cfg = feedforward.FFConfig(
      backbone=_BACKBONE.value, variant=_VARIANT.value, content_layers=tuple(_CL.value),
      style_layers=tuple(_SL.value), content_weight=_CW.value, style_weight=_SW.value,
      tv_weight=_TW.value, sweep=sweep(), width=_WIDTH.value, num_res_blocks=_RES.value,
      image_size=_SIZE.value, style_size=_STYLE_SIZE.value, batch_size=_BATCH.value,
      steps=_STEPS.value, learning_rate=_LR.value, seed=_SEED.value).validate()
  opts = ff_train.RunOptions(
      styles=tuple(_STYLE.value or [str(demo.style_path())]),
      data_dir=_DATA.value or str(data.demo_photos()), output=_OUT.value, resume=_RESUME.value,
      checkpoint_every=_CKPT.value, keep=_KEEP.value, sample_every=_SAMPLE.value,
      log_every=_LOG.value, hold_out=_HOLD.value, member_map=_MAP.value)
  params = lambda: cfg.get_backbone().load(_WEIGHTS.value)  # After the inputs are checked.
  rec = ff_train.train_and_evaluate(cfg, opts, params, log=lambda m: print(m, flush=True))
  print(f"wrote {opts.output}/record.json, losses.png, samples/ and {rec['checkpoint']} "
        f"({rec['images_per_second'] or float('nan'):.3g} images/s)")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
