"""The device a command or a stage runs on, chosen in one place with its one error message, and the
precision its networks compute in."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from synthgap.errors import UserError

NO_CUDA = "--device cuda was asked for but torch sees no CUDA device; use --device auto or cpu"


def on_cuda(device: str) -> bool:
    """Whether `device` ("auto", "cpu" or "cuda") runs on a GPU here."""
    import torch

    return device != "cpu" and torch.cuda.is_available()


def run_device(device: str) -> str:
    """The device type a run names in its keys and hands its stages: "auto" resolved here, on the
    driver ("cuda" where torch sees a GPU, else "cpu"); "cpu" and "cuda" as given. A run's stages
    get it resolved, so that no worker (a Ray node with a GPU) runs a stage elsewhere than its key
    says."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_device(device: str = "auto"):
    """The torch device for "auto", "cpu" or "cuda" (UserError where CUDA is asked for and there
    is none). On CUDA, cuDNN's autotuner is on (every training loop here keeps its shapes fixed)
    unless deterministic algorithms are asked for."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(NO_CUDA)
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {device!r}: use auto, cpu or cuda")
    if not on_cuda(device):
        return torch.device("cpu")
    torch.backends.cudnn.benchmark = not torch.are_deterministic_algorithms_enabled()
    return torch.device("cuda")


def device_name(device: str) -> str:
    """The GPU's name where `device` runs on CUDA, else the CPU's."""
    import torch

    if on_cuda(device):
        return torch.cuda.get_device_name()
    return f"{cpu_model() or platform.processor() or platform.machine()} CPU"


def cpu_info() -> str:
    """/proc/cpuinfo's text ("" where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    names = [line.split(":", 1)[1].strip() for line in cpu_info().splitlines()
             if line.startswith("model name")]
    return names[0] if names else ""


# ------------------------------------------------------------------------------------ precision
CPU_PRECISIONS = ("auto", "float32", "bf16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # the CPU flags of the bf16 instructions oneDNN uses


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """Which of BF16_FLAGS the CPU has, read from the flags of `cpuinfo` (default: /proc/cpuinfo;
    none where it cannot be read)."""
    cpuinfo = cpu_info() if cpuinfo is None else cpuinfo
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags")
             for f in line.split(":", 1)[1].split()}
    return [f for f in BF16_FLAGS if f in flags]


@dataclass(frozen=True)
class Precision:
    """How a network trains or is applied: its forward passes in bf16 autocast or in float32 (the
    weights, the optimiser, the losses and every evaluation stay float32), its weights and batches
    channels-last or contiguous."""
    bf16: bool = False
    channels_last: bool = False

    def autocast(self, device):
        """The forward passes' autocast context on `device` (off in float32)."""
        import torch

        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def net(self, module):
        """`module` with its weights channels-last where asked for."""
        import torch

        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def plain(self, module):
        """`module` with its weights contiguous again, as a float32 network has them (for
        evaluation and saving)."""
        import torch

        return module.to(memory_format=torch.contiguous_format) if self.channels_last else module

    def batch(self, x):
        """An image batch [N, C, H, W] channels-last where asked for (other inputs as they are)."""
        import torch

        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def key(self) -> dict:
        """The mode as it enters a network stage's key and its meta.json."""
        return {"dtype": "bfloat16" if self.bf16 else "float32",
                "memory_format": "channels_last" if self.channels_last else "contiguous"}

    def describe(self) -> str:
        return ("bf16 autocast" if self.bf16 else "float32") + (
            ", channels-last" if self.channels_last else "")


FLOAT32 = Precision()
ON_CUDA = Precision(bf16=True)  # the CUDA path: bf16 autocast, whatever the CPU precision


def default_precision(device) -> Precision:
    """The precision of a network on the torch `device` when none is given: ON_CUDA on CUDA,
    FLOAT32 on the CPU."""
    return ON_CUDA if device.type == "cuda" else FLOAT32


def resolve_precision(choice: str, device: str, flags: list[str] | None = None,
                      setting: str = "runner.cpu_precision") -> tuple[Precision, str]:
    """The precision of network stages under `[runner] cpu_precision = choice` on `device`, and a
    line that says why. On CUDA: bf16 autocast (ON_CUDA). On the CPU: "float32" is FLOAT32;
    "bf16" is bf16 autocast and channels-last; "auto" is that where the CPU has bf16
    instructions (`flags`, default cpu_bf16_flags()), else float32 and channels-last. A bad
    choice is a UserError that names `setting`."""
    if choice not in CPU_PRECISIONS:
        raise UserError(f"{setting} {choice!r}: use {', '.join(CPU_PRECISIONS)}")
    if on_cuda(device):
        return ON_CUDA, "CUDA: bf16 autocast"
    if choice == "float32":
        return FLOAT32, "float32, as asked"
    flags = cpu_bf16_flags() if flags is None else flags
    if choice == "bf16" or flags:
        have = f"the CPU has {', '.join(flags)}" if flags else \
            "the CPU has no bf16 instructions: emulated, several times slower than float32"
        return Precision(bf16=True, channels_last=True), f"bf16 autocast, channels-last ({have})"
    return (Precision(channels_last=True), "float32, channels-last: auto found none of the CPU's "
            f"bf16 instructions ({', '.join(BF16_FLAGS)})")
