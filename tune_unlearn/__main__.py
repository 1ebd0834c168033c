"""`tune-unlearn`: one command for every tool (also `python -m tune_unlearn`).

    tune-unlearn search --space default
    tune-unlearn run --method selective --set lam=1e-7
    tune-unlearn compare --experiment fmnist --seeds 0 1 2
    tune-unlearn export runs/<name>
    tune-unlearn report runs/<name>
    tune-unlearn benchmark --experiment digits_mislabeled --methods all --trials 20

Each sub-command is the module of the same name in commands/. `python -m tune_unlearn.search`
stays the search's other name; the others were `python -m tune_unlearn.run` and so on until
December 2026, and are now `tune-unlearn run` or `python -m tune_unlearn run`. Only the chosen
module is imported, so a mistyped option is refused before torch or Ray load.
"""

from __future__ import annotations

import importlib
import sys

# sub-command -> what it does (the modules' own first lines, kept here so that listing them
# imports nothing)
COMMANDS = {
    "search": "hyperparameter search with Ray Tune and an Optuna sampler",
    "run": "one unlearning run without Ray",
    "compare": "every method side by side, on several forget sets, against the retrained reference",
    "export": "read a search's results and export them (results.csv, best_config.yaml, top<N>)",
    "report": "the report of a search: tables and pictures in one page that opens offline",
    "benchmark": "every method tuned at the same budget, judged on the same held-out requests, in one leaderboard",
}


def usage() -> str:
    lines = ["usage: tune-unlearn {" + ",".join(COMMANDS) + "} [options]", "",
             "Hyperparameter search for machine unlearning.", "", "commands:"]
    lines += [f"  {name:9s} {text}" for name, text in COMMANDS.items()]
    lines += ["", "tune-unlearn COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"{usage()}\n\nerror: unknown command {command!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from .commands import arguments

    started_as = "python -m tune_unlearn" if sys.argv and sys.argv[0].endswith("__main__.py") else "tune-unlearn"
    arguments.PROG = f"{started_as} {command}"
    module = importlib.import_module(f"tune_unlearn.commands.{command}")
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
