"""Configuration layers and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pprunner import App, ConfigError
from pprunner.config import DEFAULT_BACKEND, describe_settings, load


def write_pyproject(folder: Path, body: str) -> Path:
    path = folder / "pyproject.toml"
    path.write_text(body)
    return path


def test_defaults_apply_when_nothing_is_set(tmp_path: Path) -> None:
    config = load({}, environ={}, cwd=tmp_path)
    assert config.backend == DEFAULT_BACKEND
    assert config.serializer == "json"
    assert config.start_method == "template"


def test_later_layers_win(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "[tool.pprunner]\nshutdown_timeout = 5\nmax_attempts = 4\n"
                              "serializer = 'pickle'\n")
    config = load({"shutdown_timeout": 1, "max_attempts": 2, "serializer": "json",
                   "log_level": "debug"},
                  {"max_attempts": 9},
                  environ={"PPRUNNER_SHUTDOWN_TIMEOUT": "7.5", "PPRUNNER_MAX_ATTEMPTS": "6"},
                  cwd=tmp_path)
    assert config.log_level == "DEBUG"  # App arguments only
    assert config.serializer == "pickle"  # pyproject over App
    assert config.shutdown_timeout == 7.5  # environment over pyproject
    assert config.max_attempts == 9  # command line over everything


def test_pyproject_is_found_in_a_parent_folder(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "[tool.pprunner]\nprocesses = 3\n")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert load({}, environ={}, cwd=nested).processes == 3


@pytest.mark.parametrize(("layers", "message"), [
    ({"environ": {"PPRUNNER_SHUTDOWN_TIMEOUT": "soon"}},
     "setting 'shutdown_timeout' from environment PPRUNNER_SHUTDOWN_TIMEOUT: expected a number"),
    ({"app": {"processes": -2}}, "setting 'processes' from App(...) arguments"),
    ({"overrides": {"start_method": "thread"}},
     "setting 'start_method' from command line: expected one of spawn, forkserver, fork"),
    ({"environ": {"PPRUNNER_HEARTBEAT_INTERVAL": "0"}}, "expected a number > 0"),
    ({"app": {"max_attempts": True}}, "setting 'max_attempts'"),
    ({"pyproject": "[tool.pprunner]\nprocesses = 'many'\n"}, "pyproject.toml [tool.pprunner]"),
    ({"pyproject": "[tool.pprunner]\nworkers = 2\n"},
     "unknown setting 'workers' in"),
    ({"pyproject": "[tool.pprunner\n"}, "cannot read"),
])
def test_a_bad_value_names_the_setting_and_its_source(
        tmp_path: Path, layers: dict, message: str) -> None:
    if "pyproject" in layers:
        write_pyproject(tmp_path, layers["pyproject"])
    with pytest.raises(ConfigError) as error:
        load(layers.get("app", {}), layers.get("overrides"), environ=layers.get("environ", {}),
             cwd=tmp_path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_an_unknown_app_argument_is_refused_at_once() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'worker_count'"):
        App(worker_count=3)


def test_every_setting_is_documented() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    for name, variable, _default, _doc in describe_settings():
        assert f"`{name}`" in page, f"setting {name} is not in docs/configuration.md"
        assert f"`{variable}`" in page, f"variable {variable} is not in docs/configuration.md"
