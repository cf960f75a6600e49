"""The feed-forward network (``jnst.transformer_net``) in PyTorch, with the same weights, and
the feed-forward benchmark: inference JAX vs PyTorch eager, training images/s for N networks.

torch is imported lazily (``torch_ref.torch()`` says how to install it).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

import jnst.feedforward as feedforward
import jnst.transformer_net as transformer_net
from jnst.bench import timing
from jnst.bench.torch_ref import torch


def transformer_net_module(width: int = 32, num_res_blocks: int = 5):
  """The same network as a ``torch.nn.Module`` (NCHW in, NCHW out)."""
  t = torch()
  nn = t.nn

  class Conv(nn.Module):
    def __init__(self, cin, cout, k, stride=1, up=1, bias=False):
      super().__init__()
      self.up, self.pad = up, nn.ReflectionPad2d(k // 2)
      self.conv = nn.Conv2d(cin, cout, k, stride, bias=bias)

    def forward(self, x):
      if self.up > 1:
        x = nn.functional.interpolate(x, scale_factor=self.up, mode="nearest")
      return self.conv(self.pad(x))

  class CNR(nn.Module):
    def __init__(self, *a, **kw):
      super().__init__()
      self.layer, self.norm = Conv(*a, **kw), nn.InstanceNorm2d(a[1], affine=True)

    def forward(self, x):
      return t.relu(self.norm(self.layer(x)))

  class Res(nn.Module):
    def __init__(self, c):
      super().__init__()
      self.conv1, self.norm1 = Conv(c, c, 3), nn.InstanceNorm2d(c, affine=True)
      self.conv2, self.norm2 = Conv(c, c, 3), nn.InstanceNorm2d(c, affine=True)

    def forward(self, x):
      return x + self.norm2(self.conv2(t.relu(self.norm1(self.conv1(x)))))

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      c = width
      self.conv_in, self.down1 = CNR(3, c, 9), CNR(c, 2 * c, 3, 2)
      self.down2 = CNR(2 * c, 4 * c, 3, 2)
      self.res = nn.ModuleList([Res(4 * c) for _ in range(num_res_blocks)])
      self.up1, self.up2 = CNR(4 * c, 2 * c, 3, up=2), CNR(2 * c, c, 3, up=2)
      self.conv_out = Conv(c, 3, 9, bias=True)

    def forward(self, x):
      h, w = x.shape[2:]
      y = self.down2(self.down1(self.conv_in(x)))
      for r in self.res:
        y = r(y)
      return t.sigmoid(self.conv_out(self.up2(self.up1(y)))[:, :, :h, :w])

  return Net()


def load(net, params):
  """Copies Flax params (HWIO kernels) into ``net`` (OIHW): Flax path res0/conv1/conv/kernel
  is torch's res.0.conv1.conv.weight, a norm's scale its weight; the residual blocks' second
  norm (no shift in jnst) gets a zero bias."""
  t = torch()
  state = {}
  for path, a in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = re.sub(r"^res(\d+)", r"res.\1", ".".join(k.key for k in path))
    name = re.sub(r"\.(kernel|scale)$", ".weight", name)
    a = np.array(a)
    a = a.transpose(3, 2, 0, 1) if a.ndim == 4 else a
    state[name] = t.from_numpy(np.ascontiguousarray(a))
  for k, v in net.state_dict().items():
    if k.endswith("norm2.bias"):
      state[k] = t.zeros_like(v)
  if set(state) != set(net.state_dict()):
    diff = sorted(set(state) ^ set(net.state_dict()))
    raise ValueError(f"params do not match the torch module: {diff[:4]}")
  net.load_state_dict(state)
  return net.eval()


# ---------------------------------------------------------------- the benchmark


def inference(sizes=(256, 512, 1024), repeats: int = 5, width: int = 32,
              num_res_blocks: int = 5) -> list[dict]:
  """Seconds per image (median of ``repeats`` after a warm-up) of one size×size image through
  the network: JAX (jitted, compile excluded) vs PyTorch eager (no_grad), same weights; and
  the largest difference of their outputs."""
  t = torch()
  params = transformer_net.init(jax.random.key(0), width, num_res_blocks)
  net = load(transformer_net_module(width, num_res_blocks), params)
  fn = jax.jit(lambda p, x: transformer_net.apply(p, x, width, num_res_blocks))
  rows = []
  for s in sizes:
    x = np.random.default_rng(0).uniform(size=(1, s, s, 3)).astype(np.float32)
    xj, xt = jnp.asarray(x), t.from_numpy(x.transpose(0, 3, 1, 2).copy())
    t0 = time.perf_counter()
    yj = np.asarray(jax.block_until_ready(fn(params, xj)))
    compile_s = time.perf_counter() - t0
    jax_s, _ = timing.median_seconds(lambda: jax.block_until_ready(fn(params, xj)), repeats)
    with t.no_grad():
      yt = net(xt).numpy().transpose(0, 2, 3, 1)
      torch_s, _ = timing.median_seconds(lambda: net(xt), repeats)
    rows.append({"size": s, "jax_s": jax_s, "torch_s": torch_s, "speedup": torch_s / jax_s,
                 "first_call_s": compile_s, "max_abs_diff": float(np.abs(yj - yt).max())})
  return rows


def training(params, style: np.ndarray, ns=(1, 2, 4), size: int = 128, batch_size: int = 4,
             steps: int = 5, cfg: feedforward.FFConfig | None = None,
             member_maps=("vmap", "unroll")) -> list[dict]:
  """Training images/s for N networks in one step (a style_weight sweep of N values), each
  member map of ``member_maps`` (``feedforward.STEP_MAPS``), median step time of
  ``steps`` after the compiling one, on random ``size``-px batches. images/s counts
  images × networks (what N separate runs would have to match)."""
  cfg = cfg or feedforward.FFConfig()
  rows = []
  for n, member_map in itertools.product(ns, member_maps):
    if n == 1 and member_map != "vmap" and "vmap" in member_maps:
      continue  # One network: the same program either way.
    c = dataclasses.replace(cfg, image_size=size, batch_size=batch_size,
                            sweep=("style_weight", tuple(10.0 * (k + 1) for k in range(n))))
    setup = feedforward.build(c, params, [style])
    state = feedforward.init_state(c, n)
    fn = feedforward.train_step(setup.objective, c, member_map)
    batch = jnp.asarray(np.random.default_rng(0).uniform(size=(batch_size, size, size, 3)),
                        jnp.float32)
    t0 = time.perf_counter()
    state, m = fn(state, batch, setup.shared, setup.members)
    jax.block_until_ready(m)
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
      t0 = time.perf_counter()
      state, m = fn(state, batch, setup.shared, setup.members)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    rows.append({"networks": n, "member_map": member_map, "size": size, "batch": batch_size,
                 "step_s": step_s,
                 "first_step_s": first, "images_per_s": batch_size * n / step_s,
                 "images_per_s_per_network": batch_size / step_s})
  return rows


def quality(params, model, style: np.ndarray, photos, cfg: feedforward.FFConfig,
            network: int = 0, opt_steps: int = 200) -> list[dict]:
  """For each square photo (RGB [0, 1], not trained on): the content and style terms
  (weighted, the training objective's: ``cfg``'s layers, loss weights of network ``network``
  (no sweep) and variant) of the network's output and of
  the optimisation result for the same pair (``jnst.stylize``'s L-BFGS from the content image,
  ``opt_steps`` steps, on the same objective), and their ratios (network / optimisation)."""
  import jnst.experiments as experiments
  rows = []
  for photo in photos:
    photo = np.asarray(photo, np.float32)
    c = dataclasses.replace(cfg, image_size=min(photo.shape[:2]), sweep=None)
    setup = feedforward.build(c, params, [style])
    member = jax.tree.map(lambda a: a[0], setup.members)
    y = feedforward.stylize(feedforward.member_params(model.params, network), photo, model.net)
    bb = setup.objective.backbone
    target = bb.extract(params, jnp.asarray(photo)[None], c.content_layers)
    data = {**setup.shared, "loss_weights": member["loss_weights"],
            "targets": {"content": {l: v[0] for l, v in target.items()},
                        "style": member["style"]}}
    terms = lambda rgb: {k: float(v) for k, v in setup.objective(
        bb.preprocess(params, jnp.asarray(rgb)), data)[1].items()}
    scfg = experiments.StylizeConfig(
        backbone=c.backbone, pooling=c.pooling, variant=c.variant,
        content_layers=c.content_layers, style_layers=c.style_layers,
        content_weight=float(member["loss_weights"]["content"]),
        style_weight=float(member["loss_weights"]["style"]),
        tv_weight=float(member["loss_weights"]["tv"]))
    scfg = dataclasses.replace(scfg, opt=dataclasses.replace(scfg.opt, steps=opt_steps,
                                                             chunk=opt_steps))
    problem = scfg.build(params, experiments.Inputs(photo, (style,)))
    # The optimisation's own style target is the raw Gram at the style's size; ours rescales
    # it to the output's positions (jnst.feedforward). Optimise our objective exactly:
    problem = dataclasses.replace(problem, data={**problem.data, "targets": {
        **problem.data["targets"], "style": member["style"]}})
    opt_rgb, _ = experiments.solve(problem, scfg.opt)
    a, b = terms(y), terms(opt_rgb)
    rows.append({"size": list(photo.shape[:2]), "network": a, "optimisation": b,
                 "ratio": {k: a[k] / b[k] if b[k] else None for k in a}})
  return rows
