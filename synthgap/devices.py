"""The device a command or a stage runs on, chosen in one place with its one error message."""

from __future__ import annotations

import platform

from synthgap.errors import UserError

NO_CUDA = "--device cuda was asked for but torch sees no CUDA device; use --device auto or cpu"


def on_cuda(device: str) -> bool:
    """Whether `device` ("auto", "cpu" or "cuda") runs on a GPU here."""
    import torch

    return device != "cpu" and torch.cuda.is_available()


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
    return f"{platform.processor() or platform.machine()} CPU"
