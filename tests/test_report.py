"""Reports of finished, multi-objective and interrupted searches: the files exist, the page
references only files that exist, and the tables hold the numbers of results.csv."""

import csv
import re
from pathlib import Path


from tune_unlearn.commands.compare import main as compare_main
from tune_unlearn.commands.report import main as report_main
from tune_unlearn.search.results import load_run


def references(html_file: Path) -> list[str]:
    return re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", html_file.read_text())


def markdown_rows(md: str, heading: str) -> list[list[str]]:
    section = md.split(f"## {heading}")[1].split("\n## ")[0]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|") and not line.startswith("|---")]


def make(run_dir, *more):
    assert report_main([str(run_dir), *more]) == 0
    out = run_dir / "report"
    assert (out / "index.html").exists() and (out / "report.md").exists()
    for ref in references(out / "index.html"):
        assert (out / ref).is_file(), f"the page references {ref}, which does not exist"
    return out


def test_report_of_a_finished_search(finished_search, tmp_path, session_cache, capsys):
    compare_csv = tmp_path / "cmp" / "compare.csv"
    from conftest import TINY_ARGS

    assert compare_main(["--methods", "finetune", "selective", "--seeds", "0", "--out", str(compare_csv.parent),
                         "--cache-dir", str(session_cache), *TINY_ARGS,
                         "--exp-set", "method_defaults={selective: {mask_epochs: 2, mask_batch_size: 32}}"]) == 0
    out = make(finished_search, "--compare", str(compare_csv))
    for picture in ("objective.png", "importance.png", "params.png", "radar.png", "mask_zero_share.png"):
        assert (out / picture).stat().st_size > 5000, picture
        assert picture in references(out / "index.html")
    assert len(list((out / "curves").glob("*.png"))) == 3  # every trial's own per-epoch log (one report per trial)
    md = (out / "report.md").read_text()
    assert "interrupted" not in md.lower()
    with open(finished_search / "results.csv") as f:
        results = {r["trial_id"]: r for r in csv.DictReader(f)}
    rows = markdown_rows(md, "Best trials beside the retrained and the original model")
    header, body = rows[0], rows[1:]
    trials = [r for r in body if r[0]]  # ranked rows; the baselines have no rank
    assert len(trials) == 3 and [r[1] for r in body[-2:]] == ["retrained (3)", "original"]
    for row in trials:  # the objective is the validation split's; the measures are the test split's
        measured = results[row[1]]
        assert row[header.index("objective")] == f"{float(measured['objective']):.3f}"
        assert row[header.index("test obj.")] == f"{float(measured['test_objective']):.3f}"
        for column, key in (("test", "test_acc"), ("forget", "forget_acc"), ("MIA", "test_mia"), ("time s", "time_s")):
            assert row[header.index(column)] == f"{float(measured[key]):.2f}", (column, row)
    original = results["original"]
    assert body[-1][header.index("objective")] == f"{float(original['objective']):.3f}"
    # ranked as the search chose: the two run again first, by their mean over two seeds, then the third
    assert [r[1] for r in trials] == [t.trial_id for t in load_run(finished_search).ranked()]
    means = [float(r[header.index("obj. over 2 seeds")].split(" ± ")[0]) for r in trials[:2]]
    assert means == sorted(means, reverse=True) and trials[2][header.index("obj. over 2 seeds")] == "-"
    assert "PED-ANOVA" in md and "| finetune |" in md


def test_report_of_a_multi_objective_search(multi_objective_search):
    out = make(multi_objective_search)
    assert "pareto.png" in references(out / "index.html")
    md = (out / "report.md").read_text()
    assert "Pareto front" in md and "PL forget" in md  # leakage was measured in this search
    assert "ASR" in md and "forget true" in md  # ... on a backdoor


def test_a_bad_compare_file_is_refused(finished_search, capsys):
    assert report_main([str(finished_search), "--compare", "/nonexistent/compare.csv"]) == 2
    assert "no such compare file" in capsys.readouterr().err


def test_a_directory_that_is_no_search_is_refused(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    assert "is not a tune_unlearn search" in capsys.readouterr().err
