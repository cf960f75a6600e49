"""The same Gatys computation as jnst, in PyTorch: the reference the benchmark times.

Mirrors jnst exactly: the VGG conv stack from our params pytree (HWIO kernels -> OIHW;
both frameworks cross-correlate with SAME = 1-pixel zero padding), the same preprocessing
(``VGG.preprocess``: the optimised image lives in the weights' input space) — or ResNet-50
(``TorchResNet``, batch norm folded as in ``jnst.backbones.resnet``) — the same
layers (stopping at the deepest one needed), pooling, loss normalisations
(``jnst.losses``), layer/blend weights, and optimisers: ``torch.optim.LBFGS`` (no line
search, history ``lbfgs_memory``) and ``torch.optim.Adam`` (optax.adam's defaults: betas
(0.9, 0.999), eps 1e-8). Images are NCHW here (PyTorch's native layout); a batch of B images
sums the losses, so Adam on a stacked batch equals B independent runs.

torch is imported lazily: importing this module does not need it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence

import numpy as np

import jnst.optimize as optimize
from jnst.backbones import resnet, scales_for, vgg
from jnst.experiments import StylizeConfig
from jnst.errors import JnstError


def torch():
  """The torch module, or a JnstError saying how to install it."""
  try:
    import torch as t
  except ImportError:
    raise JnstError("PyTorch is not installed: pip install 'jnst[bench]' (on CPU-only "
                    "machines: pip install torch==2.13.0 first)") from None
  return t


def default_device() -> str:
  return "cuda" if torch().cuda.is_available() else "cpu"


def sync(device) -> None:
  """Waits for queued device work (a no-op on CPU)."""
  if str(device).startswith("cuda"):
    torch().cuda.synchronize()


# ------------------------------------------------------------------ network



def _tensors(params: Mapping, names, device, dtype) -> tuple[dict, object, object]:
  """Our params as torch tensors: ({conv: (OIHW kernel, bias)}, input mean, input std)."""
  t = torch()
  conv = {}
  for name in names:
    k = np.asarray(params["conv"][name]["kernel"], np.float32).transpose(3, 2, 0, 1)
    b = np.asarray(params["conv"][name]["bias"], np.float32)
    conv[name] = (t.tensor(np.ascontiguousarray(k), device=device, dtype=dtype),
                  t.tensor(b, device=device, dtype=dtype))
  return (conv, t.tensor(np.asarray(params["input"]["mean"], np.float32), device=device),
          t.tensor(np.asarray(params["input"]["std"], np.float32), device=device))

class TorchVGG:
  """The VGG conv stack of ``params`` (jnst pytree) as PyTorch tensors on ``device``."""

  def __init__(self, params: Mapping, device="cpu", dtype=None):
    t = torch()
    self.arch = vgg.arch_of(params)
    self.device, self.dtype = device, dtype or t.float32
    self.conv, self.mean, self.std = _tensors(params, self.arch.conv_names, device, self.dtype)

  def preprocess(self, rgb):
    """RGB [0, 1] (B, 3, H, W) -> network input space (``VGG.preprocess``)."""
    return (rgb - self.mean[:, None, None]) / self.std[:, None, None]

  def deprocess(self, x):
    return x * self.std[:, None, None] + self.mean[:, None, None]

  def features(self, x, layers: Sequence[str], pooling: str = "max") -> dict:
    """{layer: (B, C, H', W') float32} of network-space ``x`` (B, 3, H, W); stops at the
    deepest requested layer, like ``jnst.backbones.vgg.VGGNet``."""
    t = torch()
    F = t.nn.functional
    wanted = set(vgg.VGG(self.arch).validate_layers(layers))
    order = self.arch.layer_names
    last = max(order.index(l) for l in wanted)
    out = {}
    x = x.to(self.dtype)

    def keep(name, value):
      if name in wanted:
        out[name] = value.float()
      return order.index(name) >= last

    for b, n in enumerate(self.arch.convs_per_block, 1):
      for i in range(1, n + 1):
        x = F.conv2d(x, *self.conv[f"conv{b}_{i}"], padding=1)
        if keep(f"conv{b}_{i}", x):
          return out
        x = F.relu(x)
        if keep(f"relu{b}_{i}", x):
          return out
      if pooling == "max":
        x = F.max_pool2d(x, 2, 2)
      elif pooling == "avg":
        x = F.avg_pool2d(x, 2, 2)
      else:
        raise JnstError(f"unknown pooling {pooling!r}: use 'max' or 'avg'")
      if keep(f"pool{b}", x):
        return out
    return out


class TorchResNet(TorchVGG):
  """ResNet-50 of ``params`` (jnst pytree, batch norm folded) as PyTorch tensors: the same
  graph as ``jnst.backbones.resnet.ResNetNet`` (``stride_in_1x1``: the v1 variant)."""

  def __init__(self, params: Mapping, stride_in_1x1: bool = False, device="cpu", dtype=None):
    t = torch()
    self.stride_in_1x1, self.device, self.dtype = stride_in_1x1, device, dtype or t.float32
    self.conv, self.mean, self.std = _tensors(params, resnet.CONV_NAMES, device, self.dtype)

  def features(self, x, layers: Sequence[str], pooling: str = "max") -> dict:
    """{layer: (B, C, H', W') float32} of network-space ``x``; stops at the deepest layer."""
    F = torch().nn.functional
    wanted = set(resnet.RESNET50.validate_layers(layers))
    order = resnet.LAYER_NAMES
    last = max(order.index(l) for l in wanted)
    out = {}

    def keep(name, value):
      if name in wanted:
        out[name] = value.float()
      return order.index(name) >= last

    def conv(h, name, stride=1):
      k, b = self.conv[name]
      return F.conv2d(h, k, b, stride=stride, padding=k.shape[-1] // 2)

    x = conv(x.to(self.dtype), "conv1", 2)
    if keep("conv1", x):
      return out
    x = F.relu(x)
    if keep("relu", x):
      return out
    if pooling not in resnet.POOLINGS:
      raise JnstError(f"unknown pooling {pooling!r}: use 'max' or 'avg'")
    x = (F.max_pool2d(x, 3, 2, 1) if pooling == "max"
         else F.avg_pool2d(x, 3, 2, 1, count_include_pad=True))
    if keep("maxpool", x):
      return out
    for s, n in enumerate(resnet.STAGES, 1):
      for b in range(n):
        p, stride = f"layer{s}.{b}", (2 if s > 1 and b == 0 else 1)
        s1, s2 = (stride, 1) if self.stride_in_1x1 else (1, stride)
        h = F.relu(conv(x, f"{p}.conv1", s1))
        h = conv(F.relu(conv(h, f"{p}.conv2", s2)), f"{p}.conv3")
        x = F.relu(h + (conv(x, f"{p}.downsample", stride) if b == 0 else x))
        if keep(p, x):
          return out
    return out


# ------------------------------------------------------------------ losses (jnst.losses)


def gram(f):
  """(B, C, H, W) -> raw Gram Fᵀ F, (B, C, C) (paper eq. 3)."""
  m = f.flatten(2)
  return m @ m.transpose(1, 2)


def style_layer_loss(f, a, variant: str = "paper"):
  """Σ (G - A)² / (4 N² M²) (paper, invariant) or / (N² (N M)²) (mean), summed over the
  batch."""
  _, c, h, w = f.shape
  d = ((gram(f) - a) ** 2).sum()
  scale = 4.0 * c * c * (h * w) ** 2 if variant != "mean" else float(c * c) * (c * h * w) ** 2
  return d / scale


def content_layer_loss(f, p, variant: str = "paper"):
  d = (f - p) ** 2
  if variant == "invariant":  # Per element of one image; summed over a stacked batch.
    return 0.5 * d.sum() / d[0].numel()
  return 0.5 * d.sum() if variant == "paper" else d.mean()


def tv_loss(x):
  dy = x[..., 1:, :] - x[..., :-1, :]
  dx = x[..., :, 1:] - x[..., :, :-1]
  return (dy ** 2).sum() + (dx ** 2).sum()


@dataclasses.dataclass
class TorchGatys:
  """α L_content + β L_style + γ L_tv of network-space ``x`` (B, 3, H, W): jnst's
  stylize objective with its ``data`` (targets and weights) built in PyTorch."""
  net: TorchVGG
  layers: tuple[str, ...]
  content: dict      # {layer: P (1, C, H, W)}
  style: dict        # {layer: A (C, C)}
  weights: dict      # {"content", "style", "tv": float, "content_layers", "style_layers"}
  pooling: str = "max"
  variant: str = "paper"

  def __call__(self, x):
    feats = self.net.features(x, self.layers, self.pooling)
    w, zero = self.weights, x.new_zeros(())
    c = sum(w["content_layers"][l] * content_layer_loss(feats[l], p, self.variant)
            for l, p in self.content.items()) if self.content else zero
    s = sum(w["style_layers"][l] * style_layer_loss(feats[l], a, self.variant)
            for l, a in self.style.items()) if self.style else zero
    rgb255 = x * (255.0 * self.net.std)[:, None, None]  # TV in RGB 0-255 steps, as jnst.
    tv = tv_loss(rgb255) / (x.shape[-2] * x.shape[-1] if self.variant == "invariant" else 1)
    terms = {"content": w["content"] * c, "style": w["style"] * s, "tv": w["tv"] * tv}
    return terms["content"] + terms["style"] + terms["tv"], terms


def to_nchw(rgb, device="cpu"):
  """(H, W, 3) or (B, H, W, 3) array -> float32 (B, 3, H, W) tensor."""
  a = np.asarray(rgb, np.float32)
  a = a[None] if a.ndim == 3 else a
  return torch().tensor(np.ascontiguousarray(a.transpose(0, 3, 1, 2)), device=device)


def to_nhwc(x) -> np.ndarray:
  """(B, 3, H, W) tensor -> (B, H, W, 3) NumPy array."""
  return x.detach().float().cpu().numpy().transpose(0, 2, 3, 1)


def stylize_problem(params, content, styles: Sequence, cfg: StylizeConfig,
                    device="cpu") -> tuple[TorchGatys, object]:
  """(loss, network-space content image (1, 3, H, W)) for the same experiment as
  ``StylizeConfig.build`` — its backbone (``cfg.backbone``), layers, weights and the
  backbone's ``term_scales``: targets are computed here, in PyTorch."""
  t = torch()
  bb = cfg.get_backbone()
  if cfg.backbone in resnet.VARIANTS:
    net = TorchResNet(params, bb.stride_in_1x1, device)
  else:
    if vgg.arch_of(params) != bb.arch:
      raise JnstError(f"these params hold {vgg.arch_of(params).name} convs, not {bb.name}'s: "
                      f"pass {vgg.arch_of(params).name} params or --backbone="
                      f"{vgg.arch_of(params).name}")
    net = TorchVGG(params, device)
  c_layers = bb.expand_layers(cfg.content_layers or bb.default_content_layers)
  s_layers = bb.expand_layers(cfg.style_layers or bb.default_style_layers)
  with t.no_grad():
    xc = net.preprocess(to_nchw(content, device))
    feats = net.features(xc, c_layers, cfg.pooling)
    content_t = {l: feats[l] for l in c_layers}
    blend = cfg.style_blend_weights or [1.0] * len(styles)
    style_t = {l: 0.0 for l in s_layers}
    for s, b in zip(styles, blend):
      feats = net.features(net.preprocess(to_nchw(s, device)), s_layers, cfg.pooling)
      for l in s_layers:
        style_t[l] = style_t[l] + (b / float(sum(blend))) * gram(feats[l])[0]
  cw = cfg.content_layer_weights or [1.0] * len(c_layers)
  sw = cfg.style_layer_weights or [1.0 / len(s_layers)] * len(s_layers)
  scales = scales_for(bb, cfg.variant)
  weights = {"content": cfg.alpha * scales.get("content", 1.0),
             "style": cfg.style_weight * scales.get("style", 1.0), "tv": cfg.tv_weight,
             "content_layers": dict(zip(c_layers, cw)), "style_layers": dict(zip(s_layers, sw))}
  loss = TorchGatys(net, tuple(dict.fromkeys(c_layers + s_layers)), content_t, style_t,
                    weights, cfg.pooling, cfg.variant)
  return loss, xc


