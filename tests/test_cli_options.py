"""`probe train`'s options come from RunConfig's fields: each default and help text is written once, in
probe/config.py, and --help shows them."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from probe.cli import KEY_VALUE_OPTIONS, NO_DEFAULT_SHOWN, app
from probe.config import RunConfig

FIELDS = dataclasses.fields(RunConfig)
README = Path(__file__).resolve().parent.parent / "README.md"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_of(name: str):
    """The click option of `probe train` that sets RunConfig field ``name``."""
    params = {p.name: p for p in typer.main.get_command(app).commands["train"].params}
    return params[KEY_VALUE_OPTIONS.get(name, name)]


def shown_default(f: dataclasses.Field) -> str:
    """What --help should print after "default:": the value, or for a bool flag the flag that is on."""
    if f.type in (bool, "bool"):
        return f.name.replace("_", "-") if f.default else "no-" + f.name.replace("_", "-")
    return str(f.default)


@pytest.fixture(scope="module")
def help_lines():
    # wide enough that no option's help wraps: its default is then on the option's own line
    res = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert res.exit_code == 0, res.output
    return res.output.splitlines()


def help_line(lines, name: str) -> str:
    [line] = [ln for ln in lines if re.search(rf"\s{re.escape(flag(name))}(\s|$)", ln)]
    return line


@pytest.mark.parametrize("f", FIELDS, ids=lambda f: f.name)
def test_every_field_has_an_option_with_its_help_text(f):
    option = option_of(f.name)
    assert f.metadata.get("help"), f"RunConfig.{f.name} has no help text"
    assert option.help.startswith(f.metadata["help"])
    assert flag(KEY_VALUE_OPTIONS.get(f.name, f.name)) in option.opts  # task_opts: --task-opt


@pytest.mark.parametrize("f", [f for f in FIELDS if f.name not in KEY_VALUE_OPTIONS and f.name not in NO_DEFAULT_SHOWN],
                         ids=lambda f: f.name)
def test_help_shows_the_fields_default(f, help_lines):
    assert option_of(f.name).default == f.default
    line = help_line(help_lines, f.name)
    assert f"[default: {shown_default(f)}]" in line, line


def test_options_without_a_shown_default_say_why(help_lines):
    for name in NO_DEFAULT_SHOWN:
        assert "default:" not in help_line(help_lines, name)
    assert "Required unless --config" in help_line(help_lines, "task")


def test_readme_lists_every_option_and_points_to_help_for_defaults():
    text = README.read_text()
    section = text[text.index("### `probe train`"):text.index("### Run folder")]
    for f in FIELDS:
        name = KEY_VALUE_OPTIONS.get(f.name, f.name)
        assert f"`{flag(name)}" in section, f"README's probe train table lacks {flag(name)}"
    assert "probe train --help" in section


def test_a_flag_equal_to_its_default_still_counts_as_given(tmp_path, monkeypatch):
    """Options have RunConfig's defaults, so 'given' is where click found the value, not whether it differs."""
    import probe.run.loop

    seen = {}

    def run_training(cfg, out, **kwargs):  # no training: only the config the CLI built matters here
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr(probe.run.loop, "run_training", run_training)
    (tmp_path / "c.toml").write_text('task = "mnist1d"\nwidth = 12\nlr = 0.5\n')
    res = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.toml"), "--width", "100", "-q",
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert (seen["cfg"].width, seen["cfg"].lr) == (100, 0.5)  # the flag beats the file; the file beats the default

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(RunConfig().to_dict()))
    res = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "run"), "--lr", "0.01"])
    assert res.exit_code == 2 and "drop --lr" in res.output
