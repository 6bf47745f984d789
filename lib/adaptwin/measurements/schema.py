"""The one place that documents every column of every measurement table.

Each table is a tuple of :class:`Column` (name, polars dtype, unit, meaning). The ingest builds plain polars
frames and passes them through :func:`conform`, which adds missing columns as nulls, casts to the documented
dtype, orders the columns and refuses undocumented ones -- so a column can not appear in a Parquet file
without being described here, and downstream code (calibration, figures, surrogates) can rely on the names.

Conventions used in the meanings below:

* ``run_id`` is the run folder path relative to the ``vllm-measurements`` root (POSIX separators); it joins
  every per-run table to ``runs``.
* A_max = ``--max-loras`` (GPU adapter slots), S_max = ``--max-lora-rank``, served adapters =
  ``--max-cpu-loras`` when given, else A_max (0 when no adapter is registered).
* Times of the time series are either absolute ``time.perf_counter()`` readings (vLLM 0.8.5 runs and
  motivation ``with_slots``) or seconds since the metrics poller started (other Llama-2 runs): ``time_base``.
* The *benchmark window* is [``window_start``, ``window_end``] on the ``time_raw`` clock. With an
  ``openai-*.json`` it is the JSON ``start_time``/``end_time`` (exact). Without one it is estimated from the
  time series: the end is the midpoint between the last sample with ``num_running + num_waiting > 0`` and
  the next sample (the poller keeps polling ~15 s after the benchmark ends), and the start is end minus the
  summary's benchmark duration. On the 130 JSON runs with activity the true end always lies between those
  two samples, so the estimate is within half a poll interval (<= ~1 s, 0.8.5; <= ~0.5 s, Llama-2).
  In motivation ``without_slots`` requests still running when the last request was sent keep the server
  busy a few seconds longer, so there the estimated window sits up to ~6 s late.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

STR = pl.Utf8
I64 = pl.Int64
F64 = pl.Float64
BOOL = pl.Boolean
LIST_I64 = pl.List(pl.Int64)
LIST_F64 = pl.List(pl.Float64)
LIST_STR = pl.List(pl.Utf8)

#: Status values of ``runs.status`` and ``kv_capacity.status`` and what maps to them (data card 4.6).
STATUSES: dict[str, str] = {
    "ok": "a summary block in log_*.out (or a complete openai-*.json): the run has a result",
    "memory_error": "no result; server_err.log shows a memory signature (no memory for cache blocks, CUDA OOM, "
    "CUBLAS_STATUS_ALLOC_FAILED, KV cache smaller than one max-length sequence) -- the inventory's "
    "'memory failure'",
    "crash": "no result; hardware/environment fault (uncorrectable ECC error, illegal memory access, CUDA "
    "unknown error) or a port clash (the run's own server could not bind its port) -- 'other failure'",
    "cancelled": "no result; Slurm cancelled the job (manually, or DUE TO TIME LIMIT without a memory "
    "signature) -- 'other failure'",
    "placeholder": "hand-written openai-*.json placeholder ('manually created'); the server started but there "
    "is no timing -- counted by the data card under 'with result'",
    "no_summary": "no result and no known failure signature, or a benchmark-side failure ('Task without "
    "enough requests to send'), or unreadable/missing logs -- 'other failure'",
}

#: Values of ``runs.flags``.
FLAGS: dict[str, str] = {
    "length_mismatch": "the .npy arrays of the run differ in length; all were cut to the shortest",
    "counter_overflow": "a cumulative counter read 0 after a positive value (Prometheus 1e6 parse bug); "
    "those samples are null in timeseries",
    "shared_server": "the run's own server hit a port clash but the benchmark produced a summary: it "
    "measured a sibling job's server (loading_overhead); repetitions are not independent",
    "rerun": "the folder holds more than one log_*.out; the one with a summary (the latest if several) is used",
    "two_complete_runs": "two logs with a summary; the later job is used (its run overwrote the .npy files)",
    "window_estimated": "no JSON: the benchmark window was estimated from the time series (see module doc)",
    "no_window": "time series present but no benchmark window (no summary duration)",
    "folder_name_unparsed": "the run folder name does not follow the launcher's _<server>_<_bench> pattern",
    "folder_name_mismatch": "a value encoded in the folder name disagrees with the Namespace line",
    "npy_unreadable": "a .npy file could not be read (truncated or corrupt); its metric is null",
    "missing_file": "an expected file is missing (log_*.out, time.npy, server_out.log)",
    "json_unreadable": "an openai-*.json could not be parsed; the log summary was used",
    "placeholder_json": "the openai-*.json is a hand-written placeholder",
    "no_namespace": "log_*.out has no Namespace line; parameters come from the folder name/server_out.log",
}


@dataclass(frozen=True)
class Column:
    """One documented column: ``name`` and polars ``dtype``, the ``unit`` ('' if none) and its meaning."""

    name: str
    dtype: pl.DataType
    unit: str
    meaning: str


def _c(name: str, dtype: pl.DataType, unit: str, meaning: str) -> Column:
    return Column(name, dtype, unit, meaning)


_SUMMARY = (
    _c("successful_requests", I64, "requests", "'Successful requests' (JSON 'completed')"),
    _c("duration_s", F64, "s", "'Benchmark duration' (JSON 'duration'); throughputs divide by it"),
    _c("total_input_tokens", I64, "tokens", "prompt tokens of the counted requests"),
    _c("total_output_tokens", I64, "tokens", "generated tokens (client re-tokenisation)"),
    _c("request_throughput", F64, "req/s", "successful requests / duration"),
    _c("input_throughput", F64, "tok/s", "input tokens / duration"),
    _c("output_throughput", F64, "tok/s", "output tokens / duration"),
    _c("total_throughput", F64, "tok/s", "input_throughput + output_throughput"),
    _c("ttft_mean_ms", F64, "ms", "mean time to first token (fixed-count: failed requests count as duration)"),
    _c("ttft_median_ms", F64, "ms", "median time to first token"),
    _c("ttft_p99_ms", F64, "ms", "99th percentile time to first token"),
    _c("tpot_mean_ms", F64, "ms", "mean (latency - TTFT) / (output tokens - 1); 0 with output length 1"),
    _c("tpot_median_ms", F64, "ms", "median time per output token"),
    _c("tpot_p99_ms", F64, "ms", "99th percentile time per output token"),
    _c("itl_mean_ms", F64, "ms", "mean inter-token latency (all streamed gaps pooled)"),
    _c("itl_median_ms", F64, "ms", "median inter-token latency"),
    _c("itl_p99_ms", F64, "ms", "99th percentile inter-token latency"),
)

RUNS: tuple[Column, ...] = (
    _c("run_id", STR, "", "run folder relative to the vllm-measurements root"),
    _c("family", STR, "", "folder family (see adaptwin.measurements.families.FAMILIES)"),
    _c("subfamily", STR, "", "folders between the model folder and the run folder, '/'-joined "
       "(e.g. 'rank_16_rates_0.1_0.05_0.025', 'varying_arrival_rate', 'mean_dataset'); null if none"),
    _c("model", STR, "", "llama-3.1-8b-instruct | qwen-2.5-7b-instruct | llama-2-7b | llama-2-13b"),
    _c("vllm_version", STR, "", "'0.8.5' (fork of vLLM 0.8.5, V1 engine) or '0.5.0' (older fork, V0 engine)"),
    _c("job_id", I64, "", "Slurm job id of the log used (log_<job_id>.out)"),
    _c("job_ids", LIST_I64, "", "job ids of every log_*.out in the folder (reruns)"),
    _c("folder_server_values", LIST_F64, "", "server values encoded in the folder name, in launcher order"),
    _c("folder_benchmark_values", LIST_STR, "", "benchmark values encoded in the folder name"),
    _c("run_index", I64, "", "repetition i of a '_run_<i>' folder, else null"),
    _c("enable_lora", BOOL, "", "--enable-lora given"),
    _c("max_loras", I64, "adapters", "A_max = --max-loras (GPU adapter slots); null without LoRA"),
    _c("max_cpu_loras", I64, "adapters", "--max-cpu-loras; null when not given"),
    _c("served_adapters", I64, "adapters", "adapters registered: max_cpu_loras or max_loras with "
       "--dummy-lora-modules, the number of --lora-modules, else 0"),
    _c("logged_num_adapters", I64, "adapters", "'Number of adapters: N' printed by the by-time benchmark"),
    _c("max_lora_rank", I64, "", "S_max = --max-lora-rank (rank every GPU slot is sized for)"),
    _c("max_num_seqs", I64, "requests", "--max-num-seqs (maximum running batch); 256 when not set"),
    _c("adapter_ranks", LIST_I64, "", "ranks of the adapter folders in the order they are cycled over "
       "dummy-0, dummy-1, ... (empty without adapters)"),
    _c("rank_assignment", STR, "", "'cyclic' (--dummy-lora-modules), 'named' (--lora-modules), null if none"),
    _c("lora_modules", LIST_STR, "", "adapter folder names (last path component) of the LoRA arguments"),
    _c("gpu_memory_utilization", F64, "fraction", "from server_out.log when copied (else null; default 0.9)"),
    _c("benchmark", STR, "", "'fixed_count' (num_prompts requests) or 'by_time' (Poisson per adapter for "
       "total_time)"),
    _c("num_prompts", I64, "requests", "fixed-count benchmark: requests sent"),
    _c("total_time_s", F64, "s", "by-time benchmark: length of the sending window"),
    _c("request_rate", F64, "req/s", "fixed-count aggregated request rate (inf = all at once)"),
    _c("request_rate_by_lora", F64, "req/s", "fixed-count per-adapter rate (aggregate = rate x served)"),
    _c("traffic_request_rate", F64, "req/s", "'Traffic request rate' printed by the fixed-count benchmark"),
    _c("adapter_rates", LIST_F64, "req/s", "by-time: distinct per-adapter rates ('Adapter rates. Values'), "
       "else the Namespace adapter_rates"),
    _c("adapter_rate_counts", LIST_I64, "adapters", "by-time: adapters per rate value ('Counts')"),
    _c("pool_prompts", I64, "requests", "by-time: size of the pre-sampled prompt pool ('Prompts retrieved')"),
    _c("pool_input_tokens", I64, "tokens", "by-time: prompt tokens of that pool (its mean is the run's mean "
       "input length)"),
    _c("pool_output_tokens", I64, "tokens", "by-time: output tokens of that pool"),
    _c("dataset", STR, "", "'sharegpt', 'synthetic' (N random words, one prompt repeated), 'dummy_mean', "
       "'dummy_p25', 'dummy_p75' (one conversation repeated)"),
    _c("input_len", I64, "tokens", "fixed prompt length: 'Generated prompt with N input length' or the dummy "
       "dataset's 250/23/423; null for ShareGPT"),
    _c("input_words", I64, "words", "synthetic prompt length in words (synthetic_input_length)"),
    _c("output_len", I64, "tokens", "fixed output length (synthetic_output_length, sharegpt_output_len, or "
       "the dummy dataset's 230/27/357); null for ShareGPT"),
    _c("restrict_loras", I64, "adapters", "requests spread over the first N adapters (0 = base model)"),
    _c("disable_loras_users", BOOL, "", "all requests go to the base model"),
    _c("lora_pre_loading", BOOL, "", "one warm-up request per adapter instead of one to the base model"),
    _c("infinite_behaviour", BOOL, "", "Llama-2 fixed-count Poisson mode (without_slots): the summary covers "
       "the time to send all requests"),
    _c("seed", I64, "", "benchmark seed"),
    _c("status", STR, "", "one of adaptwin.measurements.schema.STATUSES"),
    _c("reason", STR, "", "the log line that decided a non-ok status ('<file>: <line>'), or the ingest "
       "problem of an ok run; null when ok and clean"),
    _c("flags", LIST_STR, "", "data-quality flags, see adaptwin.measurements.schema.FLAGS"),
    _c("summary_source", STR, "", "'json' (full precision openai-*.json) or 'log' (2-decimal summary block)"),
    *_SUMMARY,
    _c("json_start_time", F64, "s (perf_counter)", "JSON start_time of the benchmark"),
    _c("json_end_time", F64, "s (perf_counter)", "JSON end_time of the benchmark"),
    _c("time_base", STR, "", "'perf_counter' or 'poller_start': clock of time.npy"),
    _c("window_start", F64, "s (time_base clock)", "benchmark window start on the time.npy clock"),
    _c("window_end", F64, "s (time_base clock)", "benchmark window end on the time.npy clock"),
    _c("window_source", STR, "", "'json' (exact), 'activity_end' (estimated, see module doc) or null"),
    _c("n_samples", I64, "samples", "time-series samples kept (after truncation to the shortest array)"),
    _c("n_samples_in_window", I64, "samples", "samples inside the benchmark window"),
    _c("mean_running_in_window", F64, "requests", "mean num_running over samples inside the window "
       "(the authors' 'mean batch size')"),
    _c("max_running", I64, "requests", "maximum num_running over all samples"),
    _c("poll_errors", I64, "polls", "'Error while running usage checker' lines (missed metrics polls)"),
)

TIMESERIES: tuple[Column, ...] = (
    _c("run_id", STR, "", "joins runs.run_id"),
    _c("sample", I64, "", "0-based poll index within the run"),
    _c("time_raw", F64, "s", "time.npy value (clock given by time_base)"),
    _c("time_base", STR, "", "'perf_counter' | 'poller_start'"),
    _c("t_poll_s", F64, "s", "seconds since the first sample of the run"),
    _c("t_s", F64, "s", "seconds since the benchmark start (time_raw - runs.window_start); null without window"),
    _c("in_window", BOOL, "", "window_start <= time_raw <= window_end; null without window"),
    _c("num_running", I64, "requests", "gauge vllm:num_requests_running (running batch size)"),
    _c("num_waiting", I64, "requests", "gauge vllm:num_requests_waiting (queued requests)"),
    _c("num_preempted", I64, "preemptions", "counter vllm:num_preemptions_total; null = overflow sample"),
    _c("gpu_cache_usage", F64, "fraction", "gauge vllm:gpu_cache_usage_perc: KV blocks in use, 0..1"),
    _c("finished", I64, "requests", "first vllm:request_success_total series (one finished_reason: 'stop' "
       "in 0.8.5), NOT the number of finished requests; includes warm-up; null = overflow sample"),
    _c("prompt_tokens_total", I64, "tokens", "counter vllm:prompt_tokens_total (incl. warm-up); null = "
       "overflow sample"),
    _c("generation_tokens_total", I64, "tokens", "counter vllm:generation_tokens_total (server count); "
       "null = overflow sample"),
    _c("preempted_workload", I64, "tokens?", "Llama-2 fork only: cumulative counter rising with every "
       "preemption (consistent with tokens to recompute); null otherwise or on overflow"),
)

KV_CAPACITY: tuple[Column, ...] = (
    _c("run_id", STR, "", "joins runs.run_id"),
    _c("model", STR, "", "base model"),
    _c("max_loras", I64, "adapters", "A_max: LoRA slots reserved on the GPU"),
    _c("max_lora_rank", I64, "", "S_max: rank each slot is sized for"),
    _c("kv_tokens", I64, "tokens", "'GPU KV cache size: N tokens' from server_out.log; null when failed"),
    _c("model_memory_gib", F64, "GiB", "'Model loading took X GiB' (weights + LoRA slot buffers)"),
    _c("model_loading_s", F64, "s", "seconds of the same 'Model loading took' line"),
    _c("kv_needed_gib", F64, "GiB", "failures: KV cache needed for one max-length sequence (error message)"),
    _c("kv_available_gib", F64, "GiB", "failures: KV cache memory that was available (error message)"),
    _c("status", STR, "", "runs.status of the run"),
    _c("reason", STR, "", "runs.reason of the run"),
)

ADAPTER_LOADING: tuple[Column, ...] = (
    _c("run_id", STR, "", "joins runs.run_id"),
    _c("model", STR, "", "base model"),
    _c("adapter_rank", I64, "", "rank of the 50 dummy adapters (folder adapter_rank_<r>)"),
    _c("max_lora_rank", I64, "", "S_max of the single GPU slot"),
    _c("source", STR, "", "'disk' (disk -> CPU memory) or 'memory' (CPU memory -> GPU slot, activation)"),
    _c("load_index", I64, "", "N of 'Total loads from <source>: N' (1-based cumulative count)"),
    _c("phase", STR, "", "'startup' (load_index <= number of disk loads) or 'request' (one per request)"),
    _c("cumulative_time_s", F64, "s", "'Total loading time from <source>' after this load"),
    _c("load_time_ms", F64, "ms", "this load: cumulative time differenced against the previous line"),
    _c("authors_mean_ms", F64, "ms", "per run: (cumulative memory time at the last line - at line "
       "n_disk) / request loads, i.e. loads 51..100; equals <model>_constants.json[S_max][rank]"),
)

SCHEDULER_OVERHEAD: tuple[Column, ...] = (
    _c("source", STR, "", "'adapter_rates' (equal per-adapter rate) or 'aggregated_rate' (total rate split)"),
    _c("gpu_loras", I64, "adapters", "A_max"),
    _c("cpu_loras", I64, "adapters", "served adapters"),
    _c("cpu_gpu_diff", I64, "adapters", "cpu_loras - gpu_loras"),
    _c("rank", I64, "", "adapter rank (8)"),
    _c("rate", F64, "req/s", "per-adapter rate (adapter_rates file) or total rate (aggregated_rate file)"),
    _c("output_throughput", F64, "tok/s", "output token throughput"),
    _c("completed_requests", I64, "requests", "completed requests"),
    _c("adapter_rates", F64, "req/s", "per-adapter rate"),
    _c("max_lora_loading_time", F64, "s", "total CPU-to-GPU loading time"),
    _c("avg_batch_size", F64, "requests", "mean running batch"),
    _c("avg_waiting_queue", F64, "requests", "mean waiting queue"),
    _c("max_lora_loads_from_memory", F64, "loads", "CPU-to-GPU loads incl. start-up"),
    _c("max_lora_loads_from_disk", F64, "loads", "disk-to-CPU loads"),
    _c("max_lora_loads_from_memory_corrected", F64, "loads", "from_memory - from_disk (no start-up loads)"),
    _c("total_scheduling_time", F64, "s", "scheduler time summed over steps"),
    _c("mean_itl_ms", F64, "ms", "mean inter-token latency"),
    _c("processed_tokens", I64, "tokens", "processed tokens"),
    _c("duration", F64, "s", "run duration"),
    _c("mean_loras_by_batch", F64, "adapters", "mean distinct adapters per batch"),
    _c("steps", I64, "steps", "scheduler steps"),
    _c("scheduling_time_per_step_s", F64, "s", "derived: total_scheduling_time / steps (the authors' target)"),
)

LORA_LOAD_TIMES: tuple[Column, ...] = (
    _c("adapter_rank", I64, "", "rank of the sql-lora dummy adapter (Llama-2-7B)"),
    _c("load", STR, "", "'first' (first load of the adapter) or 'next' (a later load)"),
    _c("repetition", I64, "", "repetition number"),
    _c("loading_time_s", F64, "s", "'Total LoRA loading time' (hand-transcribed)"),
    _c("activating_time_s", F64, "s", "'Total LoRA activating time' (hand-transcribed)"),
)

CONSTANTS: tuple[Column, ...] = (
    _c("file", STR, "", "constants file relative to the vllm-measurements root"),
    _c("model", STR, "", "base model"),
    _c("estimator", STR, "", "'prefill' (TTFT ms = c0 x input tokens + c1), 'decode' (ITL ms = c0 x mean "
       "batch + c1), 'lora_overhead' (ITL % = c0 x mean adapters per batch + c1), 'loading' (ms per load)"),
    _c("key", STR, "", "constant name ('constant_0', ...) or '<S_max>/<rank>' for loading"),
    _c("max_lora_rank", I64, "", "loading: outer key S_max"),
    _c("adapter_rank", I64, "", "loading: inner key adapter rank"),
    _c("value", F64, "", "the authors' fitted value"),
)

TABLES: dict[str, tuple[Column, ...]] = {
    "runs": RUNS,
    "timeseries": TIMESERIES,
    "kv_capacity": KV_CAPACITY,
    "adapter_loading": ADAPTER_LOADING,
    "scheduler_overhead": SCHEDULER_OVERHEAD,
    "lora_load_times": LORA_LOAD_TIMES,
    "constants": CONSTANTS,
}

#: One sentence per table: what a row is.
TABLE_ROWS: dict[str, str] = {
    "runs": "one run folder (one configuration) of any family",
    "timeseries": "one metrics poll of one run",
    "kv_capacity": "one run of the available-GPU-memory family",
    "adapter_loading": "one cumulative loading line of server_out.log in the adapter-loading family",
    "scheduler_overhead": "one pre-aggregated run of the two scheduler-overhead CSVs",
    "lora_load_times": "one hand-transcribed load of lora_load_times.csv",
    "constants": "one fitted constant of the authors' *_constants.json / *_results.json",
}


def polars_schema(table: str) -> dict[str, pl.DataType]:
    """``{column: dtype}`` of ``table`` in documented order."""
    return {c.name: c.dtype for c in TABLES[table]}


def conform(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Cast ``frame`` to the documented schema of ``table``: add missing columns as nulls, order them.

    Raises ValueError naming the table and column when ``frame`` has a column that is not documented, so
    the schema stays the single source of truth.
    """
    schema = polars_schema(table)
    extra = [c for c in frame.columns if c not in schema]
    if extra:
        raise ValueError(f"table {table!r}: undocumented column(s) {extra}; add them to schema.{table.upper()}")
    exprs = [
        (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype, strict=True).alias(name)
        for name, dtype in schema.items()
    ]
    return frame.select(exprs)


def empty(table: str) -> pl.DataFrame:
    """An empty frame with the documented schema of ``table``."""
    return pl.DataFrame(schema=polars_schema(table))


def describe() -> pl.DataFrame:
    """All documented columns as one table (table, column, dtype, unit, meaning), e.g. for a notebook."""
    rows = [
        {"table": t, "column": c.name, "dtype": str(c.dtype), "unit": c.unit, "meaning": c.meaning}
        for t, cols in TABLES.items()
        for c in cols
    ]
    return pl.DataFrame(rows)
