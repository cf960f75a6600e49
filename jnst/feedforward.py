"""Training feed-forward stylisation networks (Johnson et al. 2016) with the same loss terms
as the optimisation: the pure parts (config, targets, loss, the train step, sharding).

The loss of a network f with params θ on a batch of photos c_1 … c_B (RGB [0, 1]) is the mean
over the batch of ``jnst.objective.Objective`` on each output y_b = f_θ(c_b), in the backbone's
input space, with

  content target  the backbone features of c_b itself (computed in the step, no gradient);
  style target    the Gram of the style image, computed once (``build``), rescaled to the
                  training crop's number of positions per layer (× M_crop / M_style) so the
                  raw Grams compare like per-position Grams whatever the style image's size;
  TV              of y_b in RGB 0-255 steps,

i.e. exactly the terms of ``jnst.losses`` (default ``variant="mean"``: the size-independent
normalisation of the PyTorch example, mean squared error of features and of Grams /(C·H·W))
with α, β, γ = ``content_weight``, ``style_weight``, ``tv_weight``.

N networks at once: the train state holds N networks' params and Adam states stacked on a
leading axis; ``train_step`` ``vmap``s one network's update over it with its own *member*
data (loss weights and style Gram), sharing the batch, the backbone params and one compiled
program. N = 1 is the single network. How the N updates run (``MEMBER_MAPS``): "vmap" batches them
(on XLA:CPU every conv of the N networks becomes a grouped conv, ``feature_group_count=N``,
which runs far slower than N plain convs: BENCHMARKS.md, "Feed-forward"); "unroll" writes the
N updates out one after another in the same compiled program (plain convs; the loss network
sees each member's batch in turn); "map" loops over them with ``jax.lax.map`` (plain convs in
a loop body, measured slower still on XLA:CPU). "auto" (the default, ``resolve_member_map``)
is "unroll" on CPU for N > 1 (faster there than N single steps, where vmap is slower:
BENCHMARKS.md) and "vmap" elsewhere (grouped convs are an accelerator's strength; not measured
yet). All give the same params (``tests/test_feedforward_map.py``).
Members come from several style images × the values of
one swept loss weight (style-major), all starting from the same initial params.

Data parallel: the batch (B, H, W, 3) is sharded on its first axis over a 1-D mesh
("batch") of all devices (``jax.make_mesh``, ``NamedSharding``); everything else is
replicated, and XLA inserts the gradient all-reduce. B must be a multiple of the device
count (``check_batch``). After ``jax.distributed.initialize()`` the mesh spans every host and
each process feeds its own B / process_count images (``put_batch``).

Defaults (``FFConfig``): Johnson's layers (content relu2_2; style relu1_2, relu2_2, relu3_3,
relu4_3 — names that exist in VGG-16 and VGG-19), Adam lr 1e-3, batch 4, 256 px crops.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import jnst.backbones as backbones
import jnst.losses as losses
import jnst.objective as objective
import jnst.transformer_net as transformer_net
from jnst.errors import JnstError

AXIS = "batch"
MEMBER_MAPS = ("auto", "vmap", "map", "unroll")
STEP_MAPS = MEMBER_MAPS[1:]
SWEEPABLE = {"content_weight": "content", "style_weight": "style", "tv_weight": "tv"}


@dataclasses.dataclass(frozen=True)
class FFConfig:
  """What to train. Loss weights α, β, γ and layer names as in ``StylizeConfig``; the loss
  ``variant`` defaults to "mean" (``jnst.losses``). ``style_size``: max side of the style
  image(s) (None: ``image_size``). ``sweep``: (flag, values), flag one of ``SWEEPABLE``,
  e.g. ("style_weight", (1e4, 1e5)). width / num_res_blocks: the network's
  (``jnst.transformer_net``)."""
  backbone: str = "vgg19"
  pooling: str = "max"
  variant: str = "mean"
  content_layers: tuple[str, ...] = ("relu2_2",)
  style_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
  style_layer_weights: tuple[float, ...] | None = None
  content_weight: float = 1.0
  style_weight: float = 10.0
  tv_weight: float = 0.0
  sweep: tuple[str, tuple[float, ...]] | None = None
  width: int = 32
  num_res_blocks: int = 5
  image_size: int = 256
  style_size: int | None = None
  batch_size: int = 4
  steps: int = 40000
  learning_rate: float = 1e-3
  seed: int = 0

  def get_backbone(self):
    return backbones.get(self.backbone, self.pooling)

  def validate(self) -> FFConfig:
    bb = self.get_backbone()
    bb.validate_layers(self.content_layers)
    bb.validate_layers(self.style_layers)
    if not self.content_layers or not self.style_layers:
      raise JnstError("empty layer list: name at least one content and one style layer")
    losses.check_variant(self.variant)
    for name in ("content_weight", "style_weight", "tv_weight", "learning_rate"):
      v = getattr(self, name)
      if not np.isfinite(v) or v < 0:
        raise JnstError(f"{name} must be a finite number >= 0, got {v}")
    for name, lo in (("width", 1), ("num_res_blocks", 0), ("image_size",
                     transformer_net.MIN_SIDE), ("batch_size", 1), ("steps", 1)):
      if getattr(self, name) < lo:
        raise JnstError(f"{name} must be >= {lo}, got {getattr(self, name)}")
    if self.style_size is not None and self.style_size < 16:
      raise JnstError(f"style_size must be >= 16, got {self.style_size}")
    if not 0 <= self.seed < 2**32:
      raise JnstError(f"seed must be in [0, 2**32), got {self.seed}")
    if self.sweep is not None:
      flag, values = self.sweep
      if flag not in SWEEPABLE:
        raise JnstError(f"cannot sweep {flag!r} here: use one of {', '.join(SWEEPABLE)}")
      if not values or any(not np.isfinite(v) or v < 0 for v in values):
        raise JnstError(f"--sweep={flag} values must be finite numbers >= 0, got {list(values)}")
    return self

  @property
  def net(self) -> dict:
    return {"width": self.width, "num_res_blocks": self.num_res_blocks}


def member_labels(cfg: FFConfig, style_names: Sequence[str]) -> list[str]:
  """One label per network: style name, and ``flag=value`` when sweeping (style-major)."""
  values = cfg.sweep[1] if cfg.sweep else (None,)
  return [s if v is None else (f"{s} {cfg.sweep[0]}={v:g}" if len(style_names) > 1
                               else f"{cfg.sweep[0]}={v:g}")
          for s, v in itertools.product(style_names, values)]


# ---------------------------------------------------------------- setup (targets once)


@dataclasses.dataclass(frozen=True, eq=False)
class Setup:
  """Everything a train step reads besides the state and the batch.

  objective: the hashable ``Objective`` (content, style, TV on the configured layers).
  shared: {"params": prepared backbone params, "layer_weights", "pixel_scale"}.
  members: {"loss_weights": {term: (N,)}, "style": {layer: (N, C, C)}}, one row per network.
  labels: N member labels.
  """
  cfg: FFConfig
  objective: objective.Objective
  shared: dict
  members: dict
  labels: list[str]

  @property
  def n(self) -> int:
    return len(self.labels)


def _positions(bb, params, size: tuple[int, int], layers) -> dict:
  shapes = jax.eval_shape(lambda x: bb.features(params, x, layers),
                          jax.ShapeDtypeStruct((1, *size, 3), jnp.float32))
  return {l: shapes[l].shape[1] * shapes[l].shape[2] for l in layers}


def build(cfg: FFConfig, params, styles: Sequence[np.ndarray],
          style_names: Sequence[str] | None = None) -> Setup:
  """Targets and member data for ``styles`` (RGB [0, 1] (H, W, 3) each, one network per style
  × sweep value) under ``cfg``, with backbone ``params``."""
  cfg = cfg.validate()
  if not len(styles):
    raise JnstError("no style image given: pass at least one --style")
  bb = cfg.get_backbone()
  s_layers, c_layers = tuple(cfg.style_layers), tuple(cfg.content_layers)
  crop = _positions(bb, params, (cfg.image_size, cfg.image_size), s_layers)
  grams = []
  for s in styles:
    s = objective.check_image(s, "style image")
    a = objective.style_target(bb, params, [s], s_layers)
    here = _positions(bb, params, s.shape[:2], s_layers)
    grams.append({l: a[l] * (crop[l] / here[l]) for l in s_layers})
  terms = {"content": (cfg.content_weight, objective.layer_weights(c_layers, None, 1.0,
                                                                   "content"), None),
           "style": (cfg.style_weight, objective.layer_weights(
               s_layers, cfg.style_layer_weights, 1.0 / len(s_layers), "style"), grams[0]),
           "tv": (cfg.tv_weight, {}, None)}
  obj, data = objective.build(bb, params, terms, cfg.variant)
  values = cfg.sweep[1] if cfg.sweep else (None,)
  rows = list(itertools.product(range(len(styles)), values))
  weights = {t: np.array([data["loss_weights"][t] if v is None or SWEEPABLE[cfg.sweep[0]] != t
                          else v for _, v in rows], np.float32) for t in data["loss_weights"]}
  members = {"loss_weights": {t: jnp.asarray(w) for t, w in weights.items()},
             "style": {l: jnp.stack([grams[i][l] for i, _ in rows]) for l in s_layers}}
  shared = {k: data[k] for k in ("params", "layer_weights", "pixel_scale")}
  names = list(style_names) if style_names else [f"style{i}" for i in range(len(styles))]
  return Setup(cfg, obj, shared, members, member_labels(cfg, names))


# ---------------------------------------------------------------- loss and step


def loss(net_params, batch, shared, member, *, obj: objective.Objective, net: tuple):
  """(mean loss over the batch, {term: mean weighted value}) of one network with
  ``net`` = (width, num_res_blocks) on ``batch`` (B, H, W, 3) RGB [0, 1]; ``member``: that
  network's row of ``Setup.members``."""
  bb = obj.backbone
  content_layers = next(t.layers for t in obj.terms if t.name == "content")
  y = transformer_net.apply(net_params, batch, *net)
  target = jax.lax.stop_gradient(bb.features(shared["params"], bb.preprocess(
      shared["params"], batch), content_layers))
  data = {"params": shared["params"], "layer_weights": shared["layer_weights"],
          "pixel_scale": shared["pixel_scale"], "loss_weights": member["loss_weights"]}

  def one(x, content_target):
    return obj(x, {**data, "targets": {"content": content_target, "style": member["style"]}})

  values, terms = jax.vmap(one)(bb.preprocess(shared["params"], y), target)
  return jnp.mean(values), jax.tree.map(jnp.mean, terms)


