"""The stage graph of an experiment config: which stages exist, their params and dependencies."""

from __future__ import annotations

from synthgap import dag
from synthgap.errors import UserError


def build_graph(name: str, cfg: dict) -> dict[str, dag.Stage]:
    """The stage graph of an experiment config."""
    from synthgap import stages as st
    from synthgap.data.mnist import FILES

    e, clf = cfg["experiment"], cfg["classifier"]
    bad = [m for m in e["mixtures"] if m not in st.MIXTURES]
    if bad:
        raise UserError(f"experiment.mixtures: unknown {bad}; known: {', '.join(st.MIXTURES)}")
    pool = 60000 - e["holdout"]
    if not 0 < e["holdout"] < 60000:
        raise UserError(f"experiment.holdout must be between 1 and 59999, got {e['holdout']}")
    if not e["budgets"] or any(not 0 < b <= pool for b in e["budgets"]):
        raise UserError(f"experiment.budgets must lie in 1..{pool} (the pool), got {e['budgets']}")
    if set(e["mixtures"]) - {"real", "real+composite"} and max(e["budgets"]) >= e["synthetic_total"]:
        raise UserError("experiment.synthetic_total must exceed every budget (font cells get "
                        "synthetic_total - budget renders)")
    if not e["seeds"]:
        raise UserError("experiment.seeds is empty; give at least one seed")
    fraction = synthetic_fractions(e)
    stages: dict[str, dag.Stage] = {}

    def add(stage):
        stage.outs = st.OUTS[stage.kind]
        stages[stage.name] = stage

    add(dag.Stage("mnist", st.mnist, {"sha256": {k: v[2] for k, v in FILES.items()}}))
    add(dag.Stage("split", st.split, {"holdout": e["holdout"], "seed": e["split_seed"]},
                  {"mnist": "mnist"}))
    synthetic = {}  # mixture -> (stage giving its images, "{b}" for the budget; extra classify params;
    #                 a mixed cell, real+..., also takes its budget's synthetic fraction)
    mixtures = set(e["mixtures"])
    if mixtures - {"real"}:
        from renderers.fontfiles import excluded, font_files
        from renderers.fonts import EDGES
        fonts = {**cfg["fonts"], "total": e["synthetic_total"]}
        if fonts["edges"] not in EDGES:
            raise UserError(f"fonts.edges {fonts['edges']!r} is not an edge model; choose one of "
                            f"{', '.join(EDGES)}")
        try:
            excluded(font_files(fonts["folders"]), fonts["exclude"])
        except ValueError as exc:
            raise UserError(str(exc)) from None
        add(dag.Stage("render_fonts", st.render_fonts, fonts))
        synthetic["font"] = ("render_fonts", {"total": e["synthetic_total"]})
        synthetic["real+font"] = synthetic["font"]
    if "real+composite" in mixtures:
        comp = cfg["composites"]
        knobs = {k: v for k, v in comp.items() if k not in ("modes", "train_mode")}
        if comp["train_mode"] not in comp["modes"]:
            raise UserError(f"composites.train_mode {comp['train_mode']!r} is not among "
                            f"composites.modes {comp['modes']}")
        for mode in comp["modes"]:
            add(dag.Stage(f"render_composites/{mode}", st.render_composites,
                          {**knobs, "mode": mode}, {"fonts": "render_fonts"}))
        synthetic["real+composite"] = (f"render_composites/{comp['train_mode']}", {})
    if mixtures & {"gan", "real+gan", "tone", "real+tone"}:
        add_refiners(add, cfg, mixtures)
        variants = cfg["refiner"]["variants"]
        for kind, stage in (("gan", "refine"), ("tone", "tone")):
            template = stage + "/b{b}" + ("/s{s}" if cfg["refiner"]["per_seed"] else "")
            extra = {"total": e["synthetic_total"], **({"variants": variants} if kind == "gan" else {})}
            synthetic[kind] = (template, extra)
            synthetic[f"real+{kind}"] = (template, extra)
    cells = []
    for seed in e["seeds"]:
        for b in e["budgets"]:
            add(budget_stage(b, seed))
            for m in e["mixtures"]:
                cells.append(f"classify/{m}/b{b}/s{seed}")
                deps = {"budget": f"budget/b{b}/s{seed}", "mnist": "mnist"}
                extra = {}
                if m in synthetic:
                    source, extra = synthetic[m]
                    deps["synthetic"] = source.format(b=b, s=seed)
                    if m.startswith("real+"):
                        extra = {**extra, "synthetic_fraction": fraction[b]}
                add(dag.Stage(cells[-1], st.classify,
                              {"mixture": m, "budget": b, "seed": seed, **clf, **extra}, deps))
    group_cells(stages, cells, clf["group"])
    if mixtures - {"real"}:  # a real-only study has no synthetic source to measure
        add_gaps(add, stages, cfg)
    renders = [n for n in stages
               if n.startswith(("render_", "refine/", "train_refiner/", "tone/", "gap/"))]
    add(dag.Stage("report", st.report, {"experiment": name},
                  {**{c: c for c in cells}, **{r: r for r in renders}, "split": "split"}, publish=True))
    return stages


