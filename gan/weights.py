"""A refiner's weights on disk: all its networks in one safetensors file, with the architecture
knobs in its metadata, so loading needs no pickle and no config."""

from __future__ import annotations

import json

from torch import nn

from gan.config import ARCH, RefinerConfig
from gan.networks import Refiner, generator


def save_refiner(nets: dict[str, nn.Module], path, cfg: RefinerConfig, channels: int) -> None:
    """All its networks in one safetensors file; the architecture knobs in its metadata."""
    from safetensors.torch import save_file

    tensors = {f"{name}.{k}": v.detach().float().cpu().contiguous()
               for name, net in nets.items() for k, v in net.state_dict().items()}
    arch = {k: getattr(cfg, k) for k in ARCH}
    save_file(tensors, str(path), metadata={"arch": json.dumps({**arch, "channels": channels})})


def load_generator(path, name: str = "G") -> nn.Module:
    """One generator (G: synthetic -> real, a `Refiner`; or F) from a refiner's safetensors file."""
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
    # files written before the `head` knob name their head by `saturate`
    head = arch.get("head", "clip" if arch.get("saturate") else "tanh")
    upsample = arch.get("upsample", "transpose")  # files written before the knob
    if name == "G":
        net = Refiner(arch["channels"], arch["width"], arch["blocks"], arch.get("warp", False),
                      arch.get("warp_max_px", 2.0), head=head, upsample=upsample,
                      centred=arch.get("warp_centred", False))
    else:
        net = generator(arch["channels"], arch["width"], arch["blocks"], head, upsample)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}: the weights do not fit the architecture in its metadata "
                         f"({str(exc).splitlines()[0]})") from None
    return net.eval()