# ------------------------------------------------------------------ evaluation and optimisers


def value_and_grad(loss, x):
  """(loss tensor, dL/dx) of network-space ``x`` (B, 3, H, W), eagerly."""
  x = x.detach().requires_grad_(True)
  value, _ = loss(x)
  (g,) = torch().autograd.grad(value, x)
  return value.detach(), g


@dataclasses.dataclass
class TorchResult:
  """Like ``jnst.optimize.RunResult`` for one run (or one stacked Adam batch): x (B, 3, H, W);
  loss_history: loss at each evaluated iterate, then the final loss; evaluations include
  the final one; seconds: wall time of the optimisation (device-synced)."""
  x: object
  loss_history: list
  evaluations: int
  seconds: float


def run(loss, x0, cfg: optimize.OptConfig) -> TorchResult:
  """Optimises ``x0`` (B, 3, H, W) with torch.optim, ``cfg.steps`` evaluations + a final one.

  L-BFGS: ``torch.optim.LBFGS(lr, max_iter=steps, history_size=lbfgs_memory,
  line_search_fn=None)`` with the tolerances disabled, so it runs exactly ``steps``
  iterations and evaluations (torch scales the first step by min(1, 1/|g|₁)). Adam:
  ``torch.optim.Adam(lr)``. Only the fixed-step L-BFGS and constant-rate Adam exist here.
  """
  t = torch()
  cfg = cfg.validate()
  if cfg.uses_linesearch or cfg.schedule != "constant" or cfg.tol:
    raise JnstError("the PyTorch reference runs L-BFGS without line search and constant-rate "
                    "Adam with tol=0 only: change the OptConfig")
  x = x0.detach().clone().requires_grad_(True)
  history = []
  sync(x.device)
  t0 = time.perf_counter()
  if cfg.optimizer == "lbfgs":
    opt = t.optim.LBFGS([x], lr=cfg.learning_rate, max_iter=cfg.steps, max_eval=2 * cfg.steps,
                        tolerance_grad=-1.0, tolerance_change=-1.0,
                        history_size=cfg.lbfgs_memory, line_search_fn=None)

    def closure():
      opt.zero_grad(set_to_none=True)
      value, _ = loss(x)
      value.backward()
      history.append(value.detach())
      return value

    opt.step(closure)
  else:
    opt = t.optim.Adam([x], lr=cfg.learning_rate)
    for _ in range(cfg.steps):
      opt.zero_grad(set_to_none=True)
      value, _ = loss(x)
      value.backward()
      history.append(value.detach())
      opt.step()
  with t.no_grad():
    final, _ = loss(x)
  history.append(final)
  hist = [float(v) for v in t.stack(history).cpu()]
  sync(x.device)
  seconds = time.perf_counter() - t0
  return TorchResult(x.detach(), hist, len(history), seconds)
