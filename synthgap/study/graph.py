"""The stage graph of an experiment config: which stages exist, their params and dependencies.

A stage's params hold the dict form of the settings it uses (one section per key, e.g. "classifier"),
which enters its cache key; the stage function turns it back into the dataclass."""

from __future__ import annotations

from dataclasses import asdict, replace

from synthgap.errors import UserError
from synthgap.runner.dag import Stage
from synthgap.study import stages as st
from synthgap.study.config import StudyConfig

# the top-level packages whose code enters the stages' keys
CODE_PACKAGES = ("synthgap", "renderers", "gan", "classifiers")
# [refiner] knobs that act after training (matching grey levels, drawing variants): changing them
# does not retrain the refiner
AFTER_TRAINING = ("match_levels", "match_nearest", "variants")


def build_graph(name: str, cfg: StudyConfig) -> dict[str, Stage]:
    """The stage graph of an experiment config."""
    from synthgap.data.mnist import FILES

    e = cfg.experiment
    check_experiment(cfg)
    stages: dict[str, Stage] = {}

    def add(stage):
        stage.outs, stage.packages = st.OUTS[stage.kind], CODE_PACKAGES
        stages[stage.name] = stage

    add(Stage("mnist", st.mnist, {"sha256": {k: v[2] for k, v in FILES.items()}}))
    add(Stage("split", st.split, {"holdout": e.holdout, "seed": e.split_seed}, {"mnist": "mnist"}))
    synthetic = add_sources(add, cfg)
    cells = add_cells(add, cfg, synthetic)
    group_cells(stages, cells, cfg.classifier.group)
    if set(e.mixtures) - {"real"}:  # a real-only study has no synthetic source to measure
        add_gaps(add, stages, cfg)
    renders = [n for n in stages
               if n.startswith(("render_", "refine/", "train_refiner/", "tone/", "gap/"))]
    add(Stage("report", st.report, {"experiment": name},
              {**{c: c for c in cells}, **{r: r for r in renders}, "split": "split"}, publish=True))
    return stages


def check_experiment(cfg: StudyConfig) -> None:
    """UserError for [experiment] values the graph cannot be built from."""
    e = cfg.experiment
    bad = [m for m in e.mixtures if m not in st.MIXTURES]
    if bad:
        raise UserError(f"experiment.mixtures: unknown {bad}; known: {', '.join(st.MIXTURES)}")
    pool = 60000 - e.holdout
    if not 0 < e.holdout < 60000:
        raise UserError(f"experiment.holdout must be between 1 and 59999, got {e.holdout}")
    if not e.budgets or any(not 0 < b <= pool for b in e.budgets):
        raise UserError(f"experiment.budgets must lie in 1..{pool} (the pool), got {e.budgets}")
    if set(e.mixtures) - {"real", "real+composite"} and max(e.budgets) >= e.synthetic_total:
        raise UserError("experiment.synthetic_total must exceed every budget (font cells get "
                        "synthetic_total - budget renders)")
    if not e.seeds:
        raise UserError("experiment.seeds is empty; give at least one seed")
    if cfg.classifier.group < 1:
        raise UserError(f"classifier.group must be at least 1 (1: cells one by one), got "
                        f"{cfg.classifier.group}")


def add_sources(add, cfg: StudyConfig) -> dict[str, tuple[str, dict]]:
    """The stages that make synthetic images (renders, composites, refiners, tone curves); returns
    mixture -> (the stage giving its images, "{b}" and "{s}" for the budget and seed; the params a
    cell of it adds)."""
    mixtures, T = set(cfg.experiment.mixtures), cfg.experiment.synthetic_total
    synthetic = {}
    if mixtures - {"real"}:
        check_fonts(cfg)
        add(Stage("render_fonts", st.render_fonts, {"fonts": asdict(cfg.fonts), "total": T}))
        synthetic["font"] = synthetic["real+font"] = ("render_fonts", {"total": T})
    if "real+composite" in mixtures:
        comp = cfg.composites
        if comp.train_mode not in comp.modes:
            raise UserError(f"composites.train_mode {comp.train_mode!r} is not among "
                            f"composites.modes {comp.modes}")
        knobs = {k: v for k, v in asdict(comp).items() if k not in ("modes", "train_mode")}
        for mode in comp.modes:
            add(Stage(f"render_composites/{mode}", st.render_composites,
                      {"composites": knobs, "mode": mode}, {"fonts": "render_fonts"}))
        synthetic["real+composite"] = (f"render_composites/{comp.train_mode}", {})
    if mixtures & {"gan", "real+gan", "tone", "real+tone"}:
        add_refiners(add, cfg, mixtures)
        for kind, stage in (("gan", "refine"), ("tone", "tone")):
            template = stage + "/b{b}" + ("/s{s}" if cfg.refiner.per_seed else "")
            extra = {"total": T, **({"variants": cfg.refiner.variants} if kind == "gan" else {})}
            synthetic[kind] = synthetic[f"real+{kind}"] = (template, extra)
    return synthetic


