"""The refiner: CycleGAN-style training of G: synthetic -> real and F: real -> synthetic
(docs/refiner.md says what each knob of gan/config.py does, and why).

Losses (Zhu et al. 2017, with the additions of the study):
- LSGAN adversarial losses against two discriminators, D_real and D_syn, each with a PatchGAN head
  and (`image_head`) a whole-image head, optionally class-conditional by projection (`conditional`)
  and spectrally normalised (`sn`). Every discriminator input goes through the same DiffAugment ops
  (`augment`; with `ada_target`, each op with a probability adapted to D_real's overfitting, as in
  ADA); an R1 penalty (`r1`) keeps them smooth and a LeCam term (`lecam`) keeps their scores on real
  and fake images from running apart. They learn at `lr_d`, `d_steps` times per generator step;
- G = appearance ∘ warp (`warp`): a smooth displacement field of at most `warp_max_px` pixels,
  predicted from the render and a noise map, moves the strokes; λ_smooth penalises its squared
  gradient; `warp_centred` takes its mean shift away; the warp may learn at `lr_warp`; with `shape_d`
  a third discriminator, D_shape, scores real digits against warped renders, both thresholded softly
  at mid-grey (`shape_view`), so its loss reaches the warp and nothing else;
- cycle consistency, λ_cycle · (|F(G(x)) - W(x)| + |A(F(y)) - y|), with W the warp and A the
  appearance step: the cycle asks F to undo the repainting, not the deliberate warp;
- identity, λ_cycle · λ_identity · (|A(y) - y| + |F(x) - x|);
- SimGAN's self-regularisation, λ_reg · |G(x) - W(x)| (Shrivastava et al. 2017);
- CyCADA's semantic consistency, λ_sem · CE(C(G(x)), label(x)) (Hoffman et al. 2018), C a frozen
  classifier of the labelled renders; with `feature_head`, each discriminator also scores C's
  penultimate features by a linear head of its own.
With `tone_first`, the renders first go through the tone curve fitted on the training real images
(renderers/tone.py), stored in G. Discriminators learn from an image pool of past fakes; Adam with a
learning rate constant for the first half and decaying linearly to zero over the second; with `ema`,
G's weights are finally their moving average over the steps (Yazıcı et al. 2019). Every log measures
the discriminator's accuracy on held-out real images against refined renders (gan/measure.py):
`holdout` images of the budget, and `val` images from outside it. Images are [-1, 1] floats inside,
uint8 [N, C, H, W] outside.

The loop runs in phases, as CycleGAN's (`backward_G`, then `backward_D_basic` per discriminator) and
StyleGAN2-ADA's (a loop over phases): `setup`, then every step `draw`, `generator_phase`,
`discriminator_phase` and `adapt_augmentation`, with `log_row` every `log_every` steps. Their
order is the order of the random draws, so it is part of the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan.config import RefinerConfig, check, check_inputs
from gan.diffaugment import ADA_INTERVAL, adapt, diff_augment
from gan.losses import adversarial, lecam, r1_penalty, realness, smoothness
from gan.measure import held_out_accuracy, triptych
from gan.networks import Refiner, make_nets, shape_view, to_signed, warp_image
from gan.pool import ImagePool
from synthgap.devices import Precision, default_precision


def linear_decay(steps: int):
    """Learning-rate factor: 1 for the first half of training, then linearly down to 0."""
    half = steps // 2
    return lambda step: 1.0 if step < half else max(0.0, 1.0 - (step - half) / max(1, steps - half))


@dataclass
class Training:
    """What the phases share: the settings, the networks and their optimisers, the images on the
    device, and `gen`, the generator every draw of the loop comes from. Names as in CycleGAN: G
    refines renders x into real-looking G(x), F maps real images y back; D_real scores real
    images against G(x), D_syn renders against F(y), D_shape (optional) real shapes against
    warped renders."""
    cfg: RefinerConfig
    nets: dict
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scheds: list
    pools: dict
    gen: torch.Generator
    real: torch.Tensor            # the budget's real images kept for training, and their labels
    real_labels: torch.Tensor
    renders: torch.Tensor         # the renders (through the tone curve) and their labels
    labels: torch.Tensor
    held: tuple | None            # (real images held out, their labels, renders to test against)
    val: tuple | None             # (real images from outside the budget, labels, renders, generator)
    classifier: nn.Module | None  # the frozen classifier of the renders, when λ_sem is on
    batches: object               # an iterator of batches that replaces the draw, or None
    ema: list | None              # G's weights averaged over the steps (with `ema`)
    ada_p: float                  # ADA's probability of each augmentation (1 without ADA)
    called_real: list             # ADA's signal: D_real's calls on its training real images
    averages: dict                # LeCam's moving averages of each discriminator's scores
    autocast: object              # the forward passes' autocast (bf16, or off in float32)

    def aug(self, x: torch.Tensor) -> torch.Tensor:
        """DiffAugment of a discriminator input (each op with probability `ada_p`)."""
        return diff_augment(x, self.cfg.augment, self.gen, self.ada_p) if self.cfg.augment else x

    def cond(self, labels: torch.Tensor):
        """The labels a class-conditional discriminator sees (None: unconditional)."""
        return labels if self.cfg.conditional else None


def setup(real: np.ndarray, synthetic: np.ndarray, labels, cfg: RefinerConfig, seed: int,
          device: torch.device, classifier, real_labels, batches, val,
          precision: Precision) -> Training:
    """Check the inputs, build the networks (after `torch.manual_seed(seed)`; channels-last where
    `precision` asks), their Adam optimisers (β = (β1, 0.999); the warp at `lr_warp`, the
    discriminators at `lr_d`) with linear decay, and the image pools; put the images on the
    device (`data`)."""
    check(cfg)
    if real.shape[1:] != synthetic.shape[1:]:
        raise ValueError(f"real images are {tuple(real.shape[1:])} but synthetic are "
                         f"{tuple(synthetic.shape[1:])}; the refiner needs one size")
    semantic = classifier is not None and cfg.semantic(labels)
    check_inputs(cfg, labels, real_labels, semantic)
    if batches is not None and cfg.tone_first:
        raise ValueError("given batches bypass the tone curve: set tone_first = false")
    if classifier is not None:
        classifier.to(device).eval().requires_grad_(False)
    # with feature_head, the classifier without its last layer (and the dropout before it)
    features = nn.Sequential(*list(classifier.children())[:-2]) if cfg.feature_head else None
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    nets = {k: precision.net(v.to(device)).train()
            for k, v in make_nets(real.shape[1:], cfg, features).items()}
    warp_params = [p for k, p in nets["G"].named_parameters() if k.startswith("warp")]
    rest = [p for k, p in nets["G"].named_parameters() if not k.startswith("warp")]
    opt_g = torch.optim.Adam([{"params": [*rest, *nets["F"].parameters()]},
                              {"params": warp_params, "lr": cfg.lr_warp or cfg.lr}],
                             lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam([p for k in nets if k.startswith("D_") for p in nets[k].parameters()],
                             lr=cfg.lr_d, betas=(cfg.beta1, 0.999))
    pools = {k: ImagePool(cfg.pool_size, torch.Generator().manual_seed(seed + i))
             for i, k in enumerate(("real", "syn"))}
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, linear_decay(cfg.steps)) for o in (opt_g, opt_d)]
    images = data(real, synthetic, labels, real_labels, cfg, seed, nets["G"], gen, val)
    return Training(cfg=cfg, nets=nets, opt_g=opt_g, opt_d=opt_d, scheds=scheds, pools=pools,
                    gen=gen, **images, classifier=classifier if semantic else None,
                    batches=batches,
                    ema=[p.detach().clone() for p in nets["G"].parameters()] if cfg.ema > 0 else None,
                    ada_p=0.0 if cfg.ada_target > 0 else 1.0, called_real=[],
                    averages={k: {} for k in nets if k.startswith("D_")},
                    autocast=precision.autocast(device))


def data(real: np.ndarray, synthetic: np.ndarray, labels, real_labels, cfg: RefinerConfig,
         seed: int, G: Refiner, gen: torch.Generator, val) -> dict:
    """The images on G's device: the budget's real images split into those trained on and
    `holdout` (at most a fifth) held out, the renders (through the tone curve fitted on the
    training real images, with `tone_first`), and the renders each log tests against held-out and
    `val` real images. Returns Training's fields from `real` to `val`."""
    device = G.tone.device
    order = np.random.default_rng(seed).permutation(len(real))
    n_hold = min(cfg.holdout, len(real) // 5)
    hold, train = order[:n_hold], order[n_hold:]
    no_labels = torch.zeros(len(real), dtype=torch.long)
    rlab = torch.as_tensor(real_labels if real_labels is not None else no_labels, device=device)
    if cfg.tone_first:  # G starts from the renders with the real images' grey levels
        from renderers.tone import fit_tone_curve
        G.tone.copy_(torch.as_tensor(fit_tone_curve(synthetic, real[train])))
    renders = G.tone[torch.as_tensor(synthetic, device=device).long()]
    lab = torch.as_tensor(labels if labels is not None else np.zeros(len(synthetic), np.int64),
                          device=device)
    probe = torch.randint(len(renders), (max(n_hold, 1),), generator=gen, device=device)
    held = (torch.as_tensor(real[hold], device=device),
            rlab[torch.as_tensor(hold, device=device)], probe) if n_hold else None
    if val is not None:
        val_gen = torch.Generator(device=device).manual_seed(seed + 1)
        val_t, val_lab = (torch.as_tensor(a, device=device) for a in val)
        val_probe = torch.randint(len(renders), (len(val_t),), generator=val_gen, device=device)
        val = (val_t, val_lab, val_probe, val_gen)
    return {"real": torch.as_tensor(real[train], device=device),
            "real_labels": rlab[torch.as_tensor(train, device=device)], "renders": renders,
            "labels": lab, "held": held, "val": val}


def draw(t: Training) -> tuple:
    """A batch of renders x and of real images y, with their labels, in [-1, 1] (CycleGAN's
    unaligned pair: drawn independently)."""
    if t.batches is not None:
        return tuple(b.to(t.renders.device, non_blocking=True) for b in next(t.batches))
    n = t.cfg.batch_size
    i_syn = torch.randint(len(t.renders), (n,), generator=t.gen, device=t.renders.device)
    i_real = torch.randint(len(t.real), (n,), generator=t.gen, device=t.real.device)
    return to_signed(t.renders[i_syn]), t.labels[i_syn], to_signed(t.real[i_real]), t.real_labels[i_real]


def generator_phase(t: Training, x, lx, y, ly, step: int) -> tuple[dict, tuple]:
    """One update of G and F (CycleGAN's `backward_G`), the discriminators frozen. Returns the
    losses and (W(x), the warp's field, G(x), F(y)). The losses:
    - gan_G, gan_F: the LSGAN terms of D_real on G(x) and D_syn on F(y) (CycleGAN's loss_G_A,
      loss_G_B);
    - cycle: |F(G(x)) - W(x)| + |A(F(y)) - y|, W the warp and A the appearance step (loss_cycle_A
      and _B; the cycle asks F to undo the repainting, not the warp), times λ_cycle;
    - identity: |A(y) - y| + |F(x) - x| (loss_idt), times λ_cycle · λ_identity;
    - self_reg: SimGAN's self-regularisation |G(x) - W(x)|, times λ_reg;
    - gan_shape: D_shape's LSGAN term on the warped render's shape: it reaches the warp alone;
    - smooth: the field's squared gradient, times λ_smooth (Simard's smooth fields);
    - semantic: CyCADA's semantic consistency CE(C(G(x)), label(x)), times λ_sem."""
    cfg, G, Fn = t.cfg, t.nets["G"], t.nets["F"]
    D_real, D_syn, D_shape = t.nets["D_real"], t.nets["D_syn"], t.nets.get("D_shape")
    for k in t.nets:
        if k.startswith("D_"):
            t.nets[k].requires_grad_(False)
    lc, li = cfg.lambda_cycle, cfg.lambda_cycle * cfg.lambda_identity
    with t.autocast:
        z = G.noise_like(x, t.gen) if G.warp is not None else None
        warped, field, fake_y = G.parts(x, z)
        fake_x = Fn(y)
        losses = {"gan_G": adversarial(D_real(t.aug(fake_y), t.cond(lx)), 1.0),
                  "gan_F": adversarial(D_syn(t.aug(fake_x), t.cond(ly)), 1.0),
                  "cycle": F.l1_loss(Fn(fake_y), warped) + F.l1_loss(G.appearance(fake_x), y)}
        total = losses["gan_G"] + losses["gan_F"] + lc * losses["cycle"]
        if li > 0:
            losses["identity"] = F.l1_loss(G.appearance(y), y) + F.l1_loss(Fn(x), x)
            total = total + li * losses["identity"]
        if cfg.lambda_reg > 0:
            losses["self_reg"] = F.l1_loss(fake_y, warped)
            total = total + cfg.lambda_reg * losses["self_reg"]
        if D_shape is not None:  # only the warp reaches this loss
            losses["gan_shape"] = adversarial(D_shape(t.aug(shape_view(warped)), t.cond(lx)), 1.0)
            total = total + losses["gan_shape"]
        if field is not None:
            losses["smooth"] = smoothness(field)
            total = total + cfg.lambda_smooth * losses["smooth"]
        if t.classifier is not None:
            losses["semantic"] = F.cross_entropy(t.classifier((fake_y + 1) / 2), lx)
            total = total + cfg.lambda_sem * losses["semantic"]
    t.opt_g.zero_grad(set_to_none=True)
    total.backward()
    t.opt_g.step()
    if t.ema is not None:
        ema_step(t.ema, G, cfg.ema, step)
    return losses, (warped, field, fake_y, fake_x)


def discriminator_phase(t: Training, batch: tuple, made: tuple, losses: dict) -> torch.Tensor:
    """`d_steps` updates of the discriminators (CycleGAN's `backward_D_basic` for each): the first
    on the generator phase's batch and fakes, each further one on fresh images against past fakes
    drawn from the image pools. Adds to `losses`:
    - D_real, D_syn, D_shape: ½ (LSGAN(D(real), 1) + LSGAN(D(fake), 0));
    - lecam: Tseng et al.'s LeCam term, each head's scores pulled towards the moving average of
      the other side's, times `lecam`;
    - r1: Mescheder et al.'s R1, the squared gradient norm on real inputs, times `r1` / 2.
    Returns D_real's scores on its real images of the last update (ADA's signal)."""
    cfg, G, gen = t.cfg, t.nets["G"], t.gen
    D_real, D_syn, D_shape = t.nets["D_real"], t.nets["D_syn"], t.nets.get("D_shape")
    for k in t.nets:
        if k.startswith("D_"):
            t.nets[k].requires_grad_(True)
    (x, lx, y, ly), (warped, _, fake_y, fake_x) = batch, made
    fakes = {"real": t.pools["real"].query(fake_y, lx), "syn": t.pools["syn"].query(fake_x, ly)}
    xd, lxd, yd, lyd, warped_d = x, lx, y, ly, warped.detach()
    for extra in range(cfg.d_steps):
        if extra:  # fresh images against past fakes drawn from the pools
            xd, lxd, yd, lyd = draw(t)
            fakes = {k: t.pools[k].sample(len(yd)) or fakes[k] for k in fakes}
            if D_shape is not None:
                with torch.no_grad(), t.autocast:
                    warped_d = warp_image(xd, G.field(xd, G.noise_like(xd, gen)))
        (old_y, old_lx), (old_x, old_ly) = fakes["real"], fakes["syn"]
        with t.autocast:
            scores = {"D_real": (D_real(t.aug(yd), t.cond(lyd)), D_real(t.aug(old_y), t.cond(old_lx))),
                      "D_syn": (D_syn(t.aug(xd), t.cond(lxd)), D_syn(t.aug(old_x), t.cond(old_ly)))}
            if D_shape is not None:
                scores["D_shape"] = (D_shape(t.aug(shape_view(yd)), t.cond(lyd)),
                                     D_shape(t.aug(shape_view(warped_d)), t.cond(lxd)))
            for k, (on_real, on_fake) in scores.items():
                losses[k] = 0.5 * (adversarial(on_real, 1.0) + adversarial(on_fake, 0.0))
            d_total = sum(losses[k] for k in scores)
            if cfg.lecam > 0:
                losses["lecam"] = sum(lecam(*scores[k], t.averages[k]) for k in scores)
                d_total = d_total + cfg.lecam * losses["lecam"]
            if cfg.r1 > 0:
                losses["r1"] = (r1_penalty(D_real, t.aug(yd), t.cond(lyd))
                                + r1_penalty(D_syn, t.aug(xd), t.cond(lxd)))
                d_total = d_total + cfg.r1 / 2 * losses["r1"]
        t.opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        t.opt_d.step()
    return scores["D_real"][0]


def adapt_augmentation(t: Training, real_scores) -> None:
    """ADA (Karras et al. 2020): raise the augmentations' probability p while the share r_t of
    D_real's training real images it calls real exceeds `ada_target`, lower it otherwise; p moves
    every ADA_INTERVAL steps (one host sync each time)."""
    if t.cfg.ada_target <= 0:
        return
    t.called_real.append((realness(real_scores).detach() > 0.5).float().mean())
    if len(t.called_real) == ADA_INTERVAL:
        t.ada_p = adapt(t.ada_p, float(torch.stack(t.called_real).mean()), t.cfg.ada_target)
        t.called_real = []


def log_row(t: Training, step: int, losses: dict, x, made: tuple, writer) -> dict:
    """The history's row of `step`: every loss, the field's mean length in pixels (`field_px`),
    ADA's p (`augment_p`), and D_real's accuracy on held-out real images against refined renders
    (`d_accuracy`; `d_accuracy_val` on `val` images, and D_shape's `d_shape_accuracy_val`, in eval
    mode with their own generator, so training is the same with or without them). `writer` (a
    SummaryWriter) also gets them and an input | warped | G(x) | F(G(x)) grid."""
    G, D_real, D_shape = t.nets["G"], t.nets["D_real"], t.nets.get("D_shape")
    warped, field, fake_y, _ = made
    row = {"step": step, **{k: v.item() for k, v in losses.items()}}
    if field is not None:
        row["field_px"] = field.norm(dim=1).mean().item()
    if t.cfg.ada_target > 0:
        row["augment_p"] = t.ada_p
    if t.held is not None:
        hold, hold_lab, probe = t.held
        row["d_accuracy"] = held_out_accuracy(G, D_real, hold, t.cond(hold_lab), t.renders[probe],
                                              t.cond(t.labels[probe]), t.gen)
    if t.val is not None:  # eval mode: no power iteration of the spectral norms
        val, val_lab, probe, val_gen = t.val
        for key, D, shape in (("d_accuracy_val", D_real, False),
                              ("d_shape_accuracy_val", D_shape, True)):
            if D is not None:
                D.eval()
                row[key] = held_out_accuracy(G, D, val, t.cond(val_lab), t.renders[probe],
                                             t.cond(t.labels[probe]), val_gen, shape=shape)
                D.train()
    if not all(math.isfinite(v) for v in row.values()):
        raise FloatingPointError(f"refiner losses diverged at step {step}: {row}")
    if writer is not None:
        for k, v in row.items():
            if k != "step":
                writer.add_scalar(f"refiner/{k}", v, step)
        with torch.no_grad(), t.autocast:  # fake_y is bf16 on the fast path, as F's input in training
            grid = triptych(x, warped, fake_y, t.nets["F"](fake_y))
        writer.add_image("refiner/input|warped|G(x)|F(G(x))", grid, step)
    return row


def train_refiner(real: np.ndarray, synthetic: np.ndarray, labels: np.ndarray | None,
                  cfg: RefinerConfig, seed: int, device: torch.device, progress=None, writer=None,
                  classifier: nn.Module | None = None, real_labels: np.ndarray | None = None,
                  batches=None, val: tuple[np.ndarray, np.ndarray] | None = None,
                  precision: Precision | None = None) -> tuple[dict[str, nn.Module], list[dict]]:
    """Train G, F, D_real and D_syn (and D_shape with `shape_d`) on uint8 images real
    [Nr, C, H, W] and synthetic [Ns, C, H, W].

    `labels` (of the synthetic images) and `classifier` (frozen, [0, 1] input) enable the semantic
    consistency loss; without them λ_sem is ignored. A conditional discriminator needs `labels` and
    `real_labels`. Returns the networks (eval mode) and the history, one dict every `log_every`
    steps; `writer` (a SummaryWriter) also gets losses and grids.

    The images live on the device and each batch is drawn there. `batches`, an iterator of CPU
    batches (renders, their labels, real images, their labels; images in [-1, 1]), replaces that
    draw: the reference data path of `pipeline bench` (PNG files through a DataLoader). The
    networks compute in `precision` (default: the device's, synthgap/devices.py: bf16 autocast on
    CUDA), the losses in float32; they come back float32 and contiguous.

    `val` (uint8 real images and their labels, never trained on) adds `d_accuracy_val` to every log:
    D_real's accuracy on them against as many refined renders.
    """
    mode = precision or default_precision(device)
    t = setup(real, synthetic, labels, cfg, seed, device, classifier, real_labels, batches, val,
              mode)
    history = []
    for step in range(cfg.steps):
        x, lx, y, ly = draw(t)
        losses, made = generator_phase(t, x, lx, y, ly, step)
        real_scores = discriminator_phase(t, (x, lx, y, ly), made, losses)
        for s in t.scheds:
            s.step()
        adapt_augmentation(t, real_scores)
        last = step + 1 == cfg.steps
        if (step + 1) % cfg.log_every == 0 or last:
            history.append(log_row(t, step + 1, losses, x, made, writer))
        if progress is not None and ((step + 1) % 10 == 0 or last):
            progress(step + 1, cfg.steps)
    if t.ema is not None:
        with torch.no_grad():
            for p, e in zip(t.nets["G"].parameters(), t.ema):
                p.copy_(e)
    return {k: mode.plain(v).eval() for k, v in t.nets.items()}, history


def semantic_classifier(renders: np.ndarray, labels: np.ndarray, cfg: RefinerConfig, seed: int,
                        device: torch.device, progress=None,
                        precision: Precision | None = None) -> nn.Module:
    """C of CyCADA's semantic consistency: the digit CNN (classifiers/digits.py, its defaults)
    trained on the labelled renders alone, for `sem_steps` steps, in `precision`."""
    from classifiers.digits import ClassifierConfig, train_classifier

    return train_classifier([(renders, labels, 1.0)], ClassifierConfig(steps=cfg.sem_steps), seed,
                            device, progress, precision)


@torch.no_grad()
def ema_step(ema: list[torch.Tensor], net: nn.Module, decay: float, step: int) -> None:
    """Move the averages `ema` towards `net`'s weights after optimiser step `step` (from 0). The
    decay ramps up as (1 + step) / (10 + step), so the first steps' weights soon fade."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema, net.parameters()):
        e.lerp_(p, 1 - d)
