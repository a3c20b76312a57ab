"""A small PyTorch AsymmNet for equivalence tests, written for this project.

Module and state_dict key names follow the public PyTorch port of the authors
(Spark001/AsymmNet, `pytorch/asymmnet.py`): `first_block.{0,1}`, `asymm_block.{i}`
(`expand`, `dw_conv`, `se.out.{0,2}`, `pw_conv_linear`, each `.conv` / `.bn`),
`last_block.{0,1,4}` and `output`, so its state_dict is a stand-in for that port's
checkpoints.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

# (kernel, expanded, out, se, activation, stride), as in the reference configuration.
LARGE = ((3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2),
         (3, 72, 24, False, "relu", 1), (5, 72, 40, True, "relu", 2),
         (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
         (3, 240, 80, False, "hard_swish", 2), (3, 200, 80, False, "hard_swish", 1),
         (3, 184, 80, False, "hard_swish", 1), (3, 184, 80, False, "hard_swish", 1),
         (3, 480, 112, True, "hard_swish", 1), (3, 672, 112, True, "hard_swish", 1),
         (5, 672, 160, True, "hard_swish", 2), (5, 960, 160, True, "hard_swish", 1),
         (5, 960, 160, True, "hard_swish", 1))
SMALL = ((3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2),
         (3, 88, 24, False, "relu", 1), (5, 96, 40, True, "hard_swish", 2),
         (5, 240, 40, True, "hard_swish", 1), (5, 240, 40, True, "hard_swish", 1),
         (5, 120, 48, True, "hard_swish", 1), (5, 144, 48, True, "hard_swish", 1),
         (5, 288, 96, True, "hard_swish", 2), (5, 576, 96, True, "hard_swish", 1),
         (5, 576, 96, True, "hard_swish", 1))
CONFIGS = {"large": (LARGE, 960), "small": (SMALL, 576)}


def round8(x):
    return int(math.ceil(x / 8) * 8)


def act_module(kind):
    return nn.ReLU() if kind == "relu" else nn.Hardswish()


class Unit(nn.Module):
    def __init__(self, cin, cout, kernel=1, stride=1, groups=1, act=None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act_module(act) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class SE(nn.Module):
    def __init__(self, channels):
        super().__init__()
        reduced = round8(channels // 4)
        self.out = nn.Sequential(nn.Conv2d(channels, reduced, 1), nn.ReLU(),
                                 nn.Conv2d(reduced, channels, 1), nn.Hardsigmoid())

    def forward(self, x):
        return x * self.out(F.adaptive_avg_pool2d(x, 1))


class AsymmBottleneck(nn.Module):
    def __init__(self, cin, mid, cout, kernel, rate, act, se, stride):
        super().__init__()
        self.rate = rate
        self.residual = cin == cout and stride == 1
        self.do_expand = mid > max(cin, rate * cin)
        if self.do_expand:
            self.expand = Unit(cin, mid - rate * cin, act=act)
            mid += rate * cin
        self.dw_conv = Unit(mid, mid, kernel, stride, groups=mid, act=act)
        self.se = SE(mid) if se else None
        self.pw_conv_linear = Unit(mid, cout)

    def forward(self, x):
        out = x
        if self.do_expand:
            out = torch.cat([x] * self.rate + [self.expand(x)] + [x] * self.rate, dim=1)
        out = self.dw_conv(out)
        if self.se is not None:
            out = self.se(out)
        out = self.pw_conv_linear(out)
        return x + out if self.residual else out


class AsymmNet(nn.Module):
    def __init__(self, mode="large", multiplier=1.0, rate=1, num_classes=1000):
        super().__init__()
        table, squeeze = CONFIGS[mode]
        cin = round8(16 * multiplier)
        self.first_block = nn.Sequential(nn.Conv2d(3, cin, 3, 2, 1, bias=False),
                                         nn.BatchNorm2d(cin), nn.Hardswish())
        blocks = []
        for kernel, mid, cout, se, act, stride in table:
            cout = round8(cout * multiplier)
            blocks.append(AsymmBottleneck(cin, round8(mid * multiplier), cout, kernel, rate,
                                          act, se, stride))
            cin = cout
        self.asymm_block = nn.Sequential(*blocks)
        squeeze = round8(squeeze * multiplier)
        self.last_block = nn.Sequential(
            nn.Conv2d(cin, squeeze, 1, bias=False), nn.BatchNorm2d(squeeze), nn.Hardswish(),
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(squeeze, 1280, 1, bias=False), nn.Hardswish(),
            nn.Dropout2d(0.2), nn.Flatten())
        self.output = nn.Linear(1280, num_classes)

    def forward(self, x):
        return self.output(self.last_block(self.asymm_block(self.first_block(x))))
