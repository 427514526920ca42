"""The refiner: CycleGAN-style training of G: synthetic -> real and F: real -> synthetic.

Losses (Zhu et al. 2017, with the additions of the study):
- LSGAN adversarial losses against two PatchGAN discriminators, D_real and D_syn, each fed through
  DiffAugment (real and generated alike) so that a few dozen real images suffice;
- cycle consistency, λ_cycle · (|F(G(x)) - x| + |G(F(y)) - y|), λ_cycle = 10;
- identity, λ_cycle · λ_identity · (|G(y) - y| + |F(x) - x|), λ_identity = 0.5;
- SimGAN's self-regularisation, λ_reg · |G(x) - x| (Shrivastava et al. 2017): keep the refined
  digit where the render put it;
- CyCADA's semantic consistency, λ_sem · CE(C(G(x)), label(x)) (Hoffman et al. 2018), with C a
  frozen classifier trained on the labelled renders: G must not turn a 4 into a 9.
Discriminators learn from an image pool of 50 past fakes (Shrivastava et al.; Zhu et al.); Adam
(2e-4, β = (0.5, 0.999)) with a learning rate constant for the first half and decaying linearly to
zero over the second. Images are [-1, 1] floats inside, uint8 [N, C, H, W] outside.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan.diffaugment import POLICY, diff_augment
from gan.networks import discriminator, generator, init_weights

DEFAULTS = {"steps": 2000, "batch_size": 32, "lr": 2e-4, "beta1": 0.5, "width": 16, "blocks": 4,
            "d_width": 32, "pool_size": 50, "lambda_cycle": 10.0, "lambda_identity": 0.5,
            "lambda_reg": 1.0, "lambda_sem": 1.0, "diffaugment": True, "sem_steps": 500,
            "log_every": 100}
NETS = ("G", "F", "D_real", "D_syn")


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float in [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


class ImagePool:
    """A buffer of past generated images (size 50 in CycleGAN). Until it is full, images go in and
    come straight back out; afterwards each image, with probability 1/2, is swapped for a stored one
    and the stored one is returned, so the discriminator also sees older generator outputs."""

    def __init__(self, size: int, gen: torch.Generator | None = None):
        self.size, self.gen, self.images, self.count = size, gen, None, 0

    def query(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.detach()
        if self.size == 0:
            return batch
        if self.images is None:
            self.images = batch.new_empty((self.size, *batch.shape[1:]))
        fill = min(self.size - self.count, len(batch))
        self.images[self.count:self.count + fill] = batch[:fill]
        self.count += fill
        # the coin flips and slots are drawn on the CPU: no device sync per image; a slot is swapped
        # at most once a batch, so each returned image is one stored before this batch
        n = len(batch) - fill
        swap = (torch.rand(n, generator=self.gen) < 0.5).tolist()
        slots = torch.randint(self.size, (n,), generator=self.gen).tolist()
        taken: dict[int, int] = {}   # slot -> row of the batch
        for i, (s, j) in enumerate(zip(swap, slots)):
            if s and j not in taken:
                taken[j] = fill + i
        if not taken:
            return batch
        rows = torch.tensor(list(taken.values()), device=batch.device)
        slot = torch.tensor(list(taken), device=batch.device)
        out = batch.clone()
        out[rows] = self.images[slot]
        self.images[slot] = batch[rows]
        return out


def make_nets(channels: int, cfg: dict) -> dict[str, nn.Module]:
    return {"G": init_weights(generator(channels, cfg["width"], cfg["blocks"])),
            "F": init_weights(generator(channels, cfg["width"], cfg["blocks"])),
            "D_real": init_weights(discriminator(channels, cfg["d_width"])),
            "D_syn": init_weights(discriminator(channels, cfg["d_width"]))}


def linear_decay(steps: int):
    """Learning-rate factor: 1 for the first half of training, then linearly down to 0."""
    half = steps // 2
    return lambda step: 1.0 if step < half else max(0.0, 1.0 - (step - half) / max(1, steps - half))


def lsgan(scores: torch.Tensor, target: float) -> torch.Tensor:
    return F.mse_loss(scores, torch.full_like(scores, target))


def train_refiner(real: np.ndarray, synthetic: np.ndarray, labels: np.ndarray | None, cfg: dict,
                  seed: int, device: torch.device, progress=None, writer=None,
                  classifier: nn.Module | None = None) -> tuple[dict[str, nn.Module], list[dict]]:
    """Train the four networks on uint8 images real [Nr, C, H, W] and synthetic [Ns, C, H, W].

    `labels` (of the synthetic images) and `classifier` (frozen, [0, 1] input) enable the semantic
    consistency loss; without them λ_sem is ignored. Returns the networks (eval mode) and the loss
    history, one dict every `log_every` steps; `writer` (a SummaryWriter) also gets losses and grids.
    """
    cfg = {**DEFAULTS, **cfg}
    if real.shape[1:] != synthetic.shape[1:]:
        raise ValueError(f"real images are {tuple(real.shape[1:])} but synthetic are "
                         f"{tuple(synthetic.shape[1:])}; the refiner needs one size")
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    nets = {k: v.to(device).train() for k, v in make_nets(real.shape[1], cfg).items()}
    opt_g = torch.optim.Adam([*nets["G"].parameters(), *nets["F"].parameters()], lr=cfg["lr"],
                             betas=(cfg["beta1"], 0.999))
    opt_d = torch.optim.Adam([*nets["D_real"].parameters(), *nets["D_syn"].parameters()],
                             lr=cfg["lr"], betas=(cfg["beta1"], 0.999))
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, linear_decay(cfg["steps"])) for o in (opt_g, opt_d)]
    pools = {k: ImagePool(cfg["pool_size"], torch.Generator().manual_seed(seed + i))
             for i, k in enumerate(("real", "syn"))}
    real_t, syn_t = torch.as_tensor(real, device=device), torch.as_tensor(synthetic, device=device)
    lab_t = None if labels is None else torch.as_tensor(labels, device=device)
    use_sem = classifier is not None and lab_t is not None and cfg["lambda_sem"] > 0
    if classifier is not None:
        classifier.to(device).eval().requires_grad_(False)

    def aug(x):
        return diff_augment(x, POLICY, gen) if cfg["diffaugment"] else x

    G, Fn, D_real, D_syn = (nets[k] for k in NETS)
    lc, li = cfg["lambda_cycle"], cfg["lambda_cycle"] * cfg["lambda_identity"]
    history = []
    for step in range(cfg["steps"]):
        i_syn = torch.randint(len(syn_t), (cfg["batch_size"],), generator=gen, device=device)
        i_real = torch.randint(len(real_t), (cfg["batch_size"],), generator=gen, device=device)
        x, y = to_signed(syn_t[i_syn]), to_signed(real_t[i_real])

        # generators
        D_real.requires_grad_(False)
        D_syn.requires_grad_(False)
        fake_y, fake_x = G(x), Fn(y)
        losses = {"gan_G": lsgan(D_real(aug(fake_y)), 1.0), "gan_F": lsgan(D_syn(aug(fake_x)), 1.0),
                  "cycle": F.l1_loss(Fn(fake_y), x) + F.l1_loss(G(fake_x), y)}
        total = losses["gan_G"] + losses["gan_F"] + lc * losses["cycle"]
        if li > 0:
            losses["identity"] = F.l1_loss(G(y), y) + F.l1_loss(Fn(x), x)
            total = total + li * losses["identity"]
        if cfg["lambda_reg"] > 0:
            losses["self_reg"] = F.l1_loss(fake_y, x)
            total = total + cfg["lambda_reg"] * losses["self_reg"]
        if use_sem:
            losses["semantic"] = F.cross_entropy(classifier((fake_y + 1) / 2), lab_t[i_syn])
            total = total + cfg["lambda_sem"] * losses["semantic"]
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()

        # discriminators, on fresh real images and pooled fakes
        D_real.requires_grad_(True)
        D_syn.requires_grad_(True)
        old_y, old_x = pools["real"].query(fake_y), pools["syn"].query(fake_x)
        losses["D_real"] = 0.5 * (lsgan(D_real(aug(y)), 1.0) + lsgan(D_real(aug(old_y)), 0.0))
        losses["D_syn"] = 0.5 * (lsgan(D_syn(aug(x)), 1.0) + lsgan(D_syn(aug(old_x)), 0.0))
        opt_d.zero_grad(set_to_none=True)
        (losses["D_real"] + losses["D_syn"]).backward()
        opt_d.step()
        for s in scheds:
            s.step()

        last = step + 1 == cfg["steps"]
        if (step + 1) % cfg["log_every"] == 0 or last:
            row = {"step": step + 1, **{k: v.item() for k, v in losses.items()}}
            if not all(math.isfinite(v) for v in row.values()):
                raise FloatingPointError(f"refiner losses diverged at step {step + 1}: {row}")
            history.append(row)
            if writer is not None:
                for k, v in row.items():
                    if k != "step":
                        writer.add_scalar(f"refiner/{k}", v, step + 1)
                writer.add_image("refiner/input|G(x)|F(G(x))", triptych(x, fake_y, Fn(fake_y)), step + 1)
        if progress is not None and ((step + 1) % 10 == 0 or last):
            progress(step + 1, cfg["steps"])
    return {k: v.eval() for k, v in nets.items()}, history


@torch.no_grad()
def triptych(x: torch.Tensor, gx: torch.Tensor, fgx: torch.Tensor, n: int = 8) -> torch.Tensor:
    """A [C, H, W] grid: rows of input | G(x) | F(G(x)) for up to n images."""
    from torchvision.utils import make_grid

    n = min(n, len(x))
    rows = torch.stack([x[:n], gx[:n], fgx[:n]], 1).flatten(0, 1)
    return make_grid(rows.float().cpu().add(1).div(2).clamp(0, 1), nrow=3, pad_value=0.5)


@torch.no_grad()
def refine(G: nn.Module, images: np.ndarray, device: torch.device, batch: int = 1000,
           progress=None) -> np.ndarray:
    """G applied to uint8 images [N, C, H, W]; uint8 out, same shape."""
    G.to(device).eval()
    out = np.empty_like(images)
    for i in range(0, len(images), batch):
        x = to_signed(torch.as_tensor(images[i:i + batch], device=device))
        out[i:i + batch] = to_uint8(G(x)).cpu().numpy()
        progress and progress(min(i + batch, len(images)), len(images))
    return out


def save_refiner(nets: dict[str, nn.Module], path, cfg: dict, channels: int) -> None:
    """All four networks in one safetensors file; the architecture knobs in its metadata."""
    from safetensors.torch import save_file

    tensors = {f"{name}.{k}": v.detach().float().cpu().contiguous()
               for name, net in nets.items() for k, v in net.state_dict().items()}
    arch = {k: cfg[k] for k in ("width", "blocks", "d_width")}
    save_file(tensors, str(path), metadata={"arch": json.dumps({**arch, "channels": channels})})


def load_generator(path, name: str = "G") -> nn.Module:
    """One generator (G: synthetic -> real, or F) from a refiner's safetensors file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "arch" not in meta:
                raise ValueError(f"{path} is not a refiner weights file (no 'arch' metadata)")
            arch = json.loads(meta["arch"])
            state = {k[len(name) + 1:]: f.get_tensor(k) for k in f.keys()
                     if k.startswith(name + ".")}
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001  (safetensors' own error type is not importable)
        raise ValueError(f"{path} is not a readable safetensors file ({exc}); give the "
                         "refiner.safetensors that train-refiner wrote") from None
    net = generator(arch["channels"], arch["width"], arch["blocks"])
    net.load_state_dict(state)
    return net.eval()
