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
def test_each_command_shows_its_help_under_the_name_it_was_started_as(command):
    proc = tool(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m tune_unlearn {command} ")
    script = subprocess.run([sys.executable, "-c", "import sys; from tune_unlearn.__main__ import main; "
                             f"sys.argv[0] = '/venv/bin/tune-unlearn'; sys.exit(main([{command!r}, '--help']))"],
                            capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                            cwd=REPO, timeout=120)
    assert script.returncode == 0 and script.stdout.startswith(f"usage: tune-unlearn {command} "), script.stderr
    assert script.stdout.replace(f"tune-unlearn {command}", "X").split() == \
        proc.stdout.replace(f"python -m tune_unlearn {command}", "X").split()


def test_python_dash_m_tune_unlearn_dot_search_is_still_the_search():
    direct = subprocess.run([sys.executable, "-m", "tune_unlearn.search", "--help"], capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, cwd=REPO, timeout=120)
    assert direct.returncode == 0 and direct.stdout.startswith("usage: python -m tune_unlearn.search "), direct.stderr
    assert direct.stdout.replace("python -m tune_unlearn.search", "X").split() == \
        tool("search", "--help").stdout.replace("python -m tune_unlearn search", "X").split()


REFUSED = [
    ("run", ["--set", "lam=abc"], "hyperparameter lam must be a number"),
    ("run", ["--method", "nope"], "unknown method 'nope'"),
    ("run", ["--experiment", "nope"], "unknown experiment 'nope'"),
    ("run", ["--weight", "speed=2"], "unknown objective weight 'speed'"),
    ("run", ["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ("search", ["--space", "nope"], "unknown search space 'nope'"),
    ("search", ["--method", "selective", "--sampler", "nsga2"], "--sampler nsga2 is a multi-objective"),
    ("search", ["--space", "default", "--exp-set", "forget.fraction=2"], "forget fraction must lie in (0, 1)"),
    ("run", ["--experiment", "digits_mislabeled", "--forget-fraction", "1.5"], "forget fraction must lie in (0, 1)"),
    ("run", ["--experiment", "digits_backdoor", "--exp-set", "forget.target=12"],
     "backdoor target class 12 does not exist; allowed: 0..9"),
    ("run", ["--experiment", "digits_backdoor", "--exp-set", "forget.identified=1.5"],
     "forget.identified must lie in (0, 1], got 1.5"),
    ("run", ["--experiment", "digits_backdoor", "--exp-set", "forget.identified=0"], "forget.identified must lie in (0, 1]"),
    ("run", ["--experiment", "digits_backdoor", "--exp-set", "forget.trigger.size=9"],
     "forget.trigger.size must lie in 1..8 (the image side), got 9"),
    ("run", ["--exp-set", "forget.rule=poison"], "unknown forget rule"),
    ("run", ["--method", "no_such_module:Nope"], "method 'no_such_module:Nope' cannot be loaded"),
    ("compare", ["--methods", "nope"], "unknown method 'nope'"),
    ("compare", ["--methods", "selective", "--weight", "cost=x"], "--weight"),
    ("export", ["some/run", "--top", "0"], "--top must be >= 1"),
]


@pytest.mark.parametrize("command,args,message", REFUSED, ids=[f"{c}:{a[-1]}" for c, a, _ in REFUSED])
def test_bad_arguments_are_refused_before_torch_ray_or_sklearn_load(command, args, message):
    code = ("import sys\n"
            f"from tune_unlearn.commands.{command} import main\n"
            f"try:\n    code = main({args!r})\n"
            "except SystemExit as exc:  # argparse's refusals\n    code = exc.code\n"
            "print(code, sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'ray', 'sklearn'}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr
    assert message in proc.stderr


def test_the_tune_unlearn_command_refuses_without_loading_torch_either():
    code = ("import sys\nfrom tune_unlearn.__main__ import main\ncode = main(['run', '--set', 'lam=abc'])\n"
            "print(code, sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'ray', 'sklearn'}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.stdout.strip() == "2 []" and "lam must be a number" in proc.stderr, proc.stdout + proc.stderr
