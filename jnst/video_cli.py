"""The video script's steps between its flags and the runner (scripts/stylize_video.py):
the clip (a file or a synthetic camera move), region masks for the whole clip, the memory
check before any compute, and a feed-forward network's frames (``--fast_model``).

Memory (``check_memory``): one frame's ``jnst.memory.estimate`` (the frame, the style
images, the optimiser and activations), times the frames optimised at once — 1 for none
and sequential, the window (``--window``; 0: the whole clip) for batch — plus the clip held
on the host (content frames, results in input space and RGB, and the network's frames) and
the temporal targets (K warped frames and masks per frame in a batch; the joint coupling
also a flow per frame), and in batch mode's passes with ``--carry_optimizer`` the last
pass's optimiser state held beside the new one's while it is carried over (L-BFGS: 2 ×
history images per frame; Adam: 2). Over the memory available: one line naming the flag to
lower (``--window`` when the batch dominates, ``--max_frames`` when the clip does, else
``--size``/``--lbfgs_memory``), exit 2.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

import jnst.cli as cli
import jnst.demo as demo
import jnst.flow as flow
import jnst.images as images
import jnst.masks as masks
import jnst.memory as memory
import jnst.video as video
import jnst.video_io as video_io
from jnst.errors import JnstError

FLAGS = cli.FLAGS


def load_clip():
  """(clip, flow provider or None for DIS on the content frames)."""
  if not FLAGS.camera_move:
    clip = video_io.read_clip(FLAGS.input or demo.video_path(), FLAGS.size, FLAGS.start,
                              FLAGS.max_frames, FLAGS.fps)
    return clip, None
  photo = images.load_image(FLAGS.content or demo.content_path(), 2 * FLAGS.size)
  n = FLAGS.max_frames or 8
  size = (round(FLAGS.size * 9 / 16), FLAGS.size)
  move = flow.CameraMove(photo, n, size)
  src = f"camera move over {FLAGS.content or 'the demo photo'}"
  return video_io.Clip(list(move.frames), FLAGS.fps or 25.0, src, list(range(n))), move


def load_masks(frame_shape, styles, style_paths) -> tuple[np.ndarray | None, tuple]:
  """(content mask, style masks) for ``--content_mask``/``--style_mask``: one content mask
  for every frame, of the clip's aspect ratio, resized (nearest) to the frames' (H, W); one
  style mask per style image, of its image's size (``jnst.masks``)."""
  spec_c, spec_s = FLAGS.content_mask, list(FLAGS.style_mask or ())
  if not spec_c and not spec_s:
    return None, ()
  if not spec_c:
    raise JnstError("--style_mask needs --content_mask too")
  h, w = frame_shape[:2]
  mw, mh = images.image_size(spec_c)
  if abs(mw * h / mh - w) > 1 + 0.01 * w:
    raise JnstError(f"--content_mask {spec_c} is {mw}x{mh} px, the frames {w}x{h}: one content "
                    f"mask for the whole clip must have the frames' aspect ratio")
  if len(spec_s) != len(style_paths):
    raise JnstError(f"{len(spec_s)} --style_mask files for {len(style_paths)} --style images: "
                    f"give one mask per style image")
  content = images.load_mask(spec_c, (h, w))
  style_masks = []
  for m, path, s in zip(spec_s, style_paths, styles):
    if images.image_size(m) != images.image_size(path):
      (aw, ah), (bw, bh) = images.image_size(m), images.image_size(path)
      raise JnstError(f"mask {m} is {aw}x{ah} px but its image {path} is {bw}x{bh}: a mask "
                      f"must have its image's size")
    style_masks.append(images.load_mask(m, s.shape[:2]))
  masks.regions(content, style_masks)  # Colours on one side only fail here.
  return content, tuple(style_masks)


def frames_at_once(vcfg: video.VideoConfig, n: int) -> int:
  """Frames optimised together: batch mode's window (0: the clip), else 1."""
  return min(vcfg.window or n, n) if vcfg.mode == "batch" else 1


