"""The command line and the stage graph it plans, without running a stage: errors, listings,
help, keys and groups."""

import re

import pytest

from conftest import pipeline


def test_threads_and_device_are_part_of_every_key():
    from synthgap.runner.dag import compute_keys
    from synthgap.runner.run import run_env
    from synthgap.study.config import load
    from synthgap.study.graph import build_graph
    cfg = load("smoke", [])[1]
    stages = build_graph("smoke", cfg)
    keys = [compute_keys(stages, env) for env in ({"threads": 1, "device": "cpu"},
                                                  {"threads": 2, "device": "cpu"},
                                                  {"threads": 1, "device": "cuda"})]
    for name in stages:
        assert len({k[name]["key"] for k in keys}) == 3
    assert run_env(cfg.runner.threads, "cpu") == {"threads": 1, "device": "cpu"}
    two = load("smoke", ["runner.threads=2"])[1]
    assert run_env(two.runner.threads, "cuda") == {"threads": 2, "device": "cuda"}


@pytest.mark.parametrize("args, message", [
    (["--set", "classifier.stepz=3"], "unknown key 'classifier.stepz'; did you mean 'steps'? valid keys: "),
    (["--set", "classifier.steps=many"], "is not an integer"),
    (["--set", "classifier.lr=true"], "is not a number"),
    (["--set", "steps"], "is not key=value"),
    (["--set", "experiment.budgets=[0]"], "experiment.budgets must lie in"),
    (["--only", "nothing*"], "matches no stage"),
    (["--set", "fonts.edges=sharp"], "fonts.edges 'sharp' is not an edge model; choose one of soft, area"),
    (["--set", 'fonts.exclude=["cmti"]'], "fonts.exclude names 'cmti', which is no font file found"),
    (["--set", 'refiner.augment=["rotate"]'], "refiner.augment: 'rotate' is not an augmentation"),
    (["--set", "refiner.ada_target=1.5"], "refiner.ada_target must be in [0, 1)"),
    (["--set", "refiner.match_nearest=0"], "refiner.match_nearest must be in (0, 1]"),
    (["--set", "refiner.d_steps=0"], "refiner.d_steps must be at least 1"),
    (["--set", "refiner.lecam=-0.1"], "refiner.lecam must be 0 (off) or more"),
    (["--set", "refiner.ema=1"], "refiner.ema must be in [0, 1)"),
    (["--set", "refiner.feature_head=true", "--set", "refiner.lambda_sem=0"],
     "refiner.feature_head needs the classifier of the renders"),
    (["--set", "refiner.upsample=shuffle"], "refiner.upsample 'shuffle' is not a way to up-sample"),
    (["--set", "refiner.shape_d=true"], "refiner.shape_d needs refiner.warp = true"),
    (["--set", "refiner.lr_warp=-1"], "refiner.lr_warp must be 0 (G's rate) or more"),
    (["--set", "refiner.warp_centred=true"], "refiner.warp_centred needs refiner.warp = true"),
])
def test_bad_options_give_one_line_and_exit_2(tmp_path, args, message):
    proc = pipeline("run", "smoke", *args, "--workdir", str(tmp_path / "w"), check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "w").exists()
    if "unknown key" in message:
        assert "classifier.steps" in lines[0]


def test_unknown_experiment_and_list_and_dag():
    proc = pipeline("run", "nosuch", check=False)
    assert proc.returncode == 2 and "unknown experiment 'nosuch'" in proc.stderr
    listing = pipeline("list").stdout
    assert "smoke" in listing and "mnist-sweep" in listing
    text = pipeline("dag", "smoke").stdout.splitlines()
    assert text[0] == "mnist" and any(line.startswith("report  <- ") for line in text)
    mermaid = pipeline("dag", "mnist-sweep", "--format", "mermaid").stdout
    assert mermaid.startswith("graph LR") and mermaid.count("-->") == 498  # see below
    # 1 mnist->split, 12 split->budget, 96 cells x (budget, mnist), 84 synthetic sources->cells
    # (7 mixtures x 12), 3 fonts->composites, 2 into oracle, 4 tone x (budget, fonts, oracle),
    # 4 refiners x (budget, fonts, split), 4 refine x (refiner, budget, fonts, oracle), 12 gap
    # stages x (source, split, oracle) + the control's (split, oracle), 126 into report (96 cells,
    # 29 render, tone, refiner and gap stages, split)
    assert 1 + 12 + 192 + 84 + 3 + 2 + 12 + 12 + 16 + 38 + 126 == 498
    per_seed = pipeline("dag", "mnist-sweep", "--set", "refiner.per_seed=true").stdout.splitlines()
    for b in (55, 385, 5500, 38500):
        for s in (0, 1, 2):
            assert f"train_refiner/b{b}/s{s}  <- budget/b{b}/s{s}, render_fonts, split" in per_seed
            assert any(line.startswith(f"classify/real+gan/b{b}/s{s}  <- ") and f"refine/b{b}/s{s}"
                       in line for line in per_seed)
        assert any(line.startswith(f"gap/refined/b{b}  <- ") and f"refine/b{b}/s0" in line
                   for line in per_seed)
    dot = pipeline("dag", "smoke", "--format", "dot").stdout
    assert dot.startswith("digraph") and '"classify/real/b55/s0"' in dot


