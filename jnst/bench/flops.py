"""Analytic FLOP count of one loss + input-gradient evaluation (multiply-add = 2 FLOPs).

For an H x W image and a VGG stack run up to the deepest loss layer::

  conv l (3x3, SAME, Cin -> Cout at H_l x W_l):   forward 2 · 9 · Cin · Cout · H_l · W_l
  its input gradient (a conv with the flipped, transposed kernel): the same again
  Gram of a style layer (M_l = H_l W_l positions, C_l channels):  G = Fᵀ F, 2 · M_l · C_l²
  its gradient dE/dF ∝ F (G - A):                                  2 · M_l · C_l² again

  FLOPs/eval = Σ_conv 2 · (2 · 9 · Cin · Cout · H_l · W_l) + Σ_style 2 · (2 · M_l · C_l²)

H_l, W_l halve (floor) after each pool. Kernel gradients are not needed (only dL/dx), and
bias, ReLU, pooling, content/TV terms and the optimiser are O(activations) and left out
(< 1 % at any size). The same count is used for both frameworks.

ResNet-50 (``resnet_eval_flops``), the same way from its layer shapes: every conv (k x k,
stride s, Cin -> Cout) costs 2 · k² · Cin · Cout · H_out · W_out forward and the same again
for its input gradient (multiply-adds with non-zero operands: a strided conv's transpose
is counted without the zeros it interleaves); sides: conv1 (7x7/2, padding 3), the stem pool
(3x3/2, padding 1) and the first block of stages 2-4 (stride 2) give (H - 1) // 2 + 1. The
stride is in the 3x3 conv (``resnet50``, torchvision v1.5) or the first 1x1
(``resnet50_v1``), which changes where that 1x1 runs. Grams as above. Residual additions,
ReLUs, biases and the pool are left out as for VGG. ``for_backbone`` picks the count.

XLA's own count (``jax.jit(f).lower(x).compile().cost_analysis()["flops"]``, a static count
of the HLO, so as reliable on CPU as anywhere) is lower by the padding: it counts only the
kernel taps inside the image — 8 % less for ResNet-50 at 40x24 px, less at larger sizes
(tests/test_backbone_bench.py). We count what a dense conv computes, as for VGG.
"""

from __future__ import annotations

from collections.abc import Sequence

from jnst.backbones import resnet, vgg

_VGG19 = vgg.ARCHS["vgg19"]


def conv_forward_flops(h: int, w: int, layers: Sequence[str], arch: vgg.Arch = _VGG19) -> int:
  """Forward FLOPs of every conv the network runs to produce ``layers`` at H x W."""
  order = arch.layer_names
  last = max(order.index(l) for l in vgg.VGG(arch).validate_layers(layers))
  total, cin = 0, 3
  for b, (n, cout) in enumerate(zip(arch.convs_per_block, arch.widths), 1):
    for i in range(1, n + 1):
      if order.index(f"conv{b}_{i}") > last:
        return total
      total += 2 * 9 * cin * cout * h * w
      cin = cout
    h, w = h // 2, w // 2
  return total


def gram_flops(h: int, w: int, style_layers: Sequence[str], arch: vgg.Arch = _VGG19) -> int:
  """FLOPs of the style layers' Gram matrices (forward only) at input H x W."""
  total = 0
  for layer in vgg.VGG(arch).validate_layers(style_layers):
    block = int(layer.split("_")[0][-1])  # conv3_2 / relu3_2 / pool3 -> 3
    halvings = block if layer.startswith("pool") else block - 1
    c = arch.widths[block - 1]
    hl, wl = h >> halvings, w >> halvings
    total += 2 * hl * wl * c * c
  return total


def eval_flops(h: int, w: int, layers: Sequence[str], style_layers: Sequence[str],
               arch: vgg.Arch = _VGG19) -> int:
  """FLOPs of one loss + input-gradient evaluation (module docstring formula)."""
  return 2 * conv_forward_flops(h, w, layers, arch) + 2 * gram_flops(h, w, style_layers, arch)


# ------------------------------------------------------------------ ResNet-50


def _half(n: int) -> int:
  """Output side of a stride-2 conv/pool with SAME-style padding: ceil(n / 2)."""
  return (n - 1) // 2 + 1


def resnet_shapes(h: int, w: int) -> dict[str, tuple[int, int, int]]:
  """Layer name -> (H', W', C) of ResNet-50's outputs at input H x W."""
  h, w = _half(h), _half(w)
  out = {"conv1": (h, w, 64), "relu": (h, w, 64)}
  h, w = _half(h), _half(w)
  out["maxpool"] = (h, w, 64)
  for s, (n, width) in enumerate(zip(resnet.STAGES, resnet.WIDTHS), 1):
    for b in range(n):
      if s > 1 and b == 0:
        h, w = _half(h), _half(w)
      out[f"layer{s}.{b}"] = (h, w, resnet.EXPANSION * width)
  return out


def resnet_conv_forward_flops(h: int, w: int, layers: Sequence[str],
                              stride_in_1x1: bool = False) -> int:
  """Forward FLOPs of every conv ResNet-50 runs to produce ``layers`` at H x W."""
  names = resnet.LAYER_NAMES
  last = max(names.index(l) for l in layers)
  ho, wo = _half(h), _half(w)
  total = 2 * 49 * 3 * 64 * ho * wo  # conv1
  hi, wi, cin = _half(ho), _half(wo), 64  # after the stem pool
  for s, (n, width) in enumerate(zip(resnet.STAGES, resnet.WIDTHS), 1):
    for b in range(n):
      name = f"layer{s}.{b}"
      if names.index(name) > last:
        return total
      down = s > 1 and b == 0
      ho, wo = (_half(hi), _half(wi)) if down else (hi, wi)
      cout = resnet.EXPANSION * width
      p1 = ho * wo if (down and stride_in_1x1) else hi * wi  # Where the first 1x1 runs.
      total += 2 * cin * width * p1 + 2 * 9 * width * width * ho * wo
      total += 2 * width * cout * ho * wo
      if b == 0:
        total += 2 * cin * cout * ho * wo  # downsample
      hi, wi, cin = ho, wo, cout
  return total


def resnet_gram_flops(h: int, w: int, style_layers: Sequence[str]) -> int:
  """FLOPs of the style layers' Gram matrices (forward only) at input H x W."""
  shapes = resnet_shapes(h, w)
  return sum(2 * shapes[l][0] * shapes[l][1] * shapes[l][2] ** 2 for l in style_layers)


def resnet_eval_flops(h: int, w: int, layers: Sequence[str], style_layers: Sequence[str],
                      stride_in_1x1: bool = False) -> int:
  """FLOPs of one loss + input-gradient evaluation on ResNet-50 (module docstring)."""
  return (2 * resnet_conv_forward_flops(h, w, layers, stride_in_1x1)
          + 2 * resnet_gram_flops(h, w, style_layers))


def for_backbone(backbone, h: int, w: int, layers: Sequence[str],
                 style_layers: Sequence[str]) -> int | None:
  """The evaluation count for ``backbone`` (a VGG or a ResNet), or None for another."""
  if isinstance(backbone, resnet.ResNet):
    return resnet_eval_flops(h, w, layers, style_layers, backbone.stride_in_1x1)
  arch = getattr(backbone, "arch", None)
  return None if arch is None else eval_flops(h, w, layers, style_layers, arch)
