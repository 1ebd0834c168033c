"""The tune-unlearn command and its sub-commands, as a user starts them (subprocesses)."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMMANDS = ("search", "run", "compare", "export", "report")


def tool(*args):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "tune_unlearn", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def test_the_console_script_is_the_dispatcher():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"tune-unlearn": "tune_unlearn.__main__:main"}


def test_help_lists_every_command():
    proc = tool("--help")
    assert proc.returncode == 0
    for command in COMMANDS:
        assert f"  {command} " in proc.stdout
    bad = tool("serch")
    assert bad.returncode == 2 and "unknown command 'serch'" in bad.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_shows_its_modules_help(command):
    proc = tool(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: tune-unlearn {command} ")
    direct = subprocess.run([sys.executable, "-m", f"tune_unlearn.{command}", "--help"], capture_output=True,
                            text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, cwd=REPO, timeout=120)
    assert direct.returncode == 0 and direct.stdout.startswith(f"usage: python -m tune_unlearn.{command} ")
    # the same options and text, under either name
    assert direct.stdout.replace(f"python -m tune_unlearn.{command}", "X").split() == \
        proc.stdout.replace(f"tune-unlearn {command}", "X").split()
