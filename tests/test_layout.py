"""The package's layout keeps the bar it was reorganised to: few modules at the top, none long,
the command line only under commands/, and nothing below the commands importing them."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tune_unlearn"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code, as absolute-ish dotted names
    (relative imports keep their leading dots resolved against the file's package)."""
    package = path.parent.relative_to(PACKAGE.parent).parts
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names |= {f"{module}.{a.name}" for a in node.names}
    return names


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_at_most_twelve_modules_at_the_top_and_none_over_400_lines():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top
    long = {str(p.relative_to(PACKAGE)): n for p in modules() if (n := len(p.read_text().splitlines())) > 400}
    assert not long


def test_argparse_is_imported_under_commands_only():
    users = [str(p.relative_to(PACKAGE)) for p in modules() if "argparse" in imported_modules(p)]
    assert users and all(u.startswith("commands/") for u in users), users


def test_nothing_below_the_commands_imports_them():
    """search/__main__.py is the one exception: `python -m tune_unlearn.search` is a program."""
    allowed = {PACKAGE / "__main__.py", PACKAGE / "search" / "__main__.py"}
    upward = [str(p.relative_to(PACKAGE)) for p in modules()
              if p.parent.name != "commands" and p not in allowed
              and any(m == "tune_unlearn.commands" or m.startswith("tune_unlearn.commands.") for m in imported_modules(p))]
    assert not upward


def test_methods_import_neither_ray_nor_optuna():
    for path in (PACKAGE / "methods").glob("*.py"):
        tops = {m.split(".")[0] for m in imported_modules(path)}
        assert not tops & {"ray", "optuna", "argparse"}, path.name
