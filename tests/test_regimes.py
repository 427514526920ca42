"""The regimes study: its graph and keys, the label controls, concat mixing, the worth of a mixture
in real images, and a tiny run to its report and README block."""

import math

import numpy as np
import pytest
import torch
from conftest import pipeline

from classifiers.digits import batch_counts, draw_batch
from synthgap.data.imageset import ImageSet
from synthgap.runner.dag import compute_keys
from synthgap.study.config import load
from synthgap.study.graph import build_graph
from synthgap.study.stages import mixture_sources, shuffled_labels
from synthgap.study.regimes import ladder_steps, share_kept
from synthgap.study.worth import equivalent, monotone, worth

MIXTURES = ["real", "font", "gan", "real+font", "real+gan", "real+font:shuffled",
            "real+gan:shuffled"]


def config(tmp_path, regimes, name="tiny-regimes", classifier="", **experiment):
    """A tiny regimes config over smoke's: budget 55 (and real cells at 110), two seeds."""
    values = {"budgets": [55], "seeds": [0, 1], "mixtures": MIXTURES, "regimes": regimes,
              "real_budgets": [110], **experiment}
    body = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in values.items())
    path = tmp_path / f"{name}.toml"
    path.write_text(f'base = "smoke"\n[experiment]\n{body}\n[classifier]\nsteps = 40\n{classifier}\n'
                    '[gap]\ninstruments = ["pixel"]\n')
    return str(path)


def keys_of(tmp_path, regimes, name):
    stages = build_graph(*load(config(tmp_path, regimes, name)))
    return stages, {n: k["key"] for n, k in compute_keys(stages).items()}


def test_regimes_graph_builds_and_regimes_share_exactly_the_stages_they_have_in_common(tmp_path):
    ladder = ["type/plain/concat", "hand/plain/concat", "hand/augmented/chosen"]
    stages, keys = keys_of(tmp_path, ladder, "ladder")
    one, one_keys = keys_of(tmp_path, ladder[:1], "first")
    # a stage a regime needs is the same stage, with the same key, whatever other regimes run
    shared = [n for n in one if n != "report"]
    assert shared and all(one_keys[n] == keys[n] for n in shared)
    # named by the factors they depend on: one real cell per classifier, renders per renderer
    assert {n for n in stages if n.startswith("classify/") and "/real/" in n} == {
        f"classify/{c}/real/b{b}/s{s}" for c in ("plain", "augmented") for b in (55, 110)
        for s in (0, 1)}
    assert {n for n in stages if n.startswith(("render_fonts", "train_refiner"))} == {
        "render_fonts/type", "render_fonts/hand", "train_refiner/type/b55",
        "train_refiner/hand/b55"}
    assert "classify/hand/plain/gan/b55/s0" in stages  # alone: no mixing in its name
    assert not any("/b110/" in n and "/real/" not in n for n in stages if n.startswith("classify/"))
    # stages that differ in a factor differ in their key
    different = [("render_fonts/type", "render_fonts/hand"),
                 ("classify/plain/real/b55/s0", "classify/augmented/real/b55/s0"),
                 ("classify/type/plain/concat/real+gan/b55/s0",
                  "classify/hand/plain/concat/real+gan/b55/s0"),
                 ("classify/hand/augmented/chosen/real+font/b55/s0",
                  "classify/hand/plain/concat/real+font/b55/s0"),
                 ("classify/hand/plain/concat/real+gan/b55/s0",
                  "classify/hand/plain/concat/real+gan:shuffled/b55/s0")]
    assert all(keys[a] != keys[b] for a, b in different)
    plain = stages["classify/type/plain/font/b55/s0"].params["classifier"]
    assert (plain["shift"], plain["rotate"], plain["scale"]) == (0.0, 0.0, 0.0)
    assert stages["render_fonts/type"].params["fonts"]["restroke"] is False
    assert stages["report"].params["regimes"] == ladder


@pytest.mark.parametrize("regime, message", [
    ("type/plain", "not renderer/classifier/mixing"),
    ("pencil/plain/concat", "'pencil', not one of experiment.renderers"),
    ("type/plain/stacked", "'stacked', not one of the mixings: chosen, concat")])
def test_a_bad_regime_is_one_line_and_exit_2(tmp_path, regime, message):
    proc = pipeline("run", config(tmp_path, [regime]), "--dry-run", "--workdir",
                    str(tmp_path / "w"), check=False)
    assert proc.returncode == 2 and message in proc.stderr + proc.stdout


def test_a_group_of_cells_keeps_to_one_budget_and_one_regime(tmp_path):
    ladder = ["type/plain/concat", "hand/plain/concat", "hand/augmented/chosen"]
    grouped = build_graph(*load(config(tmp_path, ladder, "grouped4", "group = 4")))
    groups = {s.group for s in grouped.values() if s.group}
    assert groups and all(len({(grouped[c].params["budget"], str(grouped[c].params.get("regime")))
                                for c in g}) == 1 for g in groups)
    one = build_graph(*load(config(tmp_path, ladder[:1], "grouped4-first", "group = 4")))
    assert all(one[n].group == grouped[n].group for n in one if one[n].group)


