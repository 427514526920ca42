"""The refiner's networks, sized for 28×28 digits (grayscale or RGB, any size divisible by 4).

Generator: a 7×7 stem, one stride-2 down-sampling, residual blocks at half resolution, one
up-sampling and a 7×7 head with tanh (CycleGAN's ResNet generator with a single down/up level, since
at 28×28 two levels would leave a 7×7 map). The refiner's G may put a learned warp in front of it
(`Refiner`): strokes move along a smooth displacement field, then the appearance network repaints
them (ST-GAN's geometric step, Lin et al. 2018, with Simard's smooth fields as the family of warps).

Discriminator: a trunk of two stride-2 convolutions shared by a PatchGAN head, whose 7×7 output
scores overlapping 18×18 patches of a 28×28 input, an image head that scores the whole image (what a
two-sample test sees), and a grey-level head that scores each image's pixel values sorted (its
grey-level distribution, with no shape left: what the `grey` two-sample test sees); each may be
class-conditional by projection (Miyato & Koyama 2018) and spectrally normalised (Miyato et al.
2018).

`make_nets` builds the refiner's set of them (G, F and the discriminators) from its config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch, affine=True), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch, affine=True))

    def forward(self, x):
        return x + self.body(x)


class Saturating(nn.Module):
    """1.1 · tanh + shift, clipped to [-1, top]. Unlike tanh, it reaches black exactly at a finite
    input, where most of MNIST's pixels are (about four in five are exactly 0). `shift` 0 reaches
    white exactly too (head "clip"); `shift` -0.1 only approaches it (head "black"), as MNIST, whose
    brightest pixels lie at 250–254 far more often than at 255; `top` 254/127.5 - 1 reaches 254 at
    a finite input and never 255 (head "cap")."""

    def __init__(self, shift: float = 0.0, top: float = 1.0):
        super().__init__()
        self.shift, self.top = shift, top

    def forward(self, x):
        return (1.1 * torch.tanh(x) + self.shift).clamp(-1.0, self.top)


HEADS = {"tanh": nn.Tanh, "clip": Saturating, "black": lambda: Saturating(-0.1),
         "cap": lambda: Saturating(0.0, 254 / 127.5 - 1)}


UPSAMPLES = ("transpose", "resize")


def up_sampling(w2: int, width: int, kind: str) -> list[nn.Module]:
    """Half to full resolution: a stride-2 transposed 3×3 convolution ("transpose"), whose kernel
    overlaps itself unevenly and leaves a checkerboard in the output, or nearest-neighbour resizing
    followed by a 3×3 convolution ("resize"), which cannot (Odena et al. 2016)."""
    if kind == "transpose":
        return [nn.ConvTranspose2d(w2, width, 3, stride=2, padding=1, output_padding=1)]
    if kind == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                nn.Conv2d(w2, width, 3)]
    raise ValueError(f"upsample {kind!r}: choose one of {', '.join(UPSAMPLES)}")


def generator(channels: int = 1, width: int = 16, blocks: int = 4,
              head: str = "tanh", upsample: str = "transpose") -> nn.Sequential:
    """Images in [-1, 1] -> images in [-1, 1] of the same shape; the output head is one of `HEADS`:
    tanh (never reaches black or white), clip (reaches both), black (reaches black only) or cap
    (reaches black and 254, never 255); `upsample` one of `UPSAMPLES`."""
    if head not in HEADS:
        raise ValueError(f"head {head!r}: choose one of {', '.join(HEADS)}")
    w2 = 2 * width
    return nn.Sequential(
        nn.ReflectionPad2d(3), nn.Conv2d(channels, width, 7), nn.InstanceNorm2d(width, affine=True),
        nn.ReLU(True),
        nn.Conv2d(width, w2, 3, stride=2, padding=1), nn.InstanceNorm2d(w2, affine=True), nn.ReLU(True),
        *[ResBlock(w2) for _ in range(blocks)],
        *up_sampling(w2, width, upsample), nn.InstanceNorm2d(width, affine=True), nn.ReLU(True),
        nn.ReflectionPad2d(3), nn.Conv2d(width, channels, 7), HEADS[head]())


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float in [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8."""
    return x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def shape_view(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] thresholded softly at mid-grey: ink or paper, whatever its grey level, with
    a gradient left at the strokes' edges (what the shape discriminator sees)."""
    return torch.tanh(5.0 * x)