def make_tx(learning_rate: float) -> optax.GradientTransformation:
  return optax.adam(learning_rate)


def init_state(cfg: FFConfig, n: int) -> dict:
  """The train state of ``n`` networks: {"step": int32, "params": stacked (n, …),
  "opt_state": stacked Adam states}; every network starts from ``cfg.seed``'s params."""
  params = transformer_net.init(jax.random.key(cfg.seed), **cfg.net)
  stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *a.shape)), params)
  return {"step": jnp.zeros((), jnp.int32), "params": stacked,
          "opt_state": jax.vmap(make_tx(cfg.learning_rate).init)(stacked)}


def resolve_member_map(member_map: str, n: int, platform: str | None = None) -> str:
  """One of ``STEP_MAPS`` for N = ``n`` networks on ``platform`` (default: the default
  backend; module docstring): "auto" is "unroll" on CPU for n > 1, else "vmap"."""
  if member_map not in MEMBER_MAPS:
    raise JnstError(f"unknown member_map {member_map!r}: use {', '.join(MEMBER_MAPS)}")
  if member_map != "auto":
    return member_map
  platform = platform or jax.default_backend()
  return "unroll" if platform == "cpu" and n > 1 else "vmap"


def step(state: dict, batch, shared, members, *, obj, net: tuple, learning_rate: float,
         member_map: str = "vmap"):
  """One Adam step of every network on ``batch``: (new state, {"loss": (N,), "terms":
  {term: (N,)}}). Pure; ``train_step`` is its jitted, donated form. ``member_map``: one of
  ``STEP_MAPS`` (module docstring)."""
  tx = make_tx(learning_rate)

  def one(params, opt_state, member):
    (value, terms), grads = jax.value_and_grad(loss, has_aux=True)(
        params, batch, shared, member, obj=obj, net=net)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value, terms

  args = (state["params"], state["opt_state"], members)
  if member_map == "map":
    params, opt_state, value, terms = jax.lax.map(lambda a: one(*a), args)
  elif member_map == "unroll":
    n = jax.tree.leaves(args[0])[0].shape[0]
    rows = [one(*jax.tree.map(lambda a, k=k: a[k], args)) for k in range(n)]
    params, opt_state, value, terms = jax.tree.map(lambda *a: jnp.stack(a), *rows)
  else:
    params, opt_state, value, terms = jax.vmap(one)(*args)
  return ({"step": state["step"] + 1, "params": params, "opt_state": opt_state},
          {"loss": value, "terms": terms})


