"""Results tables and their statistics, TensorBoard scalars and image grids (the figures are in
synthgap/study/figures.py)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from synthgap.study.figures import budget_then_seed, d_accuracy_figure, error_figure, gap_figure
from synthgap.study.board import add_grids, log_step, tensorboard_curves, tensorboard_gaps
from synthgap.study.worth import COLUMNS as WORTH_COLUMNS, errors_of, worth, worth_lines

# two-sided 95 % critical values of Student's t for 1..30 degrees of freedom
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
       2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
       2.052, 2.048, 2.045, 2.042]

RESULT_COLUMNS = ["mixture", "budget", "seed", "test_error", "n_real", "n_synthetic", "steps"]
SUMMARY_COLUMNS = ["mixture", "budget", "n_seeds", "mean_error", "ci95_low", "ci95_high"]
PAIRED_COLUMNS = ["mixture", "against", "budget", "n_seeds", "mean_difference", "ci95_low",
                  "ci95_high"]
GAP_COLUMNS = ["instrument", "source", "budget", "auc", "auc_ci_low", "auc_ci_high", "accuracy",
               "p_value", "frechet", "label_retention", "n_test"]


def mean_ci(values, clip: bool = True) -> tuple[float, float, float]:
    """Mean and the 95 % t confidence interval of the mean, clipped to [0, 1] unless `clip` is
    false (nan bounds for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = (T95[len(v) - 2] if len(v) - 1 <= len(T95) else 1.96) * v.std(ddof=1) / math.sqrt(len(v))
    if not clip:
        return mean, mean - half, mean + half
    return mean, max(0.0, mean - half), min(1.0, mean + half)  # errors are fractions in [0, 1]


def by_regime(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by their regime ("" for a study without regimes), in the order the regimes first come."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r.get("regime", ""), []).append(r)
    return out


def with_regime(regime: str, rows: list[dict]) -> list[dict]:
    return [{"regime": regime, **r} for r in rows] if regime else rows


def summarize(rows: list[dict]) -> list[dict]:
    """One summary row per (regime, mixture, budget) over seeds, sorted by mixture then budget
    within each regime."""
    out = []
    for regime, mine in by_regime(rows).items():
        cells: dict = {}
        for r in mine:
            cells.setdefault((r["mixture"], int(r["budget"])), []).append(float(r["test_error"]))
        for (mixture, budget), errors in sorted(cells.items()):
            mean, low, high = mean_ci(errors)
            out += with_regime(regime, [{"mixture": mixture, "budget": budget,
                                         "n_seeds": len(errors), "mean_error": mean,
                                         "ci95_low": low, "ci95_high": high}])
    return out


def compared_pairs(mixtures) -> list[tuple[str, str]]:
    """The pairs of mixtures the paired table compares, of those a run has: each `real+X` against
    `real` (does X help the real images?), `real+gan` against the other `real+X`, `gan` against
    `font` and `tone` (does the refiner add anything?) and each `real+X` against its label control
    `real+X:shuffled` (how much of X's help is digit knowledge?)."""
    have = set(mixtures)
    pairs = [(m, "real") for m in sorted(have) if m.startswith("real+")]
    pairs += [("real+gan", m) for m in sorted(have)
              if m.startswith("real+") and m != "real+gan" and ":" not in m]
    pairs += [("gan", "font"), ("gan", "tone")]
    pairs += [(m.partition(":")[0], m) for m in sorted(have) if m.startswith("real+") and ":" in m]
    return [(a, b) for a, b in pairs if a in have and b in have]


def differences(error: dict, a: str, b: str, budget: int) -> list[float]:
    """error(a) - error(b) on every seed both ran at `budget` (error: (mixture, budget, seed) ->
    test error)."""
    return [e - error[b, budget, s] for (m, bud, s), e in sorted(error.items())
            if m == a and bud == budget and (b, budget, s) in error]


def paired(rows: list[dict]) -> list[dict]:
    """Paired differences of test error: for each regime, compared pair (a, b) and budget, the
    mean over the seeds both ran of error(a) - error(b), with its 95 % t interval. Every mixture
    of one budget and seed trains on the same real images, so the difference leaves out how lucky
    the seed's draw was, which dominates each mixture's own interval at small budgets."""
    out = []
    for regime, mine in by_regime(rows).items():
        error = errors_of(mine)
        for a, b in compared_pairs({r["mixture"] for r in mine}):
            for budget in sorted({k[1] for k in error if k[0] == a}):
                diffs = differences(error, a, b, budget)
                if diffs:
                    mean, low, high = mean_ci(diffs, clip=False)
                    out += with_regime(regime, [{"mixture": a, "against": b, "budget": budget,
                                                 "n_seeds": len(diffs), "mean_difference": mean,
                                                 "ci95_low": low, "ci95_high": high}])
    return out


def paired_lines(pairs: list[dict]) -> list[str]:
    """results.md's table of paired differences."""
    if not pairs:
        return []
    budgets = sorted({p["budget"] for p in pairs})
    lines = ["", "## Paired differences", "",
             "Test error of one mixture minus another's on the same seeds, whose real images "
             "are the same, as the mean over seeds with its 95 % t interval: below 0 the first "
             "is better, and an interval that does not hold 0 is a difference the seeds agree "
             "on.", "",
             "| mixture | against | " + " | ".join(f"{b:,} real" for b in budgets) + " |",
             "|---|---|" + "---:|" * len(budgets)]
    cells = {(p["mixture"], p["against"], p["budget"]): p for p in pairs}
    for a, b in dict.fromkeys((p["mixture"], p["against"]) for p in pairs):
        row = [fmt_ci(c["mean_difference"], c["ci95_low"], c["ci95_high"], signed=True)
               if (c := cells.get((a, b, budget))) else "" for budget in budgets]
        lines.append(f"| {a} | {b} | " + " | ".join(row) + " |")
    return lines


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def fmt_ci(mean, low, high, digits=4, signed=False) -> str:
    f = f"{'+' if signed else ''}.{digits}f"
    if signed:  # what rounds to zero reads +0.0000, not -0.0000
        mean, low, high = (round(v, digits) + 0.0 for v in (mean, low, high))
    if any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return f"{mean:{f}}"
    return f"{mean:{f}} ({low:{f}} – {high:{f}})"


def d_accuracy_lines(histories: dict[str, list[dict]]) -> list[str]:
    """results.md's table of each refiner's discriminator accuracy over training."""
    lines = ["", "## Discriminator accuracy", "",
             "D_real's accuracy on real digits against refined renders at every log of training "
             "(0.5: it no longer tells them apart): its range, its last value and the logs above "
             "0.6; on real digits from outside every budget (`val_images`) and on those held out "
             "of the budget (`holdout`; few at small budgets).", "",
             "| refiner | logs | outside the budget | above 0.6 | held out of the budget | above 0.6 |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, history in sorted(histories.items(), key=lambda kv: budget_then_seed(kv[0])):
        row = [name.removeprefix("train_refiner/"), str(len(history))]
        for key in ("d_accuracy_val", "d_accuracy"):
            values = [h[key] for h in history if key in h]
            row += ([f"{min(values):.3f}–{max(values):.3f} ({values[-1]:.3f})",
                     str(sum(v > 0.6 for v in values))] if values else ["", ""])
        lines.append("| " + " | ".join(row) + " |")
    return lines


def error_lines(summary: list[dict]) -> list[str]:
    """results.md's table of every mixture's test error by budget."""
    budgets = sorted({int(r["budget"]) for r in summary})
    lines = ["| mixture | " + " | ".join(f"{b:,} real" for b in budgets) + " |",
             "|---|" + "---:|" * len(budgets)]
    cells = {(r["mixture"], int(r["budget"])): r for r in summary}
    for mixture in sorted({r["mixture"] for r in summary}):
        row = [fmt_ci(float(c["mean_error"]), float(c["ci95_low"]), float(c["ci95_high"]))
               if (c := cells.get((mixture, b))) else "" for b in budgets]
        lines.append(f"| {mixture} | " + " | ".join(row) + " |")
    return lines


def gap_lines(gaps: list[dict]) -> list[str]:
    """results.md's table of the gap instruments' AUCs and Fréchet distances by source."""
    instruments = sorted({g["instrument"] for g in gaps})
    lines = ["", "## Real/synthetic gap", "",
             "AUC of each instrument against held-out real digits (0.5: no gap), with its "
             "DeLong 95 % interval; Fréchet distance in the oracle's features.", "",
             "| source | budget | " + " | ".join(instruments) + " | Fréchet |",
             "|---|---:|" + "---:|" * (len(instruments) + 1)]
    by_source: dict = {}
    for g in gaps:
        by_source.setdefault((source_name(g), str(g["budget"])), {})[g["instrument"]] = g
    for (source, budget), row in sorted(by_source.items(),
                                        key=lambda kv: (kv[0][0], kv[0][1].zfill(6))):
        aucs = [fmt_ci(float(g["auc"]), float(g["auc_ci_low"]), float(g["auc_ci_high"]), 3)
                if (g := row.get(i)) else "" for i in instruments]
        frechet = float(next(iter(row.values()))["frechet"])
        lines.append(f"| {source} | {budget} | " + " | ".join(aucs) + f" | {frechet:.1f} |")
    return lines


def source_name(g: dict) -> str:
    """A gap source with its renderer, in a study with regimes: "refined (type)"."""
    return g["source"] + (f" ({g['renderer']})" if g.get("renderer") else "")


def retention_lines(refiners: dict, tones: dict) -> list[str]:
    """results.md's label-retention table (refiners, tones: budget, or (renderer, budget), ->
    the metrics of its refine or tone stage)."""
    keys = (("label_retention", "retention"), ("retention_of_read_renders", "of read renders"),
            ("label_agreement", "agreement"), ("oracle_accuracy_on_renders", "oracle on renders"))
    lines = ["", "## Label retention", "",
             "The oracle's accuracy on refined or toned renders against their render labels; "
             "of read renders: over the renders it reads right; agreement: how often it reads "
             "a changed render as it reads the render.", "",
             "| source | budget | " + " | ".join(k[1] for k in keys) + " |",
             "|---|---:|" + "---:|" * len(keys)]
    for source, found in (("refined", refiners), ("tone", tones)):
        for (renderer, budget), m in sorted(
                ((k if isinstance(k, tuple) else ("", k)), m) for k, m in found.items()):
            lines.append(f"| {source_name({'source': source, 'renderer': renderer})} | {budget} | "
                         + " | ".join(f"{m[k]:.4f}" if k in m else "" for k, _ in keys) + " |")
    return lines


def results_markdown(experiment: str, summary: list[dict], gaps: list[dict],
                     refiners: dict, tones: dict, note: str = "",
                     histories: dict | None = None, pairs: list[dict] | None = None,
                     machines: list[str] | None = None, worths: list[dict] | None = None) -> str:
    """results.md: the error, paired-difference, worth, gap, retention and discriminator tables
    of a finished run (the first three per regime, in a study with regimes); `machines`: what its
    cells ran on (the same code gives other floats on another CPU's kernels)."""
    lines = [f"# Results of `{experiment}`", "",
             note or f"Written by `pipeline report {experiment}` from the run's cached stages."
             + (f" Its classifier cells ran on {'; '.join(machines)}." if machines else "")]
    pairs, worths = by_regime(pairs or []), by_regime(worths or [])
    for regime, mine in by_regime(summary).items():
        real = sorted(int(r["budget"]) for r in mine if r["mixture"] == "real")
        head = "##" if not regime else "###"
        lines += ([""] + ([f"## Regime {regime}", ""] if regime else [])
                  + [f"{head} MNIST test error", "",
                     "Mean over seeds with its 95 % t interval; the MNIST test set (10,000 "
                     "digits).", ""] + error_lines(mine))
        more = paired_lines(pairs.get(regime, [])) + worth_lines(worths.get(regime, []), real)
        lines += [f"#{line}" if regime and line.startswith("## ") else line for line in more]
    if gaps:
        lines += gap_lines(gaps)
    if refiners or tones:
        lines += retention_lines(refiners, tones)
    if histories:
        lines += d_accuracy_lines(histories)
    return "\n".join(lines) + "\n"


def write_report(out: Path, rows: list[dict], grids: dict[str, np.ndarray],
                 refiners: dict | None = None, gaps: list[dict] | None = None,
                 histories: dict | None = None, experiment: str = "",
                 tones: dict | None = None, machines: list[str] | None = None
                 ) -> tuple[list[dict], list[dict]]:
    """results.csv, summary.csv, paired.csv, worth.csv, results.md, plots/ and tb/ in `out`;
    return the summary and the worth rows. Rows of a study with regimes carry a `regime` (a cell
    shared by regimes appears under each); every table is then per regime.

    TensorBoard: every mixture is a run `mixtures/<mixture>` (so each gets its own colour) with
    its error (`error`, or `error/<regime>`) and its worth in real images against x =
    100·log10(budget), and every gap source a run `sources/<source>` with the AUC of each
    instrument (`gap/<instrument>`); a custom-scalars layout in the run `study` overlays the runs
    of a tag in one chart. Every cell is a run `cells/<mixture>-b<budget>-s<seed>` with its
    HParams (mixture, budget, seed, steps, synthetic fraction) and its test error."""
    from torch.utils.tensorboard import SummaryWriter

    order = {regime: i for i, regime in enumerate(by_regime(rows))}
    rows = sorted(rows, key=lambda r: (order[r.get("regime", "")], r["mixture"], int(r["budget"]),
                                       int(r["seed"])))
    regimes = [r for r in order if r]
    first = ["regime"] if regimes else []
    summary, pairs = summarize(rows), paired(rows)
    worths = [w for regime, mine in by_regime(rows).items() for w in with_regime(regime, worth(mine))]
    write_csv(out / "results.csv", rows, first + RESULT_COLUMNS)
    write_csv(out / "summary.csv", summary, first + SUMMARY_COLUMNS)
    write_csv(out / "paired.csv", pairs, first + PAIRED_COLUMNS)
    write_csv(out / "worth.csv", worths, first + WORTH_COLUMNS)
    (out / "plots").mkdir()
    fig = error_figure([r for r in summary if r.get("regime", "") == next(iter(order), "")])
    fig.savefig(out / "plots" / "error_vs_data.png")
    writer = SummaryWriter(str(out / "tb" / "study"))
    writer.add_figure("error_vs_data", fig)
    layout = tensorboard_curves(out / "tb", summary, worths, regimes)
    for r in rows:
        hparams = {"mixture": r["mixture"], "budget": int(r["budget"]), "seed": int(r["seed"]),
                   "steps": int(r["steps"]),
                   "synthetic_fraction": float(r.get("synthetic_fraction", 0.0)),
                   **({"regime": r["regime"]} if regimes else {})}
        where = f"{r['regime'].replace('/', '-')}-" if regimes else ""
        writer.add_hparams(hparams, {"hparam/test_error": float(r["test_error"])},
                           run_name=f"../cells/{where}{r['mixture']}-b{r['budget']}-s{r['seed']}")
    if gaps:
        gaps = sorted(gaps, key=lambda g: (g["source"], str(g["budget"]).zfill(6), g["instrument"]))
        write_csv(out / "gap.csv", gaps, (["renderer"] if regimes else []) + GAP_COLUMNS)
        gfig = gap_figure(gaps)
        gfig.savefig(out / "plots" / "gap_vs_budget.png")
        writer.add_figure("gap_vs_budget", gfig)
        layout["gap vs budget"] = tensorboard_gaps(out / "tb", gaps)
    writer.add_custom_scalars(layout)
    if histories and any("d_accuracy" in h for hs in histories.values() for h in hs):
        dfig = d_accuracy_figure(histories)
        dfig.savefig(out / "plots" / "d_accuracy.png")
        writer.add_figure("d_accuracy", dfig)
    for at, metrics in sorted((refiners or {}).items(), key=lambda kv: str(kv[0])):
        renderer, budget = at if isinstance(at, tuple) else ("", at)
        for key in ("label_retention", "label_agreement", "oracle_accuracy_on_renders",
                    "retention_of_read_renders"):
            if key in metrics:
                writer.add_scalar("/".join(["refiner", *[renderer] * bool(renderer), key]),
                                  metrics[key], log_step(budget))
    add_grids(writer, grids)
    writer.close()
    (out / "results.md").write_text(results_markdown(experiment, summary, gaps or [],
                                                     refiners or {}, tones or {},
                                                     histories=histories, pairs=pairs,
                                                     machines=machines, worths=worths))
    return summary, worths


def summary_table(path: Path):
    """summary.csv as a rich Table for the terminal (None where there is no such file)."""
    from rich.table import Table

    if not path.is_file():
        return None
    rows = read_csv(path)
    regimes = bool(rows) and "regime" in rows[0]
    table = Table(title=f"MNIST test error ({path})")
    for col in ("regime",) * regimes + ("mixture", "budget", "seeds", "mean error", "95 % CI"):
        table.add_column(col, justify="left" if col in ("regime", "mixture") else "right")
    for r in rows:
        ci = f"{float(r['ci95_low']):.4f} – {float(r['ci95_high']):.4f}"
        table.add_row(*([r["regime"]] if regimes else []), r["mixture"], r["budget"], r["n_seeds"],
                      f"{float(r['mean_error']):.4f}", ci)
    return table


def gap_table(path: Path):
    """gap.csv as a rich Table for the terminal (None where there is no such file)."""
    from rich.table import Table

    if not path.is_file():
        return None
    table = Table(title=f"real/synthetic gap, AUC (0.5 = none) ({path})")
    for col in ("source", "budget", "instrument", "AUC", "95 % CI", "accuracy", "Fréchet",
                "retention"):
        table.add_column(col)
    for r in read_csv(path):
        ci = f"{float(r['auc_ci_low']):.3f} – {float(r['auc_ci_high']):.3f}"
        retention = f"{float(r['label_retention']):.3f}" if r["label_retention"] else ""
        table.add_row(source_name(r), r["budget"], r["instrument"], f"{float(r['auc']):.3f}", ci,
                      f"{float(r['accuracy']):.3f}", f"{float(r['frechet']):.2f}", retention)
    return table


# the lines around the results block of a README (`pipeline report EXP --readme`)
README_BEGIN = "<!-- results of {experiment}: written by `pipeline report {experiment} --readme` -->"
README_END = "<!-- end of results -->"


def readme_block(summary: list[dict], experiment: str, page: str, figure: str) -> str:
    """The README's results block: the test error of every mixture by budget, in %, with its
    interval, the error-vs-data figure and a link to the run's full tables."""
    budgets = sorted({int(r["budget"]) for r in summary})
    seeds = max(int(r["n_seeds"]) for r in summary)
    cells = {(r["mixture"], int(r["budget"])): r for r in summary}
    lines = [README_BEGIN.format(experiment=experiment),
             f"MNIST test error in %: the mean over {seeds} seeds of `{experiment}`, with its 95 % "
             "interval.", f"All the run's tables, and the machine it ran on: [{page}]({page}).", "",
             "| mixture | " + " | ".join(f"{b:,} real" for b in budgets) + " |",
             "|---|" + "---:|" * len(budgets)]
    for mixture in sorted({r["mixture"] for r in summary}):
        row = [f"{100 * float(c['mean_error']):.2f} ({100 * float(c['ci95_low']):.2f}–"
               f"{100 * float(c['ci95_high']):.2f})" if (c := cells.get((mixture, b))) else ""
               for b in budgets]
        lines.append(f"| {mixture} | " + " | ".join(row) + " |")
    lines += ["", f"![MNIST test error against real training images]({figure})", README_END]
    return "\n".join(lines)
