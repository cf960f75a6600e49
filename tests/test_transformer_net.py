"""The image transformation network: shapes at odd sizes, instance norm against NumPy, and
parity with a PyTorch module of the same architecture (the PyTorch examples' TransformerNet
with our sigmoid output and crop)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnst import transformer_net as tn


@pytest.fixture(scope="module")
def small():
  return tn.init(jax.random.key(1), width=4, num_res_blocks=2)


@pytest.mark.parametrize("h,w", [(8, 8), (17, 23), (33, 30), (31, 9)])
def test_any_size_gives_the_input_size(small, h, w):
  x = jax.random.uniform(jax.random.key(2), (2, h, w, 3))
  y = jax.jit(tn.apply, static_argnums=(2, 3))(small, x, 4, 2)
  assert y.shape == (2, h, w, 3)
  assert float(y.min()) > 0 and float(y.max()) < 1
  assert tn.output_size(h, w) == (4 * -(-h // 4), 4 * -(-w // 4))
  assert jax.eval_shape(lambda p, a: tn.apply(p, a, 4, 2), small, x[0]).shape == (h, w, 3)


def test_params_size_independent_and_width():
  p = jax.eval_shape(tn.init, jax.random.key(0))
  assert tn.num_params(p) == 1_676_995  # Johnson's network: about 1.7 M.
  assert p["conv_in"]["layer"]["conv"]["kernel"].shape == (9, 9, 3, 32)
  assert p["down2"]["layer"]["conv"]["kernel"].shape == (3, 3, 64, 128)
  assert p["conv_out"]["conv"]["kernel"].shape == (9, 9, 32, 3)
  assert len([k for k in p if k.startswith("res")]) == 5
  q = jax.eval_shape(lambda k: tn.init(k, width=8, num_res_blocks=1), jax.random.key(0))
  assert q["res0"]["conv1"]["conv"]["kernel"].shape == (3, 3, 32, 32) and "res1" not in q


def test_instance_norm_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(3.0, 2.0, (2, 5, 7, 4)).astype(np.float32)
  scale, bias = rng.normal(size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)
  mean = x.mean(axis=(1, 2), keepdims=True)
  var = ((x - mean) ** 2).mean(axis=(1, 2), keepdims=True)
  want = (x - mean) / np.sqrt(var + 1e-5) * scale + bias
  np.testing.assert_allclose(tn.instance_norm(jnp.asarray(x), scale, bias), want, atol=1e-5)


def test_reflect_pad_is_torchs():
  x = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)
  got = np.asarray(tn.reflect_pad(jnp.asarray(x), 2))[0, :, :, 0]
  assert got[2].tolist() == [2, 1, 0, 1, 2, 3, 2, 1]  # The edge pixel is not repeated.


# ------------------------------------------------------------------ PyTorch parity


def torch_net(width, num_res_blocks):
  """The same network in PyTorch (NCHW)."""
  import torch
  from torch import nn

  class Conv(nn.Module):
    def __init__(self, cin, cout, k, stride=1, up=1, bias=False):
      super().__init__()
      self.up, self.pad = up, nn.ReflectionPad2d(k // 2)
      self.conv = nn.Conv2d(cin, cout, k, stride, bias=bias)

    def forward(self, x):
      if self.up > 1:
        x = nn.functional.interpolate(x, scale_factor=self.up, mode="nearest")
      return self.conv(self.pad(x))

  class CNR(nn.Module):
    def __init__(self, *a, **kw):
      super().__init__()
      self.layer, self.norm = Conv(*a, **kw), nn.InstanceNorm2d(a[1], affine=True)

    def forward(self, x):
      return torch.relu(self.norm(self.layer(x)))

  class Res(nn.Module):
    def __init__(self, c):
      super().__init__()
      self.conv1, self.norm1 = Conv(c, c, 3), nn.InstanceNorm2d(c, affine=True)
      self.conv2, self.norm2 = Conv(c, c, 3), nn.InstanceNorm2d(c, affine=True)

    def forward(self, x):
      return x + self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x)))))

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      c = width
      self.conv_in, self.down1, self.down2 = CNR(3, c, 9), CNR(c, 2 * c, 3, 2), CNR(2 * c, 4 * c, 3, 2)
      self.res = nn.ModuleList([Res(4 * c) for _ in range(num_res_blocks)])
      self.up1, self.up2 = CNR(4 * c, 2 * c, 3, up=2), CNR(2 * c, c, 3, up=2)
      self.conv_out = Conv(c, 3, 9, bias=True)

    def forward(self, x):
      h, w = x.shape[2:]
      y = self.down2(self.down1(self.conv_in(x)))
      for r in self.res:
        y = r(y)
      return torch.sigmoid(self.conv_out(self.up2(self.up1(y)))[:, :, :h, :w])

  return Net()


def load_torch(net, params):
  """Copies Flax params (HWIO kernels) into the torch module (OIHW): Flax path
  res0/conv1/conv/kernel is torch's res.0.conv1.conv.weight, norm scale its weight."""
  import re
  import torch
  state = {}
  for path, a in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = re.sub(r"^res(\d+)", r"res.\1", ".".join(k.key for k in path))
    name = re.sub(r"\.(kernel|scale)$", ".weight", name)
    a = np.array(a)
    state[name] = torch.from_numpy(np.ascontiguousarray(a.transpose(3, 2, 0, 1) if a.ndim == 4
                                                        else a))
  for k, v in net.state_dict().items():  # Residual blocks' norm2 has no shift here.
    if k.endswith("norm2.bias"):
      state[k] = torch.zeros_like(v)
  assert set(state) == set(net.state_dict())
  net.load_state_dict(state)
  return net


@pytest.mark.parametrize("h,w", [(32, 32), (21, 30)])
def test_torch_parity(h, w):
  torch = pytest.importorskip("torch")
  params = tn.init(jax.random.key(3), width=8, num_res_blocks=2)
  # Perturb the instance-norm affines so they matter.
  params = jax.tree_util.tree_map_with_path(
      lambda p, a: a + 0.1 * jax.random.normal(jax.random.key(len(str(p))), a.shape)
      if p[-1].key in ("scale", "bias") else a, params)
  x = np.random.default_rng(0).uniform(size=(2, h, w, 3)).astype(np.float32)
  want = load_torch(torch_net(8, 2), params)(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  want = want.detach().numpy().transpose(0, 2, 3, 1)
  got = np.asarray(jax.jit(tn.apply, static_argnums=(2, 3))(params, jnp.asarray(x), 8, 2))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-4)
