"""Two runs of one experiment, in float32 and on the CPU fast path, compared: do they say the same?

    python benchmarks/precision_compare.py --float32 runs/f32 --fast runs/fast --out PAGE.md

Reads each workspace's published report (results.csv, paired.csv, gap.csv) and its stages'
meta.json, and writes a Markdown page:
- per (mixture, budget), the paired test-error difference fast - float32 over the seeds, and its
  mean over every cell with a 95 % t interval;
- every paired difference between mixtures whose float32 interval excludes 0: does the fast run
  keep its sign, and its interval? Any difference that changes sign with an interval excluding 0;
- each gap AUC with its DeLong interval, and the Fréchet distance and label retention, side by side;
- each stage kind's summed seconds and the wall time of the run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synthgap.study.report import mean_ci  # noqa: E402


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def cells(work: Path) -> dict[tuple, float]:
    return {(r["mixture"], int(r["budget"]), int(r["seed"])): float(r["test_error"])
            for r in rows(work / "results.csv")}


def error_lines(f32: dict, fast: dict) -> list[str]:
    """The cells' paired differences, per (mixture, budget) and over all."""
    groups = defaultdict(list)
    for key in sorted(set(f32) & set(fast)):
        groups[key[:2]].append(fast[key] - f32[key])
    every = [d for ds in groups.values() for d in ds]
    if not every:
        return ["## Test error, fast minus float32", "", "The two runs share no cell.", ""]
    mean, low, high = mean_ci(every, clip=False)
    lines = ["## Test error, fast minus float32", "",
             f"Over all {len(every)} cells: mean {mean:+.5f} ({low:+.5f} to {high:+.5f}); "
             f"largest |difference| {max(abs(d) for d in every):.4f}.", "",
             "| mixture | budget | seeds | mean difference | 95 % interval |", "|---|---:|---:|---:|---|"]
    for (mixture, budget), ds in sorted(groups.items()):
        m, lo, hi = mean_ci(ds, clip=False)
        lines.append(f"| {mixture} | {budget:,} | {len(ds)} | {m:+.4f} | {lo:+.4f} to {hi:+.4f} |")
    return lines + [""]


def pair_lines(f32: list[dict], fast: list[dict]) -> list[str]:
    """Each paired difference between mixtures whose float32 interval excludes 0, and what the fast
    run says of it; and any that changes sign with an interval excluding 0."""
    def key(r):
        return r["mixture"], r["against"], int(r["budget"])

    def excludes(r):
        return float(r["ci95_low"]) > 0 or float(r["ci95_high"]) < 0

    def shown(r):
        return (f"{float(r['mean_difference']):+.4f} ({float(r['ci95_low']):+.4f} to "
                f"{float(r['ci95_high']):+.4f})")

    other = {key(r): r for r in fast}
    lines = ["## Paired differences between mixtures", "",
             "Every difference whose float32 interval excludes 0, with the fast run's.", "",
             "| mixture | against | budget | float32 | fast | verdict |", "|---|---|---:|---|---|---|"]
    kept = lost = flipped = 0
    for r in f32:
        s = other.get(key(r))
        if s is None or not excludes(r):
            continue
        same_sign = math.copysign(1, float(r["mean_difference"])) == \
            math.copysign(1, float(s["mean_difference"]))
        if same_sign and excludes(s):
            verdict, kept = "keeps its sign and excludes 0", kept + 1
        elif same_sign:
            bound = min(abs(float(s["ci95_low"])), abs(float(s["ci95_high"])))
            verdict, lost = f"same sign; its interval now holds 0 (by {bound:.4f})", lost + 1
        else:
            verdict = "changes sign" + (" and excludes 0" if excludes(s) else "")
            flipped += 1
        lines.append(f"| {r['mixture']} | {r['against']} | {int(r['budget']):,} | {shown(r)} | "
                     f"{shown(s)} | {verdict} |")
    opposite = [r for r in fast if key(r) in {key(x) for x in f32} and excludes(r) and excludes(
        next(x for x in f32 if key(x) == key(r))) and math.copysign(1, float(r["mean_difference"]))
        != math.copysign(1, float(next(x for x in f32 if key(x) == key(r))["mean_difference"]))]
    newly = [r for r in fast if excludes(r) and not any(key(x) == key(r) and excludes(x)
                                                        for x in f32)]
    lines += ["", f"Of these, {kept} keep their sign with an interval excluding 0, {lost} keep it "
              f"with an interval that now holds 0, and {flipped} change sign; "
              f"{len(opposite)} change sign with both intervals excluding 0.",
              f"Differences whose interval excludes 0 in the fast run only: {len(newly)}" +
              (": " + "; ".join(f"{r['mixture']} - {r['against']} at {int(r['budget']):,}, "
                                f"{shown(r)}" for r in newly) if newly else "") + ".", ""]
    return lines


