"""Results tables, TensorBoard scalars and image grids, and the error-vs-data figure."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

# two-sided 95 % critical values of Student's t for 1..30 degrees of freedom
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
       2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
       2.052, 2.048, 2.045, 2.042]

RESULT_COLUMNS = ["mixture", "budget", "seed", "test_error", "n_real", "n_synthetic", "steps"]
SUMMARY_COLUMNS = ["mixture", "budget", "n_seeds", "mean_error", "ci95_low", "ci95_high"]
GAP_COLUMNS = ["instrument", "source", "budget", "auc", "auc_ci_low", "auc_ci_high", "accuracy",
               "p_value", "frechet", "label_retention", "n_test"]


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and the 95 % t confidence interval of the mean, clipped to [0, 1] (nan bounds for a
    single value)."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = (T95[len(v) - 2] if len(v) - 1 <= len(T95) else 1.96) * v.std(ddof=1) / math.sqrt(len(v))
    return mean, max(0.0, mean - half), min(1.0, mean + half)  # errors are fractions in [0, 1]


def summarize(rows: list[dict]) -> list[dict]:
    """One summary row per (mixture, budget) over seeds, sorted by mixture then budget."""
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["mixture"], int(r["budget"])), []).append(float(r["test_error"]))
    out = []
    for (mixture, budget), errors in sorted(cells.items()):
        mean, low, high = mean_ci(errors)
        out.append({"mixture": mixture, "budget": budget, "n_seeds": len(errors),
                    "mean_error": mean, "ci95_low": low, "ci95_high": high})
    return out


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def error_figure(summary: list[dict]):
    """Test error against real images (log x), mean and 95 % CI band per mixture."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for mixture in sorted({r["mixture"] for r in summary}):
        rs = sorted((r for r in summary if r["mixture"] == mixture), key=lambda r: r["budget"])
        x = [r["budget"] for r in rs]
        ax.plot(x, [r["mean_error"] for r in rs], marker="o", label=mixture)
        low = [r["ci95_low"] for r in rs]
        if not any(math.isnan(v) for v in low):
            ax.fill_between(x, low, [r["ci95_high"] for r in rs], alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("real training images")
    ax.set_ylabel("MNIST test error")
    ax.set_title("error vs data (mean, 95 % CI over seeds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def gap_figure(gaps: list[dict]):
    """AUC of each instrument: refined (solid) and toned (dotted) renders against the budget they
    were fitted on (log x), the sources without a budget as dashed horizontal lines, and 0.5 (no
    detectable gap) in black."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    budgets = sorted({int(g["budget"]) for g in gaps if g["budget"] != ""}) or [1, 10]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, instrument in enumerate(sorted({g["instrument"] for g in gaps})):
        color = colors[i % len(colors)]
        for source, style in (("refined", "-"), ("tone", ":")):
            rs = sorted((g for g in gaps if g["instrument"] == instrument and g["source"] == source
                         and g["budget"] != ""), key=lambda g: int(g["budget"]))
            if rs:
                ax.errorbar([int(g["budget"]) for g in rs], [g["auc"] for g in rs],
                            yerr=[[g["auc"] - g["auc_ci_low"] for g in rs],
                                  [g["auc_ci_high"] - g["auc"] for g in rs]],
                            marker="o", color=color, linestyle=style, capsize=3,
                            label=f"{source}, {instrument}")
        for g in (g for g in gaps if g["instrument"] == instrument and g["budget"] == ""):
            if g["source"] in ("font", "real-control"):
                ax.hlines(g["auc"], budgets[0], budgets[-1], colors=color,
                          linestyles="--" if g["source"] == "font" else ":",
                          label=f"{g['source']}, {instrument}")
    ax.axhline(0.5, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_ylim(0.4, 1.02)
    ax.set_xlabel("real images the refiner saw")
    ax.set_ylabel("real/synthetic AUC (0.5 = no gap)")
    ax.set_title("gap vs budget")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def d_accuracy_figure(histories: dict[str, list[dict]]):
    """Each refiner's discriminator accuracy on held-out real images against refined renders, over
    training steps; 0.5 is a discriminator that has stopped telling them apart."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    def budget_then_seed(name):
        return [int(part[1:]) for part in name.split("/")[1:]]

    for name, history in sorted(histories.items(), key=lambda kv: budget_then_seed(kv[0])):
        rows = [h for h in history if "d_accuracy" in h]
        ax.plot([h["step"] for h in rows], [h["d_accuracy"] for h in rows], marker=".",
                label=name.removeprefix("train_refiner/"))
    ax.axhline(0.5, color="black", linewidth=0.8)
    ax.axhline(0.6, color="grey", linewidth=0.8, linestyle="--")
    ax.set_ylim(0.3, 1.02)
    ax.set_xlabel("refiner step")
    ax.set_ylabel("D accuracy, held-out real vs refined")
    ax.set_title("does the discriminator still teach?")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_report(out: Path, rows: list[dict], grids: dict[str, np.ndarray],
                 refiners: dict | None = None, gaps: list[dict] | None = None,
                 histories: dict | None = None) -> list[dict]:
    """results.csv, summary.csv, plots/error_vs_data.png and tb/ in `out`; return the summary."""
    from torch.utils.tensorboard import SummaryWriter
    import torch
    from torchvision.utils import make_grid

    rows = sorted(rows, key=lambda r: (r["mixture"], int(r["budget"]), int(r["seed"])))
    summary = summarize(rows)
    write_csv(out / "results.csv", rows, RESULT_COLUMNS)
    write_csv(out / "summary.csv", summary, SUMMARY_COLUMNS)
    (out / "plots").mkdir()
    fig = error_figure(summary)
    fig.savefig(out / "plots" / "error_vs_data.png")
    writer = SummaryWriter(str(out / "tb"))
    for r in summary:
        writer.add_scalar(f"error/{r['mixture']}", r["mean_error"], global_step=r["budget"])
    writer.add_figure("error_vs_data", fig)
    if gaps:
        gaps = sorted(gaps, key=lambda g: (g["source"], str(g["budget"]).zfill(6), g["instrument"]))
        write_csv(out / "gap.csv", gaps, GAP_COLUMNS)
        gfig = gap_figure(gaps)
        gfig.savefig(out / "plots" / "gap_vs_budget.png")
        writer.add_figure("gap_vs_budget", gfig)
        for g in gaps:
            step = int(g["budget"]) if g["budget"] != "" else 0
            writer.add_scalar(f"gap/{g['instrument']}/{g['source']}", g["auc"], global_step=step)
            if g["instrument"] == "c2st-pixel":
                writer.add_scalar(f"gap/frechet/{g['source']}", g["frechet"], global_step=step)
    if histories and any("d_accuracy" in h for hs in histories.values() for h in hs):
        dfig = d_accuracy_figure(histories)
        dfig.savefig(out / "plots" / "d_accuracy.png")
        writer.add_figure("d_accuracy", dfig)
    for budget, metrics in sorted((refiners or {}).items()):
        for key in ("label_retention", "label_agreement", "oracle_accuracy_on_renders",
                    "retention_of_read_renders"):
            if key in metrics:
                writer.add_scalar(f"refiner/{key}", metrics[key], global_step=budget)
    for name, images in grids.items():
        grid = make_grid(torch.as_tensor(images[:64]), nrow=8, padding=2, pad_value=128)
        writer.add_image(f"samples/{name}", grid)
    writer.close()
    return summary
