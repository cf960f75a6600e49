"""Optical flow between content frames, warping, and Ruder et al.'s reliability masks.

Conventions: a flow is float32 (H, W, 2) in pixels, channel 0 the horizontal (x, column)
and channel 1 the vertical (y, row) displacement. ``flow_ab`` maps frame a to frame b:
a(p) ≈ b(p + flow_ab(p)). To bring frame t−1 to frame t one needs the *backward* flow
``flow(t, t−1)``: warped(p) = x_{t−1}(p + flow(t, t−1)(p)).

Flow is computed with OpenCV's DIS optical flow (Kroeger et al. 2016, ``cv2.DISOpticalFlow``,
preset MEDIUM) on the greyscale content frames: a maintained, fast (tens of ms per frame on
a CPU), dense method made for video; Ruder et al. used DeepFlow/EpicFlow binaries that take
seconds to minutes per frame. OpenCV comes with the optional ``video`` extra.

Warping and masks are pure JAX: bilinear sampling with ``jax.scipy.ndimage.map_coordinates``
(order 1, edge values outside the frame — those pixels are masked out anyway).

Reliability (Ruder, Dosovitskiy & Brox 2016, "Artistic style transfer for videos", sec. 3.1),
for frame t with backward flow ŵ = flow(t, t−1) and forward flow w = flow(t−1, t) warped to
frame t, w̃(p) = w(p + ŵ(p)):

* disocclusion: |w̃ + ŵ|² ≥ 0.01 (|w̃|² + |ŵ|²) + 0.5            → 0
* motion boundary: |∇ŵ_x|² + |∇ŵ_y|² > 0.01 |ŵ|² + 0.002        → 0
* p + ŵ(p) outside frame t−1 (nothing to compare with)           → 0
* elsewhere                                                      → 1

Gradients are central differences (one-sided at the border).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jnst.errors import JnstError

INSTALL = "pip install -e '.[video]'"


def require_opencv() -> None:
  """JnstError naming the install command if OpenCV is missing (check before any compute)."""
  _cv2()


def _cv2():
  try:
    import cv2
  except ImportError:
    raise JnstError(f"optical flow needs OpenCV, which is not installed: run {INSTALL}") from None
  return cv2


def _grey(rgb: np.ndarray) -> np.ndarray:
  """RGB float [0, 1] (H, W, 3) -> uint8 luma (BT.601 weights)."""
  y = np.asarray(rgb, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
  return (np.clip(y, 0, 1) * 255 + 0.5).astype(np.uint8)


def dis_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Flow from RGB frame ``a`` to ``b`` (both (H, W, 3) in [0, 1]): (H, W, 2) float32 with
  a(p) ≈ b(p + flow(p)). OpenCV DIS, preset MEDIUM, single-threaded (deterministic)."""
  cv2 = _cv2()
  cv2.setNumThreads(1)
  dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
  return np.asarray(dis.calc(_grey(a), _grey(b), None), np.float32)


def _coords(flow: jax.Array) -> tuple[jax.Array, jax.Array]:
  h, w = flow.shape[:2]
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  return yy + flow[..., 1], xx + flow[..., 0]


@jax.jit
def warp(image: jax.Array, flow: jax.Array) -> jax.Array:
  """``image`` (H, W, C) sampled at p + flow(p), bilinear: out(p) = image(p + flow(p)).
  With the backward flow flow(t, t−1) this brings frame t−1 to frame t. Outside the frame
  the nearest edge value is used (mask those pixels with ``inside``)."""
  y, x = _coords(flow)
  sample = lambda ch: jax.scipy.ndimage.map_coordinates(ch, [y, x], order=1, mode="nearest")
  return jnp.stack([sample(image[..., c]) for c in range(image.shape[-1])], -1)


@jax.jit
def inside(flow: jax.Array) -> jax.Array:
  """(H, W) float32: 1 where p + flow(p) lies inside the frame, else 0."""
  h, w = flow.shape[:2]
  y, x = _coords(flow)
  return ((y >= 0) & (y <= h - 1) & (x >= 0) & (x <= w - 1)).astype(jnp.float32)


def _grad_sq(f: jax.Array) -> jax.Array:
  """|∇f|² of a (H, W) field by central differences (one-sided at the border)."""
  gy, gx = jnp.gradient(f) if min(f.shape) > 1 else (jnp.zeros_like(f), jnp.zeros_like(f))
  return gy * gy + gx * gx


@jax.jit
def reliability(forward: jax.Array, backward: jax.Array) -> jax.Array:
  """Ruder et al.'s per-pixel weights c (H, W) float32 in {0, 1} for frame t, from the
  forward flow flow(t−1, t) and the backward flow flow(t, t−1) (module docstring)."""
  wt = warp(forward, backward)  # Forward flow, brought to frame t.
  sq = lambda v: jnp.sum(v * v, -1)
  occluded = sq(wt + backward) >= 0.01 * (sq(wt) + sq(backward)) + 0.5
  boundary = (_grad_sq(backward[..., 0]) + _grad_sq(backward[..., 1])
              > 0.01 * sq(backward) + 0.002)
  return jnp.where(occluded | boundary, 0.0, inside(backward)).astype(jnp.float32)


