"""Architectures. Every model is `backbone -> features [N,C,h,w] -> GAP -> dropout -> Linear(C,1)`.

That head makes Grad-CAM of the logit exact in closed form (docs/model-contract.md), and the
feature-level ensemble is the channel concatenation of several backbones' feature maps at the same
stride, with one such head on top.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


# --------------------------------------------------------------------------- building blocks
class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: bool = True):
        super().__init__(
            nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.SiLU(inplace=True) if act else nn.Identity(),
        )


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel then spatial attention."""

    def __init__(self, c: int, reduction: int = 8, kernel: int = 7):
        super().__init__()
        hidden = max(c // reduction, 8)
        self.mlp = nn.Sequential(nn.Conv2d(c, hidden, 1), nn.SiLU(inplace=True), nn.Conv2d(hidden, c, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)
        mx = x.amax(dim=(2, 3), keepdim=True)
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(s))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, attention: bool = False):
        super().__init__()
        self.c1 = ConvBNAct(cin, cout, 3, stride)
        self.c2 = ConvBNAct(cout, cout, 3, 1, act=False)
        self.att = CBAM(cout) if attention else nn.Identity()
        self.short = nn.Identity() if (stride == 1 and cin == cout) else nn.Sequential(
            nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.att(self.c2(self.c1(x))) + self.short(x))


