"""What a mixture is worth in real images: the number of real images whose classifier makes the
same mean test error, read off the real-only curve (error against budget) by log-log
interpolation, with a 95 % interval from a bootstrap over seeds (GraspGAN and RCAN report their
synthetic data this way)."""

from __future__ import annotations

import math

import numpy as np

COLUMNS = ["mixture", "budget", "n_seeds", "real_images", "ci95_low", "ci95_high", "beyond"]
DRAWS = 2000  # bootstrap draws of the seeds


def seed_draws(n: int) -> np.ndarray:
    """DRAWS draws of n seeds with replacement, [DRAWS, n] indices, the same draws in every call
    (so an interval depends on its own cells alone)."""
    return np.random.default_rng(0).integers(n, size=(DRAWS, n))


def interval95(values) -> tuple[float, float]:
    """The 2.5 % and 97.5 % points of bootstrap values; NaN for none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan, math.nan
    return tuple(ordered[int(q * (len(ordered) - 1))] for q in (0.025, 0.975))


def errors_of(rows: list[dict]) -> dict[tuple, float]:
    """Result rows as (mixture, budget, seed) -> test error."""
    return {(r["mixture"], int(r["budget"]), int(r["seed"])): float(r["test_error"]) for r in rows}


def monotone(errors: list[float]) -> list[float]:
    """The closest non-increasing sequence (least squares, pool adjacent violators): a real curve
    whose error rises somewhere between budgets made monotone before it is read."""
    blocks: list[list[float]] = []  # [mean, count]
    for e in errors:
        blocks.append([e, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            (m1, n1), (m2, n2) = blocks.pop(-2), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return [m for m, n in blocks for _ in range(n)]


def equivalent(error: float, budgets: list[int], curve: list[float]) -> float:
    """Real images giving `error` on the real curve (`curve[i]` the mean error at `budgets[i]`,
    budgets ascending), interpolated linearly in log error against log budget on the curve made
    monotone; -inf for an error above the curve's first point, +inf below its last (beyond the
    curve)."""
    curve = monotone(curve)
    if error > curve[0]:
        return -math.inf
    if error < curve[-1]:
        return math.inf
    for (b0, e0), (b1, e1) in zip(zip(budgets, curve), zip(budgets[1:], curve[1:])):
        if e1 <= error <= e0:
            if e0 == e1 or error == e0:
                return float(b0)
            t = (math.log(error) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
    return float(budgets[0])  # a curve of one point, met exactly


def worth(rows: list[dict], real: str = "real") -> list[dict]:
    """Every mixture's worth in real images at every budget, from result rows (mixture, budget,
    seed, test_error) that hold a `real` curve: the point from the means over seeds, the interval
    from DRAWS draws of the seeds with replacement, the same seeds for both curves (a cell and the
    real cells of its seed share their real images), through the monotone curve."""
    error = errors_of(rows)
    budgets = sorted({b for m, b, _ in error if m == real})
    if len(budgets) < 2:
        return []
    seeds = sorted(set.intersection(*({s for m, b, s in error if m == real and b == budget}
                                      for budget in budgets)))
    out = []
    for mixture, budget in sorted({(m, b) for m, b, _ in error if m != real}):
        mine = [s for s in seeds if (mixture, budget, s) in error]
        if not mine:
            continue
        table = np.array([[error[mixture, budget, s]] + [error[real, b, s] for b in budgets]
                          for s in mine])  # [seeds, 1 + budgets]
        point = equivalent(float(table[:, 0].mean()), budgets, list(table[:, 1:].mean(0)))
        low = high = math.nan  # one seed: no interval
        if len(mine) > 1:
            draws = table[seed_draws(len(mine))].mean(1)
            low, high = interval95(equivalent(float(d[0]), budgets, list(d[1:])) for d in draws)
        out.append({"mixture": mixture, "budget": budget, "n_seeds": len(mine), "real_images": point,
                    "ci95_low": low, "ci95_high": high,
                    "beyond": "" if math.isfinite(point) else "below" if point < 0 else "above"})
    return out


def fmt_images(n: float, budgets: tuple[int, int]) -> str:
    """A number of real images, or where it lies beyond the curve (budgets: its ends)."""
    if n == -math.inf:
        return f"< {budgets[0]:,}"
    if n == math.inf:
        return f"> {budgets[1]:,}"
    return f"{n:,.0f}"


def fmt_worth(w: dict, budgets: tuple[int, int]) -> str:
    """A table cell: "1,234 (800 – 2,100)", or "beyond the curve (> 5,500)" with its interval."""
    point = fmt_images(w["real_images"], budgets)
    if w["beyond"]:
        point = f"beyond the curve ({point})"
    if math.isnan(w["ci95_low"]):  # one seed
        return point
    return f"{point} ({fmt_images(w['ci95_low'], budgets)} – {fmt_images(w['ci95_high'], budgets)})"


def worth_lines(rows: list[dict], real_budgets: list[int]) -> list[str]:
    """results.md's table of the worth of each mixture in real images."""
    if not rows:
        return []
    ends = (min(real_budgets), max(real_budgets))
    budgets = sorted({int(w["budget"]) for w in rows})
    cells = {(w["mixture"], int(w["budget"])): w for w in rows}
    lines = ["", "## Worth in real images", "",
             "The real images whose classifier makes the same mean test error, read off the real "
             f"curve ({', '.join(f'{b:,}' for b in real_budgets)} real images, made monotone) by "
             f"log-log interpolation, with a 95 % interval from {DRAWS:,} draws of the seeds (the same "
             "for the mixture and the real curve). Beyond the curve: an error outside the real "
             "curve's range.", "",
             "| mixture | " + " | ".join(f"{b:,} real" for b in budgets) + " |",
             "|---|" + "---:|" * len(budgets)]
    for mixture in sorted({w["mixture"] for w in rows}):
        lines.append(f"| {mixture} | " + " | ".join(
            fmt_worth(c, ends) if (c := cells.get((mixture, b))) else "" for b in budgets) + " |")
    return lines