def pair(frames, t: int, s: int) -> tuple[np.ndarray, np.ndarray]:
  """(flow from frame t to s, its mask): what brings frame s to frame t and where that is
  reliable, from the content ``frames`` (DIS flow both ways)."""
  back = dis_flow(frames[t], frames[s])
  fwd = dis_flow(frames[s], frames[t])
  return back, np.asarray(reliability(jnp.asarray(fwd), jnp.asarray(back)))


@jax.jit
def masked_mse(a: jax.Array, b: jax.Array, mask: jax.Array) -> jax.Array:
  """Σ c (a − b)² / (C Σ c) for images (H, W, C) and weights c (H, W); 0 if Σ c = 0."""
  num = jnp.sum(mask[..., None] * jnp.square(a - b))
  den = a.shape[-1] * jnp.sum(mask)
  return jnp.where(den > 0, num / jnp.maximum(den, 1e-12), 0.0)


def warping_error(stylised, flows, masks) -> float:
  """Temporal instability E = mean over t ≥ 1 of the masked MSE between stylised frame t and
  stylised frame t−1 warped to t (RGB in [0, 1]; 0 for a single frame).

  stylised: T frames (H, W, 3). flows[t], masks[t] for t ≥ 1: flow(t, t−1) (H, W, 2) and its
  reliability (H, W) — of the content frames, or the true flow of a synthetic move.
  """
  errs = [float(masked_mse(jnp.asarray(stylised[t]),
                           warp(jnp.asarray(stylised[t - 1]), jnp.asarray(flows[t])),
                           jnp.asarray(masks[t]))) for t in range(1, len(stylised))]
  return float(np.mean(errs)) if errs else 0.0


# ------------------------------------------------------------------ synthetic camera move


class CameraMove:
  """A clip made from ``photo`` (RGB (H0, W0, 3)) by a smooth camera move, with its true flow.

  Frame t views the photo through a window of ``size`` (h, w) output pixels centred at c_t
  with s_t photo pixels per output pixel: output pixel p (relative to the frame centre) shows
  photo point q = c_t + s_t p. Over the clip the centre moves by ``pan`` (fractions of the
  photo's (width, height)) and the scale shrinks by ``zoom`` (zooming in). ``frames``:
  (T, h, w, 3) float32 in [0, 1]; calling ``move(t, s)`` gives (flow(t, s), mask) exactly —
  the mask is 1 where the point is inside frame s (nothing is occluded in a move over a flat
  photo) — so it is a flow provider for ``jnst.video.run``.
  """

  seconds = 0.0

  def __init__(self, photo: np.ndarray, num_frames: int, size: tuple[int, int],
               pan: tuple[float, float] = (0.15, 0.05), zoom: float = 1.15):
    photo = np.asarray(photo, np.float32)
    ph, pw = photo.shape[:2]
    h, w = size
    n = max(num_frames - 1, 1)
    base = 0.75 * min(ph / h, pw / w)  # Photo pixels per output pixel at the start.
    self.centres = [(ph / 2 + pan[1] * ph * (t / n - 0.5), pw / 2 + pan[0] * pw * (t / n - 0.5))
                    for t in range(num_frames)]
    self.scales = [base / zoom ** (t / n) for t in range(num_frames)]
    self.py, self.px = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2,
                                   indexing="ij")
    frames = []
    for t in range(num_frames):
      qy, qx = self._photo_points(t)
      frames.append(np.stack([np.asarray(jax.scipy.ndimage.map_coordinates(
          jnp.asarray(photo[..., c]), [jnp.asarray(qy), jnp.asarray(qx)], order=1,
          mode="nearest")) for c in range(3)], -1))
    self.frames = np.clip(np.stack(frames), 0, 1)

  def _photo_points(self, t):
    return (self.centres[t][0] + self.scales[t] * self.py,
            self.centres[t][1] + self.scales[t] * self.px)

  def __call__(self, t: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    qy, qx = self._photo_points(t)
    fy = (qy - self.centres[s][0]) / self.scales[s] - self.py
    fx = (qx - self.centres[s][1]) / self.scales[s] - self.px
    f = np.stack([fx, fy], -1).astype(np.float32)
    return f, np.asarray(inside(jnp.asarray(f)))


def camera_move(photo: np.ndarray, num_frames: int, size: tuple[int, int],
                pan: tuple[float, float] = (0.15, 0.05), zoom: float = 1.15):
  """``CameraMove``'s (frames (T, h, w, 3), flows (T, h, w, 2), masks (T, h, w)) with
  flows[t] = flow(t, t−1) (flows[0] and masks[0] are zeros)."""
  move = CameraMove(photo, num_frames, size, pan, zoom)
  h, w = size
  pairs = [(np.zeros((h, w, 2), np.float32), np.zeros((h, w), np.float32))]
  pairs += [move(t, t - 1) for t in range(1, num_frames)]
  return move.frames, np.stack([f for f, _ in pairs]), np.stack([m for _, m in pairs])
