"""The stage graph of an experiment config: which stages exist, their params and dependencies.

A stage's params hold the dict form of the settings it uses (one section per key, e.g. "classifier"),
which enters its cache key; the stage function turns it back into the dataclass."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

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

    check_experiment(cfg)
    regimes = parse_regimes(cfg)
    stages: dict[str, Stage] = {}

    def add(stage):
        stage.outs, stage.packages = st.OUTS[stage.kind], CODE_PACKAGES
        stages[stage.name] = stage

    add(Stage("mnist", st.mnist, {"sha256": {k: v[2] for k, v in FILES.items()}}))
    add(Stage("split", st.split, {"holdout": cfg.experiment.holdout, "seed": cfg.experiment.split_seed},
              {"mnist": "mnist"}))
    synthetic, measured = {}, {}
    for renderer in dict.fromkeys(r.renderer for r in regimes):
        synthetic[renderer] = add_sources(add, cfg, renderer, measured)
    cells = add_cells(add, cfg, regimes, synthetic)
    group_cells(stages, cells, cfg.classifier.group)
    if measured:  # a real-only study has no synthetic source to measure
        add_gaps(add, cfg, measured)
    renders = [n for n in stages
               if n.startswith(("render_", "refine/", "train_refiner/", "tone/", "gap/"))]
    named = {"regimes": [r.name for r in regimes]} if regimes[0].renderer else {}
    add(Stage("report", st.report, {"experiment": name, **named},
              {**{c: c for c in cells}, **{r: r for r in renders}, "split": "split"}, publish=True))
    return stages


# ---------------------------------------------------------------------------------- regimes
MIXINGS = ("chosen", "concat")


@dataclass(frozen=True)
class Regime:
    """A regime of the study: a renderer, a classifier and a way of mixing, each by name in
    [experiment] (renderers, classifiers; mixing "chosen" or "concat"). The study without
    regimes has one, with empty names: its stages carry no regime in their names."""
    renderer: str = ""
    classifier: str = ""
    mixing: str = "chosen"

    @property
    def name(self) -> str:
        return f"{self.renderer}/{self.classifier}/{self.mixing}"

    def factors(self, mixture: str) -> dict[str, str]:
        """The factors a cell of `mixture` depends on, so that regimes alike in them share it:
        a real cell its classifier alone, synthetic images alone the renderer too, a mixture all
        three."""
        if not self.renderer:
            return {}
        if mixture == "real":
            return {"classifier": self.classifier}
        out = {"renderer": self.renderer, "classifier": self.classifier}
        return {**out, "mixing": self.mixing} if mixture.startswith("real+") else out


def parse_regimes(cfg: StudyConfig) -> list[Regime]:
    """experiment.regimes as Regimes, each name checked ([Regime()] for a study without)."""
    e = cfg.experiment
    if not e.regimes:
        return [Regime()]
    out = []
    for name in e.regimes:
        parts = name.split("/")
        if len(parts) != 3:
            raise UserError(f"experiment.regimes: {name!r} is not renderer/classifier/mixing, e.g. "
                            "\"type/plain/concat\"")
        for part, known, what in ((parts[0], e.renderers, "renderers"),
                                  (parts[1], e.classifiers, "classifiers"), (parts[2], MIXINGS, "")):
            if part not in known:
                where = f"experiment.{what}" if what else "the mixings"
                raise UserError(f"experiment.regimes: {name!r} names {part!r}, not one of {where}: "
                                f"{', '.join(known)}")
        out.append(Regime(*parts))
    if len(set(out)) < len(out):
        raise UserError(f"experiment.regimes names a regime twice: {e.regimes}")
    return out


def overridden(base, over: dict, where: str):
    """The settings dataclass `base` with the keys of `over` (checked as a config file's are)."""
    from synthgap.settings import checked, hints, nearest

    valid = hints(type(base))
    for k in over:
        if k not in valid:
            raise UserError(f"{where}: unknown key {k!r}; {nearest(k, valid)}valid: "
                            f"{', '.join(valid)}")
    return replace(base, **{k: checked(v, valid[k], f"{where}.{k}") for k, v in over.items()})


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
    if any(not 0 < b <= pool for b in e.real_budgets):
        raise UserError(f"experiment.real_budgets must lie in 1..{pool} (the pool), got "
                        f"{e.real_budgets}")
    if not e.seeds:
        raise UserError("experiment.seeds is empty; give at least one seed")
    if cfg.classifier.group < 1:
        raise UserError(f"classifier.group must be at least 1 (1: cells one by one), got "
                        f"{cfg.classifier.group}")


def add_sources(add, cfg: StudyConfig, renderer: str, measured: dict) -> dict[str, tuple[str, dict]]:
    """The stages that make synthetic images with one renderer (renders, composites, refiners,
    tone curves; "": [fonts] as it is); returns mixture -> (the stage giving its images, "{b}" and
    "{s}" for the budget and seed; the params a cell of it adds). Adds to `measured` the sources
    the gap instruments measure: gap stage -> (source, budget, stage, renderer)."""
    mixtures = {m.partition(":")[0] for m in cfg.experiment.mixtures}
    T, tag = cfg.experiment.synthetic_total, f"/{renderer}" if renderer else ""
    named = {"renderer": renderer} if renderer else {}
    synthetic = {}
    if mixtures - {"real"}:
        fonts = (overridden(cfg.fonts, cfg.experiment.renderers[renderer],
                            f"experiment.renderers.{renderer}") if renderer else cfg.fonts)
        check_fonts(fonts)
        add(Stage(f"render_fonts{tag}", st.render_fonts, {"fonts": asdict(fonts), "total": T, **named}))
        synthetic["font"] = synthetic["real+font"] = (f"render_fonts{tag}", {"total": T})
        measured[f"gap/font{tag}"] = ("font", None, f"render_fonts{tag}", renderer)
    if "real+composite" in mixtures:
        comp = cfg.composites
        if comp.train_mode not in comp.modes:
            raise UserError(f"composites.train_mode {comp.train_mode!r} is not among "
                            f"composites.modes {comp.modes}")
        knobs = {k: v for k, v in asdict(comp).items() if k not in ("modes", "train_mode")}
        for mode in comp.modes:
            name = f"render_composites{tag}/{mode}"
            add(Stage(name, st.render_composites, {"composites": knobs, "mode": mode, **named},
                      {"fonts": f"render_fonts{tag}"}))
            measured[f"gap/composite-{mode}{tag}"] = (f"composite-{mode}", None, name, renderer)
        synthetic["real+composite"] = (f"render_composites{tag}/{comp.train_mode}", {})
    if mixtures & {"gan", "real+gan", "tone", "real+tone"}:
        add_refiners(add, cfg, mixtures, tag, named, measured)
        for kind, stage in (("gan", "refine"), ("tone", "tone")):
            template = stage + tag + "/b{b}" + ("/s{s}" if cfg.refiner.per_seed else "")
            extra = {"total": T, **({"variants": cfg.refiner.variants} if kind == "gan" else {})}
            synthetic[kind] = synthetic[f"real+{kind}"] = (template, extra)
    return synthetic


def check_fonts(fonts) -> None:
    from renderers.fontfiles import excluded, font_files
    from renderers.fonts import EDGES

    if fonts.edges not in EDGES:
        raise UserError(f"fonts.edges {fonts.edges!r} is not an edge model; choose one of "
                        f"{', '.join(EDGES)}")
    try:
        excluded(font_files(fonts.folders), fonts.exclude)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def add_cells(add, cfg: StudyConfig, regimes: list[Regime], synthetic: dict) -> list[str]:
    """A classify cell per seed, budget, regime and mixture, each on its budget of real images
    and, for a synthetic mixture, its renderer's source's images; real cells too at
    `real_budgets`. A cell is named by the factors of its regime it depends on
    (`classify/[renderer/][classifier/][mixing/]mixture/b../s..`), so regimes alike in them share
    it. Returns the cells' names."""
    e = cfg.experiment
    for r in regimes:
        if "group" in e.classifiers.get(r.classifier, {}):
            raise UserError(f"experiment.classifiers.{r.classifier}: `group` is how cells are "
                            "trained, not a classifier; set [classifier] group instead")
    clean = {r.classifier: {k: v for k, v in asdict(overridden(
        cfg.classifier, e.classifiers[r.classifier], f"experiment.classifiers.{r.classifier}")
        if r.classifier else cfg.classifier).items() if k != "group"} for r in regimes}
    cells: dict[str, None] = {}
    for seed in e.seeds:
        for b in dict.fromkeys([*e.budgets, *e.real_budgets]):
            add(budget_stage(b, seed))
            for regime in regimes:
                for m in e.mixtures if b in e.budgets else ["real"]:
                    factors = regime.factors(m)
                    name = "/".join(["classify", *factors.values(), m, f"b{b}", f"s{seed}"])
                    if name in cells:
                        continue
                    cells[name] = None
                    deps = {"budget": f"budget/b{b}/s{seed}", "mnist": "mnist"}
                    source, extra = synthetic[regime.renderer].get(m.partition(":")[0], (None, {}))
                    if source is not None:
                        deps["synthetic"] = source.format(b=b, s=seed)
                    add(Stage(name, st.classify,
                              {"classifier": clean[regime.classifier], "mixture": m, "budget": b,
                               "seed": seed, "synthetic_fraction": share(cfg, m, b, factors, extra),
                               **extra, **({"regime": factors} if factors else {}),
                               **({"mixing": "concat"} if factors.get("mixing") == "concat" else {})},
                              deps, network=True))
    return list(cells)


def share(cfg: StudyConfig, mixture: str, b: int, factors: dict, extra: dict) -> float:
    """The share of synthetic images in a cell's batches: 0 for real digits alone, 1 for
    synthetic ones alone; for a mixture the chosen share at its budget, or, mixed by concat, its
    synthetic images' share of the pooled images."""
    if not mixture.startswith("real+"):
        return float(mixture != "real")
    if factors.get("mixing") != "concat":
        return synthetic_fractions(cfg)[b]
    n = (cfg.composites.count if mixture.startswith("real+composite")
         else (extra["total"] - b) * extra.get("variants", 1))
    return n / (n + b)


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
    (`[classifier] group`); a cell's params name its group, which is part of its key. With
    regimes, the cells of one budget and one set of regime factors: a group shares its
    classifier, and a cell shared by regimes keeps its group whatever other regimes run."""
    if size == 1:
        return

    def kind(cell):
        params = stages[cell].params
        return params["budget"], json.dumps(params.get("regime", {}), sort_keys=True)

    for at in sorted({kind(c) for c in cells}):
        mine = [c for c in cells if kind(c) == at]
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


def add_refiners(add, cfg: StudyConfig, mixtures: set, tag: str, named: dict,
                 measured: dict) -> None:
    """oracle, and per budget (and seed, with `refiner.per_seed`) train_refiner and refine (the
    GAN) and tone (the tone-curve baseline), each on that seed's budget of real images and the
    renders of `render_fonts{tag}`; the first seed's refined and toned renders are `measured`."""
    knobs = refiner_knobs(cfg)
    add_oracle(add, cfg)
    oracle = {"oracle_width": cfg.oracle_classifier().width}
    renders, first = f"render_fonts{tag}", cfg.experiment.seeds[0]
    for b in cfg.experiment.budgets:
        ref = asdict(knobs[b])
        match = {k: ref[k] for k in ("match_levels", "match_nearest")}
        trained = {k: v for k, v in ref.items() if k not in AFTER_TRAINING}
        for seed, suffix in refiner_seeds(cfg):
            add(budget_stage(b, seed))
            inputs = {"budget": f"budget/b{b}/s{seed}", "synthetic": renders, "oracle": "oracle"}
            if mixtures & {"tone", "real+tone"}:
                add(Stage(f"tone{tag}/b{b}{suffix}", st.tone,
                          {"budget": b, "seed": seed, **oracle, **match, **named}, inputs))
                if seed == first:
                    measured[f"gap/tone{tag}/b{b}"] = ("tone", b, f"tone{tag}/b{b}{suffix}",
                                                       named.get("renderer", ""))
            if not mixtures & {"gan", "real+gan"}:
                continue
            add(Stage(f"train_refiner{tag}/b{b}{suffix}", st.train_refiner,
                      {"refiner": trained, "budget": b, "seed": seed, **named},
                      {"budget": inputs["budget"], "synthetic": renders,
                       **({"split": "split"} if ref["val_images"] > 0 else {})}, network=True))
            add(Stage(f"refine{tag}/b{b}{suffix}", st.refine,
                      {"budget": b, "seed": seed, "variants": ref["variants"], **oracle, **match,
                       **named},
                      {**inputs, "refiner": f"train_refiner{tag}/b{b}{suffix}"}, network=True))
            if seed == first:
                measured[f"gap/refined{tag}/b{b}"] = ("refined", b, f"refine{tag}/b{b}{suffix}",
                                                      named.get("renderer", ""))


def add_gaps(add, cfg: StudyConfig, measured: dict) -> None:
    """gap/<source>[/renderer][/b{b}] for every `measured` source (gap stage -> (source, budget,
    stage, renderer)) and the real-vs-real control."""
    from classifiers.detector import KINDS

    bad = [i for i in cfg.gap.instruments if i not in (*KINDS, "svdd")]
    if bad or not cfg.gap.instruments:
        raise UserError(f"gap.instruments: {bad or 'none given'}; choose among "
                        f"{', '.join((*KINDS, 'svdd'))}")
    add_oracle(add, cfg)
    sources = {"gap/real-control": ("real-control", None, "split", ""), **measured}
    for name, (source, budget, stage, renderer) in sources.items():
        add(Stage(name, st.gap, {"gap": asdict(cfg.gap), "source": source, "budget": budget,
                                 "file": st.OUTS[stage.split("/")[0]][0],
                                 "oracle_width": cfg.oracle_classifier().width,
                                 **({"renderer": renderer} if renderer else {})},
                  {"source": stage, "split": "split", "oracle": "oracle"}, network=True))


def add_oracle(add, cfg: StudyConfig) -> None:
    add(Stage("oracle", st.oracle, {"classifier": asdict(cfg.oracle_classifier()), "seed": 0},
              {"split": "split", "mnist": "mnist"}, network=True))
