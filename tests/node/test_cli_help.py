"""Every CLI option explains itself; `run --help` lists every environment variable the node reads."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest

from node.cli import build_parser
from node.cli.run import ENVIRONMENT

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def commands(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from commands(sub, f"{prefix}{name} ")


def options_without_help():
    for name, parser in commands(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help:
                yield f"{name} {'/'.join(action.option_strings) or action.dest}"


def test_every_option_of_every_command_has_help_text():
    assert list(options_without_help()) == []


def run_help() -> str:
    return subprocess.run([sys.executable, "-m", "node", "run", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=30, check=True).stdout


def readme_settings() -> set[str]:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in table.splitlines():
        if not row.startswith("| `"):
            continue
        first = row.split("|")[1]
        found = re.findall(r"`([A-Z_*][A-Z0-9_*]*)`", first)
        for name in found:
            if name.startswith("_") and names:  # `NATS_TLS_CA`/`_CERT`/`_KEY`
                name = last.rsplit("_", 1)[0] + name
            names.add(name)
            last = name
    return names


def settings_read_by_the_node() -> set[str]:
    names = set()
    for module in ("node/config.py", "node/serve.py", "node/local.py", "node/nats_auth.py"):
        source = open(os.path.join(ROOT, module), encoding="utf-8").read()
        names |= set(re.findall(r'(?:env|environ)[^"\n]{0,40}"([A-Z][A-Z0-9_]{2,})"', source))
    return names - {"XDG_DATA_HOME", "HOME", "PATH"}


def test_run_help_lists_every_setting_in_the_readme_table():
    shown = run_help()
    assert sorted(n for n in readme_settings() if n not in shown) == []


def test_run_help_lists_every_variable_the_node_reads():
    names = {name for name, _ in ENVIRONMENT}
    assert sorted(settings_read_by_the_node() - names) == []


def test_bars_without_a_subcommand_names_the_subcommands_not_an_internal_name():
    proc = subprocess.run([sys.executable, "-m", "node", "bars"], capture_output=True, text=True, cwd=ROOT,
                          timeout=30)
    assert proc.returncode == 2
    assert "bars_command" not in proc.stderr
    assert "the following arguments are required: load|ls" in proc.stderr


@pytest.mark.parametrize("command", ["exec", "screen", "backtest", "submit"])
def test_param_help_says_values_are_json(command):
    parser = dict(commands(build_parser()))[command]
    helps = [a.help for a in parser._actions if "--param" in a.option_strings]
    assert helps and "JSON" in helps[0]


def test_no_command_at_all_points_to_the_commands():
    proc = subprocess.run([sys.executable, "-m", "node"], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("the following arguments are required: COMMAND")
    assert "[--debug] COMMAND ..." in proc.stderr