def test_a_classifier_of_a_regime_may_not_set_the_group(tmp_path):
    path = tmp_path / "grouped.toml"
    path.write_text('base = "smoke"\n[experiment]\nregimes = ["type/plain/concat"]\n'
                    'classifiers = {plain = {group = 2}}\n')
    proc = pipeline("run", str(path), "--dry-run", "--workdir", str(tmp_path / "w"), check=False)
    assert proc.returncode == 2 and "set [classifier] group instead" in proc.stderr + proc.stdout


def test_the_headline_of_one_seed_has_no_interval_and_a_study_without_mixtures_says_so():
    from synthgap.study.regimes import headline

    rows = [{"regime": "type/plain/concat", "mixture": m, "budget": 55, "seed": 0,
             "test_error": e} for m, e in (("real", 0.2), ("real+font", 0.1), ("real+gan", 0.08))]
    text = "\n".join(headline(rows, ["type/plain/concat"]))
    assert "`real+gan − real+font` is -2.00: no difference the seeds agree on" in text
    assert "nan" not in text
    real = [r for r in rows if r["mixture"] == "real"]
    assert headline(real, ["type/plain/concat"]) == [
        "No regime mixes real and synthetic digits: there is nothing to compare."]


def sets(n_real=55, n_synthetic=54945):
    """A real budget of 255-valued images and renders of 0-valued ones, labelled 0..9."""
    real = ImageSet(np.full((n_real, 1, 28, 28), 255, np.uint8), np.arange(n_real) % 10, {})
    renders = ImageSet(np.zeros((n_synthetic, 1, 28, 28), np.uint8),
                       np.arange(n_synthetic) % 10, {})
    return real, renders


def cell(mixture, mixing=None, fraction=0.5, seed=0):
    return {"mixture": mixture, "synthetic_fraction": fraction, "total": 55000, "budget": 55,
            "seed": seed, **({"mixing": mixing} if mixing else {})}


def test_shuffled_labels_are_uniform_fixed_by_the_seed_and_keep_the_images():
    real, renders = sets()
    load = lambda path: renders  # noqa: E731
    (x0, y0, f0), (x, y, f) = mixture_sources(cell("real+font:shuffled"), {"synthetic": "."},
                                              real, load)
    _, (_, true, _) = mixture_sources(cell("real+font"), {"synthetic": "."}, real, load)
    assert (x0 is real.images) and np.array_equal(y0, real.labels) and (f0, f) == (0.5, 0.5)
    assert np.array_equal(x, renders.images) and len(y) == len(true) == 54945
    counts = np.bincount(y, minlength=10)
    expected = len(y) / 10
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 27.9  # chi-square, 9 degrees of freedom: p = 0.001
    assert abs((y == true).mean() - 0.1) < 0.01  # unrelated to the digit drawn
    assert np.array_equal(y, shuffled_labels(len(y), 0))
    assert not np.array_equal(y, shuffled_labels(len(y), 1))


@pytest.mark.parametrize("b, n", [(55, 54945), (385, 1615)])
def test_concat_draws_real_images_at_their_share_of_the_pool(b, n):
    real, renders = sets(b, n)
    sources = mixture_sources({**cell("real+gan", "concat"), "total": b + n, "budget": b},
                              {"synthetic": "."}, real, lambda path: renders)
    gen = torch.Generator().manual_seed(0)
    data = [(torch.as_tensor(x), torch.as_tensor(y)) for x, y, _ in sources]
    counts = batch_counts(128, [f for _, _, f in sources])
    drawn = torch.cat([draw_batch(data, counts, gen)[0][:, 0, 0, 0] for _ in range(3000)])
    share, p = (drawn == 255).float().mean().item(), b / (b + n)
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / len(drawn))
    # the chosen share instead gives every batch its fraction of real images, one at least
    chosen = mixture_sources({**cell("real+gan", fraction=0.999), "total": b + n, "budget": b},
                             {"synthetic": "."}, real, lambda path: renders)
    counts = batch_counts(128, [f for _, _, f in chosen])
    data = [(torch.as_tensor(x), torch.as_tensor(y)) for x, y, _ in chosen]
    assert (draw_batch(data, counts, gen)[0][:, 0, 0, 0] == 255).sum() == 1


