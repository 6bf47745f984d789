"""One run folder -> one ``runs`` row (+ its time series and server_out.log facts).

Decisions taken here (data card 4.3, 4.4, 4.6):
* the log with a summary block wins; with two complete logs the later job wins (the only case,
  ``memory_overhead/llama-2-7b/p25_dataset/_32_32_``: job 12910860 overwrote the ``*.npy`` files);
* summary values come from ``openai-*.json`` (full precision) when present, else from the log;
* a run without a result gets the status of the first failure signature found (parse.FAILURE_SIGNATURES);
* every problem with the files (unreadable, missing, unparsable) becomes a message naming the file; the
  caller turns it into a warning, and the run still yields a row.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from adaptwin.measurements import families, parse, series
from adaptwin.model_cards import CARDS

_LOG = re.compile(r"^log_(\d+)\.out$")
_ERR = re.compile(r"^log_(\d+)\.err$")
DUMMY_DATASETS = {"dummy_dataset_mean": (250, 230), "dummy_dataset_p25": (23, 27), "dummy_dataset_p75": (423, 357)}
_DEFAULT_MAX_NUM_SEQS = 256
_FOLDER_CHECKED = ("max_loras", "max_cpu_loras", "max_lora_rank", "max_num_seqs", "restrict_loras",
                   "request_rate_by_lora", "input_words", "output_len")


@dataclass
class RunResult:
    """Everything one run folder contributes to the tables."""

    row: dict[str, Any]
    timeseries: pl.DataFrame | None
    server_out: parse.ServerOut | None
    error_texts: dict[str, str]
    problems: list[str] = field(default_factory=list)


def read_run(root: Path, folder: Path, location: families.Location) -> RunResult:
    """Read the run in ``folder`` (below ``root``, the vllm-measurements folder) into a RunResult."""
    rel = folder.relative_to(root).as_posix()
    problems: list[str] = []
    flags: list[str] = []
    names = sorted(p.name for p in folder.iterdir() if p.is_file())

    folder_name = _folder_name(folder, flags, problems)
    logs = _read_logs(folder, names, problems)
    log = _choose_log(logs, flags)
    server_out = _read_server_out(folder, names, problems, location.family)
    result_json = _read_json(folder, names, flags, problems)
    error_texts = _error_texts(folder, names, problems)

    row: dict[str, Any] = {"run_id": rel, "family": location.family.name, "subfamily": location.subfamily,
                           "job_ids": [lg.job_id for lg in logs]}
    row.update(_parameters(log, server_out, location, flags, problems, folder))
    _apply_folder_values(row, folder_name, location, flags)
    row.update(_status(log, logs, result_json, error_texts, flags, problems, folder))
    _check_sibling_server(row, flags)
    row.update(_summary(log, result_json))

    frame = _timeseries(rel, folder, row, location.family, flags, problems)
    if row["status"] == "ok" and problems and not row.get("reason"):
        row["reason"] = "; ".join(problems)
    row["flags"] = sorted(set(flags))
    return RunResult(row, frame, server_out, error_texts, problems)


# --- files --------------------------------------------------------------------------------------------------


def _read_text(path: Path, problems: list[str]) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        problems.append(f"{path}: unreadable ({exc})")
        return None


def _folder_name(folder: Path, flags: list[str], problems: list[str]) -> families.FolderName | None:
    try:
        return families.parse_folder_name(folder.name)
    except ValueError as exc:
        flags.append("folder_name_unparsed")
        problems.append(f"{folder}: {exc}")
        return None


def _read_logs(folder: Path, names: list[str], problems: list[str]) -> list[parse.LogInfo]:
    logs = []
    for name in names:
        if (m := _LOG.match(name)) and (text := _read_text(folder / name, problems)) is not None:
            info = parse.parse_log(text, int(m.group(1)))
            if info.namespace_error:
                problems.append(f"{folder / name}: {info.namespace_error}")
            logs.append(info)
    return sorted(logs, key=lambda lg: lg.job_id)


def _choose_log(logs: list[parse.LogInfo], flags: list[str]) -> parse.LogInfo | None:
    """The log with a summary (the latest if several), else the latest with a Namespace, else the latest."""
    if len(logs) > 1:
        flags.append("rerun")
    complete = [lg for lg in logs if lg.summary is not None]
    if len(complete) > 1:
        flags.append("two_complete_runs")
    for candidates in (complete, [lg for lg in logs if lg.namespace is not None], logs):
        if candidates:
            return candidates[-1]
    return None


def _read_server_out(folder: Path, names: list[str], problems: list[str],
                     family: families.Family) -> parse.ServerOut | None:
    if "server_out.log" in names:
        text = _read_text(folder / "server_out.log", problems)
        return parse.parse_server_out(text) if text is not None else None
    if family.name in ("available_gpu_memory", "adapter_loading"):
        problems.append(f"{folder / 'server_out.log'}: missing (the primary measurement of {family.name})")
    return None


def _read_json(folder: Path, names: list[str], flags: list[str], problems: list[str]) -> parse.JsonResult | None:
    for name in names:
        if name.startswith("openai-") and name.endswith(".json"):
            text = _read_text(folder / name, problems)
            if text is None:
                continue
            try:
                result = parse.parse_result_json(text)
            except ValueError as exc:
                flags.append("json_unreadable")
                problems.append(f"{folder / name}: unreadable result JSON ({exc})")
                continue
            if result.placeholder:
                flags.append("placeholder_json")
            return result
    return None


def _error_texts(folder: Path, names: list[str], problems: list[str]) -> dict[str, str]:
    texts = {}
    for name in names:
        if (name == "server_err.log" or _ERR.match(name)) and (text := _read_text(folder / name, problems)):
            texts[name] = text
    return texts


# --- parameters ---------------------------------------------------------------------------------------------


def _parameters(log: parse.LogInfo | None, server_out: parse.ServerOut | None, location: families.Location,
                flags: list[str], problems: list[str], folder: Path) -> dict[str, Any]:
    ns = log.namespace if log else None
    if log is not None and ns is None:
        flags.append("no_namespace")
    sa = None
    if ns:
        try:
            sa = parse.parse_server_args(ns.get("server_args", ""))
        except ValueError as exc:
            problems.append(f"{folder / f'log_{log.job_id}.out'}: unparsable server_args ({exc})")
    model = location.model if location.model in families.MODELS else (sa.model if sa else None)
    if model is None:
        problems.append(f"{folder}: model unknown (folder {location.model!r}, no Namespace)")
    out: dict[str, Any] = {
        "model": model,
        "vllm_version": None if model is None else CARDS[model].vllm_release,
        "job_id": log.job_id if log else None,
        "logged_num_adapters": log.num_adapters if log else None,
        "traffic_request_rate": log.traffic_request_rate if log else None,
        "poll_errors": log.poll_errors if log else None,
        "benchmark": location.family.benchmark,
        "time_base": location.family.time_base,
    }
    if server_out is not None:
        out["gpu_memory_utilization"] = server_out.args.get("gpu_memory_utilization")
    if sa is not None:
        out.update(_server_fields(sa))
        out.update(_benchmark_fields(ns, log))
    elif server_out is not None and server_out.args:
        out.update(_server_out_fields(server_out.args))
    return out


def _server_fields(sa: parse.ServerArgs) -> dict[str, Any]:
    if sa.dummy_lora_modules:
        served = sa.max_cpu_loras or sa.max_loras
        modules, assignment = sa.dummy_lora_modules, "cyclic"
    elif sa.lora_modules:
        served, modules, assignment = len(sa.lora_modules), sa.lora_modules, "named"
    else:
        served, modules, assignment = 0, [], None
    return {
        "enable_lora": sa.enable_lora,
        "max_loras": sa.max_loras,
        "max_cpu_loras": sa.max_cpu_loras,
        "served_adapters": served,
        "max_lora_rank": sa.max_lora_rank,
        "max_num_seqs": sa.max_num_seqs or _DEFAULT_MAX_NUM_SEQS,
        "adapter_ranks": [r for r in map(parse.adapter_rank, modules) if r is not None],
        "rank_assignment": assignment,
        "lora_modules": modules,
    }


def _server_out_fields(args: dict[str, Any]) -> dict[str, Any]:
    """Server arguments from server_out.log's args line (runs whose log_*.out was never flushed)."""
    registered = args.get("dummy_lora_modules") is not None or args.get("lora_modules") is not None
    return {
        "enable_lora": args.get("enable_lora"),
        "max_loras": args.get("max_loras") if args.get("enable_lora") else None,
        "max_cpu_loras": args.get("max_cpu_loras"),
        "served_adapters": None if registered else 0,
        "max_lora_rank": args.get("max_lora_rank") if args.get("enable_lora") else None,
        "max_num_seqs": args.get("max_num_seqs"),
        "adapter_ranks": None if registered else [],
        "lora_modules": None if registered else [],
    }


