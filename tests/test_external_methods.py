"""Methods from outside the package: `--method package.module:Class`, or an installed package's
entry point (group tune_unlearn.methods), checked by the same contract as built-in ones, with
a search space beside their module (examples/unlearn_plugin is the README's example)."""

import json
import math
import textwrap
from pathlib import Path

import pytest

from conftest import TINY_ARGS
from tune_unlearn.commands.run import main as run_main
from tune_unlearn.methods import _REGISTRY, get_method, method_names
from tune_unlearn.search.space import method_space

PLUGIN = Path(__file__).resolve().parent.parent / "examples" / "unlearn_plugin"
SPEC = "unlearn_plugin.grad_ascent:GradientAscent"


@pytest.fixture
def plugin_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN))
    yield
    for key in [k for k, cls in _REGISTRY.items() if cls.__module__.startswith(("unlearn_plugin", "broken_method"))]:
        del _REGISTRY[key]


@pytest.fixture
def installed_plugin(plugin_on_path, tmp_path, monkeypatch):
    """The example package as pip would install it: a dist-info declaring its entry point."""
    dist = tmp_path / "unlearn_plugin-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: unlearn-plugin\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(f"[tune_unlearn.methods]\ngrad_ascent = {SPEC}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_a_method_named_by_module_and_class_runs_end_to_end(plugin_on_path, capsys, session_cache):
    args = ["--method", SPEC, "--set", "ft_epochs=1", "--cache-dir", str(session_cache), *TINY_ARGS]
    assert run_main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == SPEC and out["hparams"]["ascent_epochs"] == 1
    assert math.isfinite(out["objective"]) and out["metrics"]["time_s"] > 0
    assert [h["phase"] for h in out["history"]] == ["ascent", "finetune"]


def test_an_installed_method_is_listed_and_searchable_in_its_own_space(installed_plugin, capsys):
    assert "grad_ascent" in method_names()
    assert run_main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert "  grad_ascent\n" in listing and "ascent_lr" in listing
    space = method_space("grad_ascent")  # grad_ascent.yaml beside its module
    assert space.method == "grad_ascent" and set(space.params) == {"ascent_epochs", "ascent_lr", "ft_epochs", "ft_lr"}
    assert space.num_samples == 20 and get_method("grad_ascent").name == "grad_ascent"


BROKEN = """
from tune_unlearn.methods.base import Float, Method

class Broken(Method):
    name = "broken"
    hparams = (Float("lr", 5.0, 0.1, 1.0, help="default outside its own search range"),)
"""


def test_an_outside_method_that_breaks_the_contract_is_refused_in_one_line(plugin_on_path, tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_method.py").write_text(textwrap.dedent(BROKEN))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert run_main(["--method", "broken_method:Broken", *TINY_ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "method 'broken_method:Broken' breaks the method contract" in err
    assert "it does not implement unlearn" in err and "lr: default 5.0 outside its search range [0.1, 1.0]" in err
    assert run_main(["--method", "no_such_module:Nope", *TINY_ARGS]) == 2
    assert "method 'no_such_module:Nope' cannot be loaded: ModuleNotFoundError" in capsys.readouterr().err
