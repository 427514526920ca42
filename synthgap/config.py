"""Typed experiment configs. Each section of a config file is a dataclass beside the code that uses
it, holding the one set of defaults (the study's); a config file gives only what differs, and may
start from another one (`base = "mnist-sweep"`). Loading checks every key and type: a typo or a wrong
type is one line naming the file, the section and the key, never a silently ignored setting.

    [experiment] ExperimentConfig (here)     [classifier] ClassifierConfig (classifiers/digits.py)
    [oracle]     classifier keys that differ for the evaluation-only classifier (default steps 3000)
    [fonts]      FontsConfig (renderers/fonts.py)     [composites] CompositesConfig (renderers/composite.py)
    [refiner]    RefinerConfig (gan/train.py)         [gap] GapConfig (classifiers/detector.py)
    [runner]     RunnerConfig (here): how stages run (its threads are part of every key)
"""

from __future__ import annotations

import difflib
import tomllib
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

from synthgap.errors import UserError

# the experiments shipped with the project: the package `configs`, installed beside `synthgap`
# (in the source tree as in site-packages); a configs/ folder of the working directory comes first
PACKAGE_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
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
    holdout: int = 10000            # MNIST training images kept for the gap instruments
    split_seed: int = 0


@dataclass
class RunnerConfig:
    """[runner]: how the stages are run. `threads` is part of every stage's key (as is the device
    type), the rest never is."""
    threads: int = 1                # torch threads of every stage, whatever --jobs or the cores: a
                                    # key gives one result. --jobs N on N cores uses them all
    cuda_deterministic: bool = True  # on CUDA: deterministic algorithms where the ops have them,
                                    # a fixed cuBLAS workspace and no cuDNN autotuning
    ray_cpus: dict[str, float] = field(default_factory=dict)  # CPUs a Ray task asks for, by
                                    # stage kind (e.g. {train_refiner = 2}); any other kind: 1
    ray_gpus: float = 1.0           # GPUs a network stage asks for on a Ray cluster with GPUs
    ray_retries: int = 2            # times Ray reruns a stage whose worker process died


def sections() -> dict[str, type]:
    from classifiers.detector import GapConfig
    from classifiers.digits import ClassifierConfig
    from gan.train import RefinerConfig
    from renderers.composite import CompositesConfig
    from renderers.fonts import FontsConfig

    return {"experiment": ExperimentConfig, "classifier": ClassifierConfig,
            "oracle": ClassifierConfig, "fonts": FontsConfig, "composites": CompositesConfig,
            "refiner": RefinerConfig, "gap": GapConfig, "runner": RunnerConfig}


def nearest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""


def type_name(hint) -> str:
    if typing.get_origin(hint) is list:
        return f"list of {type_name(typing.get_args(hint)[0])}"
    if typing.get_origin(hint) is dict:
        return f"a table of {type_name(typing.get_args(hint)[1])}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            dict: "a table"}[hint]


def checked(value, hint, where: str):
    """`value` as the type `hint` (int, float, bool, str, a list of one of them or a table of
    them by name), or UserError."""
    if typing.get_origin(hint) is list:
        if isinstance(value, list):
            elem = typing.get_args(hint)[0]
            return [checked(v, elem, where) for v in value]
    elif typing.get_origin(hint) is dict:
        if isinstance(value, dict):
            elem = typing.get_args(hint)[1]
            return {k: checked(v, elem, f"{where}.{k}") for k, v in value.items()}
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise UserError(f"{where} = {value!r} is not {type_name(hint)}")


def hints(cls) -> dict:
    return typing.get_type_hints(cls)


def check_section(cls, values: dict, origin: dict, section: str) -> dict:
    """The section's values with every key and type checked (defaults not filled in)."""
    valid = hints(cls)
    out = {}
    for key, value in values.items():
        file = origin[key]
        if key not in valid:
            raise UserError(f"{file}: [{section}] unknown key {key!r}; {nearest(key, valid)}"
                            f"valid keys: {', '.join(sorted(valid))}")
        out[key] = checked(value, valid[key], f"{file}: [{section}] {key}")
    return out


def parse_value(text: str, hint):
    """A `--set` value: TOML (1000, 0.5, true, "text", [1, 2]), else the bare text as a string. A
    bare value for a list field is a one-element list."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    if hint is str and not isinstance(value, str):
        value = text.strip()
    if typing.get_origin(hint) is list and not isinstance(value, list):
        value = [value]
    return value


def apply_sets(values: dict, cls, sets, prefix: str = "") -> dict:
    """`KEY=VALUE` overrides of one section's values (typed by `cls`); `prefix` names the section in
    errors."""
    valid = hints(cls)
    for item in sets or []:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq:
            raise UserError(f"--set {item!r} is not key=value (e.g. --set {prefix}steps=500)")
        if key not in valid:
            raise UserError(f"--set: unknown key {prefix + key!r}; {nearest(key, valid)}"
                            f"valid keys: {', '.join(prefix + k for k in sorted(valid))}")
        values[key] = checked(parse_value(text, valid[key]), valid[key], f"--set {prefix}{key}")
    return values


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


def load(exp: str, sets: list[str] | None = None) -> tuple[str, dict]:
    """(experiment name, the resolved config: section -> {key: value}, every key present) of a
    config name or path, with `--set section.key=value` overrides applied."""
    path = config_path(exp)
    raw, origin = raw_config(path)
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
    cfg = {}
    for section, cls in valid.items():
        where = {k: f for (s, k), f in origin.items() if s == section}
        given = check_section(cls, raw.get(section, {}), where, section)
        # [oracle] holds only what differs from the cells' classifier
        base = dict(ORACLE_DEFAULTS) if section == "oracle" else asdict(cls())
        cfg[section] = apply_sets({**base, **given}, cls, by_section.get(section), f"{section}.")
    return path.stem, cfg


def show(cfg: dict) -> str:
    """The resolved config as TOML."""
    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {fmt(x)}" for k, x in v.items()) + "}"
        return repr(v)

    return "\n".join(f"[{section}]\n" + "".join(f"{k} = {fmt(v)}\n" for k, v in values.items())
                     for section, values in cfg.items())
