"""The size-invariant default loss ("invariant"): its terms against an independent NumPy
reference, the content/style balance kept across image sizes (and not by "paper"), the
per-variant default weights, backbones' term_scales and the PyTorch reference."""

import jax
import numpy as np
import pytest

import jnst.calibrate as calibrate
import jnst.cli as cli
import jnst.experiments as experiments
import jnst.losses as losses
from jnst.backbones import resnet, vgg


def np_gram_term(f, a):
  """Paper eq. 4 in NumPy: Σ (G − A)² / (4 N² M²), f (H, W, N)."""
  m = f.reshape(-1, f.shape[-1]).astype(np.float64)
  n, mm = m.shape[1], m.shape[0]
  return np.sum((m.T @ m - a) ** 2) / (4.0 * n * n * mm * mm)


def test_invariant_terms_match_an_independent_reference():
  rng = np.random.default_rng(0)
  f = rng.normal(size=(1, 6, 5, 4)).astype(np.float32)
  p = rng.normal(size=(6, 5, 4)).astype(np.float32)
  a = rng.normal(size=(4, 4)).astype(np.float32)
  a = a @ a.T
  # Content: 1/(2 N M) Σ (F − P)², the paper's per element; its gradient (F − P)/(N M).
  ref = 0.5 * np.sum((f[0].astype(np.float64) - p) ** 2) / f.size
  np.testing.assert_allclose(losses.content_layer_loss(f, p, "invariant"), ref, rtol=1e-5)
  np.testing.assert_allclose(jax.grad(losses.content_layer_loss)(f, p, "invariant"),
                             (f - p) / f.size, rtol=1e-5)
  # Style: exactly the paper's term.
  np.testing.assert_allclose(losses.style_layer_loss(f, a, "invariant"), np_gram_term(f[0], a),
                             rtol=1e-5)
  # TV: per pixel.
  x = rng.normal(size=(7, 9, 3)).astype(np.float32)
  tv = np.sum(np.diff(x, axis=0) ** 2) + np.sum(np.diff(x, axis=1) ** 2)
  np.testing.assert_allclose(losses.TERMS["tv"]({}, x, None, {}, "invariant"), tv / 63,
                             rtol=1e-5)
  np.testing.assert_allclose(losses.TERMS["tv"]({}, x, None, {}, "paper"), tv, rtol=1e-5)


def _picture(side: int) -> np.ndarray:
  """A 32 px picture tiled to ``side``: the same local statistics with side²/32² the
  pixels (what a larger print of a texture is to the network)."""
  rng = np.random.default_rng(1)
  base = np.cumsum(np.cumsum(rng.normal(size=(32, 32, 3)), 0), 1)  # Smooth-ish.
  base = ((base - base.min()) / np.ptp(base)).astype(np.float32)
  k = side // 32
  return np.tile(base, (k, k, 1))


def _stripes(side: int) -> np.ndarray:
  y, x = np.mgrid[:32, :32] / 32.0
  base = np.stack([0.5 + 0.5 * np.sin(2 * np.pi * 3 * x), 0.5 + 0.5 * np.cos(2 * np.pi * 2 * y),
                   0.5 + 0.5 * np.sin(2 * np.pi * (x + y))], -1).astype(np.float32)
  k = side // 32
  return np.tile(base, (k, k, 1))


# The content/style balance (raw content term of the style image over raw style term of the
# content image, as ``calibrate.raw_terms`` measures it) at 64 px over 32 px.
INVARIANT_TOL = 1.35  # Measured ~1.1 with random weights: borders, zero padding.


def test_invariant_balance_is_size_invariant_and_paper_is_not(random_params):
  change = {}
  for variant in ("invariant", "paper"):
    b = {}
    for side in (32, 64):
      r = calibrate.raw_terms(vgg.VGG19, random_params, _picture(side), _stripes(side), variant)
      b[side] = r["content"] / r["style"]
    change[variant] = b[64] / b[32]
  assert 1 / INVARIANT_TOL < change["invariant"] < INVARIANT_TOL, change
  # The paper's content term grows with the pixel count (4x here), its style term does not.
  assert change["paper"] > 3.0, change
  np.testing.assert_allclose(change["paper"] / change["invariant"], 4.0, rtol=0.02)


def test_default_variant_and_weights():
  cfg = experiments.StylizeConfig()
  assert cfg.variant == losses.DEFAULT_VARIANT == "invariant"
  assert cfg.content_weight is None and cfg.alpha == losses.DEFAULT_WEIGHTS["invariant"][0]
  assert cfg.style_weight == 1e3 and cfg.tv_weight == 0.0
  paper = experiments.StylizeConfig(variant="paper")
  assert paper.alpha == 1.0 and paper.alpha / paper.style_weight == 1e-3  # The paper's α/β.
  assert experiments.StylizeConfig(variant="paper", content_weight=7.0).alpha == 7.0
  assert cli.loss_settings(paper) == {"variant": "paper", "content_weight": 1.0,
                                      "style_weight": 1e3, "tv_weight": 0.0}
  assert cli.loss_settings(experiments.ReconstructConfig()) == {"variant": "invariant"}
  with pytest.raises(ValueError, match="unknown loss variant 'sum'"):
    losses.default_weights("sum")


