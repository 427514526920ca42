"""[refiner]: the refiner's settings (gan/train.py says what each loss and network is), the ones
that fix its networks' shapes, and the one check of their values that `pipeline run`,
`pipeline train-refiner` and `train_refiner` all run."""

from __future__ import annotations

from dataclasses import dataclass, field

from synthgap.errors import UserError


@dataclass
class RefinerConfig:
    """[refiner]: the refiner of each budget (and the tone baseline fitted on the same images)."""
    steps: int = 1000            # optimiser steps; the learning rate decays over the second half
    batch_size: int = 32
    lr: float = 0.0002           # generators: Adam, betas (beta1, 0.999), as in CycleGAN
    lr_d: float = 0.0004         # discriminators: their own, faster rate (two time scales)
    d_steps: int = 2             # discriminator updates per generator step; each one after the
                                 # first on fresh real images and renders against past fakes
                                 # drawn from the image pool
    beta1: float = 0.5
    width: int = 16              # generator channels at full resolution (twice that inside)
    blocks: int = 3              # residual blocks at half resolution
    upsample: str = "resize"     # G's way back to full resolution (gan/networks.py UPSAMPLES):
                                 # "resize" (nearest, then a convolution) leaves no checkerboard,
                                 # "transpose" (a stride-2 transposed convolution) does
    head: str = "black"          # G's output head (gan/networks.py HEADS): "black" reaches MNIST's
                                 # exact 0 and only approaches 255, "clip" both, "tanh" neither
    d_width: int = 32            # discriminator channels: a PatchGAN head (18 x 18 patches) and
    image_head: bool = True      # a head that scores the whole image, as a two-sample test does
    grey_head: bool = False      # a head that scores each image's sorted pixel values (grey levels)
    feature_head: bool = False   # a linear head on the frozen features of the classifier of the
                                 # renders (the semantic loss's): few weights to fit a few real
                                 # images with (needs lambda_sem > 0)
    conditional: bool = True     # both heads see the digit's label (projection discriminator)
    sn: bool = True              # spectral normalisation of every discriminator layer
    r1: float = 0.0              # R1 penalty weight on real inputs (0: off)
    ema: float = 0.0             # G's weights as their exponential moving average over the steps,
                                 # with this decay (0: off, G as the last step left it; 0.999 in
                                 # Karras et al. 2018); the logs measure the G being trained
    lecam: float = 0.0           # LeCam regulariser weight (Tseng et al. 2021; 0: off): each
                                 # head's scores on real and on fake images pulled towards the
                                 # moving average of the other's, for discriminators with few
                                 # real images
    holdout: int = 64            # real images kept out to measure the discriminator's accuracy
    val_images: int = 1000       # and as many of the split's held-out real images, outside every
                                 # budget and never trained on, to measure it with (0: off)
    pool_size: int = 50          # image pool of past fakes for the discriminators
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.0  # x lambda_cycle (CycleGAN: 0.5); self-regularisation already
                                  # ties G(x) to x, and identity costs a third of a step
    lambda_reg: float = 1.0      # SimGAN self-regularisation |G(x) - x|
    lambda_sem: float = 1.0      # CyCADA semantic consistency with a classifier of the renders
    sem_steps: int = 500         # steps of that classifier
    augment: list[str] = field(default_factory=lambda: ["translation", "cutout"])  # DiffAugment
                                 # ops on every discriminator input (brightness hides grey levels)
    ada_target: float = 0.0      # adaptive augmentation (ADA): each op reaches an image with a
                                 # probability p, raised while the share of D_real's training real
                                 # images it calls real exceeds this target (0.6 in ADA), lowered
                                 # otherwise (0: off, every op always)
    warp: bool = False           # G = appearance after a learned smooth warp that may move strokes
    warp_max_px: float = 2.0     # the warp's largest displacement in pixels
    lambda_smooth: float = 1.0   # weight of the warp field's squared gradient
    lr_warp: float = 0.0         # the warp's own learning rate (0: the generators' `lr`)
    warp_centred: bool = False   # each field's mean taken away before its bound: the warp deforms
                                 # strokes but cannot shift the whole digit off MNIST's centring
    shape_d: bool = False        # a third discriminator that sees only shape (images thresholded
                                 # softly at mid-grey) and teaches only the warp: it scores the
                                 # warped render before the appearance step can repaint it
    tone_first: bool = False     # renders go through the tone baseline's curve before G
    match_levels: bool = True    # then each refined and each toned render's inked grey levels
                                 # become those of a real budget image of its digit, quantile for
                                 # quantile (renderers/tone.py match_levels; shape untouched)
    match_nearest: float = 0.1   # that image drawn from this share of its digit's real images
                                 # nearest in inked pixels (1: any image of the digit)
    variants: int = 1            # refined variants drawn per render (each with its own warp noise)
    per_seed: bool = False       # one refiner per seed's budget (false: the first seed's serves all)
    log_every: int = 100

    def semantic(self, labels) -> bool:
        """Whether CyCADA's semantic consistency is on: λ_sem > 0 and the renders labelled."""
        return self.lambda_sem > 0 and labels is not None