def check_fonts(cfg: StudyConfig) -> None:
    from renderers.fontfiles import excluded, font_files
    from renderers.fonts import EDGES

    if cfg.fonts.edges not in EDGES:
        raise UserError(f"fonts.edges {cfg.fonts.edges!r} is not an edge model; choose one of "
                        f"{', '.join(EDGES)}")
    try:
        excluded(font_files(cfg.fonts.folders), cfg.fonts.exclude)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def add_cells(add, cfg: StudyConfig, synthetic: dict) -> list[str]:
    """A classify cell per seed, budget and mixture, each on its budget of real images and, for a
    synthetic mixture, its source's images; returns their names."""
    e = cfg.experiment
    classifier = {k: v for k, v in asdict(cfg.classifier).items() if k != "group"}
    fraction = synthetic_fractions(cfg)
    cells = []
    for seed in e.seeds:
        for b in e.budgets:
            add(budget_stage(b, seed))
            for m in e.mixtures:
                cells.append(f"classify/{m}/b{b}/s{seed}")
                deps = {"budget": f"budget/b{b}/s{seed}", "mnist": "mnist"}
                source, extra = synthetic.get(m, (None, {}))
                if source is not None:
                    deps["synthetic"] = source.format(b=b, s=seed)
                share = fraction[b] if m.startswith("real+") else float(m != "real")
                add(Stage(cells[-1], st.classify,
                          {"classifier": classifier, "mixture": m, "budget": b, "seed": seed,
                           "synthetic_fraction": share, **extra}, deps, network=True))
    return cells


def synthetic_fractions(cfg: StudyConfig) -> dict[int, float]:
    """Each budget's share of synthetic images in a mixed batch: `synthetic_fraction`, or its own in
    `synthetic_fraction_at` (keyed by budget; a budget the study does not run is not used)."""
    e = cfg.experiment
    at = by_budget(e.synthetic_fraction_at, "synthetic_fraction_at", "{55 = 0.5}")
    fractions = {b: at.get(b, e.synthetic_fraction) for b in e.budgets}
    bad = {b: f for b, f in fractions.items() if not 0 < f < 1}
    if bad:
        raise UserError(f"experiment.synthetic_fraction must lie strictly between 0 and 1 (the "
                        f"share of synthetic images in a mixed batch); got {bad} by budget")
    return fractions


def by_budget(table: dict, key: str, example: str) -> dict[int, object]:
    """experiment.`key`, a table keyed by budget, with int keys; UserError for a key not a number."""
    bad = [k for k in table if not k.isdigit()]
    if bad:
        raise UserError(f"experiment.{key}: key {bad[0]!r} is not a budget; give a table keyed by "
                        f"budget, e.g. {example}")
    return {int(k): v for k, v in table.items()}


def refiner_knobs(cfg: StudyConfig) -> dict:
    """Each budget's refiner settings: [refiner]'s, with experiment.refiner_at's for that budget
    over them, each key and type checked, and each budget's values checked as [refiner]'s are."""
    from gan.config import RefinerConfig, check
    from synthgap.settings import checked, hints, nearest

    valid = {k: h for k, h in hints(RefinerConfig).items() if k not in ("variants", "per_seed")}
    example = "{55 = {lambda_sem = 3.0, lecam = 0.3}}"
    given = by_budget(cfg.experiment.refiner_at, "refiner_at", example)
    for b, over in given.items():
        for k in over:
            if k not in valid:
                raise UserError(f"experiment.refiner_at.{b}: {k!r} is not a knob one budget's "
                                f"refiner may set; {nearest(k, valid)}valid: {', '.join(sorted(valid))}")
        given[b] = {k: checked(v, valid[k], f"experiment.refiner_at.{b}.{k}") for k, v in over.items()}
    check(cfg.refiner, "refiner")
    knobs = {b: replace(cfg.refiner, **given.get(b, {})) for b in cfg.experiment.budgets}
    for b in given.keys() & knobs.keys():
        check(knobs[b], f"experiment.refiner_at.{b}")
    return knobs


