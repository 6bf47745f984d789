"""The placement's registry, pipeline and notes: one list of methods read by the command, the stage and the
shrink; one sequence for the command and the stage; typed notes that still read by key; the repair's split."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_placement_fakes import BASE_CAPACITY, fake_evaluator, fake_workload

from adaptwin.placement import experiments, pipeline, repair, shrink, verified
from adaptwin.placement.api import Context, place
from adaptwin.placement.core import Gpu, Placement, PlacementError, PlacementNotes
from adaptwin.placement.methods import BASELINES, FAST_BASELINES, METHODS, REGISTRY, REPAIRED, method

MODEL = "llama-3.1-8b-instruct"
ROOT = Path(__file__).resolve().parents[1]


def context() -> Context:
    return Context(MODEL, fake_evaluator(), BASE_CAPACITY, "fake", "test")


def test_the_command_offers_exactly_the_registered_methods():
    from adaptwin.cli import _build_parser

    parser = _build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    option = next(a for a in sub.choices["place"]._actions if a.dest == "method")
    assert tuple(option.choices) == METHODS and option.default == "greedy"


def test_the_stage_runs_and_checks_the_registered_methods():
    assert tuple(experiments.StageConfig(model=MODEL).methods) == METHODS
    assert experiments.REPAIRED == REPAIRED == tuple(m.name for m in REGISTRY.values() if m.twin_repairs)
    with pytest.raises(PlacementError, match="unknown \\['best'\\]"):
        experiments.StageConfig(model=MODEL, methods=["greedy", "best"])
    with pytest.raises(PlacementError, match="method 'best'"):
        method("best")


def test_baselines_are_the_methods_that_are_no_proposal_simplest_first():
    assert set(BASELINES) == {m.name for m in REGISTRY.values() if not m.proposal}
    assert BASELINES == ("round-robin", "dlora", "ffd", "loraserve")
    assert FAST_BASELINES == ("round-robin", "dlora", "loraserve") == verified.FAST_BASELINES


def test_shrink_prefers_the_lowest_itl_exactly_for_the_registered_latency_methods(monkeypatch):
    preferred = {}
    monkeypatch.setattr(repair, "repair_splits", lambda p, *args, **kwargs: p)
    monkeypatch.setattr(shrink, "shrink", lambda p, *args, prefer, **kwargs: preferred.setdefault(p.method, prefer))
    for name in METHODS:
        shrink.repair_and_shrink(Placement(MODEL, name, fake_workload(4), [], 1), None, None, None)
    assert {n for n, how in preferred.items() if how == "itl"} == {m.name for m in REGISTRY.values() if m.latency}
    assert set(preferred.values()) == {"itl", "throughput"}


def test_stage_config_from_params_reads_the_repository_section_and_refuses_misspelt_keys():
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["placement"]
    cfg = experiments.StageConfig.from_params(section)
    assert cfg.model == section["model"] and list(cfg.methods) == section["methods"]
    assert cfg.repair_duration_s == section["repair_duration_s"] and cfg.grid == section["grid"]
    with pytest.raises(PlacementError, match="verify_duraton_s"):
        experiments.StageConfig.from_params({**section, "verify_duraton_s": 60})


@pytest.mark.parametrize("name", METHODS)
def test_the_pipeline_without_twin_steps_is_the_proposal(name):
    workload = fake_workload(80)
    alone = pipeline.run(workload, context(), name, pipeline.Options(repair=False))
    proposal = place(workload, context(), name)
    assert alone.to_json() == proposal.to_json()
    assert alone.notes == proposal.notes and "verified" not in alone.notes


def test_notes_round_trip_and_read_by_key_like_the_dict_they_replace():
    notes = PlacementNotes(load_bound_gpus=2, overloaded_gpus=[], split_adapters=0, sanity_bound="capped",
                           twin=[{"passed": True}], verified=False)
    assert PlacementNotes.from_dict(notes.as_dict()) == notes
    assert notes.as_dict() == {"load_bound_gpus": 2, "overloaded_gpus": [], "split_adapters": 0,
                               "sanity_bound": "capped", "verified": False, "twin": [{"passed": True}]}
    assert notes["split_adapters"] == 0 and notes["verified"] is False and "shrunk_gpus" not in notes
    assert notes.get("repair_time_s", 0.0) == 0.0 and notes.get("no_such_field") is None
    with pytest.raises(KeyError):
        notes["shrunk_gpus"]
    with pytest.raises(PlacementError, match="repiar_time_s"):
        PlacementNotes.from_dict({"repiar_time_s": 1.0})
    merged = notes.merged(PlacementNotes(load_bound_gpus=3, fallback_method="ffd"))
    assert merged.load_bound_gpus == 3 and merged.fallback_method == "ffd" and merged.sanity_bound == "capped"


def test_a_failing_gpu_of_one_adapter_has_nothing_to_split():
    workload = fake_workload(3)
    gpus = [Gpu((0,), 1, 32, {}), Gpu((1, 2), 2, 32, {})]
    state = repair._Repair(Placement(MODEL, "greedy", workload, gpus, 1), fake_evaluator(),
                           lambda cands: [False] * len(cands), list(gpus))
    assert repair.split_in_two(state, [0, 1]) == [1, 2]
    assert state.unrepaired == [0] and len(state.gpus) == 3
    assert sorted(state.gpus[1].members + state.gpus[2].members) == [1, 2]


def test_margin_is_read_under_the_model_else_at_the_top_of_the_surrogates_metrics(tmp_path):
    from adaptwin.io import write_json
    from adaptwin.placement.api import margin_from_metrics

    nested = write_json(tmp_path / "nested.json", {MODEL: {"real_runs": {"throughput_smape_pct": 4.0}},
                                                  "real_runs": {"throughput_smape_pct": 9.0}})
    single = write_json(tmp_path / "single.json", {MODEL: {"heldout": {}}, "real_runs": {"throughput_smape_pct": 6.0}})
    unrecorded = write_json(tmp_path / "none.json", {MODEL: {"real_runs": {"throughput_smape_pct": None}}})
    assert margin_from_metrics(nested, MODEL) == pytest.approx(0.04)
    assert margin_from_metrics(single, MODEL) == pytest.approx(0.06)
    assert margin_from_metrics(unrecorded, MODEL) is None and margin_from_metrics(tmp_path / "no.json", MODEL) is None