# the knobs that fix the networks' shapes: saved in the weights file, read back by load_generator
ARCH = ("width", "blocks", "d_width", "warp", "warp_max_px", "warp_centred", "head", "upsample")
# the knobs that act on the warp, and why they need one
WARP_KNOBS = {"shape_d": "the shape discriminator teaches the warp and nothing else",
              "warp_centred": "it centres the warp's field, and there is none without it"}


def check(cfg: RefinerConfig, where: str = "refiner") -> None:
    """UserError (a ValueError) for a value out of its range; `where` names the table that set it
    (e.g. experiment.refiner_at.55)."""
    from gan.diffaugment import OPS
    from gan.networks import HEADS, UPSAMPLES

    if cfg.variants < 1:
        raise UserError(f"{where}.variants must be at least 1, got {cfg.variants}")
    if cfg.variants > 1 and not cfg.warp:
        raise UserError(f"{where}.variants > 1 needs {where}.warp = true: only the warp has a "
                        "noise input, so without it every variant is the same image")
    for knob, why in WARP_KNOBS.items():
        if getattr(cfg, knob) and not cfg.warp:
            raise UserError(f"{where}.{knob} needs refiner.warp = true: {why}")
    if cfg.lr_warp < 0:
        raise UserError(f"{where}.lr_warp must be 0 (G's rate) or more, got {cfg.lr_warp}")
    if cfg.head not in HEADS:
        raise UserError(f"{where}.head {cfg.head!r} is not a head; choose one of {', '.join(HEADS)}")
    if cfg.upsample not in UPSAMPLES:
        raise UserError(f"{where}.upsample {cfg.upsample!r} is not a way to up-sample; choose "
                        f"one of {', '.join(UPSAMPLES)}")
    unknown = [op for op in cfg.augment if op not in OPS]
    if unknown:
        raise UserError(f"{where}.augment: {', '.join(map(repr, unknown))} is not an "
                        f"augmentation; choose from {', '.join(OPS)}")
    if cfg.d_steps < 1:
        raise UserError(f"{where}.d_steps must be at least 1 (discriminator updates per generator "
                        f"step), got {cfg.d_steps}")
    if cfg.feature_head and cfg.lambda_sem <= 0:
        raise UserError(f"{where}.feature_head needs the classifier of the renders that "
                        f"lambda_sem > 0 trains; set lambda_sem above 0 or feature_head = false")
    check_ranges(cfg, where)


def check_ranges(cfg: RefinerConfig, where: str) -> None:
    """The knobs that must lie in an interval."""
    if not 0 <= cfg.ema < 1:
        raise UserError(f"{where}.ema must be in [0, 1) (a decay; 0: off), got {cfg.ema}")
    if cfg.lecam < 0:
        raise UserError(f"{where}.lecam must be 0 (off) or more, got {cfg.lecam}")
    if cfg.val_images < 0:
        raise UserError(f"{where}.val_images must be 0 (off) or more, got {cfg.val_images}")
    if not 0 <= cfg.ada_target < 1:
        raise UserError(f"{where}.ada_target must be in [0, 1) (0: off; ADA uses 0.6), got "
                        f"{cfg.ada_target}")
    if not 0 < cfg.match_nearest <= 1:
        raise UserError(f"{where}.match_nearest must be in (0, 1] (a share of each digit's real "
                        f"images; 1: any of them), got {cfg.match_nearest}")


def check_inputs(cfg: RefinerConfig, labels, real_labels, semantic: bool) -> None:
    """UserError where the images given cannot feed these settings: a conditional discriminator
    needs labels on both sides, the feature head the semantic classifier (`semantic`: whether
    there is one)."""
    if cfg.conditional and (labels is None or real_labels is None):
        raise UserError("a conditional discriminator needs labelled real and synthetic images; "
                        "give labelled ImageSets (.npz) or set conditional = false")
    if cfg.feature_head and not semantic:
        raise UserError("feature_head needs the classifier of labelled renders: give labelled "
                        "renders and lambda_sem > 0, or set feature_head = false")
