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
"""

from __future__ import annotations

from collections.abc import Sequence

from jnst.backbones import vgg

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