def group_cells(stages: dict, cells: list[str], size: int) -> None:
    """Each budget's cells, in order of seed and mixture, in groups of `size` trained at once
    (`[classifier] group`); a cell's params name its group, which is part of its key."""
    if size == 1:
        return
    for b in sorted({stages[c].params["budget"] for c in cells}):
        mine = [c for c in cells if stages[c].params["budget"] == b]
        for i in range(0, len(mine), size):
            group = tuple(mine[i:i + size])
            for name in group:
                stages[name].params["group"] = list(group)
                stages[name].group, stages[name].group_fn = group, st.classify_cells


def budget_stage(b: int, seed: int) -> Stage:
    """The seed's draw of b real images from the pool (the refiners use the first seed's)."""
    return Stage(f"budget/b{b}/s{seed}", st.budget, {"budget": b, "seed": seed}, {"split": "split"})


def refiner_seeds(cfg: StudyConfig) -> list[tuple[int, str]]:
    """(seed, name suffix) of the refiners of each budget: every seed's when `refiner.per_seed`,
    else the first seed's alone (named without a seed)."""
    seeds = cfg.experiment.seeds
    if cfg.refiner.per_seed:
        return [(s, f"/s{s}") for s in seeds]
    return [(seeds[0], "")]


def add_refiners(add, cfg: StudyConfig, mixtures: set) -> None:
    """oracle, and per budget (and seed, with `refiner.per_seed`) train_refiner and refine (the
    GAN) and tone (the tone-curve baseline), each on that seed's budget of real images."""
    knobs = refiner_knobs(cfg)
    add_oracle(add, cfg)
    oracle = {"oracle_width": cfg.oracle_classifier().width}
    for b in cfg.experiment.budgets:
        ref = asdict(knobs[b])
        match = {k: ref[k] for k in ("match_levels", "match_nearest")}
        trained = {k: v for k, v in ref.items() if k not in AFTER_TRAINING}
        for seed, suffix in refiner_seeds(cfg):
            add(budget_stage(b, seed))
            inputs = {"budget": f"budget/b{b}/s{seed}", "synthetic": "render_fonts",
                      "oracle": "oracle"}
            if mixtures & {"tone", "real+tone"}:
                add(Stage(f"tone/b{b}{suffix}", st.tone,
                          {"budget": b, "seed": seed, **oracle, **match}, inputs))
            if not mixtures & {"gan", "real+gan"}:
                continue
            add(Stage(f"train_refiner/b{b}{suffix}", st.train_refiner,
                      {"refiner": trained, "budget": b, "seed": seed},
                      {"budget": inputs["budget"], "synthetic": "render_fonts",
                       **({"split": "split"} if ref["val_images"] > 0 else {})}, network=True))
            add(Stage(f"refine/b{b}{suffix}", st.refine,
                      {"budget": b, "seed": seed, "variants": ref["variants"], **oracle, **match},
                      {**inputs, "refiner": f"train_refiner/b{b}{suffix}"}, network=True))


def add_gaps(add, stages: dict, cfg: StudyConfig) -> None:
    """gap/<source>[/b{b}] for every synthetic source in the graph and the real-vs-real control;
    with per-seed refiners, the first seed's refined and toned renders are measured."""
    def first_out(stage):
        return st.OUTS[stage.split("/")[0]][0]

    sources = {"gap/real-control": ("real-control", None, "split", first_out("split"))}
    first = cfg.experiment.seeds[0]
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
        add(Stage(name, st.gap, {"gap": asdict(cfg.gap), "source": source, "budget": budget,
                                 "file": file, "oracle_width": cfg.oracle_classifier().width},
                  {"source": stage, "split": "split", "oracle": "oracle"}, network=True))


def add_oracle(add, cfg: StudyConfig) -> None:
    add(Stage("oracle", st.oracle, {"classifier": asdict(cfg.oracle_classifier()), "seed": 0},
              {"split": "split", "mnist": "mnist"}, network=True))