# --------------------------------------------------------------------------- backbones
class ResNetS(nn.Module):
    """Compact ResNet-style backbone: a stride-4 stem, then one stage per width (each stride 2
    except the first), SiLU, optional CBAM in every block; output stride 32, or 16 with
    `cam_stride=16` (the last stage keeps its input's resolution: a 14x14 Grad-CAM layer at 224 px)."""

    def __init__(self, widths: Sequence[int] = (32, 48, 96, 192, 320), blocks: Sequence[int] = (1, 2, 2, 1),
                 attention: bool = False, cam_stride: int = 32):
        super().__init__()
        w0 = widths[0]
        self.stem = nn.Sequential(ConvBNAct(1, w0 // 2, 3, 2), ConvBNAct(w0 // 2, w0, 3, 2))
        layers: List[nn.Module] = []
        cin = w0
        last = len(blocks) - 1
        for i, (cout, n) in enumerate(zip(widths[1:], blocks)):
            for b in range(n):
                down = b == 0 and i > 0 and not (i == last and cam_stride == 16)
                layers.append(BasicBlock(cin, cout, 2 if down else 1, attention))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class CBAMNet(nn.Module):
    """Custom plain CNN with CBAM attention after every stage, SiLU and spatial dropout; each stage
    halves the resolution (output stride 32), except the last with `cam_stride=16` (a 14x14 Grad-CAM
    layer at 224 px)."""

    def __init__(self, widths: Sequence[int] = (24, 48, 96, 160, 256), dropout: float = 0.1, cam_stride: int = 32):
        super().__init__()
        layers: List[nn.Module] = []
        cin = 1
        last = len(widths) - 1
        for i, c in enumerate(widths):
            stride = 1 if (i == last and cam_stride == 16) else 2
            layers += [ConvBNAct(cin, c, 3, stride)] + ([ConvBNAct(c, c, 3, 1)] if i > 0 else [])
            if i >= 1:
                layers.append(CBAM(c))
            if i >= 2 and dropout > 0:
                layers.append(nn.Dropout2d(dropout))
            cin = c
        self.body = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _first_conv_to_gray(conv: nn.Conv2d) -> nn.Conv2d:
    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class TorchvisionBackbone(nn.Module):
    """torchvision classifiers cut at their last convolutional block, first conv made 1-channel."""

    def __init__(self, name: str, pretrained: Optional[str] = None, cam_stride: int = 32):
        super().__init__()
        import torchvision.models as tvm

        ctor = {"densenet121": tvm.densenet121, "efficientnet_b0": tvm.efficientnet_b0,
                "mobilenet_v2": tvm.mobilenet_v2, "resnet50": tvm.resnet50, "vgg16": tvm.vgg16_bn}[name]
        m = ctor()
        if pretrained:
            state = torch.load(pretrained, map_location="cpu")
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            missing, unexpected = m.load_state_dict(state, strict=False)
            print(f"loaded {pretrained}: {len(missing)} missing, {len(unexpected)} unexpected keys")
        if name == "resnet50":
            m.conv1 = _first_conv_to_gray(m.conv1)
            self.body = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)
            self.out_channels = 2048
        elif name == "densenet121":
            m.features.conv0 = _first_conv_to_gray(m.features.conv0)
            self.body = nn.Sequential(m.features, nn.ReLU(inplace=False))
            self.out_channels = 1024
        elif name in ("efficientnet_b0", "mobilenet_v2"):
            m.features[0][0] = _first_conv_to_gray(m.features[0][0])
            if name == "mobilenet_v2":
                for mod in m.modules():  # Keras' batch-norm epsilon: the weights of pneumolens_train.nsfwjs
                    if isinstance(mod, nn.BatchNorm2d):
                        mod.eps = 1e-3
                if cam_stride == 16:  # the last stride-2 block (96 -> 160 channels) keeps its resolution
                    m.features[14].conv[1][0].stride = (1, 1)
            self.body = m.features
            self.out_channels = 1280
        else:  # vgg16_bn: drop the last max-pool so the CAM layer keeps stride 16
            m.features[0] = _first_conv_to_gray(m.features[0])
            self.body = m.features[:-1]
            self.out_channels = 512
        self.pretrained = bool(pretrained)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


# --------------------------------------------------------------------------- classifier
class Classifier(nn.Module):
    """Backbone(s) -> concatenated feature maps -> GAP -> dropout -> one logit.

    `forward` returns (logit [N], features [N,C,h,w]); features are the Grad-CAM layer.
    """

    def __init__(self, backbones: Sequence[nn.Module], dropout: float = 0.2):
        super().__init__()
        self.backbones = nn.ModuleList(backbones)
        self.out_channels = sum(b.out_channels for b in backbones)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(self.out_channels, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        maps = [b(x) for b in self.backbones]
        if len(maps) > 1:
            h = min(m.shape[2] for m in maps)
            maps = [m if m.shape[2] == h else F.adaptive_avg_pool2d(m, (h, h)) for m in maps]
            return torch.cat(maps, dim=1)
        return maps[0]

    def forward(self, x: torch.Tensor):
        f = self.features(x)
        pooled = f.mean(dim=(2, 3))
        logit = self.fc(self.drop(pooled)).squeeze(1)
        return logit, f


ARCHS = ("resnet_s", "resnet_s_cbam", "cbam_cnn", "ensemble", "densenet121", "efficientnet_b0",
         "mobilenet_v2", "resnet50", "vgg16")


def build_backbone(name: str, pretrained: Optional[str] = None, width: float = 1.0, cam_stride: int = 32) -> nn.Module:
    def wd(ws):
        return tuple(max(8, int(round(w * width / 8)) * 8) for w in ws)

    if name == "resnet_s":
        return ResNetS(widths=wd((32, 48, 96, 192, 320)), cam_stride=cam_stride)
    if name == "resnet_s_cbam":
        return ResNetS(widths=wd((32, 48, 96, 192, 320)), attention=True, cam_stride=cam_stride)
    if name == "cbam_cnn":
        return CBAMNet(widths=wd((24, 48, 96, 160, 256)), cam_stride=cam_stride)
    if cam_stride == 16 and name != "mobilenet_v2":
        raise ValueError(f"cam_stride 16 is built for resnet_s*, cbam_cnn and mobilenet_v2, not {name}")
    return TorchvisionBackbone(name, pretrained, cam_stride)


def build_model(arch: str, members: Sequence[str] = (), pretrained: Optional[str] = None,
                dropout: float = 0.2, width: float = 1.0, cam_stride: int = 32) -> Classifier:
    if arch == "ensemble":
        names = list(members) or ["resnet_s", "cbam_cnn"]
        return Classifier([build_backbone(n, None, width, cam_stride) for n in names], dropout)
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    return Classifier([build_backbone(arch, pretrained, width, cam_stride)], dropout)


def combine(models: Sequence[Classifier]):
    """Feature-level ensemble of trained models: their feature maps concatenated, one linear head
    whose weights are the members' heads divided by the member count (= the mean of their logits).
    Returns the model and, per member, (first channel, end channel, head weights, head bias)."""
    if len(models) == 1:
        return models[0], []
    k = len(models)
    combo = Classifier([b for m in models for b in m.backbones], dropout=0.0)
    members, start = [], 0
    with torch.no_grad():
        combo.fc.weight.copy_(torch.cat([m.fc.weight for m in models], dim=1) / k)
        combo.fc.bias.copy_(sum(m.fc.bias for m in models) / k)
        for m in models:
            members.append((start, start + m.out_channels, m.fc.weight.detach().view(-1).clone(),
                            float(m.fc.bias.detach().view(-1)[0])))
            start += m.out_channels
    return combo.eval(), members


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gflops(model: nn.Module, size: int) -> float:
    """Multiply-adds of conv and linear layers for one image, times 2, in GFLOPs."""
    total = [0]

    def conv_hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total[0] += out.numel() * k

    def lin_hook(m, inp, out):
        total[0] += out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    model.train(was)
    for h in hooks:
        h.remove()
    return 2 * total[0] / 1e9
