"""The refiner's networks, sized for 28×28 digits (grayscale or RGB, any size divisible by 4).

Generator: a 7×7 stem, one stride-2 down-sampling, residual blocks at half resolution, one
up-sampling and a 7×7 head with tanh (CycleGAN's ResNet generator with a single down/up level, since
at 28×28 two levels would leave a 7×7 map). Discriminator: a PatchGAN whose 7×7 output scores
overlapping 18×18 patches of a 28×28 input, so every score sees part of the digit, never all of it.
"""

from __future__ import annotations

import torch
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch, affine=True), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch, affine=True))

    def forward(self, x):
        return x + self.body(x)


def generator(channels: int = 1, width: int = 16, blocks: int = 4) -> nn.Sequential:
    """Images in [-1, 1] -> images in [-1, 1] of the same shape."""
    w2 = 2 * width
    return nn.Sequential(
        nn.ReflectionPad2d(3), nn.Conv2d(channels, width, 7), nn.InstanceNorm2d(width, affine=True),
        nn.ReLU(True),
        nn.Conv2d(width, w2, 3, stride=2, padding=1), nn.InstanceNorm2d(w2, affine=True), nn.ReLU(True),
        *[ResBlock(w2) for _ in range(blocks)],
        nn.ConvTranspose2d(w2, width, 3, stride=2, padding=1, output_padding=1),
        nn.InstanceNorm2d(width, affine=True), nn.ReLU(True),
        nn.ReflectionPad2d(3), nn.Conv2d(width, channels, 7), nn.Tanh())


def discriminator(channels: int = 1, width: int = 32) -> nn.Sequential:
    """PatchGAN: [N, C, 28, 28] -> [N, 1, 7, 7] raw scores (LSGAN targets 1 real, 0 fake).
    Receptive field of one score: 4 + 3·2 + 2·4 = 18 pixels. No normalisation layer: instance norm
    would let every score see the whole image's statistics, and batch norm couples real and fake."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True),
        nn.Conv2d(2 * width, 1, 3, stride=1, padding=1))


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """CycleGAN's initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02), zero biases."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.InstanceNorm2d) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


if __name__ == "__main__":  # shapes at a glance
    g, d = generator(), discriminator()
    x = torch.zeros(2, 1, 28, 28)
    print(tuple(g(x).shape), tuple(d(x).shape), count_parameters(g), count_parameters(d))
