"""The regimes report: where refinement pays. regimes.md gives, per regime (renderer/classifier/
mixing) and budget, the paired differences between refined and raw renders and each against
real digits alone, what the label controls keep of each source's gain, what renders alone
teach (classification accuracy score), each mixture's worth in real images and the refined
renders' pixel AUC; plots/regimes.png draws `real+gan - real+font` along the regimes. The
README's headline is written from the same numbers (`headline`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from synthgap.study.report import README_BEGIN, README_END, by_regime, differences, fmt_ci, mean_ci
from synthgap.study.worth import errors_of, fmt_worth, interval95, seed_draws

# the paired differences of each regime: (mixture, against)
CONTRASTS = [("real+gan", "real+font"), ("real+font", "real"), ("real+gan", "real"),
             ("real+font:shuffled", "real"), ("real+gan:shuffled", "real"),
             ("real+font", "real+font:shuffled"), ("real+gan", "real+gan:shuffled")]
FIGURE = "plots/regimes.png"  # regimes.md's figure, in the report folder


def contrast(error: dict, a: str, b: str, budget: int) -> tuple[float, float, float] | None:
    """The mean paired difference error(a) - error(b) at `budget` with its 95 % t interval."""
    d = differences(error, a, b, budget)
    return mean_ci(d, clip=False) if d else None


def share_kept(error: dict, source: str, budget: int) -> tuple[float, float, float] | None:
    """The share of `source`'s gain over real digits (real+X - real) that its label control keeps
    (real+X:shuffled - real), where there is a gain whose interval excludes 0 (lies below 0), on
    the seeds that ran all three: the ratio of the mean differences, with a 95 % interval from
    DRAWS draws of the seeds."""
    seeds = sorted(s for m, b, s in error if m == source and b == budget
                   and (f"{source}:shuffled", b, s) in error and ("real", b, s) in error)
    if not seeds:
        return None
    d = np.array([[error[source, budget, s] - error["real", budget, s],
                   error[f"{source}:shuffled", budget, s] - error["real", budget, s]]
                  for s in seeds])
    if not mean_ci(d[:, 0], clip=False)[2] < 0:  # no gain the seeds agree on
        return None
    means = d[seed_draws(len(seeds))].mean(1)
    ratios = means[:, 1] / np.where(means[:, 0] == 0, np.nan, means[:, 0])
    low, high = interval95(float(r) for r in ratios[~np.isnan(ratios)])
    return float(d[:, 1].mean() / d[:, 0].mean()), low, high


def errors_by_regime(rows: list[dict]) -> dict[str, dict[tuple, float]]:
    """Each regime's (mixture, budget, seed) -> test error."""
    return {r: errors_of(mine) for r, mine in by_regime(rows).items()}


def mixed_budgets(rows: list[dict]) -> list[int]:
    """The budgets at which some regime mixes real and synthetic digits."""
    return sorted({int(r["budget"]) for r in rows if r["mixture"].startswith("real+")})


def verdict(ci: tuple[float, float, float] | None, better: str, worse: str) -> str:
    if ci is None:
        return "not run"
    if ci[2] < 0:
        return better
    if ci[1] > 0:
        return worse
    return "no difference the seeds agree on"


def pct(ci: tuple[float, float, float] | None) -> str:
    """A paired difference in points of error: "-1.23 (-2.00 to -0.46)"."""
    if ci is None:
        return "not run"
    mean, low, high = (round(100 * v, 2) + 0.0 for v in ci)
    if math.isnan(low):  # one seed: no interval
        return f"{mean:+.2f}"
    return f"{mean:+.2f} ({low:+.2f} to {high:+.2f})"