def train_step(obj: objective.Objective, cfg: FFConfig, member_map: str = "vmap"):
  """``step`` for ``cfg``'s network and learning rate, jitted with the state donated (its
  buffers are reused for the new state). Compiled once per (objective, network, learning
  rate, member map, shapes): loss weights and style targets are data, so configs that
  differ only in them share the program. ``member_map``: one of ``STEP_MAPS`` (resolve
  "auto" first with ``resolve_member_map``)."""
  if member_map not in STEP_MAPS:
    raise JnstError(f"member_map must be one of {', '.join(STEP_MAPS)} here, got {member_map!r}")
  return _train_step(obj, (cfg.width, cfg.num_res_blocks), float(cfg.learning_rate),
                     member_map)


@functools.lru_cache(maxsize=16)
def _train_step(obj, net, learning_rate, member_map="vmap"):
  return jax.jit(functools.partial(step, obj=obj, net=net, learning_rate=learning_rate,
                                   member_map=member_map), donate_argnums=0)


@functools.lru_cache(maxsize=16)
def _apply_jit(width: int, num_res_blocks: int):
  return jax.jit(lambda p, x: transformer_net.apply(p, x, width, num_res_blocks))


def stylize(net_params, rgb, net: dict) -> np.ndarray:
  """One network (unstacked params) on RGB (H, W, 3) or (N, H, W, 3): RGB in (0, 1), NumPy.
  Compiled once per shape."""
  rgb = objective.check_image(rgb, "content image") if np.ndim(rgb) == 3 else rgb
  if min(np.shape(rgb)[-3:-1]) < transformer_net.MIN_SIDE:
    raise JnstError(f"content image is {np.shape(rgb)[-2]}x{np.shape(rgb)[-3]} px: the "
                    f"network needs at least {transformer_net.MIN_SIDE} px on a side")
  return np.asarray(_apply_jit(net["width"], net["num_res_blocks"])(net_params,
                                                                     jnp.asarray(rgb)))