def synthetic_fractions(e: dict) -> dict[int, float]:
    """Each budget's share of synthetic images in a mixed batch: `synthetic_fraction`, or its own in
    `synthetic_fraction_at` (keyed by budget; a budget the study does not run is not used)."""
    at = by_budget(e, "synthetic_fraction_at", "{55 = 0.5}")
    fractions = {b: at.get(b, e["synthetic_fraction"]) for b in e["budgets"]}
    bad = {b: f for b, f in fractions.items() if not 0 < f < 1}
    if bad:
        raise UserError(f"experiment.synthetic_fraction must lie strictly between 0 and 1 (the "
                        f"share of synthetic images in a mixed batch); got {bad} by budget")
    return fractions


def by_budget(e: dict, key: str, example: str) -> dict[int, object]:
    """experiment.`key`, a table keyed by budget, with int keys; UserError for a key not a number."""
    bad = [k for k in e[key] if not k.isdigit()]
    if bad:
        raise UserError(f"experiment.{key}: key {bad[0]!r} is not a budget; give a table keyed by "
                        f"budget, e.g. {example}")
    return {int(k): v for k, v in e[key].items()}


def refiner_knobs(cfg: dict) -> dict[int, dict]:
    """Each budget's [refiner] knobs: [refiner]'s, with experiment.refiner_at's for that budget over
    them, each key and type checked, and each budget's values checked as [refiner]'s are."""
    from gan.train import RefinerConfig
    from synthgap.config import checked, hints, nearest

    valid = {k: h for k, h in hints(RefinerConfig).items() if k not in ("variants", "per_seed")}
    out = {}
    example = "{55 = {lambda_sem = 3.0, lecam = 0.3}}"
    for b, given in by_budget(cfg["experiment"], "refiner_at", example).items():
        for k in given:
            if k not in valid:
                raise UserError(f"experiment.refiner_at.{b}: {k!r} is not a knob one budget's "
                                f"refiner may set; {nearest(k, valid)}valid: {', '.join(sorted(valid))}")
        out[b] = {k: checked(v, valid[k], f"experiment.refiner_at.{b}.{k}") for k, v in given.items()}
    check_refiner(cfg["refiner"], "refiner")
    knobs = {b: {**cfg["refiner"], **out.get(b, {})} for b in cfg["experiment"]["budgets"]}
    for b in out.keys() & knobs.keys():
        check_refiner(knobs[b], f"experiment.refiner_at.{b}")
    return knobs


# [refiner] knobs that act on the warp, and why they need one
WARP_KNOBS = {"shape_d": "the shape discriminator teaches the warp and nothing else",
              "warp_centred": "it centres the warp's field, and there is none without it"}