def _benchmark_fields(ns: dict[str, Any], log: parse.LogInfo) -> dict[str, Any]:
    by_time = "total_time" in ns
    dataset, dummy = _dataset(ns)
    input_len = log.prompt_len if dataset == "synthetic" else (dummy[0] if dummy else None)
    output_len = ns.get("synthetic_output_length") or ns.get("sharegpt_output_len") or (dummy[1] if dummy else None)
    fields = {
        "benchmark": "by_time" if by_time else "fixed_count",
        "num_prompts": ns.get("num_prompts"),
        "total_time_s": ns.get("total_time"),
        "request_rate": ns.get("request_rate"),
        "request_rate_by_lora": ns.get("request_rate_by_lora"),
        "dataset": dataset,
        "input_len": input_len,
        "input_words": ns.get("synthetic_input_length"),
        "output_len": output_len,
        "restrict_loras": ns.get("restrict_loras"),
        "disable_loras_users": ns.get("disable_loras_users"),
        "lora_pre_loading": ns.get("lora_pre_loading"),
        "infinite_behaviour": ns.get("infinite_behaviour"),
        "seed": ns.get("seed"),
    }
    if log.pool is not None:
        fields["pool_prompts"], fields["pool_input_tokens"], fields["pool_output_tokens"] = log.pool
    if log.adapter_rates is not None:
        fields["adapter_rates"], fields["adapter_rate_counts"] = log.adapter_rates, log.adapter_rate_counts
    elif ns.get("adapter_rates") is not None:
        fields["adapter_rates"] = [float(r) for r in ns["adapter_rates"]]
    return fields


