r"""Backbones side by side: the same content/style pair stylised with each network, and a
table of per-evaluation time, memory and evaluations to a fixed style/content balance
(jnst/bench/compare.py).

  python scripts/compare_backbones.py                                # every registered backbone
  python scripts/compare_backbones.py --backbones=vgg19,vgg16 --size=128 --steps=300

Each backbone uses its default weights file (fetched and converted once; $JNST_WEIGHTS,
$JNST_WEIGHTS_VGG16, ... or --weights=NAME=PATH,... override); by default a registered
backbone without weights (ResNet-50 has no download) is skipped with a note. Writes
compare.json, compare.md and grid.png to --output_dir. The pair defaults to the demo pair.
A backbone's term_scales are calibrated by scripts/calibrate_backbone.py.
"""

import dataclasses
from pathlib import Path

import jax
from absl import flags

import jnst
from jnst import cli, demo, images, records
from jnst.bench import compare

_BACKBONES = flags.DEFINE_list("backbones", list(jnst.backbones.NAMES), "Backbones to compare "
                               "(default: every registered one).")
_SIZE = flags.DEFINE_integer("size", 128, "Max side of the images, pixels.", lower_bound=16)
_STEPS = flags.DEFINE_integer("steps", 300, "L-BFGS steps per backbone.", lower_bound=1)
_BALANCE = flags.DEFINE_float("balance", 1.0, "Count evaluations until weighted style <= "
                              "BALANCE x weighted content.", lower_bound=0.0)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed evaluations per median.", lower_bound=1)
_CONTENT = flags.DEFINE_string("content", None, "Content image (default: the demo photo).")
_STYLE = flags.DEFINE_string("style", None, "Style image (default: the demo painting).")
_WEIGHTS = flags.DEFINE_list("weights", None, "NAME=PATH per backbone, e.g. resnet50=w.h5 "
                              "(default: each backbone's default file).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/compare", "Output directory.")


def main(argv):
  del argv
  content_path = _CONTENT.value or str(demo.content_path())
  style_path = _STYLE.value or str(demo.style_path())
  cfg = compare.CompareConfig(_STEPS.value, _BALANCE.value, _REPEATS.value).validate()
  out = Path(_OUTPUT_DIR.value)
  records.ensure_writable(out / "compare.json")
  paths = dict(w.split("=", 1) for w in _WEIGHTS.value or [] if "=" in w)
  if len(paths) != len(_WEIGHTS.value or []):
    raise jnst.JnstError(f"--weights={','.join(_WEIGHTS.value)} must be NAME=PATH pairs")
  entries = []
  for name in dict.fromkeys(_BACKBONES.value):  # Bad names/files fail here.
    try:
      entries.append((name, jnst.load_backbone(name, paths.get(name))[1]))
    except jnst.JnstError as e:
      if _BACKBONES.present:
        raise
      print(f"skipping {name}: {e}", flush=True)  # A registered backbone without weights.
  content = images.load_image(content_path, _SIZE.value)
  style = images.load_image(style_path, _SIZE.value)
  recs, results = compare.run(entries, content, style, cfg, log=lambda s: print(s, flush=True))
  v = records.versions()
  machine = (f"{v.get('cpu')}, {records.cpu_count()} CPUs, JAX {v.get('jax')} "
             f"({jax.default_backend()}).")
  md = compare.markdown(recs, cfg, content.shape, machine)
  images.save_image(out / "grid.png", compare.grid(content, style, recs, results))
  records.save_json(out / "compare.json", {
      "config": dataclasses.asdict(cfg), "size": _SIZE.value, "results": recs, "versions": v,
      "inputs": {"content": content_path, "style": style_path}})
  records.save_text(out / "compare.md", md + "\n")
  print(md)
  print(f"wrote grid.png, compare.json and compare.md to {out}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
