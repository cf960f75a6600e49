r"""Video style transfer without flicker (Ruder et al. 2016; jnst/video.py).

  python scripts/stylize_video.py --max_frames=8 --size=128 --steps=100   # the demo clip
  python scripts/stylize_video.py --input=clip.mp4 --style=painting.jpg --output=out.mp4 \
      --temporal=batch --window=16   # one joint objective per 16-frame window
  python scripts/stylize_video.py --camera_move --temporal=none --output=naive.gif

  python scripts/stylize_video.py --fast_model=out/ff --temporal=sequential --steps=50  # init
  python scripts/stylize_video.py --fast_model=out/ff --fast_only --output=fast.mp4    # alone

--content_mask/--style_mask: one content mask for the whole clip (the frames' aspect ratio),
applied to every frame. The memory needed is checked before any compute (--window, --size).

Interrupted? Run the same command again: finished frames are reused (the run id is printed).
"""

import dataclasses
import hashlib
import os
from pathlib import Path

from absl import flags

from jnst import cli, images, records, video, video_cli, video_io

cli.define_common_flags(default_steps=200, default_size=256)
cli.define_stylize_flags()
cli.define_video_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  out = video_cli.out_path()
  video_io.check_output(out)
  records.ensure_writable(out.with_suffix(".json"))
  video_cli.check_fast_flags()
  cfg, vcfg = cli.stylize_config(), cli.video_config()
  clip, flows = video_cli.load_clip()
  styles, style_paths = video_cli.style_images()
  masks = video_cli.load_masks(clip.frames[0].shape, styles, style_paths)
  video_cli.check_memory(cfg, vcfg, clip, styles)
  init = None if cfg.init != "image" else images.load_image(FLAGS.init, FLAGS.size)
  fast, fast_rec = video_cli.fast_frames(clip.frames) if FLAGS.fast_model else (None, None)
  h, w = clip.frames[0].shape[:2]
  options = {"stylize": repr(dataclasses.replace(cfg, opt=dataclasses.replace(cfg.opt, chunk=1))),
             "video": repr(vcfg), "masks": [None if m is None else hashlib.sha256(
                 m.tobytes()).hexdigest() for m in (masks[0], *masks[1])]}
  if fast is not None:
    options["fast"] = hashlib.sha256(fast.tobytes()).hexdigest()
  rid = video_io.run_id(clip.frames, styles, options,
                        FLAGS.weights or os.environ.get("JNST_WEIGHTS"), init)
  store = video_io.FrameStore(Path(FLAGS.cache_dir or f"{out}.cache") / rid)
  what = "the feed-forward network's frames" if FLAGS.fast_only else (
      f"--temporal={vcfg.mode}, {cfg.opt.steps} steps a frame; run {rid} ({len(store)} frames "
      f"done in {store.root})")
  print(f"{clip.source}: {len(clip.frames)} frames {w}x{h} at {clip.fps:g} fps, {what}",
        flush=True)
  problems = video.FrameProblems(cfg, cli.load_params(cfg), clip.frames, styles, init,
                                 init_frames=fast, content_mask=masks[0], style_masks=masks[1])
  if FLAGS.fast_only:
    res = video.score(problems, fast, flows=flows, seconds=fast_rec["seconds"])
  else:
    res = video.run(problems, vcfg, cfg.opt, seed=cfg.seed, flows=flows, store=store,
                    progress=lambda r: print(r.line(), flush=True),
                    step_progress=cli.Printer() if FLAGS["print_every"].present else None)
  video_io.write_clip(out, res.rgb, clip.fps)
  rec = {"versions": records.versions(), "flags": cli.flag_values(),
         "backbone": cfg.get_backbone().describe(), "video": dataclasses.asdict(vcfg),
         "run_id": rid, "cache": str(store.root),
         "inputs": {"clip": clip.source, "style": style_paths, "frame_indices": clip.indices,
                    "content_mask": FLAGS.content_mask, "style_mask": FLAGS.style_mask},
         "fps": clip.fps, "size": [h, w], "fast_model": fast_rec, **res.summary(),
         "flow": "true (synthetic move)" if flows else "OpenCV DIS on the content frames"}
  records.save_json(out.with_suffix(".json"), rec)
  print(f"warping error {res.warping_error:.5g}, {res.frames_per_second:.3g} frames/s; wrote "
        f"{out} and {out.with_suffix('.json')}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