def warp_image(x: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Sample x [N, C, H, W] at each pixel's centre plus `field` [N, 2, H, W] (x, y displacement in
    pixels); a zero field returns x exactly, and ink moved in from outside the image is black (-1)."""
    n, _, h, w = x.shape
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx + field[:, 0] * 2 / w, gy + field[:, 1] * 2 / h], -1)
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


class Refiner(nn.Module):
    """G = appearance ∘ warp (∘ tone). The warp network reads the image and a noise map and predicts a
    displacement field at a quarter of the resolution, bounded by tanh to ±`max_px` pixels and
    up-sampled bilinearly (so it is smooth by construction); its last layer starts at zero, so a
    fresh refiner does not move strokes. With `centred`, each image's mean of the network's output
    is taken away before the bound: the warp deforms strokes but cannot shift the whole digit, which
    MNIST centres by its centre of mass (and a shift is free to drift: the discriminators' random
    translations hide it and the smoothness term does not see it). Without a warp, G is the
    appearance network alone. The buffer `tone` is a 256-entry lookup table that `refine` applies to
    the uint8 renders first (the identity unless training fitted one, knob `tone_first`)."""

    def __init__(self, channels: int = 1, width: int = 16, blocks: int = 4, warp: bool = False,
                 max_px: float = 2.0, noise: int = 4, head: str = "tanh",
                 upsample: str = "transpose", centred: bool = False):
        super().__init__()
        self.appearance = generator(channels, width, blocks, head, upsample)
        self.channels, self.max_px, self.noise, self.centred = channels, max_px, noise, centred
        # a tone curve applied to the uint8 input before anything else (identity unless fitted)
        self.register_buffer("tone", torch.arange(256, dtype=torch.uint8))
        self.warp = None
        if warp:
            w2 = 2 * width
            self.warp_body = nn.Sequential(
                nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2, True),
                nn.Conv2d(width, w2, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True),
                nn.Conv2d(w2, w2, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True))
            self.warp = nn.Sequential(
                nn.Conv2d(w2 + noise, w2, 3, padding=1), nn.LeakyReLU(0.2, True),
                nn.Conv2d(w2, 2, 3, padding=1))

    def noise_like(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        h, w = x.shape[-2] // 4, x.shape[-1] // 4
        return torch.randn(len(x), self.noise, h, w, generator=gen, device=x.device, dtype=x.dtype)

    def field(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """The displacement field [N, 2, H, W] in pixels, |each component| < max_px."""
        if self.warp is None:
            return x.new_zeros(len(x), 2, *x.shape[-2:])
        z = torch.zeros_like(self.noise_like(x)) if z is None else z
        raw = self.warp(torch.cat([self.warp_body(x), z], 1))
        if self.centred:
            raw = raw - raw.mean((2, 3), keepdim=True)
        low = torch.tanh(raw) * self.max_px
        return F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def parts(self, x: torch.Tensor, z: torch.Tensor | None = None):
        """(warped x, field, G(x)): the appearance step applied to the warped image."""
        if self.warp is None:
            return x, None, self.appearance(x)
        field = self.field(x, z)
        warped = warp_image(x, field)
        return warped, field, self.appearance(warped)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return self.parts(x, z)[2]


def init_warp(net: Refiner) -> Refiner:
    """The warp's last layer at zero: training starts from the identity warp."""
    if net.warp is not None:
        nn.init.zeros_(net.warp[-1].weight)
        nn.init.zeros_(net.warp[-1].bias)
    return net


