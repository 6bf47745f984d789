"""The questions placement asks the surrogate (`adaptwin.placement.questions`): recording them changes no
placement, and every recorded candidate is the set the surrogate really judged."""

from __future__ import annotations

import numpy as np
import pytest
from test_placement_fakes import BASE_CAPACITY, fake_evaluator, fake_workload

from adaptwin.placement.api import Context, place
from adaptwin.placement.groups import placement_questions
from adaptwin.placement.questions import RecordingEvaluator, recording, rejected
from adaptwin.twin.scenario import expand_groups, scenario_id

MODEL = "llama-3.1-8b-instruct"
METHODS = ("greedy", "greedy-fast", "greedy-latency", "loraserve", "dlora", "ffd", "round-robin")


def context() -> Context:
    return Context(MODEL, fake_evaluator(), BASE_CAPACITY, "fake", "test")


@pytest.mark.parametrize("method", METHODS)
def test_recording_the_questions_changes_no_placement(method):
    workload = fake_workload(n=120, seed=3, mean_rate=0.6)
    plain = place(workload, context(), method)
    asked, recorder = recording(context())
    recorded = place(workload, asked, method)
    assert [(g.members, g.max_loras, g.shares) for g in recorded.gpus] == \
        [(g.members, g.max_loras, g.shares) for g in plain.gpus]
    assert recorder.questions, f"{method} asked the surrogate nothing"


@pytest.mark.parametrize("method", ["ffd", "greedy", "greedy-latency", "dlora"])
def test_each_recorded_verdict_is_the_surrogates_verdict_on_the_recorded_set(method):
    """The feature-only paths (first-fit's running sums, the latency moves) record the sets behind their
    features: judging each recorded set afresh must give the recorded verdict."""
    workload = fake_workload(n=120, seed=3, mean_rate=0.6)
    asked, recorder = recording(context())
    place(workload, asked, method)
    fresh = fake_evaluator()
    sample = recorder.questions[:: max(1, len(recorder.questions) // 300)]
    res = fresh.evaluate([(q.ranks, q.rates) for q in sample], [[q.a_max] for q in sample])
    assert res["ok"].tolist() == [q.ok for q in sample]
    assert any(not q.ok for q in recorder.questions), f"{method} turned nothing down on an overloaded workload"


def test_rejected_keeps_each_turned_down_candidate_once():
    asked, recorder = recording(context())
    place(fake_workload(n=120, seed=3, mean_rate=0.6), asked, "ffd")
    down = rejected(recorder.questions)
    assert down and not any(q.ok for q in down)
    assert len({q.key() for q in down}) == len(down)
    assert len(down) <= sum(not q.ok for q in recorder.questions)


def test_a_recorder_copies_the_evaluators_settings():
    ev = fake_evaluator(margin=0.07, load_headroom=0.1, max_served=99)
    rec = RecordingEvaluator.around(ev)
    assert (rec.margin, rec.load_headroom, rec.max_served, rec.predictor) == (0.07, 0.1, 99, ev.predictor)


def test_the_exam_holds_final_gpus_and_distinct_turned_down_candidates():
    grid = {"kinds": ["powerlaw"], "adapters": [80], "rank_mixes": ["8-16"], "multipliers": [1], "mean_rate": 0.6,
            "seed": 0}
    final, declined = placement_questions(context(), grid, "/nonexistent", ["ffd", "dlora"], 60.0, None, 5, seed=0)
    finals_only, none = placement_questions(context(), grid, "/nonexistent", ["ffd", "dlora"], 60.0, None, 0, seed=0)
    assert [scenario_id(s) for s in final] == [scenario_id(s) for s in finals_only] and none == []
    assert len(declined) == 5
    ids = {scenario_id(s) for s in declined}
    assert len(ids) == 5 and not ids & {scenario_id(s) for s in final}
    again = placement_questions(context(), grid, "/nonexistent", ["ffd", "dlora"], 60.0, None, 5, seed=0)[1]
    assert [scenario_id(s) for s in again] == [scenario_id(s) for s in declined]
    ev = fake_evaluator()
    for s in declined:  # the surrogate turned each one down
        ranks, rates = expand_groups(s["adapters"])
        assert not ev.evaluate([(np.asarray(ranks), np.asarray(rates))], [[s["server"]["max_loras"]]])["ok"][0]
