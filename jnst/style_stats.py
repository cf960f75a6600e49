"""Style statistics other than the plain Gram matrix, per region: the targets and losses of
``--style_loss=wasserstein|mean_std`` and of guided (masked) style transfer.

A layer's features F (M positions × N channels) are summarised per region r by weighted
moments, the weights m_r ∈ [0, 1] being region r's mask resized to the layer (one region of
weight 1 everywhere without masks): area a_r = Σ_k m_rk, mean μ_r = Σ m F / a_r, second raw
moment S_r = Σ_k m_rk F_k F_kᵀ / a_r, covariance Σ_r = S_r − μ_r μ_rᵀ. Each kind compares them
with the style's:

* ``gram`` (only with masks: without them ``losses.style`` keeps its plain Gram target):
  Luan et al.'s augmented style loss (2017, eq. 3; pystiche's guided Gram). The masked Gram
  ``masked_gram`` is M · S_r, the Gram of the features × mask normalised by the region's area to
  a full image's scale (an all-ones mask gives exactly ``losses.gram``), and the region's
  E_r = Σ (G_r − M Ŝ_r)² / (4 N² M²) with Ŝ_r the style region's second moment: the paper's
  eq. 4 per region.
* ``wasserstein``: the squared 2-Wasserstein distance between the Gaussian fits N(μ, Σ) and
  N(μ̂, Σ̂) (Mroueh 2019; crowsonkb/style-transfer-pytorch):
  W₂² = ‖μ − μ̂‖² + tr Σ + tr Σ̂ − 2 tr (Σ̂^½ Σ Σ̂^½)^½, both covariances plus ε I with
  ε = ``EPS`` · tr Σ̂ / N. The trace of the matrix square root inside the loop is
  ``trace_sqrtm_ns`` (coupled Newton–Schulz; its backward reuses the iteration's A^-½);
  ``sqrtm_ns`` is the general square root with a Newton–Schulz Lyapunov solve as its
  backward pass. Σ̂^½ is computed once, exactly, by an eigendecomposition in float64.
* ``mean_std``: ‖μ − μ̂‖² + ‖σ − σ̂‖² with σ = (diag Σ + ε)^½, ε = ``EPS`` · mean(diag Σ̂)
  (the statistics AdaIN matches; Huang & Belongie 2017).

Regions are summed with weights w_r = the content mask's area fraction at that layer (1 without
masks), so a partition of the image weighs like one whole image.

Scale: W₂² and the mean/std distance are quadratic in the features where the Gram loss is
quartic, so they are multiplied by a unit u_r = ``UNITS[kind]`` · tr Ŝ_r / N² (the style's mean
squared activation over N): Gram units (features⁴/N²) at every layer and for every backbone.
``UNITS`` was measured once so that, with the real VGG-19 Caffe weights on the demo pair, each
loss at the content image equals the Gram loss there (BENCHMARKS.md, "Style losses"); the
default β = 1e3 then works for all three. The "mean" loss variant multiplies by 4/N², as it
does the Gram loss.

Several style images blend through their raw moments: μ̂ = Σ_s b_s μ_s, Ŝ = Σ_s b_s S_s
(b normalised to 1 over the styles that have the region), i.e. the moments of the mixture of
the styles' feature distributions, of which Σ̂ and σ̂ are then taken. Targets are plain
pytrees (``StyleStats``, its kind a static field), built once outside the loop.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jnst.losses as losses
from jnst.errors import JnstError

KINDS = ("gram", "wasserstein", "mean_std")
# Loss scale per kind (see the module docstring; measured in BENCHMARKS.md, "Style losses").
UNITS = {"gram": 1.0, "wasserstein": 0.2, "mean_std": 0.4}  # gram: unused (no unit).
# Covariance / variance regularisation, relative to the style's mean variance.
EPS = 1e-3
# Newton–Schulz iterations (``sqrtm_ns``, ``trace_sqrtm_ns``); accuracy: BENCHMARKS.md.
NS_ITERS = 20

_HIGHEST = jax.lax.Precision.HIGHEST


def check_kind(kind: str) -> str:
  if kind not in KINDS:
    raise JnstError(f"unknown style loss {kind!r}: use gram, wasserstein or mean_std")
  return kind


def _mm(a, b):
  return jnp.matmul(a, b, precision=_HIGHEST)


# ---------------------------------------------------------------- matrix square root


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def sqrtm_ns(a: jax.Array, iters: int = NS_ITERS) -> jax.Array:
  """The square root of symmetric positive semi-definite matrices (..., N, N), by the coupled
  Newton–Schulz iteration Y ← Y T, Z ← T Z, T = (3I − Z Y)/2 from Y = A/‖A‖_F, Z = I
  (Higham 2008, eq. 6.35): matmuls only, so it suits accelerators. Eigenvalues below about
  1.5^-iters · ‖A‖_F converge last (their roots come out small; ``EPS`` keeps them few).

  Backward: the cotangent Ā solves the Lyapunov equation Z Ā + Ā Z = Z̄ for Z = A^½; it is
  read off the Newton–Schulz sign iteration of [[Z, Z̄], [0, −Z]] (Lin & Maji 2017) — again
  matmuls only, stable where autodiff through the forward loop is not.
  """
  return _ns_sqrt(a, iters)


def _ns(a, iters):
  """(A^½, A^-½) by the coupled iteration."""
  norm = jnp.sqrt(jnp.sum(jnp.square(a), axis=(-2, -1), keepdims=True))
  eye = jnp.eye(a.shape[-1], dtype=a.dtype)

  def body(_, yz):
    y, z = yz
    t = 0.5 * (3.0 * eye - _mm(z, y))
    return _mm(y, t), _mm(t, z)

  y, z = jax.lax.fori_loop(0, iters, body, (a / norm, jnp.broadcast_to(eye, a.shape)))
  return y * jnp.sqrt(norm), z / jnp.sqrt(norm)


def _ns_sqrt(a, iters):
  return _ns(a, iters)[0]


def _ns_fwd(a, iters):
  z = _ns_sqrt(a, iters)
  return z, z


def _ns_bwd(iters, z, zbar):
  norm = jnp.sqrt(jnp.sum(jnp.square(z), axis=(-2, -1), keepdims=True))
  eye3 = 3.0 * jnp.eye(z.shape[-1], dtype=z.dtype)

  def body(_, bc):
    b, c = bc
    b2 = _mm(b, b)
    c = 0.5 * (_mm(c, eye3 - b2) - _mm(b, _mm(b, c) - _mm(c, b)))
    return 0.5 * _mm(b, eye3 - b2), c

  _, c = jax.lax.fori_loop(0, iters, body, (z / norm, zbar / norm))
  return (0.5 * c,)


sqrtm_ns.defvjp(_ns_fwd, _ns_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def trace_sqrtm_ns(a: jax.Array, iters: int = NS_ITERS) -> jax.Array:
  """tr A^½ (...,) of symmetric PSD matrices (..., N, N), what the W₂ loss needs: the same
  forward iteration as ``sqrtm_ns``, whose other iterate Z → A^-½ gives the gradient
  ½ A^-½ (the Lyapunov solution for Z̄ = I) for free, so the backward pass costs no
  iterations (3× cheaper per evaluation than ``sqrtm_ns`` then a trace)."""
  return jnp.trace(_ns(a, iters)[0], axis1=-2, axis2=-1)


def _tr_fwd(a, iters):
  y, z = _ns(a, iters)
  return jnp.trace(y, axis1=-2, axis2=-1), z


def _tr_bwd(iters, z, g):
  zs = 0.5 * (z + jnp.swapaxes(z, -1, -2))
  return (0.5 * g[..., None, None] * zs,)


trace_sqrtm_ns.defvjp(_tr_fwd, _tr_bwd)


def sqrtm_eigh(a: np.ndarray) -> np.ndarray:
  """The reference square root of symmetric PSD matrices (..., N, N) by eigendecomposition
  (float64 NumPy; negative rounding eigenvalues clipped to 0)."""
  a = np.asarray(a, np.float64)
  vals, vecs = np.linalg.eigh(0.5 * (a + np.swapaxes(a, -1, -2)))
  return (vecs * np.sqrt(np.clip(vals, 0, None))[..., None, :]) @ np.swapaxes(vecs, -1, -2)


# ---------------------------------------------------------------- moments


def _flat(f: jax.Array) -> jax.Array:
  return f.reshape(-1, f.shape[-1])


def _weights(masks, m: int):
  """(R, M) weights and (R,) areas of ``masks`` (R, H, W) (None: one region of ones)."""
  w = jnp.ones((1, m), jnp.float32) if masks is None else masks.reshape(masks.shape[0], m)
  return w, jnp.sum(w, axis=1)


def masked_gram(f: jax.Array, masks: jax.Array | None) -> jax.Array:
  """Per-region Grams (R, N, N) of features ``f`` (1, H, W, N) under soft masks (R, H, W):
  Σ_k m_rk F_k F_kᵀ · M / a_r, the Gram of the features × mask normalised by the region's
  area to a whole image's scale (binary masks: Luan's G(F · M) scaled by M / a_r). An
  all-ones mask gives ``losses.gram(f)`` exactly."""
  fm = _flat(f)
  w, area = _weights(masks, fm.shape[0])
  g = losses._gram(jnp.sqrt(w)[..., None] * fm)
  return g * (fm.shape[0] / jnp.maximum(area, 1e-12))[:, None, None]


def moments(f: jax.Array, masks: jax.Array | None, full_cov: bool = True):
  """(mean (R, N), covariance (R, N, N) — or variances (R, N) if not ``full_cov``) of the
  features ``f`` (..., H, W, N) weighted by ``masks`` (R, H, W) (None: one region). The
  features are centred before the product (no S − μμᵀ cancellation in float32)."""
  fm = _flat(f)
  w, area = _weights(masks, fm.shape[0])
  area = jnp.maximum(area, 1e-12)
  mean = _mm(w, fm) / area[:, None]
  centred = fm[None] - mean[:, None, :]
  if not full_cov:
    var = jnp.einsum("rm,rmc->rc", w, jnp.square(centred), precision=_HIGHEST)
    return mean, var / area[:, None]
  return mean, losses._gram(jnp.sqrt(w)[..., None] * centred) / area[:, None, None]


# ---------------------------------------------------------------- targets and losses


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["stats", "masks", "region_weights"], meta_fields=["kind"])
@dataclasses.dataclass(frozen=True)
class StyleStats:
  """One layer's style target: ``stats`` of the style (arrays with a leading region axis R,
  by kind: gram {"moment"}; wasserstein {"mean", "cov", "cov_sqrt", "eps", "unit"};
  mean_std {"mean", "std", "eps", "unit"}), the content-side ``masks`` (R, H_l, W_l) at
  this layer's size of the output (None: one region, the whole image) and their
  ``region_weights`` (R,) (None: 1)."""
  kind: str
  stats: dict
  masks: jax.Array | None = None
  region_weights: jax.Array | None = None

  def loss(self, f: jax.Array, variant: str) -> jax.Array:
    """This layer's style loss for features ``f`` (1, H, W, N) (``losses.style`` calls it)."""
    h, w, n = f.shape[-3:]
    s, paper = self.stats, losses.paper_style(variant)
    if self.kind == "gram":
      m = h * w
      d = jnp.sum(jnp.square(masked_gram(f, self.masks) - m * s["moment"]), axis=(-2, -1))
      d = d / (4.0 * n * n * m * m if paper else float(n * n) * (n * m) ** 2)
    elif self.kind == "wasserstein":
      mean, cov = moments(f, self.masks)
      eye = jnp.eye(n, dtype=cov.dtype)
      cov = cov + s["eps"][:, None, None] * eye
      cross = trace_sqrtm_ns(_mm(_mm(s["cov_sqrt"], cov), s["cov_sqrt"]))
      tr = lambda a: jnp.trace(a, axis1=-2, axis2=-1)
      d = (jnp.sum(jnp.square(mean - s["mean"]), -1) + tr(cov) + tr(s["cov"]) - 2.0 * cross)
      d = d * s["unit"] * (1.0 if paper else 4.0 / (n * n))
    else:
      mean, var = moments(f, self.masks, full_cov=False)
      std = jnp.sqrt(var + s["eps"][:, None])
      d = jnp.sum(jnp.square(mean - s["mean"]) + jnp.square(std - s["std"]), -1)
      d = d * s["unit"] * (1.0 if paper else 4.0 / (n * n))
    return jnp.sum(d if self.region_weights is None else self.region_weights * d)