def test_default_alpha_is_built_into_the_problem(random_params):
  content = _picture(32)
  problem = experiments.StylizeConfig().build(random_params,
                                              experiments.Inputs(content, (_stripes(32),)))
  assert problem.objective.variant == "invariant"
  assert float(problem.data["loss_weights"]["content"]) == losses.DEFAULT_WEIGHTS["invariant"][0]


def test_term_scales_do_not_depend_on_the_variant(random_params):
  """VGG-16's term_scales (measured with "paper") hold under "invariant": its content layer
  has VGG-19's N·M, so the per-element division is the same for both; ResNet-50's default
  content layer (layer2.3) too."""
  v16 = vgg.VGG16.init_random(jax.random.key(2))
  content, style = _picture(32), _stripes(32)
  paper = dict(calibrate.term_scales(vgg.VGG19, random_params, vgg.VGG16, v16, content, style,
                                     "paper"))
  inv = dict(calibrate.term_scales(vgg.VGG19, random_params, vgg.VGG16, v16, content, style,
                                   "invariant"))
  for t in ("content", "style"):
    assert inv[t] == pytest.approx(paper[t], rel=1e-4)
  x = jax.ShapeDtypeStruct((1, 64, 48, 3), np.float32)
  shape = lambda bb, p: jax.eval_shape(
      lambda x: bb.features(p, x, bb.default_content_layers), x)
  r_params = resnet.RESNET50.init_random(jax.random.key(0))
  (f19,) = shape(vgg.VGG19, random_params).values()
  (f50,) = shape(resnet.RESNET50, r_params).values()
  assert np.prod(f19.shape) == np.prod(f50.shape)


def test_torch_reference_has_the_invariant_variant():
  torch = pytest.importorskip("torch")
  import jnst.bench.torch_ref as torch_ref
  rng = np.random.default_rng(3)
  f = rng.normal(size=(1, 4, 6, 5)).astype(np.float32)  # NCHW
  p = rng.normal(size=(1, 4, 6, 5)).astype(np.float32)
  a = rng.normal(size=(4, 4)).astype(np.float32)
  nhwc = lambda z: z.transpose(0, 2, 3, 1)
  for v in ("invariant", "paper", "mean"):
    np.testing.assert_allclose(
        float(torch_ref.content_layer_loss(torch.tensor(f), torch.tensor(p), v)),
        float(losses.content_layer_loss(nhwc(f), nhwc(p), v)), rtol=1e-5)
    np.testing.assert_allclose(
        float(torch_ref.style_layer_loss(torch.tensor(f), torch.tensor(a), v)),
        float(losses.style_layer_loss(nhwc(f), a, v)), rtol=1e-5)


def _golden_problem(params, **kw):
  rng = np.random.default_rng(0)
  c = rng.uniform(size=(32, 40, 3)).astype(np.float32)
  s = rng.uniform(size=(36, 28, 3)).astype(np.float32)
  # Direct convs, as the golden numbers were made (Winograd's differ by ~1e-6: test_winograd).
  problem = experiments.StylizeConfig(tv_weight=1e-3, conv="direct", **kw).build(
      params, experiments.Inputs(c, (s,)))
  x = problem.backbone.preprocess(params, rng.uniform(size=(32, 40, 3)).astype(np.float32))
  return problem, x


def test_paper_variant_reproduces_the_old_default_numbers(random_params):
  """--variant=paper is the former default: these numbers were computed with the code before
  the "invariant" default (commit 55b1427, ``StylizeConfig(tv_weight=1e-3)``), bit for bit
  equal there; the same images and weights (conftest's key 0)."""
  problem, x = _golden_problem(random_params, variant="paper")
  loss, terms = problem.objective(x, problem.data)
  np.testing.assert_allclose(float(loss), 2719725824.0, rtol=1e-6)
  np.testing.assert_allclose(float(terms["content"]), 3873536.5, rtol=1e-6)
  np.testing.assert_allclose(float(terms["style"]), 2715772416.0, rtol=1e-6)
  np.testing.assert_allclose(float(terms["tv"]), 79980.8671875, rtol=1e-6)


