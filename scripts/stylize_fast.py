r"""Stylise photos in one pass with a network trained by scripts/train_feedforward.py.

  python scripts/stylize_fast.py --model=out/ff --content=photo.jpg --output=out/fast.png
  python scripts/stylize_fast.py --model=out/ff --content=a.jpg,b.png --output=out/fast_dir
  python scripts/stylize_fast.py --model=out/ff --content=photos/ --output=out/fast_dir --network=1

Any size (--size: max side, default the image's own). One content file and an --output ending
in .png/.jpg writes that file; otherwise --output is a directory of <name>.png. A JSON record
(model, network, sizes, seconds per image) is written beside.
"""

import time
from pathlib import Path

from absl import flags

import jnst
from jnst import cli, data, images, records
from jnst.errors import JnstError

_MODEL = flags.DEFINE_string("model", None, "Training output dir or checkpoint file.")
_CONTENT = flags.DEFINE_list("content", None, "Content image(s), or a directory of images.")
_OUTPUT = flags.DEFINE_string("output", "out/fast", "Output file (one content) or directory.")
_NETWORK = flags.DEFINE_string("network", "0", "Which network of the model: index or label.")
_SIZE = flags.DEFINE_integer("size", None, "Max side of the output (default: the input's).",
                             lower_bound=16)


def inputs() -> list[Path]:
  if not _CONTENT.value:
    raise JnstError("no --content given: pass image file(s) or a directory")
  paths = []
  for c in map(Path, _CONTENT.value):
    if c.is_dir():
      found = sorted(p for p in c.iterdir() if p.suffix.lower() in data.SUFFIXES)
      if not found:
        raise JnstError(f"--content={c} holds no image files")
      paths += found
    else:
      paths.append(c)
  return paths


def main(argv):
  del argv
  if not _MODEL.value:
    raise JnstError("no --model given: pass the --output directory of train_feedforward.py")
  paths, out = inputs(), Path(_OUTPUT.value)
  single = len(paths) == 1 and out.suffix.lower() in (".png", ".jpg", ".jpeg")
  targets = [out] if single else [out / f"{p.stem}.png" for p in paths]
  records.ensure_writable(targets[0])
  model = jnst.load_fast_model(_MODEL.value)
  k = model.member(_NETWORK.value)
  rgbs = [images.load_image(p, _SIZE.value) for p in paths]  # Bad inputs fail before work.
  done = []
  for p, rgb, dst in zip(paths, rgbs, targets):
    t0 = time.perf_counter()
    y = jnst.stylize_fast(rgb, model, network=k)
    seconds = time.perf_counter() - t0
    images.save_image(dst, y)
    done.append({"content": str(p), "output": str(dst), "size": list(y.shape[:2]),
                 "seconds": seconds})
    print(f"{p} ({y.shape[1]}x{y.shape[0]}) -> {dst} in {seconds:.3f}s", flush=True)
  rec_path = out.with_suffix(".json") if single else out / "record.json"
  records.save_json(rec_path, {"model": str(model.path), "step": model.step,
                               "network": model.labels[k], "images": done,
                               "versions": records.versions()})
  print(f"wrote {len(done)} image(s) and {rec_path}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