def headline(rows: list[dict], regimes: list[str]) -> list[str]:
    """The answer in a few lines: refined against raw renders in the first regime and along the
    ladder, and the share of the gain the label controls keep, with paired 95 % intervals."""
    by = errors_by_regime(rows)
    first = regimes[0]
    budgets = mixed_budgets(rows)
    if not budgets:
        return ["No regime mixes real and synthetic digits: there is nothing to compare."]
    lines = [f"In the first regime of the ladder, `{first}`, the paired difference in test error "
             "(points of %, mean over seeds with its 95 % interval):"]
    for b in sorted(budgets, reverse=True):
        gf, gr = contrast(by[first], "real+gan", "real+font", b), contrast(by[first], "real+gan", "real", b)
        lines.append(f"- at {b:,} real images, `real+gan − real+font` is {pct(gf)}: "
                     f"{verdict(gf, 'refined renders beat raw ones', 'raw renders beat refined ones')}; "
                     f"`real+gan − real` is {pct(gr)}: "
                     f"{verdict(gr, 'refined renders help', 'refined renders hurt')}.")
    lines.append("")
    lines.append("Along the ladder, one factor a step, `real+gan − real+font`:")
    for regime in regimes:
        lines.append(f"- `{regime}`: " + "; ".join(
            f"{pct(contrast(by[regime], 'real+gan', 'real+font', b))} at {b:,}" for b in budgets) + ".")
    kept = []
    for regime in regimes:
        shares = [f"`{source}`'s at {b:,}: {100 * share[0]:.0f} % ({100 * share[1]:.0f} to "
                  f"{100 * share[2]:.0f})" for source in ("real+font", "real+gan") for b in budgets
                  if (share := share_kept(by[regime], source, b)) is not None]
        if shares:
            kept.append(f"- `{regime}`: " + "; ".join(shares) + ".")
    if kept:
        lines += ["", "The share of a gain over real digits that its shuffled-label control keeps "
                  "(below 0: the control does worse than real digits alone), where the gain's "
                  "interval lies below 0:", *kept]
    return lines


def headline_block(rows: list[dict], experiment: str, page: str, figure: str) -> str:
    """The README's block of a regimes study: its headline, figure and a link to its tables."""
    regimes = list(by_regime(rows))
    return "\n".join([README_BEGIN.format(experiment=experiment), *headline(rows, regimes), "",
                      f"![real+gan − real+font along the ladder]({figure})", "",
                      f"Every table of `{experiment}`, and the machine it ran on: [{page}]({page}).",
                      README_END])


def ladder_steps(by: dict, regimes: list[str], budgets: list[int]) -> list[str]:
    """regimes.md's table of each step's change in `real+gan - real+font`, paired by seed."""
    lines = ["", "### Each step of the ladder", "",
             "The change a step makes to `real+gan − real+font`, paired by seed (the difference of "
             "the two regimes' differences).", "",
             "| step | changes | " + " | ".join(f"{b:,} real" for b in budgets) + " |",
             "|---|---|" + "---:|" * len(budgets)]
    for a, b in zip(regimes, regimes[1:]):
        changed = [f"{x} → {y}" for x, y in zip(a.split("/"), b.split("/")) if x != y]
        cells = []
        for budget in budgets:
            d = {}
            for regime in (a, b):
                e = by[regime]
                d[regime] = {s: e["real+gan", budget, s] - e["real+font", budget, s]
                             for m, bud, s in e if m == "real+gan" and bud == budget
                             and ("real+font", budget, s) in e}
            seeds = sorted(d[a].keys() & d[b].keys())
            cells.append(fmt_ci(*mean_ci([d[b][s] - d[a][s] for s in seeds], clip=False),
                                signed=True) if seeds else "")
        lines.append(f"| `{a}` → `{b}` | {', '.join(changed)} | " + " | ".join(cells) + " |")
    return lines


def regime_lines(regime: str, rows: list[dict], gaps: list[dict], worths: list[dict]) -> list[str]:
    """regimes.md's table of one regime: paired differences, controls, renders alone, worth in
    real images (`worths`, the regime's rows of worth.csv) and the pixel AUC of its renders."""
    error = errors_of(rows)
    budgets = sorted({b for m, b, _ in error if m.startswith("real+")})
    real = sorted({b for m, b, _ in error if m == "real"})
    lines = ["", f"## Regime `{regime}`", "",
             "| | " + " | ".join(f"{b:,} real" for b in budgets) + " |",
             "|---|" + "---:|" * len(budgets)]
    for a, b in CONTRASTS:
        cells = [contrast(error, a, b, budget) for budget in budgets]
        if any(cells):
            lines.append(f"| `{a} − {b}` | " + " | ".join(
                fmt_ci(*c, signed=True) if c else "" for c in cells) + " |")
    for source in ("real+font", "real+gan"):
        ran = {b for m, b, _ in error if m == f"{source}:shuffled"}
        if ran:
            lines.append(f"| share of `{source}`'s gain its control keeps | " + " | ".join(
                fmt_ci(*c, digits=2) if (c := share_kept(error, source, budget))
                else "no gain the seeds agree on" if budget in ran else "not run"
                for budget in budgets) + " |")
    for alone in ("font", "gan"):
        cells = [[1 - error[alone, budget, s] for m, bud, s in error if m == alone and bud == budget]
                 for budget in budgets]
        if any(cells):
            lines.append(f"| accuracy of `{alone}` alone (CAS) | " + " | ".join(
                fmt_ci(*mean_ci(c)) if c else "" for c in cells) + " |")
    worths = {(w["mixture"], w["budget"]): w for w in worths}
    for mixture in sorted({m for m, _ in worths if m.startswith("real+")}):
        lines.append(f"| `{mixture}` worth in real images | " + " | ".join(
            fmt_worth(w, (real[0], real[-1])) if (w := worths.get((mixture, b))) else ""
            for b in budgets) + " |")
    renderer = regime.split("/")[0]
    for source in ("font", "refined"):
        found = {g["budget"]: g for g in gaps if g["instrument"] == "c2st-pixel"
                 and g["source"] == source and g.get("renderer") == renderer}
        if found:
            cells = [found.get(b, found.get("")) for b in budgets]
            lines.append(f"| pixel AUC of {'raw' if source == 'font' else 'refined'} renders | "
                         + " | ".join(fmt_ci(float(g["auc"]), float(g["auc_ci_low"]),
                                             float(g["auc_ci_high"]), 3) if g else "" for g in cells)
                         + " |")
    return lines