def test_help_shows_every_bracket_it_was_written_with():
    """`--help` is rendered as rich markup, which eats an unescaped `[word]`: every command's help
    and every option's help keeps its brackets on screen."""
    import typer
    from typer.testing import CliRunner
    from pipeline import app

    def commands(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from commands(sub, [*path, name])

    shown = 0
    for path, cmd in commands(typer.main.get_command(app), []):
        texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
        words = {w for t in texts for w in re.findall(r"\[(\w[\w.-]*)\]", t.replace("\\[", "["))}
        if not words:
            continue
        out = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "400"}).output
        for word in words:
            assert f"[{word}]" in out, (path, word)
            shown += 1
    assert shown >= 2  # run's --jobs ([runner]) and --executor ([ray]) at least


def test_oracle_takes_its_own_classifier_overrides():
    from synthgap.errors import UserError
    from synthgap.study.graph import build_graph
    from synthgap.study.config import load as load_config
    _, cfg = load_config("mnist-sweep", ["oracle.steps=123"])
    stages = build_graph("mnist-sweep", cfg)
    assert stages["oracle"].params["classifier"]["steps"] == 123
    assert stages["oracle"].params["classifier"]["width"] == cfg.classifier.width
    assert stages["classify/real/b55/s0"].params["classifier"]["steps"] == cfg.classifier.steps != 123
    with pytest.raises(UserError, match=r"unknown key 'oracle.stepz'"):
        load_config("mnist-sweep", ["oracle.stepz=1"])


def test_each_budget_takes_its_own_synthetic_fraction():
    from synthgap.errors import UserError
    from synthgap.study.graph import build_graph
    from synthgap.study.config import load as load_config
    stages = build_graph("mnist-sweep", load_config("mnist-sweep", [])[1])
    frac = {n: s.params.get("synthetic_fraction") for n, s in stages.items()}
    assert frac["classify/real+font/b55/s0"] == frac["classify/real+gan/b55/s2"] == 0.5
    assert frac["classify/real+tone/b385/s0"] == frac["classify/real+composite/b38500/s1"] == 0.2
    assert frac["classify/real/b55/s0"] == 0.0 and frac["classify/font/b55/s0"] == 1.0
    one = build_graph("mnist-sweep", load_config("mnist-sweep", [
        "experiment.synthetic_fraction=0.35", "experiment.synthetic_fraction_at={}"])[1])
    assert {s.params["synthetic_fraction"] for n, s in one.items() if "/real+" in n} == {0.35}
    for sets, message in [(["experiment.synthetic_fraction_at={big = 0.5}"], "key 'big' is not a budget"),
                          (["experiment.synthetic_fraction_at={385 = 1.0}"], r"between 0 and 1.*385: 1.0")]:
        with pytest.raises(UserError, match=message):
            build_graph("mnist-sweep", load_config("mnist-sweep", sets)[1])


def test_each_budget_may_set_its_own_refiner_knobs():
    from synthgap.runner.dag import compute_keys
    from synthgap.errors import UserError
    from synthgap.study.graph import build_graph
    from synthgap.study.config import load as load_config
    stages = build_graph("mnist-sweep", load_config("mnist-sweep", [])[1])
    assert stages["train_refiner/b55"].params["refiner"]["lambda_sem"] == 3.0
    assert stages["train_refiner/b55"].params["refiner"]["lecam"] == 0.3
    assert {stages[f"train_refiner/b{b}"].params["refiner"]["lecam"] for b in (385, 5500, 38500)} == {0.0}
    assert {stages[f"train_refiner/b{b}"].params["refiner"]["lambda_sem"] for b in (385, 5500, 38500)} == {1.0}
    # the fewer real images the discriminators learn from, the more DiffAugment; none from 5,500 up
    assert stages["train_refiner/b55"].params["refiner"]["augment"] == ["translation", "cutout"]
    assert stages["train_refiner/b385"].params["refiner"]["augment"] == ["translation"]
    assert stages["train_refiner/b5500"].params["refiner"]["augment"] == stages["train_refiner/b38500"].params["refiner"]["augment"] == []
    # and with real images enough they train twice as long; the GPU study keeps its 5,000 steps
    assert [stages[f"train_refiner/b{b}"].params["refiner"]["steps"] for b in (55, 385, 5500, 38500)] == [1000, 1000, 2000, 2000]
    gpu = build_graph("mnist-sweep-gpu", load_config("mnist-sweep-gpu", [])[1])
    assert {s.params["refiner"]["steps"] for n, s in gpu.items() if n.startswith("train_refiner/")} == {5000}
    assert gpu["train_refiner/b5500/s0"].params["refiner"]["augment"] == []
    # the tone stage and the matching take the budget's own knobs too; other budgets' keys stay
    moved = build_graph("mnist-sweep", load_config("mnist-sweep", [
        "experiment.refiner_at={55 = {lambda_sem = 3.0, lecam = 0.3}, "
        "385 = {augment = ['translation'], match_nearest = 0.5}, 5500 = {augment = [], steps = 2000}, "
        "38500 = {augment = [], steps = 2000}}"])[1])
    assert moved["tone/b385"].params["match_nearest"] == moved["refine/b385"].params["match_nearest"] == 0.5
    keys, moved_keys = compute_keys(stages), compute_keys(moved)
    changed = {n for n in keys if keys[n]["key"] != moved_keys[n]["key"]}
    assert {"tone/b385", "refine/b385", "gap/refined/b385", "classify/gan/b385/s1"} <= changed
    assert not {n for n in changed if "b385" not in n and n != "report"}
    for sets, message in [
            (["experiment.refiner_at={55 = {lambda_sen = 3.0}}"],
             r"experiment.refiner_at.55: 'lambda_sen' is not a knob .*did you mean 'lambda_sem'"),
            (["experiment.refiner_at={55 = {variants = 2}}"], "'variants' is not a knob"),
            (["experiment.refiner_at={55 = {lambda_sem = true}}"], "refiner_at.55.lambda_sem = True is not a number"),
            (["experiment.refiner_at={small = {lambda_sem = 3.0}}"], "key 'small' is not a budget"),
            (["experiment.refiner_at={55 = {ada_target = 2.0}}"], r"experiment.refiner_at.55.ada_target must be in \[0, 1\)")]:
        with pytest.raises(UserError, match=message):
            build_graph("mnist-sweep", load_config("mnist-sweep", sets)[1])


