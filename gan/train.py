"""The refiner: CycleGAN-style training of G: synthetic -> real and F: real -> synthetic.

Losses (Zhu et al. 2017, with the additions of the study):
- LSGAN adversarial losses against two discriminators, D_real and D_syn, each with a PatchGAN head
  and (knob `image_head`) a whole-image head, optionally class-conditional by projection
  (`conditional`: the budget's real images and the renders are both labelled) and spectrally
  normalised (`sn`); every discriminator input goes through the same differentiable augmentation
  (`augment`, DiffAugment: translation and cutout keep grey levels, brightness hides them; with
  `ada_target`, each op with a probability adapted to D_real's overfitting, as in ADA), an R1
  penalty on real inputs (`r1`) keeps the discriminators smooth and a LeCam term (`lecam`) keeps
  their scores on real and fake images from running apart where real images are few; they learn
  at their own rate (`lr_d`, two time scales) and `d_steps` times per generator step;
- G = appearance ∘ warp (`warp`): a smooth displacement field of at most `warp_max_px` pixels,
  predicted from the render and a noise map, moves the strokes; λ_smooth penalises the field's
  squared gradient; with `warp_centred` the field cannot shift the whole digit (it has no mean
  shift before its bound); the warp may learn at its own rate (`lr_warp`), and with `shape_d` a third
  discriminator, D_shape, scores real digits against warped renders, both thresholded softly at
  mid-grey (`shape_view`): shape alone, before the appearance step can repaint it, so its loss
  reaches the warp and nothing else;
- cycle consistency, λ_cycle · (|F(G(x)) - W(x)| + |A(F(y)) - y|), λ_cycle = 10, with W the warp and
  A the appearance step: the cycle asks F to undo the repainting, not the deliberate warp;
- identity, λ_cycle · λ_identity · (|A(y) - y| + |F(x) - x|);
- SimGAN's self-regularisation, λ_reg · |G(x) - W(x)| (Shrivastava et al. 2017): the appearance
  step keeps the digit where the warp put it;
- CyCADA's semantic consistency, λ_sem · CE(C(G(x)), label(x)) (Hoffman et al. 2018), with C a
  frozen classifier trained on the labelled renders: G must not turn a 4 into a 9. With
  `feature_head`, each discriminator also scores C's penultimate features, frozen, by a linear
  head of its own.
With `tone_first`, the renders first go through the tone curve fitted on the training real images
(renderers/tone.py), stored in G, so the GAN starts from the lookup table's grey levels.
Discriminators learn from an image pool of 50 past fakes (Shrivastava et al.; Zhu et al.); Adam
(β = (0.5, 0.999)) with a learning rate constant for the first half and decaying linearly to zero
over the second; with `ema`, G's weights are finally the moving average of its weights over the
steps (Yazıcı et al. 2019; Karras et al. 2018), which smooths what the last steps' updates leave
in its output. `holdout` real images are kept out of training: every log, the discriminator's
accuracy on them against refined renders (`d_accuracy`) says whether it still teaches (0.5 = chance);
with `val` real images from outside the budget, the same accuracy on them (`d_accuracy_val`), which
stays measurable where the budget leaves only a few images to hold out (11 of 55). Both are measured
by gan/measure.py, which also draws the input | warped | G(x) | F(G(x)) grids for TensorBoard.
Images are [-1, 1] floats inside, uint8 [N, C, H, W] outside.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan.diffaugment import ADA_INTERVAL, OPS, adapt, diff_augment
from gan.losses import adversarial, lecam, r1_penalty, realness, smoothness
from gan.measure import held_out_accuracy, triptych
from gan.networks import (Refiner, discriminator, generator, init_warp, init_weights, shape_view,
                          to_signed, warp_image)
from gan.pool import ImagePool

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


DEFAULTS = asdict(RefinerConfig())
NETS = ("G", "F", "D_real", "D_syn")
ARCH = ("width", "blocks", "d_width", "warp", "warp_max_px", "warp_centred", "head", "upsample")


def make_nets(shape: tuple, cfg: dict, features: nn.Module | None = None) -> dict[str, nn.Module]:
    """G, F and the two discriminators (three with `shape_d`) for images of `shape` (C, H, W);
    `features` (frozen, [0, 1] images to vectors) gives D_real and D_syn a feature head."""
    channels = shape[0]
    d = {"classes": 10 if cfg["conditional"] else 0, "sn": cfg["sn"],
         "image_head": cfg["image_head"], "grey_head": cfg["grey_head"],
         "pixels": shape[1] * shape[2]}
    if features is not None:
        with torch.no_grad():
            probe = torch.zeros(1, *shape, device=next(features.parameters()).device)
            d |= {"features": features, "feature_dim": features(probe).shape[1]}
    return {"G": init_warp(init_weights(Refiner(channels, cfg["width"], cfg["blocks"], cfg["warp"],
                                                cfg["warp_max_px"], head=cfg["head"],
                                                upsample=cfg["upsample"],
                                                centred=cfg["warp_centred"]))),
            "F": init_weights(generator(channels, cfg["width"], cfg["blocks"], cfg["head"],
                                        cfg["upsample"])),
            "D_real": init_weights(discriminator(channels, cfg["d_width"], **d)),
            "D_syn": init_weights(discriminator(channels, cfg["d_width"], **d)),
            **({"D_shape": init_weights(discriminator(
                channels, cfg["d_width"], classes=d["classes"], sn=cfg["sn"],
                image_head=cfg["image_head"]))} if cfg["shape_d"] else {})}


def linear_decay(steps: int):
    """Learning-rate factor: 1 for the first half of training, then linearly down to 0."""
    half = steps // 2
    return lambda step: 1.0 if step < half else max(0.0, 1.0 - (step - half) / max(1, steps - half))


def train_refiner(real: np.ndarray, synthetic: np.ndarray, labels: np.ndarray | None, cfg: dict,
                  seed: int, device: torch.device, progress=None, writer=None,
                  classifier: nn.Module | None = None, real_labels: np.ndarray | None = None,
                  batches=None, val: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[dict[str, nn.Module], list[dict]]:
    """Train G, F, D_real and D_syn (and D_shape with `shape_d`) on uint8 images real
    [Nr, C, H, W] and synthetic [Ns, C, H, W].

    `labels` (of the synthetic images) and `classifier` (frozen, [0, 1] input) enable the semantic
    consistency loss; without them λ_sem is ignored. A conditional discriminator needs `labels` and
    `real_labels`. Returns the networks (eval mode) and the history, one dict every `log_every`
    steps; `writer` (a SummaryWriter) also gets losses and grids.

    The images live on the device and each batch is drawn there. `batches`, an iterator of CPU
    batches (renders, their labels, real images, their labels; images in [-1, 1]), replaces that
    draw: the reference data path of `pipeline bench` (PNG files through a DataLoader). On CUDA the
    forward passes run in bf16 autocast (losses in float32).

    `val` (uint8 real images and their labels, never trained on) adds `d_accuracy_val` to every log:
    D_real's accuracy on them against as many refined renders. It is measured in eval mode with its
    own random generator, so training is the same with or without it.
    """
    cfg = {**DEFAULTS, **cfg}
    if real.shape[1:] != synthetic.shape[1:]:
        raise ValueError(f"real images are {tuple(real.shape[1:])} but synthetic are "
                         f"{tuple(synthetic.shape[1:])}; the refiner needs one size")
    if cfg["conditional"] and (labels is None or real_labels is None):
        raise ValueError("a conditional discriminator needs labelled real and synthetic images; "
                         "give labelled ImageSets or set conditional=false")
    if batches is not None and cfg["tone_first"]:
        raise ValueError("given batches bypass the tone curve: set tone_first = false")
    unknown = [a for a in cfg["augment"] if a not in OPS]
    if unknown:
        raise ValueError(f"augment: unknown op(s) {unknown}; known: {', '.join(OPS)}")
    if cfg["feature_head"] and (classifier is None or labels is None or cfg["lambda_sem"] <= 0):
        raise ValueError("feature_head needs the classifier of the labelled renders: give labels "
                         "and lambda_sem > 0, or set feature_head = false")
    for knob, why in (("shape_d", "teaches the warp and nothing else"),
                      ("warp_centred", "shapes the warp's field")):
        if cfg[knob] and not cfg["warp"]:
            raise ValueError(f"{knob} {why}: set warp = true, or {knob} = false")
    if classifier is not None:
        classifier.to(device).eval().requires_grad_(False)
    # with feature_head, the classifier without its last layer (and the dropout before it)
    features = nn.Sequential(*list(classifier.children())[:-2]) if cfg["feature_head"] else None
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    nets = {k: v.to(device).train() for k, v in make_nets(real.shape[1:], cfg, features).items()}
    warp_params = [p for k, p in nets["G"].named_parameters() if k.startswith("warp")]
    rest = [p for k, p in nets["G"].named_parameters() if not k.startswith("warp")]
    opt_g = torch.optim.Adam([{"params": [*rest, *nets["F"].parameters()]},
                              {"params": warp_params, "lr": cfg["lr_warp"] or cfg["lr"]}],
                             lr=cfg["lr"], betas=(cfg["beta1"], 0.999))
    opt_d = torch.optim.Adam([p for k in nets if k.startswith("D_") for p in nets[k].parameters()],
                             lr=cfg["lr_d"], betas=(cfg["beta1"], 0.999))
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, linear_decay(cfg["steps"])) for o in (opt_g, opt_d)]
    pools = {k: ImagePool(cfg["pool_size"], torch.Generator().manual_seed(seed + i))
             for i, k in enumerate(("real", "syn"))}
    # real images held out of training, to measure whether the discriminator generalises
    order = np.random.default_rng(seed).permutation(len(real))
    n_hold = min(cfg["holdout"], len(real) // 5)
    hold, train = order[:n_hold], order[n_hold:]
    real_t = torch.as_tensor(real[train], device=device)
    hold_t = torch.as_tensor(real[hold], device=device)
    no_labels = torch.zeros(len(real), dtype=torch.long)
    rlab = torch.as_tensor(real_labels if real_labels is not None else no_labels, device=device)
    rlab_t, hold_lab = rlab[torch.as_tensor(train, device=device)], rlab[torch.as_tensor(hold, device=device)]
    if cfg["tone_first"]:  # G starts from the renders with the real images' grey levels
        from renderers.tone import fit_tone_curve
        nets["G"].tone.copy_(torch.as_tensor(fit_tone_curve(synthetic, real[train])))
    syn_t = nets["G"].tone[torch.as_tensor(synthetic, device=device).long()]
    lab_t = torch.as_tensor(labels if labels is not None else np.zeros(len(synthetic), np.int64),
                            device=device)
    probe = torch.randint(len(syn_t), (max(n_hold, 1),), generator=gen, device=device)
    if val is not None:
        val_gen = torch.Generator(device=device).manual_seed(seed + 1)
        val_t, val_lab = (torch.as_tensor(a, device=device) for a in val)
        val_probe = torch.randint(len(syn_t), (len(val_t),), generator=val_gen, device=device)
    use_sem = classifier is not None and labels is not None and cfg["lambda_sem"] > 0
    ema = [p.detach().clone() for p in nets["G"].parameters()] if cfg["ema"] > 0 else None

    ada_p, called_real = (0.0 if cfg["ada_target"] > 0 else 1.0), []  # ADA's p and its signal
    # LeCam's moving averages of each discriminator's heads' scores
    averages = {k: {} for k in nets if k.startswith("D_")}

    def aug(x):
        return diff_augment(x, cfg["augment"], gen, ada_p) if cfg["augment"] else x

    def cond(lab):
        return lab if cfg["conditional"] else None

    G, Fn, D_real, D_syn = (nets[k] for k in NETS)
    D_shape = nets.get("D_shape")
    discriminators = [D_real, D_syn] + ([D_shape] if D_shape is not None else [])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    lc, li = cfg["lambda_cycle"], cfg["lambda_cycle"] * cfg["lambda_identity"]
    history = []

    def draw():
        """A batch of renders and of real images, with their labels, in [-1, 1]."""
        if batches is not None:
            return tuple(t.to(device, non_blocking=True) for t in next(batches))
        i_syn = torch.randint(len(syn_t), (cfg["batch_size"],), generator=gen, device=device)
        i_real = torch.randint(len(real_t), (cfg["batch_size"],), generator=gen, device=device)
        return to_signed(syn_t[i_syn]), lab_t[i_syn], to_signed(real_t[i_real]), rlab_t[i_real]

    for step in range(cfg["steps"]):
        x, lx, y, ly = draw()

        # generators
        for D in discriminators:
            D.requires_grad_(False)
        with autocast:
            z = G.noise_like(x, gen) if G.warp is not None else None
            warped, field, fake_y = G.parts(x, z)
            fake_x = Fn(y)
            losses = {"gan_G": adversarial(D_real(aug(fake_y), cond(lx)), 1.0),
                      "gan_F": adversarial(D_syn(aug(fake_x), cond(ly)), 1.0),
                      "cycle": F.l1_loss(Fn(fake_y), warped) + F.l1_loss(G.appearance(fake_x), y)}
            total = losses["gan_G"] + losses["gan_F"] + lc * losses["cycle"]
            if li > 0:
                losses["identity"] = F.l1_loss(G.appearance(y), y) + F.l1_loss(Fn(x), x)
                total = total + li * losses["identity"]
            if cfg["lambda_reg"] > 0:
                losses["self_reg"] = F.l1_loss(fake_y, warped)
                total = total + cfg["lambda_reg"] * losses["self_reg"]
            if D_shape is not None:  # only the warp reaches this loss
                losses["gan_shape"] = adversarial(D_shape(aug(shape_view(warped)), cond(lx)), 1.0)
                total = total + losses["gan_shape"]
            if field is not None:
                losses["smooth"] = smoothness(field)
                total = total + cfg["lambda_smooth"] * losses["smooth"]
            if use_sem:
                losses["semantic"] = F.cross_entropy(classifier((fake_y + 1) / 2), lx)
                total = total + cfg["lambda_sem"] * losses["semantic"]
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()
        if ema is not None:
            ema_step(ema, G, cfg["ema"], step)

        # discriminators, on fresh real images and pooled fakes
        for D in discriminators:
            D.requires_grad_(True)
        fakes = {"real": pools["real"].query(fake_y, lx), "syn": pools["syn"].query(fake_x, ly)}
        xd, lxd, yd, lyd, warped_d = x, lx, y, ly, warped.detach()
        for extra in range(cfg["d_steps"]):
            if extra:  # fresh images against past fakes drawn from the pools
                xd, lxd, yd, lyd = draw()
                fakes = {k: pools[k].sample(len(yd)) or fakes[k] for k in fakes}
                if D_shape is not None:
                    with torch.no_grad(), autocast:
                        warped_d = warp_image(xd, G.field(xd, G.noise_like(xd, gen)))
            (old_y, old_lx), (old_x, old_ly) = fakes["real"], fakes["syn"]
            with autocast:
                scores = {"D_real": (D_real(aug(yd), cond(lyd)), D_real(aug(old_y), cond(old_lx))),
                          "D_syn": (D_syn(aug(xd), cond(lxd)), D_syn(aug(old_x), cond(old_ly)))}
                if D_shape is not None:
                    scores["D_shape"] = (D_shape(aug(shape_view(yd)), cond(lyd)),
                                         D_shape(aug(shape_view(warped_d)), cond(lxd)))
                for k, (on_real, on_fake) in scores.items():
                    losses[k] = 0.5 * (adversarial(on_real, 1.0) + adversarial(on_fake, 0.0))
                real_scores = scores["D_real"][0]
                d_total = sum(losses[k] for k in scores)
                if cfg["lecam"] > 0:
                    losses["lecam"] = sum(lecam(*scores[k], averages[k]) for k in scores)
                    d_total = d_total + cfg["lecam"] * losses["lecam"]
                if cfg["r1"] > 0:
                    losses["r1"] = (r1_penalty(D_real, aug(yd), cond(lyd))
                                    + r1_penalty(D_syn, aug(xd), cond(lxd)))
                    d_total = d_total + cfg["r1"] / 2 * losses["r1"]
            opt_d.zero_grad(set_to_none=True)
            d_total.backward()
            opt_d.step()
        for s in scheds:
            s.step()
        if cfg["ada_target"] > 0:  # ADA's overfitting signal r_t, on D_real's training images
            called_real.append((realness(real_scores).detach() > 0.5).float().mean())
            if len(called_real) == ADA_INTERVAL:  # one host sync every ADA_INTERVAL steps
                ada_p = adapt(ada_p, float(torch.stack(called_real).mean()), cfg["ada_target"])
                called_real = []

        last = step + 1 == cfg["steps"]
        if (step + 1) % cfg["log_every"] == 0 or last:
            row = {"step": step + 1, **{k: v.item() for k, v in losses.items()}}
            if field is not None:
                row["field_px"] = field.norm(dim=1).mean().item()
            if cfg["ada_target"] > 0:
                row["augment_p"] = ada_p
            if n_hold:
                row["d_accuracy"] = held_out_accuracy(G, D_real, hold_t, cond(hold_lab),
                                                      syn_t[probe], cond(lab_t[probe]), gen)
            if val is not None:  # eval mode: no power iteration of the spectral norms
                D_real.eval()
                row["d_accuracy_val"] = held_out_accuracy(G, D_real, val_t, cond(val_lab),
                                                          syn_t[val_probe], cond(lab_t[val_probe]),
                                                          val_gen)
                D_real.train()
                if D_shape is not None:  # the shape discriminator on the warped renders
                    D_shape.eval()
                    row["d_shape_accuracy_val"] = held_out_accuracy(
                        G, D_shape, val_t, cond(val_lab), syn_t[val_probe], cond(lab_t[val_probe]),
                        val_gen, shape=True)
                    D_shape.train()
            if not all(math.isfinite(v) for v in row.values()):
                raise FloatingPointError(f"refiner losses diverged at step {step + 1}: {row}")
            history.append(row)
            if writer is not None:
                for k, v in row.items():
                    if k != "step":
                        writer.add_scalar(f"refiner/{k}", v, step + 1)
                with torch.no_grad():
                    grid = triptych(x, warped, fake_y, Fn(fake_y))
                writer.add_image("refiner/input|warped|G(x)|F(G(x))", grid, step + 1)
        if progress is not None and ((step + 1) % 10 == 0 or last):
            progress(step + 1, cfg["steps"])
    if ema is not None:
        with torch.no_grad():
            for p, e in zip(G.parameters(), ema):
                p.copy_(e)
    return {k: v.eval() for k, v in nets.items()}, history


@torch.no_grad()
def ema_step(ema: list[torch.Tensor], net: nn.Module, decay: float, step: int) -> None:
    """Move the averages `ema` towards `net`'s weights after optimiser step `step` (from 0). The
    decay ramps up as (1 + step) / (10 + step), so the first steps' weights soon fade."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema, net.parameters()):
        e.lerp_(p, 1 - d)