def gap_lines(f32: list[dict], fast: list[dict]) -> list[str]:
    """Each instrument's AUC with its DeLong interval, Fréchet and retention, side by side."""
    def key(r):
        return r["instrument"], r["source"], r["budget"]

    other = {key(r): r for r in fast}
    lines = ["## The gap instruments", "",
             "AUC with its DeLong 95 % interval; whether each run's AUC lies in the other's "
             "interval.", "",
             "| instrument | source | budget | float32 | fast | within |", "|---|---|---|---|---|---|"]
    within = 0
    for r in f32:
        s = other.get(key(r))
        if s is None:
            continue
        a, b = float(r["auc"]), float(s["auc"])
        ok = float(s["auc_ci_low"]) <= a <= float(s["auc_ci_high"]) and \
            float(r["auc_ci_low"]) <= b <= float(r["auc_ci_high"])
        within += ok
        lines.append(f"| {r['instrument']} | {r['source']} | {r['budget']} | {a:.3f} "
                     f"({float(r['auc_ci_low']):.3f}-{float(r['auc_ci_high']):.3f}) | {b:.3f} "
                     f"({float(s['auc_ci_low']):.3f}-{float(s['auc_ci_high']):.3f}) | "
                     f"{'yes' if ok else 'no'} |")
    lines += ["", f"{within} of {len(lines) - 6} AUCs lie each within the other run's interval.",
              "", "| source | budget | Fréchet, float32 | fast | label retention, float32 | fast |",
              "|---|---|---:|---:|---:|---:|"]
    seen = set()
    for r in f32:
        s = other.get(key(r))
        if s is None or (r["source"], r["budget"]) in seen:
            continue
        seen.add((r["source"], r["budget"]))
        lines.append(f"| {r['source']} | {r['budget']} | {float(r['frechet']):.1f} | "
                     f"{float(s['frechet']):.1f} | {r['label_retention'] or '-'} | "
                     f"{s['label_retention'] or '-'} |")
    return lines + [""]


def timing(work: Path) -> tuple[dict, float | None, str]:
    """Summed seconds per stage kind, the run's wall time from run.log (its last `run` line to the
    line that ends it) and the precision of its network stages. Every meta.json in the cache
    counts: give workspaces filled from empty by one run each."""
    kinds, precision = defaultdict(float), ""
    for meta in work.glob("cache/*/*/meta.json"):
        m = json.loads(meta.read_text())
        kinds[m["kind"]] += m["seconds"] / len(m.get("group", [m["name"]]))
        precision = precision or json.dumps(m.get("env", {}).get("precision", "")) \
            if m.get("env", {}).get("precision") else precision
    wall = None
    log = (work / "run.log").read_text().splitlines() if (work / "run.log").exists() else []
    starts = [i for i, line in enumerate(log) if " run " in line[:30] and "stages to run" in line]
    if starts:
        start = datetime.strptime(log[starts[-1]][:19], "%Y-%m-%d %H:%M:%S")
        ends = [line for line in log[starts[-1]:] if "stage(s) run" in line]
        if ends:
            wall = (datetime.strptime(ends[-1][:19], "%Y-%m-%d %H:%M:%S") - start).total_seconds()
    return dict(kinds), wall, precision


def time_lines(f32: Path, fast: Path) -> list[str]:
    (k32, w32, p32), (kf, wf, pf) = timing(f32), timing(fast)
    lines = ["## Time", "", f"float32 network stages: {p32 or 'not recorded'}; fast: {pf}.", "",
             "| stage kind | float32 s | fast s | ratio |", "|---|---:|---:|---:|"]
    for kind in sorted(set(k32) | set(kf), key=lambda k: -k32.get(k, 0)):
        a, b = k32.get(kind, 0.0), kf.get(kind, 0.0)
        lines.append(f"| {kind} | {a:.0f} | {b:.0f} | {b / a:.2f} |" if a else
                     f"| {kind} | - | {b:.0f} | - |")
    a, b = sum(k32.values()), sum(kf.values())
    lines.append(f"| all stages | {a:.0f} | {b:.0f} | " + (f"{b / a:.2f} |" if a else "- |"))
    walls = [f"{w / 60:.1f} min" if w else "not in run.log" for w in (w32, wf)]
    return lines + ["", f"Wall time from an empty workspace: float32 {walls[0]}, fast {walls[1]}.",
                    ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--float32", type=Path, required=True, help="the float32 run's workspace")
    ap.add_argument("--fast", type=Path, required=True, help="the fast run's workspace")
    ap.add_argument("--out", type=Path, required=True, help="the Markdown page to write")
    ap.add_argument("--title", default="The CPU fast path against float32")
    a = ap.parse_args()
    for work in (a.float32, a.fast):
        if not (work / "results.csv").is_file():
            sys.exit(f"{work}: no results.csv; give a workspace whose run finished")
    text = "\n".join([f"# {a.title}", "",
                      f"Written by `benchmarks/precision_compare.py` from `{a.float32}` and "
                      f"`{a.fast}`.", "",
                      *error_lines(cells(a.float32), cells(a.fast)),
                      *pair_lines(rows(a.float32 / "paired.csv"), rows(a.fast / "paired.csv")),
                      *gap_lines(rows(a.float32 / "gap.csv"), rows(a.fast / "gap.csv")),
                      *time_lines(a.float32, a.fast)])
    a.out.write_text(text)
    print(f"written: {a.out}")


if __name__ == "__main__":
    main()
