"""Publishing a finished report into a project: its page and figure under docs/results/ and the
README's results block (`pipeline report EXP --readme README.md`)."""

from __future__ import annotations

from pathlib import Path

from synthgap.study.regimes import FIGURE, headline_block
from synthgap.study.report import README_BEGIN, README_END, read_csv, readme_block


def publish_results(report: Path, readme: Path, experiment: str) -> list[Path]:
    """Publish a finished report into a project: its results.md and error-vs-data figure, with the
    refiners' discriminator-accuracy figure where it has one (a regimes study: its regimes.md and
    regimes figure), under docs/results/ beside `readme`, and the README's results block (between
    README_BEGIN and README_END) written anew: the error table, or the regimes' headline.
    Everything is read before anything is written. Returns the files written."""
    import os
    import shutil

    from synthgap.errors import UserError

    begin, text = README_BEGIN.format(experiment=experiment), readme.read_text()
    if text.count(begin) != 1 or README_END not in text.split(begin)[-1]:
        raise UserError(f"{readme} has no results block of {experiment}: put the line "
                        f"'{begin}' and, below it, '{README_END}' where the results belong")
    results = readme.parent / "docs" / "results"
    regimes = (report / "regimes.md").is_file()
    page = results / f"{experiment}.md"
    figure = results / f"{experiment}-{'regimes' if regimes else 'error_vs_data'}.png"
    links = [p.relative_to(readme.parent).as_posix() for p in (page, figure)]
    figures = {report / (FIGURE if regimes else "plots/error_vs_data.png"): figure}
    if not regimes and (report / "plots" / "d_accuracy.png").is_file():
        figures[report / "plots" / "d_accuracy.png"] = results / f"{experiment}-d_accuracy.png"
    if regimes:  # the page links its figure as published, beside it
        block = headline_block(read_csv(report / "results.csv"), experiment, *links)
        content = (report / "regimes.md").read_text().replace(f"]({FIGURE})", f"]({figure.name})")
    else:
        block = readme_block(read_csv(report / "summary.csv"), experiment, *links)
        content = (report / "results.md").read_text()
    results.mkdir(parents=True, exist_ok=True)
    page.write_text(content)
    for source, dest in figures.items():
        shutil.copyfile(source, dest)
    head, rest = text.split(begin)
    tmp = readme.with_name(f".{readme.name}.tmp")
    tmp.write_text(head + block + rest.split(README_END, 1)[1])
    os.replace(tmp, readme)
    return [page, *figures.values(), readme]