def test_drawing_variants_does_not_retrain_the_refiner():
    from synthgap.runner.dag import compute_keys
    from synthgap.study.graph import build_graph
    from synthgap.study.config import load as load_config
    one, three = (compute_keys(build_graph("mnist-sweep", load_config(
        "mnist-sweep", ["refiner.warp=true", f"refiner.variants={k}"])[1])) for k in (1, 3))
    changed = {n for n in one if one[n]["key"] != three[n]["key"]}
    assert {"refine/b55", "classify/real+gan/b55/s2"} <= changed
    assert not {n for n in changed if n.startswith("train_refiner/")}


def test_cells_in_groups_share_one_unit_of_work_and_leave_the_oracle_alone():
    from synthgap.runner.dag import compute_keys
    from synthgap.errors import UserError
    from synthgap.study.graph import build_graph
    from synthgap.study.config import load as load_config
    plain = build_graph("mnist-sweep", load_config("mnist-sweep", [])[1])
    stages = build_graph("mnist-sweep", load_config("mnist-sweep", ["classifier.group=16"])[1])
    cell = stages["classify/real/b55/s0"]
    # a budget's 24 cells, in order of seed and mixture: groups of 16 and 8
    assert len(cell.group) == 16 and cell.params["group"] == list(cell.group)
    assert cell.group[:3] == ("classify/real/b55/s0", "classify/font/b55/s0", "classify/gan/b55/s0")
    assert len(stages["classify/real/b55/s2"].group) == 8
    assert all(stages[n].params["budget"] == 55 for n in cell.group)
    assert "group" not in plain["classify/real/b55/s0"].params and not plain["classify/real/b55/s0"].group
    keys, plain_keys = compute_keys(stages), compute_keys(plain)
    assert keys["oracle"] == plain_keys["oracle"]
    assert keys["classify/real/b55/s0"] != plain_keys["classify/real/b55/s0"]
    with pytest.raises(UserError, match="classifier.group must be at least 1"):
        build_graph("mnist-sweep", load_config("mnist-sweep", ["classifier.group=0"])[1])


def test_the_device_is_chosen_in_one_place_with_one_error():
    import torch

    from synthgap.devices import NO_CUDA, resolve_device
    from synthgap.errors import UserError
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="--device 'tpu': use auto, cpu or cuda"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cuda")
        return
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError) as err:
        resolve_device("cuda")
    assert str(err.value) == NO_CUDA
    for args in (["run", "smoke", "--device", "cuda"], ["bench", "--device", "cuda"],
                 ["refine", "--weights", "w.safetensors", "--images", "i.npz", "--device", "cuda"]):
        proc = pipeline(*args, check=False)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and NO_CUDA in lines[0], (args, proc.stderr)


def test_a_run_resolves_auto_on_the_driver_and_hands_its_stages_that(monkeypatch, tmp_path):
    """`--device auto` becomes cpu or cuda once, where the keys are made, so no Ray node with a GPU
    runs a stage whose key says cpu (nor asks for a GPU for it)."""
    import torch
    from typer.testing import CliRunner

    import pipeline as cli
    from synthgap.devices import run_device
    for seen, auto in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda seen=seen: seen)
        assert (run_device("auto"), run_device("cpu"), run_device("cuda")) == (auto, "cpu", "cuda")
    handed = []
    monkeypatch.setattr(cli, "run_stages", lambda stages, ws, ctx, *a, **k: handed.append(ctx))
    result = CliRunner().invoke(cli.app, ["run", "smoke", "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert [ctx.device for ctx in handed] == ["cpu"]