def test_default_differs_from_paper_only_by_the_documented_normalisation(random_params):
  """The default ("invariant", α = DEFAULT_WEIGHTS) against "paper" (α = 1) on the same
  problem: style equal; content × N M / α_default; TV / (H W)."""
  paper, x = _golden_problem(random_params, variant="paper")
  default, _ = _golden_problem(random_params)
  _, tp = paper.objective(x, paper.data)
  _, td = default.objective(x, default.data)
  (layer,) = vgg.VGG19.expand_layers(vgg.VGG19.default_content_layers)
  f = paper.backbone.features(paper.data["params"], x[None], [layer])[layer]
  nm = int(np.prod(f.shape))
  alpha = losses.DEFAULT_WEIGHTS["invariant"][0]
  np.testing.assert_allclose(float(td["style"]), float(tp["style"]), rtol=1e-6)
  np.testing.assert_allclose(float(td["content"]) * nm / alpha, float(tp["content"]), rtol=1e-5)
  np.testing.assert_allclose(float(td["tv"]) * 32 * 40, float(tp["tv"]), rtol=1e-5)


def test_look_measures_and_table(random_params):
  """jnst.bench.look: the photo is 1 / 1 against itself; a run that moves towards the style
  lowers the style ratio; the table has one line per (pair, variant, α)."""
  import jnst.bench.look as look
  import jnst.optimize as optimize
  content, style = _picture(32), _stripes(32)
  m = look.measures(vgg.VGG19, random_params, content, content, style)
  assert m["style_ratio"] == pytest.approx(1.0) and m["content_corr"] == pytest.approx(1.0)
  base = experiments.StylizeConfig(opt=optimize.OptConfig(steps=10, chunk=10))
  rows, ims = look.calibrate(random_params, [look.Pair("p", content, style)], [32], [1e3],
                             base, log=lambda s: None)
  (row,) = rows
  assert ims[0].shape == (32, 32, 3)
  assert row["variant"] == "invariant" and row["alpha"] == 1e3 and row["size"] == 32
  assert row["style_ratio"] < 1.0 and 0.0 < row["content_corr"] < 1.0
  table = look.markdown(rows + [dict(row, size=64)])
  assert table.splitlines()[0].startswith("| pair | backbone | variant | α | β | 32 px")
  assert len(table.splitlines()) == 3 and "| p | vgg19 | invariant | 1000 | 1000 |" in table


def test_look_measures_every_backbone_on_vgg19(random_params):
  """A VGG-16 run is measured on VGG-19's features (its row says which network ran), so the
  looks of two backbones' results compare; measured on VGG-16 itself they would differ."""
  import jnst.bench.look as look
  import jnst.optimize as optimize
  content, style = _picture(32), _stripes(32)
  p16 = vgg.VGG16.init_random(jax.random.key(3))
  base = experiments.StylizeConfig(backbone="vgg16", opt=optimize.OptConfig(steps=5, chunk=5))
  rows, ims = look.calibrate(p16, [look.Pair("p", content, style)], [32], [1e3], base,
                             log=lambda s: None, vgg19_params=random_params)
  (row,) = rows
  on19 = look.measures(vgg.VGG19, random_params, ims[0], content, style)
  on16 = look.measures(vgg.VGG16, p16, ims[0], content, style)
  assert row["backbone"] == "vgg16"
  assert row["style_ratio"] == pytest.approx(on19["style_ratio"], rel=1e-6)
  assert row["content_corr"] == pytest.approx(on19["content_corr"], rel=1e-6)
  assert abs(on16["style_ratio"] - on19["style_ratio"]) > 1e-3
  assert "| p | vgg16 | invariant |" in look.markdown(rows)
  with pytest.raises(ValueError, match="pass vgg19_params"):
    look.calibrate(p16, [look.Pair("p", content, style)], [32], [1e3], base)


def test_look_measures_saved_images_at_their_own_size(random_params, tmp_path):
  """--measure: a saved result is measured against the pair loaded at its size; the photo
  itself is 1 / 1 (up to its 8-bit rounding)."""
  import jnst.bench.look as look
  import jnst.images as images
  images.save_image(tmp_path / "c.png", _picture(32))
  images.save_image(tmp_path / "s.png", _stripes(32))
  images.save_image(tmp_path / "r.png", _picture(64)[:48, :48])  # Another size: 48 px.
  images.save_image(tmp_path / "x.png", _stripes(32))
  rows = look.measure_files(random_params, tmp_path / "c.png", tmp_path / "s.png",
                            [tmp_path / "c.png", tmp_path / "x.png"])
  assert rows[0]["style_ratio"] == pytest.approx(1.0, abs=1e-3)
  assert rows[0]["content_corr"] == pytest.approx(1.0, abs=1e-3)
  assert rows[1]["style_ratio"] == pytest.approx(0.0, abs=1e-3)
  assert rows[1]["image"].endswith("x.png")
  (r,) = look.measure_files(random_params, tmp_path / "c.png", tmp_path / "s.png",
                            [tmp_path / "r.png"])
  assert np.isfinite(r["style_ratio"]) and np.isfinite(r["content_corr"])

