"""The matting Laplacian (jnst/matting.py) against Levin et al.'s explicit sparse construction,
its null space, symmetry and definiteness, the term's gradient, vmap, the guided filter, the
flags, and stylize --photoreal end to end in-process (random weights, tiny images)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from absl import flags
from PIL import Image

from jnst import cli, experiments, losses, matting, objective, optimize, study
from jnst.backbones import vgg
from jnst.errors import JnstError


def levin_laplacian(img, eps=matting.EPS, r=1):
  """Levin et al.'s getLaplacian1 (their Matlab, as Luan et al. call it), in SciPy: every
  (2r+1)² window lying entirely inside the image, A_ij += (1 + (I_i−μ)ᵀ(Σ+ε/K U)⁻¹(I_j−μ))/K,
  L = diag(Σ_j A_ij) − A. Float64."""
  h, w, _ = img.shape
  n = 2 * r + 1
  k = n * n
  idx = np.arange(h * w).reshape(h, w)
  rows, cols, vals = [], [], []
  for y in range(r, h - r):
    for x in range(r, w - r):
      win = idx[y - r:y + r + 1, x - r:x + r + 1].ravel()
      i = img[y - r:y + r + 1, x - r:x + r + 1].reshape(k, 3).astype(np.float64)
      mu = i.mean(0)
      var = (i - mu).T @ (i - mu) / k
      inv = np.linalg.inv(var + eps / k * np.eye(3))
      rows.append(np.repeat(win, k))
      cols.append(np.tile(win, k))
      vals.append(((1 + (i - mu) @ inv @ (i - mu).T) / k).ravel())
  a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                    shape=(h * w, h * w))
  return sp.diags(np.asarray(a.sum(1)).ravel()) - a


def sparse_apply(lap, v):
  return np.stack([lap @ v[..., c].ravel().astype(np.float64) for c in range(v.shape[-1])],
                  -1).reshape(v.shape)


@pytest.fixture(scope="module")
def image():
  return np.random.default_rng(0).uniform(size=(16, 16, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def tgt(image):
  return matting.target(image)


def test_apply_equals_sparse_laplacian(image, tgt):
  lap = levin_laplacian(image)
  v = np.random.default_rng(1).normal(size=(16, 16, 3)).astype(np.float32)
  want = sparse_apply(lap, v)
  np.testing.assert_allclose(np.asarray(matting.apply(tgt, v)), want, rtol=1e-5,
                             atol=1e-5 * np.abs(want).max())
  energy = sum(v[..., c].ravel() @ (lap @ v[..., c].ravel()) for c in range(3))
  np.testing.assert_allclose(float(matting.energy(tgt, v)), energy, rtol=1e-5)


def test_piecewise_flat_photo_like_image_matches_too():
  # Two flat regions with an edge: windows with singular covariances, where ε matters.
  img = np.zeros((16, 16, 3), np.float32)
  img[:, :7] = (0.2, 0.4, 0.6)
  img[:, 7:] = (0.9, 0.3, 0.1)
  img[5, 3] = (0.25, 0.4, 0.6)
  lap, tgt = levin_laplacian(img), matting.target(img)
  v = np.random.default_rng(2).uniform(size=(16, 16, 3)).astype(np.float32)
  want = sparse_apply(lap, v)
  got = np.asarray(matting.apply(tgt, v))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
  energy = sum(v[..., c].ravel() @ (lap @ v[..., c].ravel()) for c in range(3))
  np.testing.assert_allclose(float(matting.energy(tgt, v)), energy, rtol=1e-5)


def test_boundary_windows_are_the_interior_ones(tgt):
  # A corner pixel belongs to one window, an edge pixel to three, the rest to nine.
  assert tgt["whitened"].shape == (9, 14, 14, 3) and tgt["ridge"].shape == (14, 14, 3)
  counted = np.asarray(matting._scatter(tgt, jnp.ones((9, 14, 14, 1)), (16, 16, 1)))[..., 0]
  assert counted.sum() == 9 * 14 * 14
  for (y, x), n in {(0, 0): 1, (0, 5): 3, (8, 8): 9, (15, 15): 1, (1, 1): 4}.items():
    assert counted[y, x] == n


def test_constants_are_in_the_null_space(tgt):
  ones = np.ones((16, 16, 3), np.float32) * np.array([1.0, -3.0, 120.0], np.float32)
  assert np.abs(np.asarray(matting.apply(tgt, ones))).max() < 1e-3
  v = np.random.default_rng(3).uniform(size=(16, 16, 3)).astype(np.float32)
  np.testing.assert_allclose(float(matting.energy(tgt, v + ones)), float(matting.energy(tgt, v)),
                             rtol=1e-4)


def test_symmetric_positive_semidefinite(tgt):
  rng = np.random.default_rng(4)
  for _ in range(5):
    u, v = (rng.normal(size=(16, 16, 1)).astype(np.float32) for _ in range(2))
    ulv = float(np.sum(u * np.asarray(matting.apply(tgt, v))))
    vlu = float(np.sum(v * np.asarray(matting.apply(tgt, u))))
    assert abs(ulv - vlu) <= 1e-5 * (abs(ulv) + 1)
    assert float(np.sum(v * np.asarray(matting.apply(tgt, v)))) >= 0
    assert float(matting.energy(tgt, v)) >= 0


def test_energy_gradient_is_2Lv_and_matches_finite_differences(image, tgt):
  v = np.random.default_rng(5).uniform(size=(16, 16, 3))
  g = np.asarray(jax.grad(matting.energy, 1)(tgt, jnp.asarray(v, jnp.float32)))
  np.testing.assert_allclose(g, 2 * np.asarray(matting.apply(tgt, v)), rtol=1e-5, atol=1e-5)
  # Energy is quadratic: central differences are exact up to rounding (float64 L from Levin).
  lap = levin_laplacian(image)
  e = lambda w: sum(w[..., c].ravel() @ (lap @ w[..., c].ravel()) for c in range(3))
  rng = np.random.default_rng(6)
  for _ in range(3):
    d = rng.normal(size=v.shape)
    h = 1e-3
    fd = (e(v + h * d) - e(v - h * d)) / (2 * h)
    np.testing.assert_allclose(np.sum(g * d), fd, rtol=1e-4)
    # And the float32 energy itself, with a coarser step.
    h = 1e-2
    fd32 = (float(matting.energy(tgt, v + h * d)) - float(matting.energy(tgt, v - h * d))) / (2 * h)
    np.testing.assert_allclose(np.sum(g * d), fd32, rtol=1e-2)


def test_vmappable(tgt):
  vs = np.random.default_rng(7).uniform(size=(3, 16, 16, 3)).astype(np.float32)
  batched = jax.vmap(lambda v: matting.energy(tgt, v))(vs)
  np.testing.assert_allclose(np.asarray(batched), [float(matting.energy(tgt, v)) for v in vs],
                             rtol=1e-6)
  grads = jax.vmap(jax.grad(lambda v: matting.energy(tgt, v)))(vs)
  np.testing.assert_allclose(np.asarray(grads[1]), 2 * np.asarray(matting.apply(tgt, vs[1])),
                             rtol=1e-5, atol=1e-5)


def test_bad_target_input():
  with pytest.raises(JnstError, match="at least 3 px"):
    matting.target(np.zeros((2, 8, 3)))
  with pytest.raises(JnstError, match="RGB"):
    matting.target(np.zeros((8, 8)))
  with pytest.raises(JnstError, match="shape"):
    matting.energy(matting.target(np.zeros((8, 8, 3))), jnp.zeros((9, 8, 3)))


# ------------------------------------------------------------------ the loss term


def test_term_reads_the_image_in_rgb_01(random_params, tgt):
  assert "matting" in losses.TERMS and "matting" in losses.IMAGE_TERMS
  v = np.random.default_rng(8).uniform(size=(16, 16, 3)).astype(np.float32)
  bb = vgg.VGG19
  x = bb.preprocess(random_params, v)
  image = x * bb.pixel_scale(random_params)
  np.testing.assert_allclose(float(losses.matting({}, image, tgt, {}, "paper")),
                             float(matting.energy(tgt, v)), rtol=1e-4)


def test_config_builds_the_term_only_when_on(random_params):
  rng = np.random.default_rng(9)
  content, style = (rng.uniform(size=(24, 32, 3)).astype(np.float32) for _ in range(2))
  inputs = experiments.Inputs(content, (style,))
  cfg = experiments.StylizeConfig(content_layers=("relu2_1",), style_layers=("relu1_1",))
  off = cfg.build(random_params, inputs)
  assert [t.name for t in off.objective.terms] == ["content", "style", "tv"]
  assert "matting" not in off.data["targets"] and off.post is None
  on = dataclasses.replace(cfg, matting_weight=1e4, guided_filter_radius=2).build(
      random_params, inputs)
  assert [t.name for t in on.objective.terms][-1] == "matting"
  assert float(on.data["loss_weights"]["matting"]) == 1e4
  loss, terms = on.objective(on.init_x, on.data)
  want = 1e4 * float(matting.energy(objective.matting_target(content), content))
  np.testing.assert_allclose(float(terms["matting"]), want, rtol=1e-3, atol=1e-3)
  # The gradient flows into x (input space) and is finite.
  g = jax.grad(lambda x: on.objective(x, on.data)[0])(on.init_x + 1.0)
  assert np.isfinite(np.asarray(g)).all()
  # Post-processing applies to single and batched results.
  assert on.rgb(on.init_x).shape == (24, 32, 3)
  assert on.rgb(jnp.stack([on.init_x] * 2)).shape == (2, 24, 32, 3)
  for bad, msg in ((dict(matting_weight=-1.0), "matting_weight"),
                   (dict(guided_filter_radius=-1), "guided_filter_radius"),
                   (dict(guided_filter_eps=0.0), "guided_filter_eps")):
    with pytest.raises(JnstError, match=msg):
      dataclasses.replace(cfg, **bad).validate()


def test_matting_weight_sweep_is_vmapped(random_params):
  rng = np.random.default_rng(10)
  content, style = (rng.uniform(size=(16, 16, 3)).astype(np.float32) for _ in range(2))
  sweep = study.parse_sweep("matting_weight:0,1e4", "stylize")
  assert sweep.batched
  cfg = experiments.StylizeConfig(content_layers=("relu1_1",), style_layers=("relu1_1",),
                                  opt=optimize.OptConfig(steps=2, chunk=2))
  res = study.run(study.variants(sweep, cfg, None), [experiments.Inputs(content, (style,))],
                  random_params, sweep, [0])
  assert [m["value"] for m in res.members] == ["0", "1e4"]
  assert res.members[0]["terms"]["matting"] == 0 and res.members[1]["terms"]["matting"] > 0


# ------------------------------------------------------------------ guided filter


def test_guided_filter():
  rng = np.random.default_rng(11)
  guide = np.zeros((20, 24, 3), np.float32)
  guide[:, 12:] = 1.0
  # A local affine function of the guide is kept (up to the ridge ε), noise is smoothed.
  src = 0.3 + 0.5 * guide[..., :1].repeat(3, -1)
  out = matting.guided_filter(guide, src, 2, 1e-6)
  np.testing.assert_allclose(out, src, atol=1e-3)
  noisy = src + rng.normal(scale=0.1, size=src.shape).astype(np.float32)
  out = matting.guided_filter(guide, noisy, 2, 1e-6)
  assert np.abs(out - src).std() < 0.5 * np.abs(noisy - src).std()
  assert abs(out[:, 14:].mean() - out[:, :10].mean() - 0.5) < 0.05  # The edge is kept.
  both = matting.guided_filter(guide, np.stack([noisy, src]), 2, 1e-6)
  np.testing.assert_allclose(both[0], out, rtol=1e-5, atol=1e-6)
  with pytest.raises(JnstError, match="radius"):
    matting.guided_filter(guide, src, 0)
  with pytest.raises(JnstError, match="same size"):
    matting.guided_filter(guide, src[:5], 2)


# ------------------------------------------------------------------ flags and the script


@pytest.fixture()
def files(tmp_path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "c.png")
  Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(tmp_path / "s.png")
  return tmp_path


def _parse(*args):
  from scripts import stylize  # noqa: F401  (defines the flags)
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["stylize", *args])


def test_photoreal_flags():
  try:
    _parse()
    assert cli.stylize_config().matting_weight == 0.0
    _parse("--photoreal")
    assert cli.stylize_config().matting_weight == matting.PHOTOREAL_WEIGHT
    _parse("--photoreal", "--matting_weight=5")
    assert cli.stylize_config().matting_weight == 5.0
    _parse("--guided_filter_radius=3", "--guided_filter_eps=0.01")
    cfg = cli.stylize_config()
    assert (cfg.guided_filter_radius, cfg.guided_filter_eps) == (3, 0.01)
    with pytest.raises(flags.IllegalFlagValueError):
      _parse("--matting_weight=-1")
  finally:
    flags.FLAGS.unparse_flags()


def test_stylize_photoreal_end_to_end_in_process(files, random_weights_file, capsys):
  from scripts import stylize
  out = files / "out.png"
  try:
    _parse(f"--weights={random_weights_file}", f"--content={files / 'c.png'}",
           f"--style={files / 's.png'}", f"--output={out}", "--size=32", "--steps=3",
           "--print_every=3", "--init=content", "--content_layers=relu2_1",
           "--style_layers=relu1_1", "--photoreal", "--guided_filter_radius=1")
    stylize.main([])
  finally:
    flags.FLAGS.unparse_flags()
  assert "matting" in capsys.readouterr().out
  assert Image.open(out).size == (32, 27)
  rec = out.with_suffix(".json").read_text()
  assert '"photoreal": true' in rec and '"guided_filter_radius": 1' in rec
