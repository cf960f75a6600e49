"""The feed-forward training loop with its files (the flax examples' ``train_and_evaluate``),
and loading a trained model for inference. The pure parts are ``jnst.feedforward``.

An output directory holds::

  checkpoints/ckpt_XXXXXXXX.msgpack   the last K train states (``jnst.checkpoints``)
  samples/step_XXXXXXXX.png           held-back photos through every network, every N steps
  losses.png                          loss curves, one per network
  record.json                         config, members, loss history, timings, data, versions

Only process 0 writes (multi-host); every process runs the same loop on its slice of each
batch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

import jnst.batched as batched
import jnst.checkpoints as checkpoints
import jnst.data as data
import jnst.feedforward as feedforward
import jnst.images as images
import jnst.plots as plots
import jnst.records as records
from jnst.errors import JnstError


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """Files and frequencies. styles: style image paths (one network each × sweep values);
  data_dir: folder of photos; output: directory; resume: continue from its newest checkpoint;
  *_every: steps between checkpoints / sample sheets / progress lines (0: only at the end);
  keep: checkpoints kept; hold_out: photos kept back for samples; sample_size: their max side
  (None: image_size); member_map: how N networks' updates run, auto | vmap | unroll | map
  (``feedforward.resolve_member_map``; the same result, a different speed)."""
  styles: tuple[str, ...]
  data_dir: str
  output: str
  resume: bool = False
  checkpoint_every: int = 1000
  keep: int = 3
  sample_every: int = 1000
  log_every: int = 50
  hold_out: int = 2
  sample_size: int | None = None
  member_map: str = "auto"


def _due(step: int, every: int, last: int) -> bool:
  return step == last or (every > 0 and step % every == 0)


def _meta(cfg: feedforward.FFConfig, setup: feedforward.Setup, styles) -> dict:
  return {"config": dataclasses.asdict(cfg), "net": cfg.net, "members": setup.labels,
          "styles": [str(s) for s in styles]}


def _compatible(meta: dict) -> dict:
  """What a resumed run must share with its checkpoint (everything but the step budget)."""
  return {"net": meta["net"], "members": meta["members"],
          "config": {k: v for k, v in meta["config"].items() if k != "steps"}}


def train_and_evaluate(cfg: feedforward.FFConfig, opts: RunOptions, params,
                       log: Callable[[str], None] = print) -> dict:
  """Trains ``cfg``'s networks with backbone ``params`` (or a function returning them, called
  once the inputs are checked) and writes ``opts.output``; returns the run record (also
  written as record.json)."""
  cfg = cfg.validate()
  out, main = Path(opts.output), jax.process_index() == 0
  ckpt_dir = out / "checkpoints"
  if out.exists() and not out.is_dir():
    raise JnstError(f"--output={out} is a file: choose a directory")
  if checkpoints.list_steps(ckpt_dir) and not opts.resume:
    raise JnstError(f"{ckpt_dir} already holds checkpoints: pass --resume to continue, or "
                    f"choose a new --output directory")
  records.ensure_writable(out / "record.json")
  photos = data.scan(opts.data_dir, opts.hold_out, log)
  style_imgs = [images.load_image(p, cfg.style_size or cfg.image_size) for p in opts.styles]
  params = params() if callable(params) else params
  setup = feedforward.build(cfg, params, style_imgs, [Path(p).stem for p in opts.styles])
  m = feedforward.mesh()
  local = feedforward.check_batch(cfg.batch_size, m)
  meta = _meta(cfg, setup, opts.styles)
  state, history = feedforward.init_state(cfg, setup.n), {}
  if opts.resume and checkpoints.list_steps(ckpt_dir):
    path = checkpoints.find(ckpt_dir)
    old, raw, history = checkpoints.read(path)
    checkpoints.check_meta(_compatible(old), _compatible(meta), path)
    state = checkpoints.restore(jax.device_get(state), raw, path)
    log(f"resuming from {path} (step {int(state['step'])})")
  start = int(state["step"])
  if start >= cfg.steps:
    raise JnstError(f"the checkpoint is at step {start}, --steps={cfg.steps}: ask for more steps")
  held = [images.load_image(p, opts.sample_size or cfg.image_size)
          for p in (photos.held or photos.train[:1])]
  state = feedforward.replicate(state, m)
  shared, members = feedforward.replicate((setup.shared, setup.members), m)
  member_map = feedforward.resolve_member_map(opts.member_map, setup.n,
                                              m.devices.flat[0].platform)
  step_fn = feedforward.train_step(setup.objective, cfg, member_map)
  loader = data.Loader(photos.train, cfg.image_size, cfg.batch_size, cfg.seed, start, cfg.steps,
                       offset=jax.process_index() * local, local=local, log=log)
  losses = [np.asarray(history.get("loss", np.zeros((0, setup.n))), np.float64)]
  terms = {t: [np.asarray(history.get(f"terms/{t}", np.zeros((0, setup.n))), np.float64)]
           for t in setup.members["loss_weights"]}
  pending, saved, t0, t_first = [], start, time.perf_counter(), None
  log(f"training {setup.n} network(s) [{', '.join(setup.labels)}] on {len(photos.train)} photos "
      f"({len(photos.held)} held back), {cfg.image_size} px, batch {cfg.batch_size} over "
      f"{m.size} device(s), steps {start}..{cfg.steps}"
      + (f", networks by {member_map}" if setup.n > 1 else ""))

  def flush():
    got = batched.gather(pending)
    losses.extend(np.asarray(g["loss"], np.float64)[None] for g in got)
    for t in terms:
      terms[t].extend(np.asarray(g["terms"][t], np.float64)[None] for g in got)
    pending.clear()

  def write_checkpoint(s):
    nonlocal saved
    flush()
    hist = {"loss": np.concatenate(losses), **{f"terms/{t}": np.concatenate(v)
                                               for t, v in terms.items()}}
    if main:
      checkpoints.save(ckpt_dir, s, state, meta, hist, opts.keep)
    saved = s

  s = start
  try:
    for s in range(start + 1, cfg.steps + 1):
      state, metrics = step_fn(state, feedforward.put_batch(next(loader), m), shared, members)
      pending.append(metrics)
      if t_first is None:
        jax.block_until_ready(metrics)
        t_first = time.perf_counter()
      if _due(s, opts.log_every, cfg.steps):
        flush()
        el = time.perf_counter() - t_first
        rate = (s - start - 1) * cfg.batch_size / el if s > start + 1 else float("nan")
        eta = el / (s - start - 1) * (cfg.steps - s) if s > start + 1 else float("nan")
        log(f"step {s:6d}/{cfg.steps} loss " + " ".join(f"{v:.4g}" for v in losses[-1][0])
            + f" ({rate:.3g} images/s, elapsed {time.perf_counter() - t0:.0f}s, eta {eta:.0f}s)")
      if _due(s, opts.sample_every, cfg.steps):
        flush()
        if main:
          write_samples(out, s, state, setup, held)
          write_loss_plot(out, np.concatenate(losses), setup.labels)
      if _due(s, opts.checkpoint_every, cfg.steps):
        write_checkpoint(s)
  finally:
    loader.close()
    if s > saved:
      try:
        write_checkpoint(s)
        log(f"saved checkpoint at step {s} on exit")
      except Exception as e:  # The state may be gone (donated into a failed step).
        log(f"could not save a checkpoint on exit ({type(e).__name__})")
  total = time.perf_counter() - t0
  run_s = time.perf_counter() - (t_first or t0)
  loss_hist = np.concatenate(losses)
  rec = {"versions": records.versions(), **meta, "steps": cfg.steps, "start_step": start,
         "devices": [str(d) for d in m.devices.flat], "processes": jax.process_count(),
         "member_map": {"asked": opts.member_map, "ran": member_map},
         "data": {"dir": str(opts.data_dir), "train": len(photos.train),
                  "held": [str(p) for p in photos.held],
                  "skipped": list(photos.skipped) + loader.skipped},
         "loss_history": loss_hist.tolist(),
         "terms_history": {t: np.concatenate(v).tolist() for t, v in terms.items()},
         "final_loss": dict(zip(setup.labels, loss_hist[-1].tolist())),
         "seconds": {"total": total, "first_step": total - run_s, "run": run_s},
         "images_per_second": (cfg.steps - start - 1) * cfg.batch_size / run_s
         if cfg.steps - start > 1 else None,
         "checkpoint": str(checkpoints.path_for(ckpt_dir, saved))}
  if main:
    records.save_json(out / "record.json", rec)
  return rec


def write_samples(out: Path, step: int, state, setup: feedforward.Setup,
                  held: Sequence[np.ndarray]) -> None:
  """samples/step_XXXXXXXX.png (a row per held-back photo: it, then each network's output)
  and losses.png."""
  params = batched.gather(state["params"])
  cells, labels = [], []
  for photo in held:
    cells.append(photo)
    labels.append("photo")
    for k, label in enumerate(setup.labels):
      cells.append(feedforward.stylize(feedforward.member_params(params, k), photo,
                                       setup.cfg.net))
      labels.append(label[:30])
  sheet = plots.contact_sheet(cells, labels, columns=setup.n + 1, cell=192)
  images.save_image(out / "samples" / f"step_{step:08d}.png", sheet)


def write_loss_plot(out: Path, history: np.ndarray, labels: Sequence[str]) -> None:
  """losses.png: the per-step training loss (steps, N) of every network."""
  steps = np.arange(1, len(history) + 1)
  images.save_image(out / "losses.png", plots.loss_plot(
      [(steps, history[:, k]) for k in range(history.shape[1])],
      "feed-forward training loss: " + ", ".join(labels), xlabel="step"))


# ---------------------------------------------------------------- inference


@dataclasses.dataclass(frozen=True)
class Model:
  """A trained model: stacked params of N networks, their labels, the network shape, and
  the checkpoint's meta (config, styles)."""
  path: Path
  params: dict
  labels: list[str]
  net: dict
  step: int
  meta: dict = dataclasses.field(default_factory=dict)

  def config(self, which: int | str = 0) -> feedforward.FFConfig:
    """The training config of network ``which`` (its swept loss weight filled in)."""
    c = {k: tuple(v) if isinstance(v, list) else v for k, v in self.meta["config"].items()}
    sweep = c.pop("sweep")
    cfg = feedforward.FFConfig(**c)
    if sweep:
      flag, values = sweep
      cfg = dataclasses.replace(cfg, **{flag: values[self.member(which) % len(values)]})
    return cfg

  def member(self, which: int | str = 0) -> int:
    """The index of network ``which`` (an index or a label)."""
    if isinstance(which, str) and not which.isdigit():
      if which not in self.labels:
        raise JnstError(f"no network {which!r} in {self.path}: use one of {self.labels}")
      return self.labels.index(which)
    k = int(which)
    if not 0 <= k < len(self.labels):
      raise JnstError(f"network {k} out of range: {self.path} has {len(self.labels)} "
                      f"({', '.join(self.labels)})")
    return k


def load_model(path) -> Model:
  """The newest checkpoint under ``path`` (a training output dir, its checkpoints/ dir, or a
  checkpoint file) as a ``Model``."""
  file = checkpoints.find(path)
  meta, raw, _ = checkpoints.read(file)
  try:
    net, labels = dict(meta["net"]), list(meta["members"])
    template = jax.eval_shape(lambda: feedforward.init_state(
        feedforward.FFConfig(**{k: meta["config"][k] for k in ("width", "num_res_blocks")}),
        len(labels)))
  except (KeyError, TypeError) as e:
    raise JnstError(f"{file} is an incompatible checkpoint (no {e}): retrain with this "
                    f"version") from None
  host = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
  state = checkpoints.restore(host, raw, file)
  return Model(file, state["params"], labels, net, int(meta["step"]), meta)