def _dataset(ns: dict[str, Any]) -> tuple[str | None, tuple[int, int] | None]:
    if ns.get("use_synthetic_dataset"):
        return "synthetic", None
    path = ns.get("dataset_path")
    if not path:
        return None, None
    stem = path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")
    if stem in DUMMY_DATASETS:
        return "dummy_" + stem.rsplit("_", 1)[-1], DUMMY_DATASETS[stem]
    return ("sharegpt" if "sharegpt" in stem.lower() else stem), None


def _apply_folder_values(row: dict[str, Any], name: families.FolderName | None, location: families.Location,
                         flags: list[str]) -> None:
    """Record the folder-name values, fill parameters missing from the logs, flag disagreements."""
    if name is None:
        return
    row["folder_server_values"] = [float(v) for v in name.server]
    row["folder_benchmark_values"] = list(name.bench)
    row["run_index"] = name.run_index
    layout = location.family.layout(location.subfamily)
    pairs = [*zip(layout.server, name.server, strict=False), *zip(layout.bench, name.bench, strict=False)]
    for key, text in pairs:
        try:
            value = float(text)
        except ValueError:
            continue
        current = row.get(key)
        if current is None:
            row[key] = int(value) if key != "request_rate_by_lora" else value
        elif key in _FOLDER_CHECKED and not math.isclose(float(current), value):
            flags.append("folder_name_mismatch")
    if row.get("served_adapters") is None and row.get("max_loras") is not None and "no_namespace" in flags:
        row["served_adapters"] = 0 if location.family.name == "available_gpu_memory" else None
    if row.get("request_rate_by_lora") is not None and row.get("adapter_rates") is None:
        row["adapter_rates"] = [row["request_rate_by_lora"]]
        if row.get("served_adapters"):
            row["adapter_rate_counts"] = [row["served_adapters"]]


