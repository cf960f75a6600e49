r"""Video style transfer without flicker (Ruder et al. 2016; jnst/video.py).

  python scripts/stylize_video.py --max_frames=8 --size=128 --steps=100   # the demo clip
  python scripts/stylize_video.py --input=clip.mp4 --style=painting.jpg --output=out.mp4 \
      --temporal=batch --passes=4 --window=16
  python scripts/stylize_video.py --camera_move --temporal=none --output=naive.gif

Interrupted? Run the same command again: finished frames are reused (the run id is printed).
"""

import dataclasses
import os
from pathlib import Path

from absl import flags

from jnst import cli, demo, flow, images, records, video, video_io
from jnst.errors import JnstError

cli.define_common_flags(default_steps=200, default_size=256)
cli.define_stylize_flags()
cli.define_video_flags()
FLAGS = flags.FLAGS


def load_clip():
  """(clip, flow provider or None for DIS on the content frames, input description)."""
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


def main(argv):
  del argv
  out = Path(FLAGS.output or "out/stylized.mp4")
  video_io.check_output(out)
  records.ensure_writable(out.with_suffix(".json"))
  if FLAGS["content_mask"].value or FLAGS["style_mask"].value:
    raise JnstError("--content_mask/--style_mask are not supported for video yet (one mask per "
                    "frame would be needed): leave them out")
  cfg, vcfg = cli.stylize_config(), cli.video_config()
  clip, flows = load_clip()
  side = max(images.MIN_SIDE, round(FLAGS.style_scale * FLAGS.size))
  style_paths = [str(p) for p in (FLAGS.style or [demo.style_path()])]
  styles = [images.load_image(p, side) for p in style_paths]
  init = None if cfg.init != "image" else images.load_image(FLAGS.init, FLAGS.size)
  h, w = clip.frames[0].shape[:2]
  rid = video_io.run_id(clip.frames, styles, {
      "stylize": repr(dataclasses.replace(cfg, opt=dataclasses.replace(cfg.opt, chunk=1))),
      "video": repr(vcfg)}, FLAGS.weights or os.environ.get("JNST_WEIGHTS"), init)
  store = video_io.FrameStore(Path(FLAGS.cache_dir or f"{out}.cache") / rid)
  print(f"{clip.source}: {len(clip.frames)} frames {w}x{h} at {clip.fps:g} fps, "
        f"--temporal={vcfg.mode}, {cfg.opt.steps} steps a frame; run {rid} ({len(store)} "
        f"frames done in {store.root})", flush=True)
  problems = video.FrameProblems(cfg, cli.load_params(cfg), clip.frames, styles, init)
  res = video.run(problems, vcfg, cfg.opt, seed=cfg.seed, flows=flows, store=store,
                  progress=lambda r: print(r.line(), flush=True),
                  step_progress=cli.Printer() if FLAGS["print_every"].present else None)
  video_io.write_clip(out, res.rgb, clip.fps)
  rec = {"versions": records.versions(), "flags": cli.flag_values(),
         "backbone": cfg.get_backbone().describe(), "run_id": rid, "cache": str(store.root),
         "inputs": {"clip": clip.source, "style": style_paths, "frame_indices": clip.indices},
         "fps": clip.fps, "size": [h, w], **res.summary(),
         "flow": "true (synthetic move)" if flows else "OpenCV DIS on the content frames"}
  records.save_json(out.with_suffix(".json"), rec)
  print(f"warping error {res.warping_error:.5g}, {res.frames_per_second:.3g} frames/s; wrote "
        f"{out} and {out.with_suffix('.json')}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
