"""The refiner on tiny sizes: networks, pool, DiffAugment, losses, save/load."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from gan.diffaugment import OPS, diff_augment
from gan.networks import HEADS, discriminator, generator, make_nets, to_signed
from gan.pool import ImagePool
from gan.refine import refine
from gan.train import train_refiner
from gan.weights import load_generator, save_refiner
from tiny import CPU, digits, tiny


def test_shapes_grayscale_and_rgb():
    for c in (1, 3):
        x = torch.zeros(2, c, 28, 28)
        assert generator(c, 4, 1)(x).shape == x.shape
        patch, image, grey, feature = discriminator(c, 8)(x)
        assert patch.shape == (2, 1, 7, 7) and image is None and grey is None and feature is None
        patch, image, grey, _ = discriminator(c, 8, image_head=True, grey_head=True, sn=True)(x)
        assert patch.shape == (2, 1, 7, 7) and image.shape == (2,) and grey.shape == (2,)
    out = generator(1, 4, 1)(torch.randn(4, 1, 28, 28) * 5)
    assert out.min() >= -1 and out.max() <= 1


def test_one_step_changes_every_network():
    cfg = tiny(steps=1, warp=False)  # a fresh warp's zero last layer stops its gradient
    nets, history = train_refiner(digits(16, 0, 2), digits(16, 1, 5), None, cfg, 0, CPU)
    torch.manual_seed(0)  # train_refiner seeds torch the same way before building its networks
    fresh = make_nets((1, 28, 28), cfg)
    for name, net in nets.items():
        before = dict(fresh[name].named_parameters())
        changed = [k for k, p in net.named_parameters() if not torch.equal(p, before[k])]
        assert len(changed) == len(before), f"{name}: {len(before) - len(changed)} params unchanged"
    assert history[0]["step"] == 1 and {"gan_G", "gan_F", "cycle", "D_real", "D_syn"} <= set(history[0])


def test_pool_returns_past_images():
    pool = ImagePool(4, torch.Generator().manual_seed(0))
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: images pass through
    seen_old = 0
    for step in range(1, 20):
        batch = torch.full((4, 1, 1, 1), 100.0 + step)
        out = pool.query(batch)
        seen_old += int((out < 100 + step).sum())
        assert set(out.flatten().tolist()) <= set(range(4)) | set(range(100, 120))
    assert seen_old > 10  # about half of the images come from the past
    assert torch.equal(ImagePool(0).query(first), first)
    stored = set(pool.images.flatten().tolist())
    drawn, labels = pool.sample(9)
    assert drawn.shape == (9, 1, 1, 1) and set(drawn.flatten().tolist()) <= stored
    assert torch.equal(labels, torch.zeros(9, dtype=torch.long))
    assert torch.equal(pool.images.flatten().unique(), torch.tensor(sorted(stored)))  # nothing stored
    assert ImagePool(4).sample(2) is None and ImagePool(0).sample(2) is None


@pytest.mark.parametrize("op", sorted(OPS))
def test_diffaugment_keeps_gradients(op):
    x = torch.rand(6, 1, 28, 28, requires_grad=True)
    y = diff_augment(x, (op,), torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_diffaugment_ops_do_what_they_say():
    x = torch.ones(200, 1, 28, 28)
    gen = torch.Generator().manual_seed(0)
    cut = diff_augment(x, ("cutout",), gen)
    assert 0.1 < (cut == 0).float().mean() < 0.3  # a 14 x 14 square, partly off the edge
    bright = diff_augment(x, ("brightness",), gen)
    assert torch.allclose(bright - x, (bright - x)[:, :, :1, :1].expand_as(x))  # one shift per image
    assert (bright - x).abs().max() <= 0.5
    moved = diff_augment(x, ("translation",), gen)
    assert ((moved == -1).flatten(1).any(1)).float().mean() > 0.5  # uncovered borders are black
    with pytest.raises(ValueError, match="unknown DiffAugment op"):
        diff_augment(x, ("saturation",))


def test_affine_turns_a_bar_a_little_and_fills_black():
    from gan.diffaugment import affine
    bar = -torch.ones(64, 1, 28, 28)
    bar[:, :, 13:15, 4:24] = 1.0  # a horizontal bar through the centre
    out = affine(bar, torch.Generator().manual_seed(0))
    assert torch.allclose(affine(bar, None, degrees=0.0, scale=0.0), bar, atol=1e-5)
    assert out.min() >= -1 - 1e-5 and out.max() <= 1 + 1e-5
    ink = (out + 1) / 2
    rows = torch.arange(28.0).view(1, 1, 28, 1)
    spread = ((ink * (rows - 13.5).abs()).flatten(1).sum(1) / ink.flatten(1).sum(1))
    # level, the bar's ink lies 0.5 rows from its centre on average; tilted by 15 degrees, about 1.4
    assert (spread > 0.6).float().mean() > 0.5  # most bars are tilted off their two rows
    assert spread.max() < 2.0  # by at most 15 degrees: a tilt, not a turn (90 degrees: about 5)
    assert torch.equal(out[:, :, :2, :2], -torch.ones(64, 1, 2, 2))  # corners stay black


def test_diffaugment_probability_reaches_that_share_of_images():
    x = torch.ones(400, 1, 28, 28)
    assert torch.equal(diff_augment(x, ("cutout",), torch.Generator().manual_seed(0), p=0.0), x)
    half = diff_augment(x, ("cutout",), torch.Generator().manual_seed(0), p=0.5)
    changed = (half != x).flatten(1).any(1).float().mean()
    assert 0.4 < changed < 0.6, changed


def test_adaptive_augmentation_rises_when_the_discriminator_memorises():
    real, syn = digits(20, 0, 2), digits(40, 1, 6)  # 16 real images to train on: easy to memorise
    cfg = tiny(steps=60, log_every=20, warp=False, lr_d=5e-3, ada_target=0.6)
    _, history = train_refiner(real, syn, None, cfg, 0, CPU)
    p = [h["augment_p"] for h in history]
    assert p[0] > 0 and all(0 <= v <= 1 for v in p), p  # starts at 0 and was raised
    _, plain = train_refiner(real, syn, None, replace(cfg, ada_target=0.0, steps=1), 0, CPU)
    assert "augment_p" not in plain[0]


def test_self_regularisation_makes_g_near_identity():
    real, syn = digits(32, 0, 2), digits(64, 1, 5)
    cfg = tiny(steps=40, lr=5e-3, lambda_cycle=0.0)
    x = to_signed(torch.as_tensor(syn[:16]))
    dist, corr = {}, {}
    for reg in (0.0, 100.0):
        nets, _ = train_refiner(real, syn, None, replace(cfg, lambda_reg=reg, warp=False), 0, CPU)
        with torch.no_grad():
            g = nets["G"](x)
        dist[reg] = (g - x).abs().mean().item()
        corr[reg] = torch.corrcoef(torch.stack([g.flatten(), x.flatten()]))[0, 1].item()
    # near-identity: G(x) follows x pixel for pixel (tanh leaves a small offset at -1 and 1)
    assert corr[100.0] > 0.99 and dist[100.0] < 0.15, (corr, dist)
    assert corr[0.0] < 0.9 and dist[0.0] > dist[100.0], (corr, dist)


def test_semantic_consistency_uses_the_classifier():
    from classifiers.digits import make_cnn
    real, syn = digits(16, 0, 2), digits(16, 1, 5)
    labels = np.arange(16) % 10
    _, history = train_refiner(real, syn, labels, tiny(steps=2), 0, CPU, classifier=make_cnn(4))
    assert "semantic" in history[-1]
    _, history = train_refiner(real, syn, labels, tiny(steps=2), 0, CPU)
    assert "semantic" not in history[-1]


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_save_load_round_trip(tmp_path, upsample):
    cfg = tiny(steps=2, upsample=upsample)
    nets, _ = train_refiner(digits(8, 0, 2), digits(8, 1, 5), None, cfg, 0, CPU)
    save_refiner(nets, tmp_path / "r.safetensors", cfg, 1)
    for name in ("G", "F"):
        loaded = load_generator(tmp_path / "r.safetensors", name)
        x = torch.randn(3, 1, 28, 28)
        with torch.no_grad():
            assert torch.equal(loaded(x), nets[name](x))
    images = digits(5, 2, 3)
    out = refine(nets["G"], images, CPU, batch=2)
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert np.array_equal(out, refine(load_generator(tmp_path / "r.safetensors"), images, CPU))


def test_not_a_refiner_file(tmp_path):
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="not a refiner weights file"):
        load_generator(tmp_path / "x.safetensors")


def test_mismatched_sizes():
    with pytest.raises(ValueError, match="needs one size"):
        train_refiner(digits(4, 0, 2), np.zeros((4, 1, 32, 32), np.uint8), None, tiny(steps=1),
                      0, CPU)


def test_train_refiner_and_refine_commands(tmp_path):
    import subprocess
    import sys

    from synthgap.data.imageset import ImageSet, load_imageset, save_imageset
    save_imageset(ImageSet(digits(20, 0, 2), np.arange(20) % 10, {}), tmp_path / "syn.npz")
    save_imageset(ImageSet(digits(20, 1, 4), np.arange(20) % 10, {}), tmp_path / "real.npz")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True,
                              text=True)
    weights = tmp_path / "r.safetensors"
    proc = run("train-refiner", "--real", tmp_path / "real.npz", "--synthetic", tmp_path / "syn.npz",
               "--out", weights, "--set", "steps=2", "--set", "sem_steps=2", "--set", "width=4",
               "--set", "blocks=1", "--set", "batch_size=4", "--logdir", tmp_path / "tb")
    assert proc.returncode == 0, proc.stderr
    assert weights.is_file() and list((tmp_path / "tb").iterdir())
    proc = run("refine", "--weights", weights, "--images", tmp_path / "syn.npz", "--out",
               tmp_path / "refined.npz")
    assert proc.returncode == 0, proc.stderr
    refined = load_imageset(tmp_path / "refined.npz")
    assert refined.images.shape == (20, 1, 28, 28) and list(refined.labels) == list(np.arange(20) % 10)
    bad = run("refine", "--weights", tmp_path / "syn.npz", "--images", tmp_path / "syn.npz")
    assert bad.returncode == 2 and "not a readable safetensors file" in bad.stderr
    bad = run("train-refiner", "--real", tmp_path / "real.npz", "--synthetic", tmp_path / "syn.npz",
              "--set", "steps=many", "--out", tmp_path / "s.safetensors")
    assert bad.returncode == 2 and "not an integer" in bad.stderr and not (tmp_path / "s.safetensors").exists()
    bad = run("train-refiner", "--real", tmp_path / "real.npz", "--synthetic", tmp_path / "syn.npz",
              "--set", "feature_head=true", "--set", "lambda_sem=0", "--out", tmp_path / "s.safetensors")
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and "feature_head needs the classifier" in lines[0]
    assert not (tmp_path / "s.safetensors").exists()
    bad = run("train-refiner", "--real", tmp_path / "real.npz", "--synthetic", tmp_path / "syn.npz",
              "--set", "lecam=-1", "--out", tmp_path / "s.safetensors")  # ranges as pipeline run's
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and "lecam must be 0 (off) or more" in lines[0]
    assert not (tmp_path / "s.safetensors").exists()


def test_zero_field_warp_is_the_identity():
    from gan.networks import Refiner, init_warp, warp_image
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert torch.allclose(warp_image(x, torch.zeros(3, 2, 28, 28)), x, atol=1e-6)
    G = init_warp(Refiner(1, 4, 1, warp=True, max_px=2.0))  # a fresh warp: zero field
    warped, field, _ = G.parts(x, G.noise_like(x))
    assert field.abs().max() == 0 and torch.allclose(warped, x, atol=1e-6)
    # a whole-pixel field moves the image by that many pixels
    shifted = warp_image(x, torch.cat([torch.ones(3, 1, 28, 28), torch.zeros(3, 1, 28, 28)], 1))
    assert torch.allclose(shifted[..., :-1], x[..., 1:], atol=1e-5)


def test_the_field_stays_within_its_bound():
    from gan.networks import Refiner
    G = Refiner(1, 4, 1, warp=True, max_px=1.5)
    for p in G.warp.parameters():  # large weights drive tanh to saturation
        torch.nn.init.normal_(p, 0, 5.0)
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    field = G.field(x, G.noise_like(x) * 10)
    assert field.abs().max() <= 1.5 and field.abs().max() > 1.0


def test_a_centred_warp_cannot_shift_the_whole_digit(tmp_path):
    """A uniform push (the warp's last bias alone) shifts every pixel by nearly the bound; centred,
    the same push moves nothing, while a field that varies over the image still deforms it. The
    knob survives saving and loading."""
    from gan.networks import Refiner, init_warp
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    fields = {}
    for centred in (False, True):
        G = init_warp(Refiner(1, 4, 1, warp=True, max_px=2.0, centred=centred))
        with torch.no_grad():
            G.warp[-1].bias.copy_(torch.tensor([3.0, -3.0]))
        fields[centred] = G.field(x, G.noise_like(x))
        if centred:
            assert torch.allclose(G.parts(x, G.noise_like(x))[0], x, atol=1e-6)
        torch.nn.init.normal_(G.warp[-1].weight, 0, 1.0)
        assert G.field(x, G.noise_like(x)).abs().amax((2, 3)).min() > 0.1  # it still deforms
    assert torch.allclose(fields[False][:, 0], torch.tensor(2 * math.tanh(3.0)))
    assert torch.allclose(fields[False][:, 1], torch.tensor(-2 * math.tanh(3.0)))
    assert fields[True].abs().max() < 1e-6

    cfg = tiny(steps=2, warp=True, warp_centred=True)
    nets, _ = train_refiner(digits(8, 0, 2), digits(8, 1, 5), None, cfg, 0, CPU)
    save_refiner(nets, tmp_path / "r.safetensors", cfg, 1)
    loaded = load_generator(tmp_path / "r.safetensors")
    z = loaded.noise_like(x)
    with torch.no_grad():
        assert loaded.centred and torch.equal(loaded(x, z), nets["G"](x, z))
    with pytest.raises(ValueError, match="refiner.warp_centred needs refiner.warp = true"):
        train_refiner(digits(8, 0, 2), digits(8, 1, 5), None, tiny(steps=1, warp_centred=True), 0,
                      CPU)


def test_variants_differ_and_repeat():
    from gan.networks import Refiner
    torch.manual_seed(0)
    G = Refiner(1, 4, 1, warp=True, max_px=2.0)
    images = digits(6, 3, 4)
    out = refine(G, images, CPU, variants=3, seed=1)
    assert out.shape == (18, 1, 28, 28)
    assert not np.array_equal(out[:6], out[6:12]) and not np.array_equal(out[6:12], out[12:])
    assert np.array_equal(out, refine(G, images, CPU, variants=3, seed=1))
    with pytest.raises(ValueError, match="need a refiner with a warp"):
        refine(Refiner(1, 4, 1), images, CPU, variants=2)


def test_resize_up_sampling_leaves_no_checkerboard():
    """A uniform kernel on a uniform map: the transposed convolution's uneven overlap gives pixels
    of 1, 2 or 4 contributions by their parity, resizing then convolving gives every pixel the same."""
    from gan.networks import up_sampling

    out = {}
    for kind in ("transpose", "resize"):
        net = nn.Sequential(*up_sampling(2, 1, kind))
        conv = net[-1]
        nn.init.ones_(conv.weight)
        nn.init.zeros_(conv.bias)
        with torch.no_grad():
            out[kind] = net(torch.ones(1, 2, 7, 7))[0, 0, 1:-1, 1:-1]  # inner pixels
    assert out["transpose"].shape == out["resize"].shape == (12, 12)
    assert set(out["transpose"].unique().tolist()) == {2.0, 4.0, 8.0}  # 1, 2, 4 taps x 2 channels
    assert torch.all(out["resize"] == 18.0)  # 9 taps x 2 channels everywhere
    with pytest.raises(ValueError, match="choose one of"):
        up_sampling(2, 1, "pixelshuffle")


def test_output_heads_reach_what_they_say():
    x = torch.linspace(-5, 5, 401)
    black, clip, tanh = (HEADS[h]()(x) for h in ("black", "clip", "tanh"))
    assert black.min() == -1 and black.max() < 1 and black.max() > 0.99
    assert clip.min() == -1 and clip.max() == 1
    assert tanh.min() > -1 and tanh.max() < 1
    assert torch.all(black[1:] >= black[:-1])  # monotone: a brighter input is never darker
    from gan.networks import to_uint8
    cap = to_uint8(HEADS["cap"]()(x))
    assert cap.min() == 0 and cap.max() == 254 and (cap == 254).sum() > 50  # 254 at a finite input
    with pytest.raises(ValueError, match="choose one of"):
        generator(1, 4, 1, head="sigmoid")


def test_ema_averages_g_without_changing_training():
    """ema leaves training as it was (F, the discriminators and the logs bit for bit) and gives G
    the moving average of its weights: each step moves the average towards the weights by
    1 - min(decay, (1 + step) / (10 + step))."""
    from gan.train import ema_step
    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.fill_(2.0)
    ema = [torch.zeros(1, 2), torch.zeros(1)]
    ema_step(ema, net, 0.99, 0)  # ramp: 1/10 of the old average stays
    assert torch.allclose(ema[0], torch.full((1, 2), 0.9)) and torch.allclose(ema[1], torch.tensor([1.8]))
    ema_step(ema, net, 0.5, 1000)  # past the ramp: the decay itself
    assert torch.allclose(ema[0], torch.full((1, 2), 0.95)) and torch.allclose(ema[1], torch.tensor([1.9]))

    cfg = tiny(steps=3, warp=False)
    real, syn = digits(16, 0, 2), digits(16, 1, 5)
    off, h_off = train_refiner(real, syn, None, cfg, 0, CPU)
    on, h_on = train_refiner(real, syn, None, replace(cfg, ema=0.9), 0, CPU)
    assert h_on == h_off
    for name in ("F", "D_real", "D_syn"):
        assert all(torch.equal(a, b) for a, b in zip(off[name].parameters(), on[name].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(off["G"].parameters(), on["G"].parameters()))