# --- status and summary ------------------------------------------------------------------------------------


def _status(log: parse.LogInfo | None, logs: list[parse.LogInfo], result_json: parse.JsonResult | None,
            error_texts: dict[str, str], flags: list[str], problems: list[str], folder: Path) -> dict[str, Any]:
    clash = parse.find_signature(error_texts, "address already in use")
    if result_json is not None and result_json.placeholder:
        return {"status": "placeholder", "reason": result_json.placeholder}
    has_result = (log is not None and log.summary is not None) or (result_json is not None and result_json.summary)
    if has_result:
        if clash:
            flags.append("shared_server")
            return {"status": "ok", "reason": f"port clash, measured a sibling job's server ({clash})"}
        return {"status": "ok", "reason": None}
    status, reason = parse.classify_failure(error_texts)
    if reason == "no summary block and no known failure signature":
        if not logs:
            flags.append("missing_file")
            reason = f"no log_*.out in {folder}"
        else:
            reason = f"no summary block in {folder / f'log_{log.job_id}.out'} and no known failure signature"
        problems.append(f"{folder}: {reason}")
    return {"status": status, "reason": reason}


def _check_sibling_server(row: dict[str, Any], flags: list[str]) -> None:
    """Flag an ``ok`` run whose benchmark saw another adapter count than its own server registers.

    The benchmark counts the adapters the server at its port lists ("Number of adapters"). Two 5.9 jobs
    that shared a port (``rate_3.2-1.6-0.025_size_16-16-16/_64_192_16_`` and ``_64_256_16_``) each logged the
    other's count: their summaries describe the sibling's server, so they are kept but flagged."""
    logged, served = row.get("logged_num_adapters"), row.get("served_adapters")
    if row.get("status") != "ok" or logged is None or served is None or logged == served:
        return
    flags.append("shared_server")
    row["reason"] = (f"benchmark saw {logged} adapters, the run's server registers {served}: "
                     "it measured a sibling job's server")


def _summary(log: parse.LogInfo | None, result_json: parse.JsonResult | None) -> dict[str, Any]:
    if result_json is not None and result_json.summary:
        out = dict(result_json.summary, summary_source="json", json_start_time=result_json.start_time,
                   json_end_time=result_json.end_time)
    elif log is not None and log.summary is not None:
        out = dict(log.summary, summary_source="log")
    else:
        return {}
    out["total_throughput"] = out["input_throughput"] + out["output_throughput"]
    return out


# --- time series -------------------------------------------------------------------------------------------


def _timeseries(rel: str, folder: Path, row: dict[str, Any], family: families.Family, flags: list[str],
                problems: list[str]) -> pl.DataFrame | None:
    data, npy_problems = series.load_series(folder)
    problems.extend(npy_problems)
    if npy_problems:
        flags.append("npy_unreadable")
    if data is None:
        if any(p.name.endswith(".npy") for p in folder.iterdir()) and not npy_problems:
            flags.append("missing_file")
            problems.append(f"{folder / 'time.npy'}: missing although other .npy files exist")
        return None
    flags.extend(data.flags)
    window = _window(row, data, flags)
    if window is not None:
        row["window_start"], row["window_end"] = window
    row.update(series.window_stats(data, window))
    return series.to_frame(rel, data, family.time_base, window)


def _window(row: dict[str, Any], data: series.Series, flags: list[str]) -> tuple[float, float] | None:
    if row.get("json_start_time") is not None and row.get("json_end_time") is not None:
        row["window_source"] = "json"
        return row["json_start_time"], row["json_end_time"]
    if row.get("duration_s") is not None:
        window = series.estimate_window(data.time, data.values.get("num_running"),
                                        data.values.get("num_waiting"), row["duration_s"])
        if window is not None:
            row["window_source"] = "activity_end"
            flags.append("window_estimated")
            return window
    flags.append("no_window")
    return None
