"""Bad input never kills the ingest: a truncated .npy, a log without a summary, a folder whose name does not
parse, a missing file each become a row with status and reason (or a flag) plus a warning naming the file,
and nothing else is lost. The inputs are real run folders copied into tmp_path and then damaged."""

from __future__ import annotations

import argparse
import importlib
import shutil

import polars as pl
import pytest
from corpus_paths import DEF, DTD, SOURCE

from adaptwin.measurements import IngestWarning, ingest
from adaptwin.measurements.cli import run_ingest

GOOD = DTD + "predictor_default_latency/llama-3.1-8b-instruct/output/_400__1_200"
TRUNC_NPY = DEF + "performance_analysis/memory_overhead/llama-2-7b/mean_dataset/_128_8_"
TRUNC_TIME = DEF + "performance_analysis/memory_overhead/llama-2-7b/mean_dataset/_256_8_"
NO_SUMMARY = DEF + "digital_twin_modelling/real_results/llama-3.1-8b-instruct/rank_16_rates_0.1_0.05_0.025/_32_128_16_"
BAD_NAME_SRC = DEF + "performance_analysis/compute_overhead/llama-2-7b/mean_dataset/_200_8__8"
BAD_NAME = DEF + "performance_analysis/compute_overhead/llama-2-7b/mean_dataset/not-a-launcher-name"
NO_SERVER_OUT = DTD + "find_available_gpu_memory_depending_on_loaded_adapters/llama-3.1-8b-instruct/_128_16_"
NO_LOG = DEF + "performance_analysis/memory_overhead/llama-2-13b/mean_dataset/_128_8_"
BAD_JSON = DTD + "predictor_default_latency/llama-3.1-8b-instruct/output/_400__1_100"


def copy_run(dst_root, rel, new_rel=None):
    dst = dst_root / (new_rel or rel)
    shutil.copytree(SOURCE / rel, dst)
    for path in dst.iterdir():
        path.chmod(0o644)
    return dst


