"""The report's statistics: the mean's interval and the paired differences between mixtures; and
the README's results block that `pipeline report --readme` writes."""

import math

import pytest

from synthgap.errors import UserError
from synthgap.study.publish import publish_results
from synthgap.study.report import (README_BEGIN, README_END, SUMMARY_COLUMNS, compared_pairs, mean_ci,
                                   paired, paired_lines, results_markdown, summarize,
                                   write_csv)


def cell(mixture, budget, seed, error):
    return {"mixture": mixture, "budget": budget, "seed": seed, "test_error": error}


def test_mean_ci_is_the_t_interval_clipped_to_fractions_unless_asked_not_to():
    mean, low, high = mean_ci([0.01, 0.02, 0.03])
    half = 4.303 * 0.01 / math.sqrt(3)  # t(2) at 95 %, sd 0.01
    assert mean == pytest.approx(0.02) and high == pytest.approx(0.02 + half)
    assert low == 0.0  # 0.02 - half is below 0: clipped
    assert mean_ci([-0.01, 0.0, 0.01], clip=False) == pytest.approx((0.0, -half, half))
    assert all(math.isnan(v) for v in mean_ci([0.5])[1:])


def test_compared_pairs_are_those_of_the_run():
    assert compared_pairs(["real", "font", "gan", "real+font", "real+gan"]) == [
        ("real+font", "real"), ("real+gan", "real"), ("real+gan", "real+font"), ("gan", "font")]
    assert compared_pairs(["real", "font"]) == []


def test_paired_differences_pair_seeds_and_keep_the_sign():
    rows = [cell("real", 55, s, e) for s, e in ((0, 0.10), (1, 0.20), (2, 0.15))]
    # real+font is 0.05, 0.06 and 0.04 below real on each seed, though the seeds spread by 0.10
    rows += [cell("real+font", 55, s, e) for s, e in ((0, 0.05), (1, 0.14), (2, 0.11))]
    rows += [cell("real+font", 385, 0, 0.03)]  # no real cell at 385: no pair there
    (p,) = paired(rows)
    assert (p["mixture"], p["against"], p["budget"], p["n_seeds"]) == ("real+font", "real", 55, 3)
    half = 4.303 * 0.01 / math.sqrt(3)
    assert (p["mean_difference"], p["ci95_low"], p["ci95_high"]) == pytest.approx(
        (-0.05, -0.05 - half, -0.05 + half))
    # unpaired, the two means' intervals overlap; paired, the difference's interval is below 0
    real, mixed = sorted((s for s in summarize(rows) if s["budget"] == 55),
                         key=lambda s: s["mixture"])
    assert mixed["ci95_high"] > real["ci95_low"] and p["ci95_high"] < 0


def test_paired_uses_the_seeds_both_ran_and_results_md_shows_it():
    rows = [cell("gan", 55, s, 0.07) for s in (0, 1, 2)] + [cell("font", 55, s, 0.08) for s in (0, 1)]
    (p,) = paired(rows)
    assert p["n_seeds"] == 2 and p["mean_difference"] == pytest.approx(-0.01)
    pairs = [p, {**p, "budget": 385, "mean_difference": -1e-6, "ci95_low": -0.002,
                 "ci95_high": 0.002}]
    lines = paired_lines(pairs)
    assert lines[-1] == ("| gan | font | -0.0100 (-0.0100 – -0.0100) "
                         "| +0.0000 (-0.0020 – +0.0020) |")  # no -0.0000
    md = results_markdown("study", summarize(rows), [], {}, {}, pairs=pairs,
                          machines=["AMD EPYC, torch 2.0", "x86_64 CPU, torch 2.1"])
    assert "## Paired differences" in md and lines[-1] in md
    assert "cells ran on AMD EPYC, torch 2.0; x86_64 CPU, torch 2.1." in md.splitlines()[2]


def test_the_readme_block_is_written_from_the_report_and_nothing_else_moves(tmp_path):
    rows = [cell(m, b, s, e) for m, b, s, e in (("real", 55, 0, 0.1), ("real", 55, 1, 0.12),
                                                ("real+gan", 55, 0, 0.04), ("real+gan", 55, 1, 0.05),
                                                ("real", 385, 0, 0.03), ("real", 385, 1, 0.025))]
    report = tmp_path / "runs" / "study"
    (report / "plots").mkdir(parents=True)
    write_csv(report / "summary.csv", summarize(rows), SUMMARY_COLUMNS)
    (report / "results.md").write_text("# Results\n")
    (report / "plots" / "error_vs_data.png").write_bytes(b"png")
    (report / "plots" / "d_accuracy.png").write_bytes(b"d png")
    readme = tmp_path / "project" / "README.md"
    readme.parent.mkdir()
    begin = README_BEGIN.format(experiment="study")
    readme.write_text(f"# top\n\n{begin}\nold table\n{README_END}\n\n## below\n")
    written = publish_results(report, readme, "study")
    text = readme.read_text()
    assert text.startswith(f"# top\n\n{begin}\n") and text.endswith(f"{README_END}\n\n## below\n")
    assert "old table" not in text
    assert "| mixture | 55 real | 385 real |" in text
    assert "| real | 11.00 (0.00–23.71) | 2.75 (" in text  # in %, the interval clipped at 0
    assert "| real+gan | 4.50 (" in text and text.count("\n| real+gan |") == 1
    assert "[docs/results/study.md](docs/results/study.md)" in text
    assert "![MNIST test error against real training images](docs/results/study-error_vs_data.png)" in text
    assert (readme.parent / "docs" / "results" / "study.md").read_text() == "# Results\n"
    assert written[-1] == readme and all(p.is_file() for p in written)
    assert (readme.parent / "docs" / "results" / "study-d_accuracy.png").read_bytes() == b"d png"
    again = readme.read_text()
    publish_results(report, readme, "study")
    assert readme.read_text() == again  # the same report writes the same block

    bare = tmp_path / "bare" / "README.md"
    bare.parent.mkdir()
    bare.write_text("# no block\n")
    with pytest.raises(UserError, match="has no results block of study"):
        publish_results(report, bare, "study")
    assert bare.read_text() == "# no block\n" and not (bare.parent / "docs").exists()
