"""The report's figures: test error against real images, the gap against the budget, and each
refiner's discriminator accuracy over training."""

from __future__ import annotations

import itertools
import math


def error_figure(summary: list[dict]):
    """Test error against real images (log x), mean and 95 % CI band per mixture."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=120)
    for mixture in sorted({r["mixture"] for r in summary}):
        rs = sorted((r for r in summary if r["mixture"] == mixture), key=lambda r: r["budget"])
        x = [r["budget"] for r in rs]
        ax.plot(x, [r["mean_error"] for r in rs], marker="o", label=mixture)
        low = [r["ci95_low"] for r in rs]
        if not any(math.isnan(v) for v in low):
            ax.fill_between(x, low, [r["ci95_high"] for r in rs], alpha=0.2)
    ax.set_xscale("log")
    ax.set_yscale("log")  # curves at 1-3 % error separate
    ax.set_xlabel("real training images")
    ax.set_ylabel("MNIST test error (log)")
    ax.set_title("error vs data (mean, 95 % CI over seeds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)  # beside, over no curve
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
        renderers = sorted({g.get("renderer", "") for g in gaps})  # a line per renderer
        for (source, style), renderer in itertools.product((("refined", "-"), ("tone", ":")),
                                                           renderers):
            rs = sorted((g for g in gaps if g["instrument"] == instrument and g["source"] == source
                         and g.get("renderer", "") == renderer and g["budget"] != ""),
                        key=lambda g: int(g["budget"]))
            if rs:
                ax.errorbar([int(g["budget"]) for g in rs], [g["auc"] for g in rs],
                            yerr=[[g["auc"] - g["auc_ci_low"] for g in rs],
                                  [g["auc_ci_high"] - g["auc"] for g in rs]],
                            marker="os^v"[renderers.index(renderer) % 4], color=color,
                            linestyle=style, capsize=3,
                            label=f"{source}{f' ({renderer})' if renderer else ''}, {instrument}")
        for g in (g for g in gaps if g["instrument"] == instrument and g["budget"] == ""):
            if g["source"] in ("font", "real-control"):
                ax.hlines(g["auc"], budgets[0], budgets[-1], colors=color,
                          linestyles="--" if g["source"] == "font" else ":",
                          label=f"{g['source']}{f' ({r})' if (r := g.get('renderer')) else ''}, "
                                f"{instrument}")
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


def budget_then_seed(name: str) -> tuple:
    """Sort key of a refiner stage's name: train_refiner/b385/s1 -> ("", 385, 1), and with a
    renderer train_refiner/type/b55 -> ("type", 55)."""
    parts = name.split("/")[1:]
    renderer = "" if parts[0][0] == "b" and parts[0][1:].isdigit() else parts.pop(0)
    return (renderer, *(int(part[1:]) for part in parts))


def d_accuracy_figure(histories: dict[str, list[dict]]):
    """Each refiner's discriminator accuracy on held-out real images against refined renders, over
    training steps: on real images from outside the budget (solid) and on those held out of the
    budget (dashed; few at small budgets). 0.5 is a discriminator that has stopped telling them
    apart."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, history in sorted(histories.items(), key=lambda kv: budget_then_seed(kv[0])):
        label, colour = name.removeprefix("train_refiner/"), None
        for key, style, where in (("d_accuracy_val", "-", "outside the budget"),
                                  ("d_accuracy", "--", "held out of the budget")):
            rows = [h for h in history if key in h]
            if rows:
                line, = ax.plot([h["step"] for h in rows], [h[key] for h in rows], marker=".",
                                linestyle=style, color=colour, label=f"{label}, {where}")
                colour = line.get_color()
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