def check_refiner(ref: dict, where: str) -> None:
    """UserError for a [refiner] value out of its range (`where`: the table that set it)."""
    from gan.diffaugment import OPS
    from gan.networks import HEADS, UPSAMPLES

    if ref["variants"] < 1:
        raise UserError(f"refiner.variants must be at least 1, got {ref['variants']}")
    if ref["variants"] > 1 and not ref["warp"]:
        raise UserError("refiner.variants > 1 needs refiner.warp = true: only the warp has a "
                        "noise input, so without it every variant is the same image")
    for knob, why in WARP_KNOBS.items():
        if ref[knob] and not ref["warp"]:
            raise UserError(f"{where}.{knob} needs refiner.warp = true: {why}")
    if ref["lr_warp"] < 0:
        raise UserError(f"{where}.lr_warp must be 0 (G's rate) or more, got {ref['lr_warp']}")
    if ref["head"] not in HEADS:
        raise UserError(f"{where}.head {ref['head']!r} is not a head; choose one of "
                        f"{', '.join(HEADS)}")
    if ref["upsample"] not in UPSAMPLES:
        raise UserError(f"{where}.upsample {ref['upsample']!r} is not a way to up-sample; choose "
                        f"one of {', '.join(UPSAMPLES)}")
    unknown = [op for op in ref["augment"] if op not in OPS]
    if unknown:
        raise UserError(f"{where}.augment: {', '.join(map(repr, unknown))} is not an "
                        f"augmentation; choose from {', '.join(OPS)}")
    if ref["d_steps"] < 1:
        raise UserError(f"{where}.d_steps must be at least 1 (discriminator updates per generator "
                        f"step), got {ref['d_steps']}")
    if ref["feature_head"] and ref["lambda_sem"] <= 0:
        raise UserError(f"{where}.feature_head needs the classifier of the renders that "
                        f"lambda_sem > 0 trains; set lambda_sem above 0 or feature_head = false")
    if not 0 <= ref["ema"] < 1:
        raise UserError(f"{where}.ema must be in [0, 1) (a decay; 0: off), got {ref['ema']}")
    if ref["lecam"] < 0:
        raise UserError(f"{where}.lecam must be 0 (off) or more, got {ref['lecam']}")
    if ref["val_images"] < 0:
        raise UserError(f"{where}.val_images must be 0 (off) or more, got {ref['val_images']}")
    if not 0 <= ref["ada_target"] < 1:
        raise UserError(f"{where}.ada_target must be in [0, 1) (0: off; ADA uses 0.6), got "
                        f"{ref['ada_target']}")
    if not 0 < ref["match_nearest"] <= 1:
        raise UserError(f"{where}.match_nearest must be in (0, 1] (a share of each digit's real "
                        f"images; 1: any of them), got {ref['match_nearest']}")


def group_cells(stages: dict, cells: list[str], size: int) -> None:
    """Each budget's cells, in order of seed and mixture, in groups of `size` trained at once
    (`[classifier] group`); a cell's params name its group, which is part of its key."""
    from synthgap import stages as st

    if size < 1:
        raise UserError(f"classifier.group must be at least 1 (1: cells one by one), got {size}")
    for name in cells:
        del stages[name].params["group"]
    if size == 1:
        return
    budgets = sorted({stages[c].params["budget"] for c in cells})
    for b in budgets:
        mine = [c for c in cells if stages[c].params["budget"] == b]
        for i in range(0, len(mine), size):
            group = tuple(mine[i:i + size])
            for name in group:
                stages[name].params["group"] = list(group)
                stages[name].group, stages[name].group_fn = group, st.classify_cells


def budget_stage(b: int, seed: int) -> dag.Stage:
    """The seed's draw of b real images from the pool (the refiners use the first seed's)."""
    from synthgap import stages as st

    return dag.Stage(f"budget/b{b}/s{seed}", st.budget, {"budget": b, "seed": seed},
                     {"split": "split"})


def refiner_seeds(cfg: dict) -> list[tuple[int, str]]:
    """(seed, name suffix) of the refiners of each budget: every seed's when `refiner.per_seed`,
    else the first seed's alone (named without a seed)."""
    seeds = cfg["experiment"]["seeds"]
    if cfg["refiner"]["per_seed"]:
        return [(s, f"/s{s}") for s in seeds]
    return [(seeds[0], "")]