def _raw_moments(f: np.ndarray, w: np.ndarray):
  """float64 (area (R,), mean (R, N), second raw moment (R, N, N)) of features (M, N) under
  weights (R, M)."""
  area = w.sum(1)
  safe = np.maximum(area, 1e-12)
  return area, (w @ f) / safe[:, None], np.einsum("rm,mi,mj->rij", w, f, f) / safe[:, None, None]


def _stats(kind: str, mean: np.ndarray, srm: np.ndarray) -> dict:
  """A kind's target statistics from blended raw moments (float64 in, float32 out)."""
  n = mean.shape[-1]
  unit = UNITS[kind] * np.trace(srm, axis1=-2, axis2=-1) / n**2
  if kind == "gram":
    out = {"moment": srm}
  elif kind == "wasserstein":
    cov = srm - mean[:, :, None] * mean[:, None, :]
    eps = EPS * np.maximum(np.trace(cov, axis1=-2, axis2=-1), 1e-12) / n
    cov = cov + eps[:, None, None] * np.eye(n)
    out = {"mean": mean, "cov": cov, "cov_sqrt": sqrtm_eigh(cov), "eps": eps, "unit": unit}
  else:
    var = np.clip(np.diagonal(srm, axis1=-2, axis2=-1) - mean**2, 0, None)
    eps = EPS * np.maximum(var.mean(-1), 1e-12)
    out = {"mean": mean, "std": np.sqrt(var + eps[:, None]), "eps": eps, "unit": unit}
  return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


