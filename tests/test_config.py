"""The config contract: typed sections, clear errors, inheritance, --set typed by the dataclasses."""

import subprocess
import sys
from pathlib import Path

import pytest

from synthgap.errors import UserError
from synthgap.study import config

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True,
                          text=True)


def test_defaults_are_the_studys_and_every_key_is_present():
    name, cfg = config.load("mnist-sweep")
    assert name == "mnist-sweep"
    assert cfg.refiner.steps == 1000 and cfg.refiner.blocks == 3
    assert cfg.classifier.steps == 1000 and cfg.oracle == {"steps": 3000}
    assert cfg.oracle_classifier().steps == 3000 and cfg.oracle_classifier().width == 16
    from gan.config import RefinerConfig
    assert cfg.refiner == RefinerConfig()  # the stand-alone refiner trains what the study trains


def test_base_inherits_and_the_file_overrides(tmp_path):
    _, cfg = config.load(write(tmp_path, 'base = "smoke"\n[classifier]\nsteps = 7\n'))
    _, smoke = config.load("smoke")
    assert cfg.classifier.steps == 7 and cfg.classifier.width == 8  # smoke's
    assert cfg.experiment == smoke.experiment and cfg.refiner == smoke.refiner


@pytest.mark.parametrize("text, message", [
    ("[classifier]\nwieght_decay = 0.001\n",
     "[classifier] unknown key 'wieght_decay'; did you mean 'weight_decay'? valid keys: batch_size"),
    ("[classifier]\nsteps = \"many\"\n", "[classifier] steps = 'many' is not an integer"),
    ("[fonts]\nfolders = \"/usr/share/fonts\"\n", "folders = '/usr/share/fonts' is not list of a string"),
    ("[clasifier]\nsteps = 3\n", "unknown section [clasifier]; did you mean 'classifier'?"),
    ('base = "nosuch"\n', "base 'nosuch' is not an experiment; known: "),
    ("[experiment\n", "not valid TOML"),
])
def test_bad_config_files_give_one_line_naming_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        config.load(path)
    assert message in str(err.value) and path in str(err.value)
    proc = run("run", path, "--workdir", str(tmp_path / "w"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "w").exists()  # no stage ran, nothing was written


def test_a_cycle_of_bases_is_refused(tmp_path):
    (tmp_path / "configs").mkdir()
    write(tmp_path, 'base = "b"\n', "configs/a.toml")
    write(tmp_path, 'base = "a"\n', "configs/b.toml")
    proc = run("show-config", "a", cwd=tmp_path)  # configs/ of the working folder come first
    assert proc.returncode == 2 and "base configs form a cycle" in proc.stderr


def test_set_is_typed_by_the_dataclass():
    _, cfg = config.load("smoke", ["fonts.folders=/usr/share/fonts", "refiner.lr=1",
                                   "refiner.head=clip", "experiment.budgets=20"])
    assert cfg.fonts.folders == ["/usr/share/fonts"]  # a one-element list, not a string
    assert cfg.refiner.lr == 1.0 and isinstance(cfg.refiner.lr, float)
    assert cfg.refiner.head == "clip" and cfg.experiment.budgets == [20]
    for bad, message in [("fonts.folders=[1]", "is not a string"),
                         ("refiner.sn=1", "is not true or false"),
                         ("experiment.budgets=[1.5]", "is not an integer"),
                         ("nosection.steps=1", "the section one of experiment"),
                         ("classifier.steps", "is not key=value")]:
        with pytest.raises(UserError, match=message):
            config.load("smoke", [bad])


def test_show_config_prints_the_resolved_toml():
    import tomllib
    proc = run("show-config", "smoke", "--set", "refiner.steps=5")
    assert proc.returncode == 0, proc.stderr
    shown = tomllib.loads(proc.stdout)
    assert shown == config.as_tables(config.load("smoke", ["refiner.steps=5"])[1])
