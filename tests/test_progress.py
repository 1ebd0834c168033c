"""What a user reads while a search runs: a line per ended trial with the time left."""

import pickle
from types import SimpleNamespace

from tune_unlearn.search.progress import TrialLines, duration


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def trial(trial_id, status="RUNNING", objective=-1.0):
    return SimpleNamespace(trial_id=trial_id, status=status, config={"lam": 1e-7},
                           last_result={"objective": objective, "final": 1}, error_file=None)


def test_each_ended_trial_says_how_long_the_rest_will_take_at_the_pace_so_far(capsys):
    clock = Clock(100.0)
    lines = TrialLines(total=6, clock=clock)
    trials = [trial(f"t{i}") for i in range(6)]
    lines.on_trial_start(0, trials, trials[0])
    lines.on_trial_start(0, trials, trials[1])  # two at a time
    clock.now = 120.0
    lines.on_trial_complete(0, trials, trials[0])
    trials[0].status = "TERMINATED"
    clock.now = 130.0
    lines.on_trial_complete(0, trials, trials[1])
    out = capsys.readouterr().out.splitlines()
    # 1 ended in 20 s: 5 left at 20 s each; 2 ended in 30 s: 4 left at 15 s each
    assert out[0].startswith("[1/6] t0: objective -1.0000") and out[0].endswith("about 1 min 40 s left")
    assert out[1].startswith("[2/6] t1") and out[1].endswith("about 1 min 00 s left")
    resumed = pickle.loads(pickle.dumps(lines))  # a resume: a new pace from its own first trial
    assert resumed.since is None and resumed.ended_here == 0


def test_the_last_trial_says_no_time_left(capsys):
    lines = TrialLines(total=1, clock=Clock(5.0))
    only = trial("t0")
    lines.on_trial_start(0, [only], only)
    lines.on_trial_complete(0, [only], only)
    assert "left" not in capsys.readouterr().out


def test_durations_read_as_people_say_them():
    assert [duration(s) for s in (4.6, 65, 3725)] == ["5 s", "1 min 05 s", "1 h 02 min"]