def regimes_markdown(rows: list[dict], gaps: list[dict], regimes: list[str], experiment: str,
                     machines: list[str], worths: list[dict]) -> str:
    """regimes.md: the answer, `real+gan - real+font` along the ladder and each step's change of
    it, then each regime's table (`worths`: worth.csv's rows, with their regime)."""
    by = errors_by_regime(rows)
    budgets = mixed_budgets(rows)
    lines = [f"# Where refinement pays: `{experiment}`", "",
             f"Written by `pipeline report {experiment}` from the run's cached stages. Its classifier "
             f"cells ran on {'; '.join(machines)}. A regime is renderer/classifier/mixing. A paired "
             "difference is the mean over seeds of one mixture's test error minus another's on "
             "the same real images, with its 95 % t interval: below 0 the first is better. The "
             "run's results.md has every error table of every regime.", "", "## The answer", "",
             *headline(rows, regimes), "", f"![real+gan − real+font along the ladder]({FIGURE})",
             "", "## Refined against raw renders along the ladder", "",
             "| regime | " + " | ".join(f"{b:,} real" for b in budgets) + " |",
             "|---|" + "---:|" * len(budgets)]
    for regime in regimes:
        lines.append(f"| `{regime}` | " + " | ".join(
            fmt_ci(*c, signed=True) if (c := contrast(by[regime], "real+gan", "real+font", b)) else ""
            for b in budgets) + " |")
    lines += ladder_steps(by, regimes, budgets)
    worths_of = by_regime(worths)
    for regime, mine in by_regime(rows).items():
        lines += regime_lines(regime, mine, gaps, worths_of.get(regime, []))
    return "\n".join(lines) + "\n"


def regimes_figure(rows: list[dict], regimes: list[str]):
    """Small multiples, a panel per budget: `real+gan - real+font`, `real+font - real` and
    `real+gan - real` in points of error along the regimes, with their 95 % intervals."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = errors_by_regime(rows)
    budgets = mixed_budgets(rows) or [0]  # [0]: one empty panel
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.5 * len(budgets), 4.2), dpi=120,
                             squeeze=False, sharey=False)
    x = np.arange(len(regimes))
    for ax, budget in zip(axes[0], budgets):
        for k, (a, b) in enumerate(CONTRASTS[:3]):
            found = [contrast(by[r], a, b, budget) for r in regimes]
            mean = np.array([100 * c[0] if c else math.nan for c in found])
            err = np.array([[100 * (c[0] - c[1]), 100 * (c[2] - c[0])] if c and not math.isnan(c[1])
                            else [0, 0] for c in found]).T
            ax.errorbar(x + (k - 1) * 0.15, mean, yerr=err, marker="os^"[k], capsize=3,
                        linestyle="-" if k == 0 else ":", label=f"{a} − {b}")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(x, [r.replace("/", "\n") for r in regimes], fontsize=7)
        ax.set_title(f"{budget:,} real images")
        ax.set_ylabel("paired difference in test error (points)")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Where refinement pays: below 0 the first is better (mean, 95 % CI over seeds)")
    fig.tight_layout()
    return fig


def write_regimes(out: Path, rows: list[dict], gaps: list[dict], regimes: list[str],
                  experiment: str, machines: list[str], worths: list[dict]) -> None:
    """regimes.md and its figure (FIGURE) in `out` (a report folder)."""
    (out / "regimes.md").write_text(regimes_markdown(rows, gaps, regimes, experiment, machines,
                                                     worths))
    regimes_figure(rows, regimes).savefig(out / FIGURE)
