"""Twin validation: SMAPE and verdict helpers against hand values, scenarios of real runs, a short end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from test_calibration import LLAMA, fitted, measurements

from adaptwin.calibration.fit import to_json
from adaptwin.io import write_json
from adaptwin.validation import runs as val

EXAMPLE = "rank_16_rates_0.1_0.05_0.025/_32_128_16_"  # data card 7, example 2


def test_smape_hand_values():
    assert val.smape(100.0, 110.0) == pytest.approx(10 / 105 * 100)
    assert val.smape(100.0, 110.0, paper=True) == pytest.approx(10 / 210 * 100)
    assert val.smape(110.0, 100.0) == pytest.approx(val.smape(100.0, 110.0))
    assert list(val.smape([0.0, 1.0, 5.0], [0.0, 0.0, 5.0])) == pytest.approx([0.0, 200.0, 0.0])


def test_ideal_throughput_and_rate_sets():
    # 43 x 0.1 + 43 x 0.05 + 42 x 0.025 = 7.5 req/s, x (223 + 197) tokens
    assert val.ideal_throughput([0.1, 0.05, 0.025], [43, 43, 42], 223, 197) == pytest.approx(3150.0)
    assert val.rate_set([0.025, 0.05, 0.1]) == "low" and val.rate_set([0.4, 0.8, 1.6]) == "high"


def test_rate_counts_follow_the_cyclic_assignment_when_not_logged():
    row = {"adapter_rates": [0.1, 0.05, 0.025], "adapter_rate_counts": None, "served_adapters": 256}
    assert val.rate_counts(row) == ([0.1, 0.05, 0.025], [86, 85, 85])
    row["adapter_rate_counts"] = [1, 2, 3]
    assert val.rate_counts(row)[1] == [1, 2, 3]


@pytest.fixture(scope="module")
def runs() -> pl.DataFrame:
    return pl.read_parquet(measurements() / "runs.parquet")


def _row(runs: pl.DataFrame, suffix: str) -> dict:
    return val.serving_runs(runs, ["real_results"]).filter(pl.col("run_id").str.ends_with(suffix)).row(0, named=True)


def test_serving_runs_are_every_ok_and_memory_error_run(runs):
    sel = val.serving_runs(runs, ["real_results"])
    assert sel.height == 161  # 131 ok + 30 memory failures (data card 2 and 5.6); 2 cancelled runs left out
    assert sel.filter(pl.col("status") == "memory_error").height == 30
    smoke = val.serving_runs(runs, ["real_results"], max_runs=8)
    assert smoke.height == 8 and set(smoke["status"]) == {"ok", "memory_error"}


def test_scenario_of_the_data_card_example(runs):
    row = _row(runs, EXAMPLE)
    sc = val.scenario_for_run(row, val.ValidationConfig(duration_scale=0.5))
    assert sc["server"] == {"max_loras": 32, "max_cpu_loras": 128, "max_lora_rank": 16, "max_num_seqs": 2048,
                            "max_num_batched_tokens": 2048}
    ranks, rates = np.array(sc["adapters"]["ranks"]), np.array(sc["adapters"]["rates"])
    assert len(ranks) == 128 and (ranks == 8).sum() == 64 and (ranks == 16).sum() == 64
    assert sorted(np.unique(rates, return_counts=True)[1].tolist()) == [42, 43, 43]
    # the run's own prompt pool (its "Prompts retrieved" totals), not the corpus-wide 223 / 197
    assert sc["duration_s"] == 1800.0 and sc["lengths"] == {
        "kind": "sharegpt", "input_mean": row["pool_input_tokens"] / row["pool_prompts"],
        "output_mean": row["pool_output_tokens"] / row["pool_prompts"]}
    assert 215 < sc["lengths"]["input_mean"] < 231 and 190 < sc["lengths"]["output_mean"] < 205
    fixed = val.scenario_for_run(row, val.ValidationConfig(duration_scale=0.5, pool_means=False))
    assert fixed["lengths"] == {"kind": "sharegpt", "input_mean": 223.0, "output_mean": 197.0}
    # the real verdicts: 3,126 tok/s of an ideal 3,150 is not starved; 384 adapters at A_max 128 is
    assert row["total_throughput"] >= 0.9 * 3150
    starving = _row(runs, "rank_16_rates_0.1_0.05_0.025/_128_384_16_")
    assert starving["total_throughput"] < 0.9 * val.ideal_throughput(*val.rate_counts(starving), 223, 197)


def test_validate_three_real_runs_end_to_end(runs, tmp_path):
    cal = {LLAMA: write_json(tmp_path / "calibration" / f"{LLAMA}.json", to_json(LLAMA, fitted()[LLAMA]))}
    keep = [EXAMPLE, "rank_32_rates_1.6_0.8_0.4/_32_64_32_", "rank_32_rates_0.1_0.05_0.025/_128_128_32_"]
    subset = runs.filter(pl.any_horizontal([pl.col("run_id").str.ends_with(k) for k in keep]))
    cfg = val.ValidationConfig(duration_scale=0.1, workers=1)
    df, summary = val.validate(subset, {LLAMA: str(cal[LLAMA])}, ["real_results"], cfg)
    assert df.height == 3
    mem = df.filter(pl.col("real_memory_error"))
    assert mem.height == 1 and mem["twin_memory_error"].to_list() == [True]
    assert summary["memory_error_agreement_pct"] == 100.0 and summary["n_compared"] == 2
    example = df.filter(pl.col("run_id").str.ends_with(EXAMPLE)).row(0, named=True)
    assert example["throughput_smape_pct"] < 15.0  # arrival-bound after warm-up: throughput ~ offered load
    assert example["throughput_smape_pct_paper"] == pytest.approx(example["throughput_smape_pct"] / 2)
    out = val.write_outputs(df, summary, tmp_path)
    metrics = json.loads(out["metrics"].read_text())
    for key in ("throughput_smape_pct", "itl_smape_pct", "ttft_smape_pct", "throughput_smape_pct_paper_convention",
                "starvation_agreement_pct", "memory_error_agreement_pct", "n_runs", "groups", "speedup", "families"):
        assert key in metrics
    fam = metrics["families"]["real_results"]
    assert set(fam["by_a_max"]) == {"32", "128"} and set(fam["by_s_max"]) == {"16", "32"}
    assert fam["by_a_max"]["32"]["n_runs"] == 2 and fam["n_runs"] == 3
    # the gap is the A_max >= 128 mean minus the A_max <= 64 mean; the A_max 128 run is a memory error here
    assert fam["a_max_gap"]["throughput_smape_pct"] is None
    rows = val.table(df)
    assert rows.filter(pl.col("A_max") == 32)["runs"].to_list() == [2]
    assert rows.filter(pl.col("family") == "all")["runs"].to_list() == [3]
    assert df["twin_mean_distinct_adapters"].drop_nulls().min() >= 0
    assert pl.read_parquet(out["runs"]).height == 3


def test_rate_group_is_the_group_folder():
    assert val.rate_group("a/b/rank_16_rates_0.1_0.05_0.025/_32_128_16_") == "rank_16_rates_0.1_0.05_0.025"
    assert val.rate_group("x/rate_0.4-0.05-0.0125_size_8-16-16/_128_128_16_/") == "rate_0.4-0.05-0.0125_size_8-16-16"


def test_missing_calibration_is_named(runs):
    with pytest.raises(ValueError, match="no calibration for"):
        val.validate(runs, {}, ["real_results"], val.ValidationConfig(max_runs=1))


def test_nested_selection_picks_on_the_other_configurations_and_scores_the_held_out_one():
    """Form a is best at A_max 8 and 16, form b at 32: leaving 32 out picks a and scores a's error there."""
    from adaptwin.validation.forms import nested_selection, summarize_forms

    err = {("a", 8): 1.0, ("a", 16): 2.0, ("a", 32): 9.0, ("b", 8): 3.0, ("b", 16): 4.0, ("b", 32): 1.0}
    df = pl.DataFrame([{"form": f, "max_loras": a, "rate_group": "g", "family": "x", "throughput_smape_pct": e,
                        "itl_smape_pct": e} for (f, a), e in err.items()])
    out = nested_selection(df, "max_loras")
    # leave 8 out: a mean(2, 9) = 5.5 vs b mean(4, 1) = 2.5 -> b scores 3; leave 16 out: a 5.0 vs b 2.0 -> b
    # scores 4; leave 32 out: a 1.5 vs b 3.5 -> a scores 9
    assert {k: v["form"] for k, v in out["picks"].items()} == {"8": "b", "16": "b", "32": "a"}
    assert out["held_out_pct"] == pytest.approx((3.0 + 4.0 + 9.0) / 3)
    summary = summarize_forms(df)
    assert summary["in_sample"]["throughput_smape_pct"] == pytest.approx({"a": 4.0, "b": 8.0 / 3})