class Discriminator(nn.Module):
    """[N, C, H, W] (+ labels) -> (patch scores [N, 1, H/4, W/4], image score [N] or None, grey-level
    score [N] or None, feature score [N] or None). LSGAN targets: 1 real, 0 fake. No normalisation
    layer: instance norm would let every patch score see the whole image's statistics, and batch
    norm couples real and fake.

    The grey-level head reads each image's pixel values sorted, channel by channel (a permutation of
    its pixels, so the gradient reaches every pixel): a small MLP on the H·W order statistics, the
    view of the `grey` two-sample test (docs/results/refiner-ablations.md says what it changed).

    The feature head is one linear layer (and its label projection) on `features`, a frozen network
    given from outside that maps [0, 1] images to vectors (the refiner's classifier of the renders
    without its last layer). It is kept out of the module's parameters and state: the
    discriminator's optimiser, its train/eval mode and its saved weights never touch it."""

    def __init__(self, channels: int = 1, width: int = 32, classes: int = 0, sn: bool = False,
                 image_head: bool = False, grey_head: bool = False, pixels: int = 28 * 28,
                 features: nn.Module | None = None, feature_dim: int = 0):
        super().__init__()
        wrap = spectral_norm if sn else (lambda m: m)
        w2, w4 = 2 * width, 4 * width
        self.trunk = nn.Sequential(
            wrap(nn.Conv2d(channels, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, True),
            wrap(nn.Conv2d(width, w2, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, True))
        self.patch = wrap(nn.Conv2d(w2, 1, 3, stride=1, padding=1))
        self.deep = self.linear = self.grey = self.grey_linear = None
        if image_head:
            self.deep = nn.Sequential(wrap(nn.Conv2d(w2, w4, 3, stride=2, padding=1)),
                                      nn.LeakyReLU(0.2, True))
            self.linear = wrap(nn.Linear(w4, 1))
        if grey_head:
            self.grey = nn.Sequential(wrap(nn.Linear(channels * pixels, w4)), nn.LeakyReLU(0.2, True),
                                      wrap(nn.Linear(w4, w4)), nn.LeakyReLU(0.2, True))
            self.grey_linear = wrap(nn.Linear(w4, 1))
        self._features = (features,)  # a tuple: not registered as a submodule
        self.feature_linear = wrap(nn.Linear(feature_dim, 1)) if features is not None else None
        self.embed_patch = self.embed_image = self.embed_grey = self.embed_feature = None
        if classes:
            self.embed_patch = wrap(nn.Embedding(classes, w2))
            if image_head:
                self.embed_image = wrap(nn.Embedding(classes, w4))
            if grey_head:
                self.embed_grey = wrap(nn.Embedding(classes, w4))
            if features is not None:
                self.embed_feature = wrap(nn.Embedding(classes, feature_dim))

    @staticmethod
    def _project(linear, embed, g, labels):
        score = linear(g)[:, 0]
        return score if embed is None else score + (embed(labels) * g).sum(1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        h = self.trunk(x)
        patch = self.patch(h)
        if self.embed_patch is not None:
            patch = patch + (self.embed_patch(labels)[:, :, None, None] * h).sum(1, keepdim=True)
        image = grey = feature = None
        if self.deep is not None:
            g = self.deep(h).sum((2, 3))  # sum pooling, as in the projection discriminator
            image = self._project(self.linear, self.embed_image, g, labels)
        if self.grey is not None:
            g = self.grey(x.flatten(2).sort(-1).values.flatten(1))
            grey = self._project(self.grey_linear, self.embed_grey, g, labels)
        if self.feature_linear is not None:
            g = self._features[0]((x + 1) / 2)
            feature = self._project(self.feature_linear, self.embed_feature, g, labels)
        return patch, image, grey, feature


def discriminator(channels: int = 1, width: int = 32, **kw) -> Discriminator:
    return Discriminator(channels, width, **kw)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """CycleGAN's initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02), zero biases."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            with torch.no_grad():
                weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") \
                    else m.weight
                nn.init.normal_(weight, 0.0, gain)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.InstanceNorm2d) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def make_nets(shape: tuple, cfg, features: nn.Module | None = None) -> dict[str, nn.Module]:
    """G, F and the two discriminators (three with `shape_d`) for images of `shape` (C, H, W), as
    `cfg` (gan/config.py's RefinerConfig) sizes them; `features` (frozen, [0, 1] images to vectors)
    gives D_real and D_syn a feature head."""
    channels = shape[0]
    d = {"classes": 10 if cfg.conditional else 0, "sn": cfg.sn, "image_head": cfg.image_head,
         "grey_head": cfg.grey_head, "pixels": shape[1] * shape[2]}
    if features is not None:
        with torch.no_grad():
            probe = torch.zeros(1, *shape, device=next(features.parameters()).device)
            d |= {"features": features, "feature_dim": features(probe).shape[1]}
    return {"G": init_warp(init_weights(Refiner(channels, cfg.width, cfg.blocks, cfg.warp,
                                                cfg.warp_max_px, head=cfg.head,
                                                upsample=cfg.upsample, centred=cfg.warp_centred))),
            "F": init_weights(generator(channels, cfg.width, cfg.blocks, cfg.head, cfg.upsample)),
            "D_real": init_weights(discriminator(channels, cfg.d_width, **d)),
            "D_syn": init_weights(discriminator(channels, cfg.d_width, **d)),
            **({"D_shape": init_weights(discriminator(
                channels, cfg.d_width, classes=d["classes"], sn=cfg.sn,
                image_head=cfg.image_head))} if cfg.shape_d else {})}