def truncate(path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    src = tmp_path_factory.mktemp("corpus")
    copy_run(src, GOOD)
    truncate(copy_run(src, TRUNC_NPY) / "num_running.npy")
    truncate(copy_run(src, TRUNC_TIME) / "time.npy")
    folder = copy_run(src, NO_SUMMARY)
    log = folder / "log_21074665.out"
    log.write_text(log.read_text().split("===== Serving Benchmark")[0])
    copy_run(src, BAD_NAME_SRC, BAD_NAME)
    (copy_run(src, NO_SERVER_OUT) / "server_out.log").unlink()
    for path in copy_run(src, NO_LOG).glob("log_*.out"):
        path.unlink()
    json_file = next(copy_run(src, BAD_JSON).glob("openai-*.json"))
    json_file.write_text(json_file.read_text()[:100])
    out = tmp_path_factory.mktemp("out")
    with pytest.warns(IngestWarning) as record:
        report = ingest(src, out)
    frames = {name: pl.read_parquet(out / f"{name}.parquet") for name in ("runs", "timeseries", "kv_capacity")}
    return src, report, [str(w.message) for w in record], frames


def row(frames, rel):
    rows = frames["runs"].filter(pl.col("run_id") == rel)
    assert rows.height == 1, rel
    return rows.row(0, named=True)


def warned(messages, needle):
    return [m for m in messages if needle in m]


def test_every_folder_is_a_row(damaged):
    _, report, _, frames = damaged
    assert frames["runs"].height == 8
    assert sum(sum(c.values()) for c in report.counts.values()) == 8


def test_good_run_is_untouched(damaged):
    _, _, messages, frames = damaged
    r = row(frames, GOOD)
    assert (r["status"], r["reason"], r["flags"]) == ("ok", None, [])
    assert r["output_throughput"] == 14307.066906433354 and r["mean_running_in_window"] == 348.10714285714283
    assert frames["timeseries"].filter(pl.col("run_id") == GOOD).height == 38
    assert not warned(messages, GOOD)


def test_truncated_npy(damaged):
    src, _, messages, frames = damaged
    r = row(frames, TRUNC_NPY)
    assert r["status"] == "ok" and "npy_unreadable" in r["flags"] and "num_running.npy" in r["reason"]
    assert r["duration_s"] == 144.29  # the summary survives
    ts = frames["timeseries"].filter(pl.col("run_id") == TRUNC_NPY)
    assert ts.height == 159 and ts["num_running"].null_count() == 159
    assert ts["finished"][-1] == 1501  # the other arrays survive
    assert warned(messages, str(src / TRUNC_NPY / "num_running.npy"))


def test_truncated_time_npy_drops_only_that_series(damaged):
    src, _, messages, frames = damaged
    r = row(frames, TRUNC_TIME)
    assert r["status"] == "ok" and "npy_unreadable" in r["flags"] and "time.npy" in r["reason"]
    assert frames["timeseries"].filter(pl.col("run_id") == TRUNC_TIME).height == 0
    assert warned(messages, str(src / TRUNC_TIME / "time.npy"))


def test_log_without_summary(damaged):
    src, _, messages, frames = damaged
    r = row(frames, NO_SUMMARY)
    assert r["status"] == "no_summary" and "log_21074665.out" in r["reason"]
    assert r["duration_s"] is None and r["max_loras"] == 32  # parameters still parsed
    assert "no_window" in r["flags"]
    assert frames["timeseries"].filter(pl.col("run_id") == NO_SUMMARY).height == 1540
    assert warned(messages, str(src / NO_SUMMARY / "log_21074665.out"))


def test_folder_name_that_does_not_parse(damaged):
    src, _, messages, frames = damaged
    r = row(frames, BAD_NAME)
    assert r["status"] == "ok" and "folder_name_unparsed" in r["flags"]
    assert (r["max_loras"], r["max_lora_rank"], r["restrict_loras"]) == (200, 8, 8)  # from the Namespace
    assert r["folder_server_values"] is None
    assert warned(messages, "not-a-launcher-name")


def test_missing_server_out(damaged):
    src, _, messages, frames = damaged
    r = row(frames, NO_SERVER_OUT)
    assert r["status"] == "ok" and "server_out.log" in r["reason"]
    kv = frames["kv_capacity"].filter(pl.col("run_id") == NO_SERVER_OUT).row(0, named=True)
    assert kv["kv_tokens"] is None and kv["max_loras"] == 128
    assert warned(messages, str(src / NO_SERVER_OUT / "server_out.log"))


def test_missing_log(damaged):
    src, _, messages, frames = damaged
    r = row(frames, NO_LOG)
    assert r["status"] == "no_summary" and "missing_file" in r["flags"] and "log_*.out" in r["reason"]
    assert (r["max_loras"], r["max_lora_rank"]) == (128, 8)  # from the folder name
    assert frames["timeseries"].filter(pl.col("run_id") == NO_LOG).height > 0
    assert warned(messages, str(src / NO_LOG))


def test_unreadable_json_falls_back_to_the_log(damaged):
    src, _, messages, frames = damaged
    r = row(frames, BAD_JSON)
    assert r["status"] == "ok" and r["summary_source"] == "log" and "json_unreadable" in r["flags"]
    assert r["window_source"] == "activity_end"
    assert warned(messages, "openai-infqps")


def test_cli_prints_counts(damaged, tmp_path, capsys):
    src, _, _, _ = damaged
    code = run_ingest(argparse.Namespace(source=str(src), out=str(tmp_path / "m")))
    out, err = capsys.readouterr()
    assert code == 0 and (tmp_path / "m" / "runs.parquet").exists()
    assert "memory_overhead" in out and "runs: 8 rows" in out
    assert "warning:" in err and "num_running.npy" in err


def test_cli_bad_source(tmp_path, capsys):
    code = run_ingest(argparse.Namespace(source=str(tmp_path / "nowhere"), out=str(tmp_path / "m")))
    assert code == 2 and "nowhere" in capsys.readouterr().err


def test_unexpected_error_in_one_run_keeps_the_rest(tmp_path, monkeypatch):
    ingest_module = importlib.import_module("adaptwin.measurements.corpus")
    copy_run(tmp_path / "src", GOOD)
    copy_run(tmp_path / "src", TRUNC_NPY)
    real = ingest_module.read_run

    def flaky(root, folder, location):
        if folder.name == "_128_8_":
            raise RuntimeError("boom")
        return real(root, folder, location)

    monkeypatch.setattr(ingest_module, "read_run", flaky)
    with pytest.warns(IngestWarning) as record:
        report = ingest(tmp_path / "src", tmp_path / "out")
    assert warned([str(w.message) for w in record], "boom")
    runs = pl.read_parquet(tmp_path / "out" / "runs.parquet")
    assert runs.height == 2 and report.counts["memory_overhead"] == {"no_summary": 1}
    assert runs.filter(pl.col("run_id") == GOOD)["status"].item() == "ok"


def test_unparsable_server_args(tmp_path):
    folder = copy_run(tmp_path / "src", GOOD)
    log = next(folder.glob("log_*.out"))
    log.write_text(log.read_text().replace("--max-num-seqs=400", "--max-num-seqs=\"400"))
    with pytest.warns(IngestWarning) as record:
        ingest(tmp_path / "src", tmp_path / "out")
    assert warned([str(w.message) for w in record], "unparsable server_args")
    r = pl.read_parquet(tmp_path / "out" / "runs.parquet").row(0, named=True)
    assert r["status"] == "ok" and r["max_num_seqs"] == 400  # the folder name still gives it
