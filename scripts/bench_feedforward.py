r"""Feed-forward benchmark: inference JAX vs PyTorch eager (same network and weights) and
training images/s for N networks (vmapped and lax.mapped); results to JSON and a Markdown table.

  python scripts/bench_feedforward.py --output=out/bench_ff.json
  python scripts/bench_feedforward.py --sizes=256,512 --networks=1,2,4 --train_size=128

Needs torch for the inference comparison (pip install 'jnst[bench]'). Training uses the VGG-19
loss network (--weights, default fetched once) and the demo painting as the style.
"""

import json
from pathlib import Path

from absl import flags

from jnst import cli, data, demo, feedforward, ff_train, images, records
from jnst.bench import ff_torch

_OUT = flags.DEFINE_string("output", "out/bench_feedforward.json", "JSON results.")
_SIZES = flags.DEFINE_list("sizes", ["256", "512", "1024"], "Inference sizes (px, square).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats per size.", lower_bound=1)
_NETWORKS = flags.DEFINE_list("networks", ["1", "2", "4"], "N networks per training step.")
_TRAIN_SIZE = flags.DEFINE_integer("train_size", 128, "Training crop side.", lower_bound=16)
_BATCH = flags.DEFINE_integer("batch_size", 4, "Training batch.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 5, "Timed training steps per N.", lower_bound=1)
_MAPS = flags.DEFINE_multi_enum("member_maps", ["vmap", "unroll"], ["vmap", "map", "unroll"],
                                "How the N networks run (feedforward.MEMBER_MAPS).")
_WEIGHTS = flags.DEFINE_string("weights", None, "VGG-19 weights file.")
_BACKBONE = flags.DEFINE_string("backbone", "vgg19", "Loss network.")
_SKIP = flags.DEFINE_list("skip", [], "Parts to skip: inference, training.")
_MODEL = flags.DEFINE_string("model", None, "Quality: a trained model dir; its held-back photos "
                             "(record.json) vs the optimisation result.")
_Q_SIZE = flags.DEFINE_integer("quality_size", 128, "Quality: photo crop side.", lower_bound=16)
_OPT_STEPS = flags.DEFINE_integer("opt_steps", 200, "Quality: L-BFGS steps.", lower_bound=1)


def main(argv):
  del argv
  records.ensure_writable(_OUT.value)
  rec = {"versions": records.versions(), "label": "shared machine, indicative"}
  if "inference" not in _SKIP.value:
    rec["inference"] = ff_torch.inference([int(s) for s in _SIZES.value], _REPEATS.value)
    print("| size | JAX s/image | PyTorch eager s/image | PyTorch / JAX | first JAX call s |")
    print("|---|---|---|---|---|")
    for r in rec["inference"]:
      print(f"| {r['size']} | {r['jax_s']:.3f} | {r['torch_s']:.3f} | {r['speedup']:.2f}x | "
            f"{r['first_call_s']:.1f} |", flush=True)
  if "training" not in _SKIP.value:
    cfg = feedforward.FFConfig(backbone=_BACKBONE.value)
    params = cfg.get_backbone().load(_WEIGHTS.value)
    style = images.load_image(demo.style_path(), _TRAIN_SIZE.value)
    rec["training"] = ff_torch.training(params, style, [int(n) for n in _NETWORKS.value],
                                        _TRAIN_SIZE.value, _BATCH.value, _STEPS.value, cfg,
                                        tuple(_MAPS.value))
    print("| networks | member map | step s | images/s (all networks) | images/s per network |")
    print("|---|---|---|---|---|")
    for r in rec["training"]:
      print(f"| {r['networks']} | {r['member_map']} | {r['step_s']:.2f} | "
            f"{r['images_per_s']:.2f} | "
            f"{r['images_per_s_per_network']:.2f} |", flush=True)
  if _MODEL.value:
    rec["quality"] = quality()
  records.save_json(_OUT.value, rec)
  print(f"wrote {_OUT.value}")


def quality():
  model = ff_train.load_model(_MODEL.value)
  cfg = model.config(0)
  held = json.loads((Path(_MODEL.value) / "record.json").read_text())["data"]["held"]
  photos = [data.load_crop(Path(p), _Q_SIZE.value, None) for p in held]
  style = images.load_image(model.meta["styles"][0], cfg.style_size or cfg.image_size)
  rows = ff_torch.quality(cfg.get_backbone().load(_WEIGHTS.value), model, style, photos, cfg,
                          0, _OPT_STEPS.value)
  for p, r in zip(held, rows):
    print(f"{Path(p).name}: network/optimisation content {r['ratio']['content']:.2f}x, style "
          f"{r['ratio']['style']:.2f}x ({r['network']} vs {r['optimisation']})", flush=True)
  return rows


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
