"""Every command's --help: a whole one-line description in the command list, examples, help on every option."""

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from imgclust.cli import main

COMMANDS = sorted(main.commands)


def test_the_command_list_shows_each_description_whole():
    result = CliRunner().invoke(main, ["--help"], terminal_width=80)
    assert result.exit_code == 0
    listed = result.output.split("Commands:")[1]
    for name in COMMANDS:
        short = main.commands[name].short_help
        assert short, f"{name} has no short_help"
        assert short in " ".join(listed.split()), f"{name}: {short!r} is cut in\n{listed}"
    assert "..." not in listed
    assert "imgclust demo --out demo-out" in result.output.split("Examples:")[1]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_help_shows_examples_kept_as_written(name: str):
    result = CliRunner().invoke(main, [name, "--help"], terminal_width=80)
    assert result.exit_code == 0
    examples = result.output.split("Examples:\n")[1].splitlines()
    assert examples and all(line.strip().startswith(f"imgclust {name}") for line in examples if line.strip()), result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help_text(name: str):
    missing = [p.opts[0] for p in main.commands[name].params
               if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert missing == []


def test_run_names_its_k_values_like_sweep_and_keeps_the_old_name_hidden():
    runner = CliRunner()
    run_help = runner.invoke(main, ["run", "--help"], terminal_width=200).output
    sweep_help = runner.invoke(main, ["sweep", "--help"], terminal_width=200).output
    assert re.search(r"^\s+--ks TEXT", run_help, re.M) and re.search(r"^\s+--ks TEXT", sweep_help, re.M)
    assert "--k-range" not in run_help


@pytest.mark.parametrize("option", ["--ks", "--k-range"])
def test_run_takes_the_k_values_under_both_names(option: str, image_folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(image_folder), "--out", str(out), "--features", "pixels",
                                       "--size", "4", option, "3-4", "--no-cache", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["k_auto"] is True and summary["k_range"] == [3, 4]