def test_equivalents_give_back_a_known_curve_and_say_beyond_it():
    budgets = [50, 200, 800, 3200]
    curve = [0.3 * n ** -0.5 for n in budgets]  # a power law: a line in log-log
    for n in (50, 100, 500, 3200):
        assert equivalent(0.3 * n ** -0.5, budgets, curve) == pytest.approx(n)
    assert equivalent(0.3 * 20 ** -0.5, budgets, curve) == -math.inf
    assert equivalent(0.3 * 9000 ** -0.5, budgets, curve) == math.inf
    assert monotone([0.1, 0.05, 0.06, 0.02]) == pytest.approx([0.1, 0.055, 0.055, 0.02])
    # a rise between budgets is pooled first: 0.055 is met at 200 (the fewest images giving it)
    assert equivalent(0.055, budgets, [0.1, 0.05, 0.06, 0.02]) == pytest.approx(200)
    rows = []
    for s, noise in enumerate((-0.002, 0.0, 0.002)):
        rows += [{"mixture": "real", "budget": n, "seed": s, "test_error": e + noise}
                 for n, e in zip(budgets, curve)]
        rows += [{"mixture": "real+gan", "budget": 50, "seed": s,
                  "test_error": 0.3 * 400 ** -0.5 + noise},
                 {"mixture": "real+font", "budget": 50, "seed": s, "test_error": 0.001}]
    found = {w["mixture"]: w for w in worth(rows)}
    assert found["real+gan"]["real_images"] == pytest.approx(400)
    assert found["real+gan"]["ci95_low"] <= 400 <= found["real+gan"]["ci95_high"]
    assert found["real+font"]["beyond"] == "above" and found["real+font"]["real_images"] == math.inf


def test_the_share_a_control_keeps_and_each_ladder_step_are_paired_by_seed():
    error = {}
    for s, noise in enumerate((0.003, -0.001, 0.0, -0.002)):
        real = 0.10 + 0.02 * s  # seeds differ far more than the differences within a seed
        error.update({("real", 55, s): real, ("real+gan", 55, s): real - 0.04 + noise,
                      ("real+gan:shuffled", 55, s): real - 0.01 + noise / 2,
                      ("real+font", 55, s): real + noise, ("real+font:shuffled", 55, s): real})
    kept = share_kept(error, "real+gan", 55)
    # the noises sum to 0: the gain is -0.04 on average, the control's -0.01
    assert kept[0] == pytest.approx(0.01 / 0.04) and kept[1] < kept[0] < kept[2] < 0.5
    assert share_kept(error, "real+font", 55) is None  # no gain: no share
    assert share_kept({k: v for k, v in error.items() if k[0] != "real+gan:shuffled"},
                      "real+gan", 55) is None  # no control
    later = {**error, **{("real+gan", 55, s): error["real+font", 55, s] - 0.01 - 0.001 * s
                         for s in range(4)}}
    steps = ladder_steps({"a": error, "b": later}, ["a", "b"], [55])
    step = [line for line in steps if line.startswith("| `a` → `b`")][0]
    # per seed: (-0.01 - 0.001 s) - (-0.04 + noise - noise) = 0.03 - 0.001 s; mean 0.0285
    assert "+0.0285 (" in step


def test_a_tiny_regimes_run_reports_every_regime_and_writes_the_readme_block(tmp_path):
    exp = config(tmp_path, ["type/plain/concat", "type/plain/chosen"])
    work = tmp_path / "w"
    pipeline("run", exp, "--workdir", str(work), "--jobs", "2")
    md = (work / "regimes.md").read_text()
    assert md.index("`type/plain/concat`") < md.index("`type/plain/chosen`")
    for row in ("`real+gan − real+font`", "`real+font:shuffled − real`",
                "accuracy of `gan` alone (CAS)", "`real+gan` worth in real images",
                "pixel AUC of refined renders", "| `type/plain/concat` → `type/plain/chosen` | "
                "concat → chosen |"):
        assert row in md
    assert (work / "plots" / "regimes.png").stat().st_size > 10000
    header = (work / "results.csv").read_text().splitlines()[0]
    assert header.startswith("regime,mixture,budget,seed")
    worth_rows = (work / "worth.csv").read_text().splitlines()
    assert worth_rows[0].startswith("regime,mixture,budget") and len(worth_rows) > 1
    # each mixture is its own TensorBoard run, its error under one tag per regime
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    runs = {p.name for p in (work / "tb" / "mixtures").iterdir()}
    assert runs == set(MIXTURES)
    tags = EventAccumulator(str(work / "tb" / "mixtures" / "real+gan")).Reload().Tags()["scalars"]
    assert {"error/type/plain/concat", "error/type/plain/chosen"} <= set(tags)
    # the README block: the headline and the figure, by `pipeline report --readme`
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results of tiny-regimes: written by `pipeline report tiny-regimes "
                      "--readme` -->\n<!-- end of results -->\n")
    pipeline("report", exp, "--workdir", str(work), "--readme", str(readme))
    text = readme.read_text()
    assert "In the first regime of the ladder, `type/plain/concat`" in text
    assert "(docs/results/tiny-regimes-regimes.png)" in text
    published = tmp_path / "docs" / "results"
    assert (published / "tiny-regimes.md").read_text() == md.replace(
        "](plots/regimes.png)", "](tiny-regimes-regimes.png)")  # its figure, beside it
    assert (published / "tiny-regimes-regimes.png").read_bytes() == \
        (work / "plots" / "regimes.png").read_bytes()
