r"""A backbone's term_scales against VGG-19 for one loss variant (jnst/calibrate.py): the unit
scales at the start of a run, then the style scale that makes its default run end with the
same style reduction as VGG-19's, over one or more content/style pairs.

  python scripts/calibrate_backbone.py --backbone=vgg16 --variant=paper \
      --pairs=demo,../shared/images/tubingen.jpg:../shared/images/starry_night.jpg
  python scripts/calibrate_backbone.py --backbone=resnet50 --weights=weights/resnet50.h5

--pairs: "demo" (the demo photo and painting) or CONTENT:STYLE paths, comma-separated.
Prints the numbers to keep (the backbone's term_scales, or its variant_term_scales entry for
another variant) and writes <output_dir>/calibration_<backbone>_<variant>.json.
"""

from pathlib import Path

from absl import flags

import jnst
import jnst.calibrate as calibrate
from jnst import cli, demo, images, records

_BACKBONE = flags.DEFINE_string("backbone", "vgg16", "The backbone to calibrate.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Its weights file (default: its default file).")
_REFERENCE = flags.DEFINE_string("reference", "vgg19", "The reference backbone (its units).")
_REFERENCE_WEIGHTS = flags.DEFINE_string("reference_weights", None, "The reference's weights "
                                         "file (default: its default file, $JNST_WEIGHTS).")
_VARIANT = flags.DEFINE_string("variant", "paper", "Loss variant to calibrate for.")
_PAIRS = flags.DEFINE_list("pairs", ["demo"], "Pairs: demo or CONTENT:STYLE, comma-separated.")
_SIZE = flags.DEFINE_integer("size", 128, "Max side of the images, pixels.", lower_bound=16)
_STEPS = flags.DEFINE_integer("steps", 300, "L-BFGS steps per run.", lower_bound=1)
_TOL = flags.DEFINE_float("tol", 0.03, "Stop when the style reductions agree within this "
                          "relative tolerance.", lower_bound=0.0)
_MAX_RUNS = flags.DEFINE_integer("max_runs", 6, "Runs of the backbone per pair, at most.",
                                 lower_bound=1)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/calibrate", "Where the record goes.")


def _pairs() -> list[tuple[str, str]]:
  out = []
  for item in _PAIRS.value:
    if item == "demo":
      out.append((str(demo.content_path()), str(demo.style_path())))
    elif ":" in item:
      out.append(tuple(item.rsplit(":", 1)))
    else:
      raise jnst.JnstError(f"--pairs entry {item!r} must be demo or CONTENT:STYLE")
  return out


def main(argv):
  del argv
  paths = _pairs()
  out = Path(_OUTPUT_DIR.value) / f"calibration_{_BACKBONE.value}_{_VARIANT.value}.json"
  records.ensure_writable(out)
  reference, ref_params = jnst.load_backbone(_REFERENCE.value, _REFERENCE_WEIGHTS.value)
  backbone, params = jnst.load_backbone(_BACKBONE.value, _WEIGHTS.value)
  pairs = [(images.load_image(c, _SIZE.value), images.load_image(s, _SIZE.value))
           for c, s in paths]
  rec = calibrate.balance(reference, ref_params, backbone, params, pairs, _VARIANT.value,
                          _STEPS.value, _TOL.value, _MAX_RUNS.value,
                          log=lambda s: print(s, flush=True))
  rec.update(backbone=_BACKBONE.value, reference=_REFERENCE.value, size=_SIZE.value,
             pairs_files=paths, current=calibrate.current(backbone, _VARIANT.value),
             kept=dict(calibrate.rounded(rec["term_scales"])), versions=records.versions())
  records.save_json(out, rec)
  print(f"{_BACKBONE.value}, variant {_VARIANT.value}: style multiplier per pair "
        + ", ".join(f"{p['multiplier']:.3g}" for p in rec["pairs"])
        + f" (geometric mean {rec['multiplier']:.3g})")
  bad = [i for i, p in enumerate(rec["pairs"]) if not p["converged"]]
  if bad:
    print(f"warning: pair(s) {bad} never reached {_REFERENCE.value}'s style reduction (r hardly "
          "moves with beta: see the probes in the record); they are left out, and with none "
          "left the unit scales stand")
  print(f"term_scales for variant {_VARIANT.value}: {calibrate.rounded(rec['term_scales'])} "
        f"(now: {rec['current']})")
  print(f"wrote {out}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