def estimate(cfg, vcfg: video.VideoConfig, frame_shape, num_frames: int, style_shapes,
             fast: bool = False, fast_only: bool = False) -> memory.Estimate:
  """What the clip needs (module docstring), from shapes only; ``fast``: a feed-forward
  network's frames are kept too; ``fast_only``: they are the result (one frame at a time
  is scored)."""
  shape = tuple(int(v) for v in frame_shape)
  batch = 1 if fast_only else frames_at_once(vcfg, num_frames)
  frame_bytes = 4 * math.prod(shape)
  k = vcfg.num_targets if vcfg.mode != "none" and not fast_only else 0
  extra = {"clip": num_frames * frame_bytes * (3 + fast),
           "temporal": batch * k * frame_bytes * 4 // 3}
  if vcfg.joint and not fast_only:  # Each frame's flow (2 channels) beside its mask.
    extra["temporal"] += batch * frame_bytes * 2 // 3
  if vcfg.carry and vcfg.multipass and not fast_only:
    per = 2 * cfg.opt.lbfgs_memory if cfg.opt.optimizer == "lbfgs" else 2
    extra["carried"] = batch * per * frame_bytes
  return memory.estimate(cfg.get_backbone(), shape, inputs=[shape, *style_shapes],
                         batch=batch, optimizer="none" if fast_only else cfg.opt.optimizer,
                         lbfgs_memory=cfg.opt.lbfgs_memory, extra=extra)


def check_memory(cfg, vcfg: video.VideoConfig, clip, styles) -> memory.Estimate:
  """``estimate`` checked against the memory available (``jnst.memory``)."""
  est = estimate(cfg, vcfg, clip.frames[0].shape, len(clip.frames), [s.shape for s in styles],
                 bool(FLAGS.fast_model), FLAGS.fast_only)
  window = ("--window (0 puts the whole clip in one batch: give a few frames)"
            if not vcfg.window else "--window")
  return memory.check_fits(est, flags={"batch": window, "clip": "--max_frames (or --size)",
                                       "temporal": "--window",
                                       "carried": "--window (or --nocarry_optimizer)"},
                         what="this clip")


def fast_frames(frames) -> tuple[np.ndarray, dict]:
  """(--fast_model's network on every frame, RGB (T, H, W, 3); its part of the record)."""
  import jnst.ff_train as ff_train  # Flax/optax only when a network is used.
  import jnst.feedforward as feedforward
  if FLAGS.init != "content" and FLAGS["init"].present:
    raise JnstError("--fast_model gives every frame its initial image: leave out --init")
  t0 = time.perf_counter()
  model = ff_train.load_model(FLAGS.fast_model)
  k = model.member(FLAGS.fast_network)
  out, secs = video.fast_frames(feedforward.member_params(model.params, k), model.net, frames)
  rec = {"model": str(model.path), "step": model.step, "network": k, "label": model.labels[k],
         "seconds": secs, "load_seconds": time.perf_counter() - t0 - secs,
         "use": "result (--fast_only)" if FLAGS.fast_only else
         "initial images (sequential: where the warped previous frame is unreliable)"}
  return out, rec


def check_fast_flags() -> None:
  if FLAGS.fast_only and not FLAGS.fast_model:
    raise JnstError("--fast_only needs --fast_model")
  if FLAGS.fast_only and FLAGS["temporal"].present:
    raise JnstError("--fast_only runs no optimisation: leave out --temporal")


def style_images() -> tuple[list, list[str]]:
  """(style images at --style_scale x --size, their paths; the demo painting by default)."""
  side = max(images.MIN_SIDE, round(FLAGS.style_scale * FLAGS.size))
  paths = [str(p) for p in (FLAGS.style or [demo.style_path()])]
  return [images.load_image(p, side) for p in paths], paths


def out_path() -> Path:
  return Path(FLAGS.output or "out/stylized.mp4")
