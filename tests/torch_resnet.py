"""An independent PyTorch ResNet-50 for the tests (torchvision is not installed): the same
module names as torchvision's ``resnet50`` (so its ``state_dict`` has torchvision's keys), batch
norm in eval mode from running stats, written here from the paper and torchvision's layout."""

import numpy as np
import torch
from torch import nn


class Bottleneck(nn.Module):
  def __init__(self, cin, width, stride, downsample, stride_in_1x1=False, bias=False, eps=1e-5):
    super().__init__()
    s1, s2 = (stride, 1) if stride_in_1x1 else (1, stride)
    self.conv1 = nn.Conv2d(cin, width, 1, s1, bias=bias)
    self.bn1 = nn.BatchNorm2d(width, eps=eps)
    self.conv2 = nn.Conv2d(width, width, 3, s2, padding=1, bias=bias)
    self.bn2 = nn.BatchNorm2d(width, eps=eps)
    self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=bias)
    self.bn3 = nn.BatchNorm2d(4 * width, eps=eps)
    self.downsample = (nn.Sequential(nn.Conv2d(cin, 4 * width, 1, stride, bias=bias),
                                     nn.BatchNorm2d(4 * width, eps=eps)) if downsample else None)

  def forward(self, x):
    h = torch.relu(self.bn1(self.conv1(x)))
    h = torch.relu(self.bn2(self.conv2(h)))
    h = self.bn3(self.conv3(h))
    return torch.relu(h + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
  """stride_in_1x1: the Caffe/Keras v1 block; bias: convs with biases (Keras); pooling of
  the stem: "max" or "avg" (count_include_pad)."""

  def __init__(self, stride_in_1x1=False, bias=False, eps=1e-5, pooling="max"):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=bias)
    self.bn1 = nn.BatchNorm2d(64, eps=eps)
    self.maxpool = (nn.MaxPool2d(3, 2, 1) if pooling == "max"
                    else nn.AvgPool2d(3, 2, 1, count_include_pad=True))
    cin = 64
    for s, (n, w) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), 1):
      blocks = [Bottleneck(cin if b == 0 else 4 * w, w, 2 if s > 1 and b == 0 else 1, b == 0,
                           stride_in_1x1, bias, eps) for b in range(n)]
      setattr(self, f"layer{s}", nn.Sequential(*blocks))
      cin = 4 * w
    self.fc = nn.Linear(2048, 1000)  # In the state dict like torchvision's; unused here.

  def randomize(self, seed=0):
    """Random weights with non-trivial batch-norm statistics; conv3's BN scaled down so
    activations stay moderate along the residual path."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
      for name, m in self.named_modules():
        if isinstance(m, nn.Conv2d):
          fan_in = m.weight[0].numel()
          m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
          if m.bias is not None:
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        elif isinstance(m, nn.BatchNorm2d):
          c = m.num_features
          m.weight.copy_((0.5 + torch.rand(c, generator=g)) * (0.3 if name.endswith("bn3") else 1))
          m.bias.copy_(0.1 * torch.randn(c, generator=g))
          m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
          m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return self.eval()

  def features(self, x):
    """NCHW input -> {our layer name: NHWC float64 array} for every exposed layer."""
    out = {}
    x = self.bn1(self.conv1(x))
    out["conv1"] = x
    x = torch.relu(x)
    out["relu"] = x
    x = self.maxpool(x)
    out["maxpool"] = x
    for s in range(1, 5):
      for b, block in enumerate(getattr(self, f"layer{s}")):
        x = block(x)
        out[f"layer{s}.{b}"] = x
    return {k: v.detach().permute(0, 2, 3, 1).numpy() for k, v in out.items()}


def run(model, x_nhwc):
  """The float64 features of NHWC input ``x_nhwc`` (already in the network's input space)."""
  model = model.double()
  with torch.no_grad():
    return model.features(torch.from_numpy(np.asarray(x_nhwc, np.float64)).permute(0, 3, 1, 2))