def test_error_figure_is_written(runs, tmp_path):
    from adaptwin.figures.twin import error_vs_slots

    df = pl.DataFrame({"family": ["real_results", "heterogeneous_results"] * 2, "max_loras": [16, 16, 128, 128],
                       "throughput_smape_pct": [1.0, 2.0, 3.0, None], "itl_smape_pct": [4.0, 5.0, 6.0, None],
                       "twin_mean_distinct_adapters": [3.0, 5.0, 40.0, 0.0]})
    paths = error_vs_slots(df, tmp_path)
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"] and all(p.stat().st_size > 0 for p in paths)


def _relabel(run, old: str, new: str) -> None:
    """Replace every ``old`` model name in the texts of the run folder ``run`` by ``new``."""
    for path in run.iterdir():
        if path.suffix in (".out", ".err", ".log"):
            path.write_text(path.read_text(errors="replace").replace(old, new))


@pytest.mark.filterwarnings("ignore:.*missing; table left empty")  # a corpus of two run folders
def test_another_models_serving_runs_are_validated_with_its_own_calibration_and_reported_apart(tmp_path):
    """A corpus holding the other model's by-time runs (checked outside with real ones) is ingested under that
    model, simulated with that model's calibration, and scored apart in ``models`` of the metrics."""
    from corpus_paths import DEF
    from test_calibration import QWEN
    from test_measurements_bad_input import copy_run

    from adaptwin.measurements.corpus import ingest, read_table

    folder = DEF + "digital_twin_modelling/real_results/{}/rank_32_rates_1.6_0.8_0.4/_32_64_32_"
    corpus = tmp_path / "corpus"
    copy_run(corpus, folder.format(LLAMA))  # as recorded
    _relabel(copy_run(corpus, folder.format(LLAMA), folder.format(QWEN)), LLAMA, QWEN)
    ingest(corpus, tmp_path / "measurements")
    runs = read_table(tmp_path / "measurements", "runs")
    assert sorted(runs["model"]) == [LLAMA, QWEN] and set(runs["family"]) == {"real_results"}
    cal = {m: str(write_json(tmp_path / "calibration" / f"{m}.json", to_json(m, fitted()[m]))) for m in (LLAMA, QWEN)}
    df, summary = val.validate(runs, cal, ["real_results"], val.ValidationConfig(duration_scale=0.05, workers=1))
    by_model = {r["model"]: r for r in df.iter_rows(named=True)}
    # the same recorded run, simulated twice: only the calibration differs, so the twin's answers do
    assert by_model[LLAMA]["real_throughput"] == by_model[QWEN]["real_throughput"]
    assert by_model[LLAMA]["twin_itl"] != by_model[QWEN]["twin_itl"]
    assert summary["families"]["real_results"]["n_runs"] == 2
    for model in (LLAMA, QWEN):
        part = summary["models"][model]
        assert part["n_runs"] == 1 and part["families"]["real_results"]["n_runs"] == 1
        assert part["itl_smape_pct"] == pytest.approx(by_model[model]["itl_smape_pct"])


