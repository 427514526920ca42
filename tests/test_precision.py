"""The CPU fast path: which precision `[runner] cpu_precision` resolves to, that it enters only a
network stage's key and meta, and that a network trained on it comes back float32 and contiguous,
the same bytes from the same call."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from synthgap.devices import FLOAT32, Precision, cpu_bf16_flags, resolve_precision
from synthgap.errors import UserError

AMX = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ZEN3 = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\n"


def test_auto_takes_bf16_only_where_the_cpu_has_its_instructions():
    assert cpu_bf16_flags(AMX) == ["amx_bf16", "avx512_bf16"] and cpu_bf16_flags(ZEN3) == []
    fast, why = resolve_precision("auto", "cpu", cpu_bf16_flags(AMX))
    assert fast == Precision(bf16=True, channels_last=True) and "amx_bf16, avx512_bf16" in why
    fallback, why = resolve_precision("auto", "cpu", [])
    assert fallback == Precision(channels_last=True)
    assert why.startswith("float32, channels-last") and "amx_bf16" in why
    assert resolve_precision("float32", "cpu", ["amx_bf16"])[0] == FLOAT32
    assert resolve_precision("bf16", "cpu", [])[0] == Precision(bf16=True, channels_last=True)
    assert FLOAT32.key() == {"dtype": "float32", "memory_format": "contiguous"}
    with pytest.raises(UserError, match="runner.cpu_precision 'fp16': use auto, float32, bf16"):
        resolve_precision("fp16", "cpu")


def test_a_cpu_without_bf16_runs_float32_channels_last_says_so_and_keys_it(tmp_path, monkeypatch):
    import pipeline
    import synthgap.devices

    monkeypatch.setattr(synthgap.devices, "cpu_bf16_flags", lambda cpuinfo=None: [])
    work = tmp_path / "w"
    result = CliRunner().invoke(pipeline.app, [
        "run", "smoke", "--workdir", str(work), "--device", "cpu", "--only", "oracle",
        "--set", "runner.cpu_precision=auto", "--set", "oracle.steps=3"])
    assert result.exit_code == 0, result.output
    log = (work / "run.log").read_text()
    assert "network stages compute in float32, channels-last: auto found none of the CPU's " \
           "bf16 instructions (amx_bf16, avx512_bf16)" in log
    metas = {m["name"]: m for m in (json.loads(p.read_text())
                                     for p in work.glob("cache/*/*/meta.json"))}
    assert metas["oracle"]["env"]["precision"] == {"dtype": "float32",
                                                   "memory_format": "channels_last"}
    assert "precision" not in metas["split"]["env"]  # it trains no network
    pinned = CliRunner().invoke(pipeline.app, ["status", "smoke", "--workdir", str(work),
                                               "--device", "cpu"])
    assert "oracle" in pinned.output and "run environment changed" in pinned.output
    bad = CliRunner().invoke(pipeline.app, ["run", "smoke", "--workdir", str(work), "--dry-run",
                                            "--set", "runner.cpu_precision=fp16"])
    assert bad.exit_code == 2 and "runner.cpu_precision 'fp16'" in bad.output


def tiny_mixture(n=64):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    return [(images, rng.integers(0, 10, n), 1.0)]


@pytest.mark.parametrize("precision", [Precision(channels_last=True),
                                       Precision(bf16=True, channels_last=True)])
def test_networks_trained_on_the_fast_path_come_back_float32_contiguous_and_alike(precision,
                                                                                   tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from classifiers.detector import GapConfig, c2st
    from classifiers.digits import ClassifierConfig, train_classifiers
    from gan.config import RefinerConfig
    from gan.train import train_refiner

    cpu = torch.device("cpu")
    cfg = ClassifierConfig(steps=4, batch_size=16, width=4)
    cells = [(tiny_mixture(), 0), (tiny_mixture(), 1)]
    twice = [train_classifiers(cells, cfg, cpu, precision=precision) for _ in range(2)]
    plain = train_classifiers(cells, cfg, cpu)
    for a, b, c in zip(*twice, plain):
        for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(),
                                   c.state_dict().values()):
            assert x.dtype == z.dtype and x.is_contiguous(), name
            assert torch.equal(x, y), name  # one call, one result
            torch.testing.assert_close(x, z, atol=0.05, rtol=0.05)  # near float32's
    images, labels, _ = tiny_mixture()[0]
    ref = RefinerConfig(steps=2, batch_size=8, log_every=1, warp=True, shape_d=True)
    writer = SummaryWriter(str(tmp_path))  # its image grids run F outside the training step
    runs = [train_refiner(images, images[::-1].copy(), labels, ref, 0, cpu, real_labels=labels,
                          precision=precision, writer=w) for w in (writer, None)]
    writer.close()
    assert runs[0][1] == runs[1][1]  # the writer changes nothing in training
    for name, net in runs[0][0].items():
        for (key, w), v in zip(net.state_dict().items(), runs[1][0][name].state_dict().values()):
            assert w.is_contiguous() and w.dtype != torch.bfloat16 and torch.equal(w, v), key
    gap = GapConfig(steps=3, batch_size=16, samples=64)
    assert c2st(images, images[::-1], "pixel", gap, 0, cpu, precision=precision) == \
        c2st(images, images[::-1], "pixel", gap, 0, cpu, precision=precision)


def test_the_study_declares_which_stages_run_networks():
    from synthgap.study import config
    from synthgap.study.graph import build_graph

    name, cfg = config.load("smoke", [])
    stages = build_graph(name, cfg)
    assert {s.kind for s in stages.values() if s.network} == \
        {"classify", "oracle", "train_refiner", "refine", "gap"}
