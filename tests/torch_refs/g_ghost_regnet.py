"""A small PyTorch G-GhostNet for equivalence tests, written for this project.

Written from the architecture description (../shared/reference/ARCHITECTURES.md) and the
module names of the released `g_ghost_pytorch/g_ghost_regnet.py` (huawei-noah
Efficient-AI-Backbones): `conv1`/`bn1` stem, `layer{1..4}`, G-Ghost stages with `base`,
`layers.{i}`, `cheap.{0,1}`, `merge.{1,2,4,5}`, `end`, blocks with `conv{i}`/`bn{i}`/
`downsample.{0,1}`, and `fc`. Its state_dict therefore stands in for the released
checkpoints. The ResNet34 variant keeps torchvision's key names.
"""

import torch
from torch import nn

# variant -> (group width, ((depth, filters) per stage)); RegNetX configs of the paper.
REGNETX = {
    "002": (8, ((1, 24), (1, 56), (4, 152), (7, 368))),
    "032": (48, ((2, 96), (6, 192), (15, 432), (2, 1008))),
}
RESNET34 = ((3, 64), (4, 128), (6, 256), (3, 512))


def _bn(channels):
    return nn.BatchNorm2d(channels)


def _projection(in_channels, out_channels, stride):
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                         _bn(out_channels))


class XBlock(nn.Module):
    """RegNetX bottleneck, bottleneck ratio 1."""

    def __init__(self, in_channels, channels, stride=1, group_width=1):
        super().__init__()
        groups = channels // min(channels, group_width)
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = _bn(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = _bn(channels)
        self.conv3 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn3 = _bn(channels)
        self.downsample = _projection(in_channels, channels, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class BasicBlock(nn.Module):
    """ResNet basic block (torchvision key names)."""

    def __init__(self, in_channels, channels, stride=1, group_width=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = _bn(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = _bn(channels)
        self.downsample = _projection(in_channels, channels, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class GGhostStage(nn.Module):
    def __init__(self, block, in_channels, channels, depth, stride, group_width, mix=True,
                 cheap_ratio=0.5):
        super().__init__()
        self.base = block(in_channels, channels, stride, group_width)
        self.end = block(channels, channels, 1, group_width)
        narrow = int(group_width * 0.75) if group_width else None
        multiple = narrow or 1
        self.raw = int(channels * (1 - cheap_ratio) / multiple) * multiple
        cheap = channels - self.raw
        self.layers = nn.Sequential(*[block(self.raw, self.raw, 1, narrow)
                                      for _ in range(depth - 2)])
        self.cheap = nn.Sequential(nn.Conv2d(cheap, cheap, 1, bias=False), _bn(cheap))
        self.merge = None
        if mix:
            self.merge = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(channels + self.raw * (depth - 2), cheap, 1, bias=False), _bn(cheap),
                nn.ReLU(),
                nn.Conv2d(cheap, cheap, 1, bias=False), _bn(cheap))

    def forward(self, x):
        x0 = self.base(x)
        features = [x0]
        e = x0[:, :self.raw]
        for layer in self.layers:
            e = layer(e)
            features.append(e)
        c = self.cheap(x0[:, self.raw:])
        if self.merge is not None:
            c = c + self.merge(torch.cat(features, 1))
        return self.end(torch.cat([e, torch.relu(c)], 1))


class Net(nn.Module):
    def __init__(self, block, stages, group_width, resnet_stem, g_ghost=True, mix=True,
                 num_classes=1000):
        super().__init__()
        stem = 64 if resnet_stem else 32
        kernel = 7 if resnet_stem else 3
        self.conv1 = nn.Conv2d(3, stem, kernel, 2, kernel // 2, bias=False)
        self.bn1 = _bn(stem)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if resnet_stem else nn.Identity()
        in_channels = stem
        for index, (depth, channels) in enumerate(stages, start=1):
            stride = 1 if resnet_stem and index == 1 else 2
            if g_ghost and index > 1 and depth > 2:
                layer = GGhostStage(block, in_channels, channels, depth, stride, group_width, mix)
            else:
                layer = nn.Sequential(*[
                    block(in_channels if i == 0 else channels, channels,
                          stride if i == 0 else 1, group_width) for i in range(depth)])
            setattr(self, f"layer{index}", layer)
            in_channels = channels
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def g_ghost_regnetx(variant, **kwargs):
    group_width, stages = REGNETX[variant]
    return Net(XBlock, stages, group_width, resnet_stem=False, **kwargs)


def g_ghost_resnet34(mix=True, **kwargs):
    return Net(BasicBlock, RESNET34, None, resnet_stem=True, mix=mix, **kwargs)
