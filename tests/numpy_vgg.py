"""An independent float64 NumPy VGG forward pass, for comparing against jnst.backbones.vgg."""

import numpy as np


def conv3x3_same(x, kernel, bias):
  """x (N, H, W, Cin), kernel (3, 3, Cin, Cout) cross-correlation, zero padding 1."""
  n, h, w, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((n, h, w, kernel.shape[-1]))
  for dy in range(3):
    for dx in range(3):
      out += np.einsum("nhwc,cd->nhwd", xp[:, dy:dy + h, dx:dx + w], kernel[dy, dx])
  return out + bias


def pool2x2(x, mode):
  n, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
  return x.max(axis=(2, 4)) if mode == "max" else x.mean(axis=(2, 4))


def forward(params, rgb, pooling="max", convs_per_block=(2, 2, 4, 4, 4)):
  """All layers of a VGG on RGB in [0, 1]; params as jnst.backbones.vgg's pytree. float64."""
  mean = np.asarray(params["input"]["mean"], np.float64)
  std = np.asarray(params["input"]["std"], np.float64)
  x = (np.asarray(rgb, np.float64) - mean) / std
  out = {}
  for b, n in enumerate(convs_per_block, 1):
    for i in range(1, n + 1):
      p = params["conv"][f"conv{b}_{i}"]
      x = conv3x3_same(x, np.asarray(p["kernel"], np.float64), np.asarray(p["bias"], np.float64))
      out[f"conv{b}_{i}"] = x
      x = np.maximum(x, 0)
      out[f"relu{b}_{i}"] = x
    x = pool2x2(x, pooling)
    out[f"pool{b}"] = x
  return out
