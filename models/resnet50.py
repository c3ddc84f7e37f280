"""ResNet-50 in our own code (no torchvision), with image preprocessing inside the module.

The architecture is torchvision's ``resnet50`` (v1.5: the stride sits on the 3x3 convolution of each
bottleneck), so a parameter count or a FLOP count compares one to one. Weights are seeded random:
this model exists to measure throughput, not to classify.

Preprocessing runs on the device, inside ``forward``:

    uint8 [N, 3, H, W] --cast to the dtype of the first conv weight--> / 255 --> (x - mean) / std

The cast follows the weights, so the same module runs in fp32 and, after ``.half()``, in fp16. Keep it
that way: the module is scripted (not traced) for TorchScript, because tracing would freeze the dtype.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
RESNET50_BLOCKS: tuple[int, int, int, int] = (3, 4, 6, 3)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand, plus the identity or a projected shortcut."""

    expansion: int = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        # An empty Sequential is the identity; it keeps the module scriptable without Optional.
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.relu(out + self.shortcut(x))
        return out


def make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(in_planes, planes, stride)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet50(nn.Module):
    """uint8 images [N, 3, H, W] in, logits [N, num_classes] in the module's dtype out."""

    # Buffers. No `from __future__ import annotations` in this file: TorchScript reads these.
    mean: Tensor
    std: Tensor

    def __init__(
        self,
        num_classes: int = 1000,
        blocks: Sequence[int] = RESNET50_BLOCKS,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages: list[nn.Module] = []
        in_planes = width
        for index, count in enumerate(blocks):
            planes = width * 2**index
            stages.append(make_stage(in_planes, planes, count, stride=1 if index == 0 else 2))
            in_planes = planes * Bottleneck.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_planes, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's scheme: Kaiming-normal convolutions, unit BatchNorm, default Linear."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def preprocess(self, images: Tensor) -> Tensor:
        x = images.to(dtype=self.conv1.weight.dtype)
        return (x / 255.0 - self.mean) / self.std

    def forward(self, images: Tensor) -> Tensor:
        x = self.preprocess(images)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        logits: Tensor = self.fc(x)
        return logits


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: Tensor) -> None:
    """Set every BatchNorm's running statistics to those of one batch of ``images``.

    With random weights and the default running statistics (mean 0, variance 1), activations grow
    block by block and can overflow fp16. One pass in training mode with a cumulative average
    (momentum None) makes each layer's eval-mode output roughly zero-mean, unit-variance.
    """
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in batchnorms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    model(images)
    model.eval()
    for bn in batchnorms:
        bn.momentum = 0.1


def seeded_resnet50(seed: int = 0, calibration_batch: int = 4, image_size: int = 224) -> ResNet50:
    """The benchmark model: seeded random init, BatchNorm calibrated on seeded random images."""
    torch.manual_seed(seed)
    model = ResNet50()
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (calibration_batch, 3, image_size, image_size), generator=generator)
    calibrate_batchnorm(model, images.to(torch.uint8))
    return model.eval()
