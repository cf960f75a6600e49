"""The matting Laplacian regulariser of photorealistic style transfer, matrix-free, and the
guided filter.

Luan, Paris, Shechtman & Bala 2017 ("Deep Photo Style Transfer") add λ Σ_c V_cᵀ L V_c to the
Gatys loss, where V_c is channel c of the output (RGB in [0, 1], flattened) and L the matting
Laplacian of the content image I (Levin, Lischinski & Weiss 2008, "A Closed-Form Solution to
Natural Image Matting", eq. 12). With windows w_k of K = (2r + 1)² pixels (r = 1: 3×3),
window mean μ_k (3,) and covariance Σ_k (3, 3) of I (population, divided by K)::

  L_ij = Σ_{k: i, j ∈ w_k} [ δ_ij − (1 + (I_i − μ_k)ᵀ (Σ_k + ε/K U)⁻¹ (I_j − μ_k)) / K ]

(U the 3×3 identity). The reference code (Levin's ``getLaplacian1``, used by Luan with ε = 1e-7,
r = 1) builds it as a sparse N×N matrix. Here nothing N×N is formed: per window,

  a_k = (Σ_k + ε/K U)⁻¹ cov_k(I, v),   b_k = v̄_k − a_kᵀ μ_k        (He, Sun & Tang 2010,
  (L v)_i = Σ_{k ∋ i} (v_i − a_kᵀ I_i − b_k)                          "Fast Matting Using Large
                                                                       Kernel Matting Laplacian")
  vᵀ L v  = Σ_k [ Σ_{j ∈ w_k} (v_j − a_kᵀ I_j − b_k)² + ε ‖a_k‖² ]   (Levin's cost at its minimum)

so an evaluation is O(K N): window sums (box filters) over v, written as the K shifts of the
window, plus 3×3 solves with the inverse precomputed from the content (``target``). The energy
uses the second form — a sum of squares, ≥ 0 in floating point too — and its gradient is
2 L v (a custom VJP: one scatter of the residuals, no autodiff through the solves).

Boundaries: as in Levin's code, only windows lying entirely inside the image exist, i.e. the
(H − 2r)(W − 2r) windows centred at least r pixels from every border; a pixel near the border
belongs to fewer windows (a corner pixel to one). Every function here works on one image
(H, W, C); ``jax.vmap`` batches them (the target is shared).

Precision: ε = 1e-7 makes (Σ_k + ε/K U)⁻¹ as large as K/ε ≈ 1e8 along colour directions in
which a window is flat (every window of a flat or two-colour patch of a photo). So the target
is computed in float64 (NumPy) and stored whitened: with (Σ_k + ε/K U)⁻¹ = Q S Qᵀ, W_jk =
S^½ Qᵀ (I_j − μ_k); per evaluation c_k = (1/K) Σ_j W_jk (v_j − v̄_k), a_kᵀ(I_j − μ_k) = W_jkᵀ c_k and
ε‖a_k‖² = Σ ε S c_k², all of order 1, centred, never E[Iv] − μ v̄. (Storing the inverse itself
in float32 put L v off by 2 % of its largest entry on a two-colour test image.)

Constants: L 1 = 0 (a constant per channel is in the null space), so V may carry any per-channel
offset: the term in ``jnst.losses`` uses the backbone's image in RGB 0-255 steps divided by 255,
which is ``backbone.deprocess(x)`` minus its mean, i.e. the same energy.

Units of λ (``--matting_weight``): it multiplies Σ_c V_cᵀ L V_c with V in RGB [0, 1] whatever
the backbone's input space (the optimised image x lives there; V = deprocess(x), so for the
Caffe VGG, V = (x + mean) / 255 and ∂/∂x = (2λ/255) L V). With the paper normalisation
(``variant="paper"``) the content term and this one are both sums over pixels, so λ/α does
not change with the image size (the Gram style term does not grow with it). Luan et al.'s code
(neural-style normalisation = our ``variant="mean"``, α = 5, β = 100 per style layer, their
gradient λ L V / 256 with V = x/256) is, in our units, ``--variant=mean --content_weight=5
--style_weight=500 --matting_weight=5e3`` (λ/2; β × 5 because our w_l = 1/5). With the
paper units (``variant="paper"``, α = 1, β = 1e3), the same content-to-matting balance is
λ ≈ 4000 · H·W (H·W the pixel count: relu4_2 has 8 H·W entries and their α is on the
mean), about 2e8 at 256×192;
``PHOTOREAL_WEIGHT`` is the λ chosen by measurement (BENCHMARKS.md "Photorealism"), in paper
units; the default "invariant" normalisation keeps the style term, so λ's balance with the
style is the same there (its content term is per element: α·content is smaller).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jnst.errors import JnstError

EPS = 1e-7  # Luan et al.'s ε, for an image in [0, 1].
RADIUS = 1  # Window radius: 3×3 windows, as Levin's and Luan's code.
PHOTOREAL_WEIGHT = 1e9  # λ of --photoreal: measured at 256 px, α = 1, β = 1e3 (BENCHMARKS.md).
GUIDED_EPS = 1e-3  # The guided filter's default ε (an image in [0, 1]).

_HIGHEST = jax.lax.Precision.HIGHEST


def _shifts(a, r: int, hk: int, wk: int):
  """(K, hk, wk, ...) stack of the K = (2r+1)² windows' members: [o] is a[dy:dy+hk, dx:dx+wk]."""
  n = 2 * r + 1
  return [a[dy:dy + hk, dx:dx + wk] for dy in range(n) for dx in range(n)]


