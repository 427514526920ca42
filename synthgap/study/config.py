"""The study's typed config. Each section of a config file is a settings dataclass beside the code
that uses it, holding the one set of defaults (the study's); a config file gives only what differs,
and may start from another one (`base = "mnist-sweep"`). Loading checks every key and type
(synthgap/settings.py): a typo or a wrong type is one line naming the file, the section and the key.

    [experiment] ExperimentConfig (here)     [classifier] ClassifierConfig (classifiers/digits.py)
    [oracle]     classifier keys that differ for the evaluation-only classifier (default steps 3000)
    [fonts]      FontsConfig (renderers/fonts.py)     [composites] CompositesConfig (renderers/composite.py)
    [refiner]    RefinerConfig (gan/config.py)        [gap] GapConfig (classifiers/detector.py)
    [runner]     RunnerConfig (synthgap/runner/run.py): how stages run (threads enter every key)
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from classifiers.detector import GapConfig
from classifiers.digits import CLASSIFIERS, ClassifierConfig
from gan.config import RefinerConfig
from renderers.composite import CompositesConfig
from renderers.fonts import RENDERERS, FontsConfig
from synthgap.errors import UserError
from synthgap.runner.run import RunnerConfig
from synthgap.settings import apply_sets, check_keys, hints, nearest

# the experiments shipped with the project: the package `configs`, installed beside `synthgap`
# (in the source tree as in site-packages); a configs/ folder of the working directory comes first
PACKAGE_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CONFIG_DIRS = (Path("configs"), PACKAGE_CONFIGS)
ORACLE_DEFAULTS = {"steps": 3000}


@dataclass
class ExperimentConfig:
    description: str = ""
    budgets: list[int] = field(default_factory=lambda: [55, 385, 5500, 38500])  # real images
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    mixtures: list[str] = field(default_factory=lambda: [
        "real", "font", "gan", "tone", "real+font", "real+gan", "real+tone", "real+composite"])
    synthetic_total: int = 55000    # T: font cells train on T - budget renders
    synthetic_fraction: float = 0.2  # share of synthetic images in a mixed batch (0.5 = 1:1)
    synthetic_fraction_at: dict[str, float] = field(default_factory=lambda: {"55": 0.5})
                                     # ... at these budgets instead (a budget not in `budgets` is
                                     # not used); both chosen on validation error (README)
    refiner_at: dict[str, dict] = field(
        default_factory=lambda: {"55": {"lambda_sem": 3.0, "lecam": 0.3},
                                 "385": {"augment": ["translation"]},
                                 "5500": {"augment": [], "steps": 2000},
                                 "38500": {"augment": [], "steps": 2000}})
                                     # [refiner] knobs of one budget's refiner, over [refiner]'s:
                                     # a budget of 55 keeps labels only with more semantic weight,
                                     # and its discriminators stay ahead only with LeCam; the more
                                     # real images they learn from, the less DiffAugment they need,
                                     # and they teach more without it, for twice the steps
    regimes: list[str] = field(default_factory=list)
                                     # "renderer/classifier/mixing" names, e.g. "type/plain/concat":
                                     # the study once per regime, each cell computed once however
                                     # many regimes share it. Empty: the one regime of [fonts],
                                     # [classifier] and the chosen share (stage names without one)
    renderers: dict[str, dict] = field(default_factory=lambda: copy.deepcopy(RENDERERS))
                                     # a regime's renderer: [fonts] keys over [fonts]
    classifiers: dict[str, dict] = field(default_factory=lambda: copy.deepcopy(CLASSIFIERS))
                                     # a regime's classifier: [classifier] keys over [classifier]
                                     # (mixing: "chosen", each batch's synthetic share as above, or
                                     # "concat", real and synthetic images pooled and drawn alike)
    real_budgets: list[int] = field(default_factory=list)
                                     # real-only cells at these budgets too: a denser real curve
                                     # for the "worth N real images" of every mixture
    holdout: int = 10000            # MNIST training images kept for the gap instruments
    split_seed: int = 0


@dataclass
class StudyConfig:
    """A resolved config: one settings dataclass per section ([oracle]: the classifier keys that
    differ for the oracle)."""
    experiment: ExperimentConfig
    classifier: ClassifierConfig
    oracle: dict
    fonts: FontsConfig
    composites: CompositesConfig
    refiner: RefinerConfig
    gap: GapConfig
    runner: RunnerConfig

    def oracle_classifier(self) -> ClassifierConfig:
        """The oracle's classifier: the cells', with [oracle]'s keys over it (trained once, for
        evaluation only, it may train longer), trained alone."""
        return replace(self.classifier, **{**self.oracle, "group": 1})


def sections() -> dict[str, type]:
    """Section name -> the dataclass its keys are checked against."""
    return {name: ClassifierConfig if name == "oracle" else hint
            for name, hint in hints(StudyConfig).items()}


# ---------------------------------------------------------------------------------- files
def experiments() -> dict[str, Path]:
    found = {}
    for folder in reversed(CONFIG_DIRS):
        for path in sorted(folder.glob("*.toml")):
            found[path.stem] = path
    return found


def config_path(exp: str) -> Path:
    if exp.endswith(".toml"):
        if not Path(exp).is_file():
            raise UserError(f"config file {exp} does not exist")
        return Path(exp)
    for folder in CONFIG_DIRS:
        if (folder / f"{exp}.toml").is_file():
            return folder / f"{exp}.toml"
    raise UserError(f"unknown experiment {exp!r}; known: {', '.join(experiments()) or 'none'} "
                    "(or pass a path to a .toml file)")


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None


def raw_config(path: Path, chain: tuple = ()) -> tuple[dict, dict]:
    """The file's sections merged over its base's (recursively), and where each key came from:
    (section -> {key: value}, (section, key) -> file)."""
    if path.resolve() in chain:
        raise UserError(f"{path}: base configs form a cycle ({' -> '.join(p.stem for p in chain)})")
    data = read_toml(path)
    base = data.pop("base", None)
    merged, origin = {}, {}
    if base is not None:
        if not isinstance(base, str):
            raise UserError(f"{path}: base = {base!r} is not an experiment name")
        try:
            base_path = config_path(base)
        except UserError:
            raise UserError(f"{path}: base {base!r} is not an experiment; known: "
                            f"{', '.join(experiments())}") from None
        merged, origin = raw_config(base_path, (*chain, path.resolve()))
    valid = sections()
    for section, values in data.items():
        if section not in valid or not isinstance(values, dict):
            raise UserError(f"{path}: unknown section [{section}]; {nearest(section, valid)}"
                            f"valid sections: {', '.join(valid)} (and a top-level base = \"NAME\")")
        merged.setdefault(section, {}).update(values)
        origin.update({(section, k): str(path) for k in values})
    return merged, origin


def sets_by_section(sets: list[str] | None) -> dict[str, list[str]]:
    """`--set section.key=value` overrides grouped by section, as `key=value`."""
    by_section: dict[str, list[str]] = {}
    valid = sections()
    for item in sets or []:
        if "=" not in item:
            raise UserError(f"--set {item!r} is not key=value (e.g. --set classifier.steps=500)")
        section, dot, rest = item.partition(".")
        if not dot or section not in valid:
            raise UserError(f"--set {item!r}: give section.key=value, the section one of "
                            f"{', '.join(valid)} (e.g. --set classifier.steps=500)")
        by_section.setdefault(section, []).append(rest)
    return by_section


def load(exp: str, sets: list[str] | None = None) -> tuple[str, StudyConfig]:
    """(experiment name, the resolved config) of a config name or path, with `--set
    section.key=value` overrides applied."""
    path = config_path(exp)
    raw, origin = raw_config(path)
    by_section = sets_by_section(sets)
    values, classes = {}, sections()
    for section, cls in classes.items():
        given = check_keys(cls, raw.get(section, {}),
                           lambda key: f"{origin[section, key]}: [{section}]")
        # [oracle] holds only what differs from the cells' classifier
        base = dict(ORACLE_DEFAULTS) if section == "oracle" else asdict(cls())
        values[section] = apply_sets({**base, **given}, cls, by_section.get(section),
                                     f"{section}.")
    return path.stem, StudyConfig(**{k: v if k == "oracle" else classes[k](**v)
                                     for k, v in values.items()})


def as_tables(cfg: StudyConfig) -> dict[str, dict]:
    """Section -> its values, every key (the dict form of each dataclass)."""
    return {f.name: dict(getattr(cfg, f.name)) if f.name == "oracle" else asdict(getattr(cfg, f.name))
            for f in fields(cfg)}


def show(cfg: StudyConfig) -> str:
    """The resolved config as TOML."""
    def key(k):  # a bare key where TOML allows one, else a quoted one
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else fmt(k)

    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{key(k)} = {fmt(x)}" for k, x in v.items()) + "}"
        return repr(v)

    return "\n".join(f"[{section}]\n" + "".join(f"{k} = {fmt(v)}\n" for k, v in values.items())
                     for section, values in as_tables(cfg).items())