def add_refiners(add, cfg: dict, mixtures: set) -> None:
    """oracle, and per budget (and seed, with `refiner.per_seed`) train_refiner and refine (the
    GAN) and tone (the tone-curve baseline), each on that seed's budget of real images."""
    from synthgap import stages as st

    e = cfg["experiment"]
    knobs = refiner_knobs(cfg)
    add_oracle(add, cfg)
    oracle = {"oracle_width": oracle_params(cfg)["width"]}
    for b in e["budgets"]:
        ref = knobs[b]
        match = {k: ref[k] for k in ("match_levels", "match_nearest")}
        # matching and drawing variants follow training: changing them does not retrain
        trained = {k: v for k, v in ref.items() if k not in match and k != "variants"}
        for seed, suffix in refiner_seeds(cfg):
            add(budget_stage(b, seed))
            inputs = {"budget": f"budget/b{b}/s{seed}", "synthetic": "render_fonts",
                      "oracle": "oracle"}
            if mixtures & {"tone", "real+tone"}:
                add(dag.Stage(f"tone/b{b}{suffix}", st.tone,
                              {"budget": b, "seed": seed, **oracle, **match}, inputs))
            if not mixtures & {"gan", "real+gan"}:
                continue
            add(dag.Stage(f"train_refiner/b{b}{suffix}", st.train_refiner,
                          {**trained, "budget": b, "seed": seed},
                          {"budget": inputs["budget"], "synthetic": "render_fonts",
                           **({"split": "split"} if ref["val_images"] > 0 else {})}))
            add(dag.Stage(f"refine/b{b}{suffix}", st.refine,
                          {"budget": b, "seed": seed, "variants": ref["variants"], **oracle,
                           **match},
                          {**inputs, "refiner": f"train_refiner/b{b}{suffix}"}))


def add_gaps(add, stages: dict, cfg: dict) -> None:
    """gap/<source>[/b{b}] for every synthetic source in the graph and the real-vs-real control;
    with per-seed refiners, the first seed's refined and toned renders are measured."""
    from synthgap import stages as st

    def first_out(stage):
        return st.OUTS[stage.split("/")[0]][0]

    sources = {"gap/real-control": ("real-control", None, "split", first_out("split"))}
    first = cfg["experiment"]["seeds"][0]
    for name in stages:
        parts = name.split("/")
        if name == "render_fonts":
            sources["gap/font"] = ("font", None, name, first_out(name))
        elif parts[0] == "render_composites":
            sources[f"gap/composite-{parts[1]}"] = (f"composite-{parts[1]}", None, name,
                                                    first_out(name))
        elif parts[0] in ("refine", "tone") and parts[2:] in ([], [f"s{first}"]):
            source = {"refine": "refined", "tone": "tone"}[parts[0]]
            sources[f"gap/{source}/b{int(parts[1][1:])}"] = (source, int(parts[1][1:]), name,
                                                             first_out(name))
    if not any(n.startswith(("train_refiner/", "tone/")) for n in stages):
        add_oracle(add, cfg)
    for name, (source, budget, stage, file) in sources.items():
        add(dag.Stage(name, st.gap, {**cfg["gap"], "source": source, "budget": budget, "file": file,
                                     "oracle_width": oracle_params(cfg)["width"]},
                      {"source": stage, "split": "split", "oracle": "oracle"}))


def oracle_params(cfg: dict) -> dict:
    """The classifier's params with `[oracle]` overrides: trained once and used for evaluation only,
    the oracle may train longer than the cells."""
    clf = {k: v for k, v in cfg["classifier"].items() if k != "group"}
    return {**clf, **cfg.get("oracle", {}), "seed": 0}


def add_oracle(add, cfg: dict) -> None:
    from synthgap import stages as st

    add(dag.Stage("oracle", st.oracle, oracle_params(cfg), {"split": "split", "mnist": "mnist"}))