def member_params(stacked, k: int):
  """Network ``k``'s params out of stacked (N, …) params."""
  return jax.tree.map(lambda a: a[k], stacked)


# ---------------------------------------------------------------- devices


def mesh(devices: Sequence | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis "batch" over ``devices`` (default: all devices of every host)."""
  devices = list(devices if devices is not None else jax.devices())
  return jax.make_mesh((len(devices),), (AXIS,), (jax.sharding.AxisType.Auto,), devices=devices)


def check_batch(batch_size: int, m: jax.sharding.Mesh) -> int:
  """The per-process batch; JnstError unless the global batch divides over the devices."""
  if batch_size % m.size:
    raise JnstError(f"--batch_size={batch_size} does not divide over {m.size} devices: use a "
                    f"multiple of {m.size} (the global batch is split evenly, BUILD.md)")
  return batch_size // jax.process_count()


def replicate(tree, m: jax.sharding.Mesh):
  """Host or device values -> replicated global arrays on ``m`` (same value on every
  process)."""
  sharding = NamedSharding(m, P())

  def put(a):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])
  return jax.tree.map(put, tree)


def put_batch(local: np.ndarray, m: jax.sharding.Mesh) -> jax.Array:
  """This process's (B / process_count, H, W, 3) images -> the global batch, sharded on its
  first axis over ``m``."""
  return jax.make_array_from_process_local_data(NamedSharding(m, P(AXIS)), local)