def resize_masks(masks, hw: tuple[int, int]) -> np.ndarray:
  """Soft region masks (R, H, W) resized to ``hw`` (linear, antialiased: area-like when
  shrinking), renormalised to sum to 1 over regions wherever any is present."""
  masks = np.asarray(masks, np.float32)
  if masks.shape[1:] != tuple(hw):
    masks = np.asarray(jax.image.resize(masks, (masks.shape[0], *hw), "linear", antialias=True))
  masks = np.clip(masks, 0, None)
  total = masks.sum(0, keepdims=True)
  return np.where(total > 0, masks / np.maximum(total, 1e-12), 0.0).astype(np.float32)


def target(backbone, params, styles: Sequence, layers: Sequence[str], blend: Sequence[float],
           kind: str, masks=None, shape: tuple[int, ...] | None = None) -> dict:
  """{layer: StyleStats} for ``styles`` (RGB (H, W, 3) each), blended with weights ``blend``.

  masks: None, or (content (R, H, W), [style s (R, H_s, W_s)]) one-hot region masks at the
  images' sizes (``jnst.masks.regions``); ``shape`` is then the output's (H, W, 3), whose
  feature sizes the content masks are resized to.
  """
  check_kind(kind)
  regions = 1 if masks is None else masks[0].shape[0]
  out_sizes = {}
  if masks is not None:
    if shape is None:
      raise JnstError("masked style targets need the output shape")
    feats = jax.eval_shape(lambda x: backbone.extract(params, x, layers),
                           jax.ShapeDtypeStruct((1, *shape), jnp.float32))
    out_sizes = {l: tuple(feats[l].shape[1:3]) for l in layers}
  acc = {l: [np.zeros(regions), 0.0, 0.0] for l in layers}  # Σ b, Σ b μ, Σ b S per region.
  for i, (s, b) in enumerate(zip(styles, blend)):
    feats = backbone.extract(params, jnp.asarray(s, jnp.float32)[None], layers)
    for l in layers:
      f = np.asarray(feats[l][0], np.float64)
      w = (np.ones((1, f.shape[0] * f.shape[1])) if masks is None else
           resize_masks(masks[1][i], f.shape[:2]).reshape(regions, -1).astype(np.float64))
      area, mean, srm = _raw_moments(f.reshape(-1, f.shape[-1]), w)
      bw = b * (area > 0)  # Styles without the region do not dilute it.
      acc[l][0] = acc[l][0] + bw
      acc[l][1] = acc[l][1] + bw[:, None] * mean
      acc[l][2] = acc[l][2] + bw[:, None, None] * srm
  out = {}
  for l in layers:
    total, mean, srm = acc[l]
    if np.any(total <= 0):
      raise JnstError("a mask region has no style pixels at layer " + l + ": give each region "
                      "some area in a style mask (with a positive blend weight)")
    stats = _stats(kind, mean / total[:, None], srm / total[:, None, None])
    if masks is None:
      out[l] = StyleStats(kind, stats)
    else:
      m = resize_masks(masks[0], out_sizes[l])
      out[l] = StyleStats(kind, stats, jnp.asarray(m), jnp.asarray(m.mean((1, 2))))
  return out


def from_features(f, kind: str) -> StyleStats:
  """The unmasked ``kind`` target of one feature map (..., H, W, N) (what ``target`` builds for
  a single style image, without the network)."""
  f = np.asarray(f, np.float64)
  f = f.reshape(-1, f.shape[-1])
  _, mean, srm = _raw_moments(f, np.ones((1, f.shape[0])))
  return StyleStats(check_kind(kind), _stats(kind, mean, srm))