def target(content, eps: float = EPS, radius: int = RADIUS) -> dict:
  """What L depends on, computed once (float64, stored float32) from the content image
  (H, W, 3) in [0, 1], in whitened form: with (Σ_k + ε/K U)⁻¹ = Q_k S_k Q_kᵀ,

    "whitened": W_jk = S_k^½ Q_kᵀ (I_j − μ_k)   (K, H−2r, W−2r, 3), j the window's members
    "ridge":    ε S_k (its diagonal)            (H−2r, W−2r, 3), each entry in (0, K]

  — the window means and inverse regularised covariances, folded together so that nothing
  of size K/ε ≈ 1e8 is ever multiplied in float32 (module docstring)."""
  img = np.asarray(content, np.float64)
  if img.ndim != 3 or img.shape[-1] != 3:
    raise JnstError(f"the matting Laplacian needs an RGB content image (H, W, 3), got shape "
                    f"{img.shape}")
  if radius < 1 or min(img.shape[:2]) < 2 * radius + 1:
    raise JnstError(f"the matting Laplacian needs an image of at least {2 * radius + 1} px a side "
                    f"and a window radius >= 1, got {img.shape[:2]} and radius {radius}")
  if not np.isfinite(eps) or eps <= 0:
    raise JnstError(f"the matting epsilon must be a finite number > 0, got {eps}")
  hk, wk = img.shape[0] - 2 * radius, img.shape[1] - 2 * radius
  win = np.stack(_shifts(img, radius, hk, wk))            # (K, hk, wk, 3)
  k = win.shape[0]
  d = win - win.mean(0)
  cov = np.einsum("khwi,khwj->hwij", d, d) / k
  lam, q = np.linalg.eigh(cov + (eps / k) * np.eye(3))    # Σ + ε/K U = Q diag(λ) Qᵀ
  lam = np.maximum(lam, eps / k)                          # (rounding: it is ≥ ε/K)
  w = np.einsum("hwij,khwi->khwj", q, d) / np.sqrt(lam)
  return {"whitened": jnp.asarray(w, jnp.float32), "ridge": jnp.asarray(eps / lam, jnp.float32)}


def _geometry(tgt) -> tuple[int, int, int]:
  """(r, H − 2r, W − 2r) of a target."""
  k, hk, wk, _ = tgt["whitened"].shape
  return (int(round(k ** 0.5)) - 1) // 2, hk, wk


def _residuals(tgt, v):
  """(res (K, hk, wk, C), c (hk, wk, 3, C)): res[o, k] = v_j − a_kᵀ I_j − b_k for the window's
  member j = k + o, and c the whitened a_k (a_k = Q S^½ c)."""
  r, hk, wk = _geometry(tgt)
  vw = jnp.stack(_shifts(v, r, hk, wk))                     # (K, hk, wk, C)
  vc = vw - jnp.mean(vw, 0)
  w = tgt["whitened"]
  c = jnp.einsum("khwi,khwc->hwic", w, vc, precision=_HIGHEST) / vw.shape[0]
  return vc - jnp.einsum("khwi,hwic->khwc", w, c, precision=_HIGHEST), c


def _sum_sq(tgt, res, c):
  """Σ res² + ε ‖a‖² (‖a_k‖² = cᵀ S c)."""
  return jnp.sum(jnp.square(res)) + jnp.sum(tgt["ridge"][..., None] * jnp.square(c))


def _scatter(tgt, res, shape):
  """Σ over the windows containing each pixel: (K, hk, wk, C) -> (H, W, C)."""
  r, hk, wk = _geometry(tgt)
  n = 2 * r + 1
  out = jnp.zeros(shape, res.dtype)
  for o in range(n * n):
    dy, dx = divmod(o, n)
    out = out.at[dy:dy + hk, dx:dx + wk].add(res[o])
  return out