def test_mean_result_averages_draws_and_judges_the_mean():
    # two draws either side of the 0.9 x ideal bar: one starved, one not; their mean (0.91 x ideal) is not
    draws = [{"total_throughput": 880.0, "itl_mean_ms": 40.0, "ideal_throughput": 1000.0, "starved": True,
              "memory_error": False, "preemptions": 3},
             {"total_throughput": 940.0, "itl_mean_ms": 50.0, "ideal_throughput": 1000.0, "starved": False,
              "memory_error": False, "preemptions": 4}]
    out = val.mean_result(draws)
    assert out["total_throughput"] == 910.0 and out["itl_mean_ms"] == 45.0 and out["preemptions"] == 3.5
    assert out["starved"] is False and out["memory_error"] is False
    assert out["throughput_sd"] == pytest.approx(30.0) and out["replicas"] == 2
    assert val.mean_result(draws[:1])["starved"] is True and val.mean_result(draws[:1])["throughput_sd"] == 0.0


def test_replicas_are_the_mean_of_single_seed_validations(runs, tmp_path):
    cal = {LLAMA: str(write_json(tmp_path / f"{LLAMA}.json", to_json(LLAMA, fitted()[LLAMA])))}
    subset = runs.filter(pl.col("run_id").str.ends_with("rank_32_rates_1.6_0.8_0.4/_16_32_32_"))

    def twin(seed: int, replicas: int) -> tuple[dict, dict]:
        cfg = val.ValidationConfig(duration_scale=0.1, workers=1, seed=seed, replicas=replicas)
        df, summary = val.validate(subset, cal, ["real_results"], cfg)
        return df.row(0, named=True), summary

    (one, one_summary), (two, _), (both, both_summary) = twin(5, 1), twin(6, 1), twin(5, 2)
    assert one["twin_throughput"] != two["twin_throughput"]  # the seed re-draws rates and arrivals
    for m in ("throughput", "itl", "ttft"):
        assert both[f"twin_{m}"] == pytest.approx((one[f"twin_{m}"] + two[f"twin_{m}"]) / 2)
    assert both["twin_replicas"] == 2 and both_summary["replicas"] == 2
    # the first draw alone is scored too, and is the single-seed validation
    first = both_summary["first_draw"][LLAMA]["real_results"]
    assert first["throughput_smape_pct"] == pytest.approx(one_summary["throughput_smape_pct"])
    assert first["itl_smape_pct"] == pytest.approx(one_summary["itl_smape_pct"])
    assert both["twin_throughput_sd"] == pytest.approx(abs(one["twin_throughput"] - two["twin_throughput"]) / 2)
    with pytest.raises(ValueError, match="validation.replicas: 0"):
        val.ValidationConfig.from_params({"replicas": 0})