def _check(tgt, v):
  r, hk, wk = _geometry(tgt)
  if v.ndim != 3 or v.shape[:2] != (hk + 2 * r, wk + 2 * r):
    raise JnstError(f"the matting term's image has shape {v.shape}, its target is for "
                    f"{(hk + 2 * r, wk + 2 * r)} (H, W): build the target from the content at "
                    f"the output's size")


def apply(tgt, v: jax.Array) -> jax.Array:
  """L v for v (H, W, C), each channel a vector of the image's N = H·W pixels -> (H, W, C)."""
  _check(tgt, v)
  v = jnp.asarray(v, jnp.float32)
  return _scatter(tgt, _residuals(tgt, v)[0], v.shape)


@jax.custom_vjp
def _energy(tgt, v):
  return _sum_sq(tgt, *_residuals(tgt, v))


def _energy_fwd(tgt, v):
  res, c = _residuals(tgt, v)
  return _sum_sq(tgt, res, c), (tgt, res, v.shape)


def _energy_bwd(saved, g):
  tgt, res, shape = saved
  zeros = jax.tree.map(jnp.zeros_like, tgt)  # The target is a constant of the problem.
  return zeros, (2.0 * g) * _scatter(tgt, res, shape)


_energy.defvjp(_energy_fwd, _energy_bwd)


def energy(tgt, v: jax.Array) -> jax.Array:
  """Σ_c v_cᵀ L v_c for v (H, W, C): a float32 scalar ≥ 0; its gradient is 2 L v. Not
  differentiable with respect to the target (a constant)."""
  _check(tgt, v)
  return _energy(tgt, jnp.asarray(v, jnp.float32))


# ---------------------------------------------------------------- guided filter


def _box(a: np.ndarray, r: int, axes=(-3, -2)) -> np.ndarray:
  """Sums over the (2r+1)² windows clipped at the borders, along the two spatial ``axes``."""
  out = a
  for axis in axes:
    n = out.shape[axis]
    c = np.cumsum(out, axis=axis)
    c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
    hi = np.minimum(np.arange(n) + r + 1, n)
    lo = np.maximum(np.arange(n) - r, 0)
    out = np.take(c, hi, axis=axis) - np.take(c, lo, axis=axis)
  return out


def guided_filter(guide, src, radius: int, eps: float = GUIDED_EPS) -> np.ndarray:
  """He, Sun & Tang's guided filter (2010, colour guide): ``src`` (..., H, W, C) filtered
  with ``guide`` (H, W, 3) — each output is the window-averaged local affine function of the
  guide that best fits ``src`` (windows (2r+1)², clipped at the borders, ridge ``eps`` on
  [0, 1] images: larger smooths more). Edges of the guide are kept. Float32 NumPy, unclipped."""
  if radius < 1:
    raise JnstError(f"the guided filter radius must be >= 1, got {radius}")
  if not np.isfinite(eps) or eps <= 0:
    raise JnstError(f"the guided filter epsilon must be a finite number > 0, got {eps}")
  g = np.asarray(guide, np.float64)
  p = np.asarray(src, np.float64)
  if g.ndim != 3 or g.shape[-1] != 3 or p.shape[-3:-1] != g.shape[:2]:
    raise JnstError(f"the guided filter needs a guide (H, W, 3) and images (..., H, W, C) of "
                    f"the same size, got {g.shape} and {p.shape}")
  count = _box(np.ones(g.shape[:2]), radius, (0, 1))

  def mean(a, rest: int = 1):  # Window means of a (..., H, W, *rest dims).
    axes = (a.ndim - rest - 2, a.ndim - rest - 1)
    return _box(a, radius, axes) / count.reshape(count.shape + (1,) * rest)

  mu = mean(g)                                                     # (H, W, 3)
  sigma = mean(g[..., :, None] * g[..., None, :], 2) - mu[..., :, None] * mu[..., None, :]
  inv = np.linalg.inv(sigma + eps * np.eye(3))                     # (H, W, 3, 3)
  pbar = mean(p)                                                   # (..., H, W, C)
  cov = mean(g[..., :, None] * p[..., None, :], 2) - mu[..., :, None] * pbar[..., None, :]
  a = np.einsum("hwij,...hwjc->...hwic", inv, cov)                 # (..., H, W, 3, C)
  b = pbar - np.einsum("hwi,...hwic->...hwc", mu, a)
  q = np.einsum("hwi,...hwic->...hwc", g, mean(a, 2)) + mean(b)
  return q.astype(np.float32)


def post_filter(guide, radius: int, eps: float = GUIDED_EPS):
  """RGB (..., H, W, 3) -> the guided filter of it with ``guide``, clipped to [0, 1]
  (``objective.Problem.post``)."""
  guide = np.asarray(guide, np.float32)

  def post(rgb):
    return np.clip(guided_filter(guide, rgb, radius, eps), 0.0, 1.0)

  return post
