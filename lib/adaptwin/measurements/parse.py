"""Parsers for the text files of one run: ``log_*.out`` (Namespace line, summary block, benchmark prints),
the server command line inside it, ``server_out.log`` (KV capacity, model memory, adapter loads),
``openai-*.json`` and the failure signatures of ``server_err.log`` / ``log_*.err`` (data card 4.3-4.7).

All functions are pure (text in, values out) so they can be tested on small strings.
"""

from __future__ import annotations

import ast
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

# --- summary block (data card 4.3) -------------------------------------------------------------------------

SUMMARY_HEADERS = (
    "============ Serving Benchmark Result ============",
    "===== Serving Benchmark Intermediate Result ======",
)
_SUMMARY_END = "=" * 50

#: Summary label -> column of ``runs`` (and whether the value is a count).
SUMMARY_LABELS: dict[str, tuple[str, bool]] = {
    "Successful requests": ("successful_requests", True),
    "Benchmark duration (s)": ("duration_s", False),
    "Total input tokens": ("total_input_tokens", True),
    "Total generated tokens": ("total_output_tokens", True),
    "Request throughput (req/s)": ("request_throughput", False),
    "Input token throughput (tok/s)": ("input_throughput", False),
    "Output token throughput (tok/s)": ("output_throughput", False),
    "Mean TTFT (ms)": ("ttft_mean_ms", False),
    "Median TTFT (ms)": ("ttft_median_ms", False),
    "P99 TTFT (ms)": ("ttft_p99_ms", False),
    "Mean TPOT (ms)": ("tpot_mean_ms", False),
    "Median TPOT (ms)": ("tpot_median_ms", False),
    "P99 TPOT (ms)": ("tpot_p99_ms", False),
    "Mean ITL (ms)": ("itl_mean_ms", False),
    "Median ITL (ms)": ("itl_median_ms", False),
    "P99 ITL (ms)": ("itl_p99_ms", False),
}

#: openai-*.json key -> column of ``runs``.
JSON_KEYS: dict[str, str] = {
    "completed": "successful_requests",
    "duration": "duration_s",
    "total_input_tokens": "total_input_tokens",
    "total_output_tokens": "total_output_tokens",
    "request_throughput": "request_throughput",
    "input_throughput": "input_throughput",
    "output_throughput": "output_throughput",
    "mean_ttft_ms": "ttft_mean_ms",
    "median_ttft_ms": "ttft_median_ms",
    "p99_ttft_ms": "ttft_p99_ms",
    "mean_tpot_ms": "tpot_mean_ms",
    "median_tpot_ms": "tpot_median_ms",
    "p99_tpot_ms": "tpot_p99_ms",
    "mean_itl_ms": "itl_mean_ms",
    "median_itl_ms": "itl_median_ms",
    "p99_itl_ms": "itl_p99_ms",
}


def parse_summary(text: str) -> dict[str, float | int] | None:
    """The last complete summary block of a log as ``{column: value}``, or None if there is none.

    A block counts only if it has its closing line of 50 '=' and all 16 labels; values are split on
    whitespace because very large numbers fill the column.
    """
    lines = text.splitlines()
    result = None
    i = 0
    while i < len(lines):
        if lines[i].strip() in SUMMARY_HEADERS:
            block, j = {}, i + 1
            while j < len(lines) and lines[j].strip() != _SUMMARY_END:
                label, sep, value = lines[j].partition(":")
                if sep and label.strip() in SUMMARY_LABELS:
                    column, is_count = SUMMARY_LABELS[label.strip()]
                    number = float(value.split()[0])
                    block[column] = int(number) if is_count else number
                j += 1
            if j < len(lines) and len(block) == len(SUMMARY_LABELS):
                result = block
            i = j
        i += 1
    return result


# --- Namespace line ------------------------------------------------------------------------------------------

_NAMES = {"inf": math.inf, "nan": math.nan, "True": True, "False": False, "None": None}


def parse_namespace(line: str) -> dict[str, Any]:
    """``Namespace(a=1, b='x', c=inf, ...)`` -> dict, using Python's parser (values are Python literals).

    Raises ValueError naming the offending argument when a value is not a literal.
    """
    call = ast.parse(line.strip(), mode="eval").body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Namespace"):
        raise ValueError(f"not a Namespace(...) line: {line[:80]!r}")
    out: dict[str, Any] = {}
    for kw in call.keywords:
        if isinstance(kw.value, ast.Name) and kw.value.id in _NAMES:
            out[kw.arg] = _NAMES[kw.value.id]
        else:
            try:
                out[kw.arg] = ast.literal_eval(kw.value)
            except ValueError as exc:
                raise ValueError(f"Namespace argument {kw.arg!r}: value is not a literal") from exc
    return out


@dataclass
class ServerArgs:
    """The vLLM server arguments that matter, from ``server_args='...'`` (paths reduced to the last part)."""

    model: str | None = None
    enable_lora: bool = False
    max_loras: int | None = None
    max_cpu_loras: int | None = None
    max_lora_rank: int | None = None
    max_num_seqs: int | None = None
    dummy_lora_modules: list[str] = field(default_factory=list)
    lora_modules: list[str] = field(default_factory=list)
    disable_log_stats: bool = False


_RANK = re.compile(r"rank_(\d+)")


def _last_part(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def parse_server_args(text: str) -> ServerArgs:
    """Parse the server command line (``--key=value`` or ``--key value``, shell quoting)."""
    tokens = shlex.split(text)
    args = ServerArgs()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            i += 1
            continue
        key, sep, value = tok[2:].partition("=")
        if not sep and i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            value, i = tokens[i + 1], i + 1
        _apply_server_arg(args, key, value)
        i += 1
    return args


def _apply_server_arg(args: ServerArgs, key: str, value: str) -> None:
    ints = {"max-loras": "max_loras", "max-cpu-loras": "max_cpu_loras", "max-lora-rank": "max_lora_rank",
            "max-num-seqs": "max_num_seqs"}
    if key in ints:
        setattr(args, ints[key], int(value))
    elif key == "model":
        args.model = _last_part(value)
    elif key == "enable-lora":
        args.enable_lora = True
    elif key == "disable-log-stats":
        args.disable_log_stats = True
    elif key == "dummy-lora-modules":
        args.dummy_lora_modules = [_last_part(p) for p in value.split()]
    elif key == "lora-modules":
        # name=path pairs
        args.lora_modules = [_last_part(p.partition("=")[2] or p) for p in value.split()]


def adapter_rank(folder: str) -> int | None:
    """Rank of a dummy adapter folder name such as ``lora-finance_dummy_rank_16``."""
    m = _RANK.search(folder)
    return int(m.group(1)) if m else None


# --- the rest of log_*.out ---------------------------------------------------------------------------------

_ARRAY = r"\[([^\]]*)\]"
_RATES = re.compile(r"Adapter rates\. Values: " + _ARRAY + r"\. Counts: " + _ARRAY, re.S)
_NUM_ADAPTERS = re.compile(r"^Number of adapters: (\d+)", re.M)
_PROMPT_LEN = re.compile(r"^Generated prompt with (\d+) input length", re.M)
_TRAFFIC = re.compile(r"^Traffic request rate: (\S+)", re.M)
_POOL = re.compile(r"^Prompts retrieved: (\d+) \. Total input tokens: (\d+) \. Total output tokens: (\d+)", re.M)
_POLL_ERROR = "Error while running usage checker"


@dataclass
class LogInfo:
    """What one ``log_*.out`` says."""

    job_id: int
    namespace: dict[str, Any] | None
    namespace_error: str | None
    summary: dict[str, float | int] | None
    num_adapters: int | None = None
    adapter_rates: list[float] | None = None
    adapter_rate_counts: list[int] | None = None
    prompt_len: int | None = None
    traffic_request_rate: float | None = None
    poll_errors: int = 0
    pool: tuple[int, int, int] | None = None  # by-time pre-sampled pool: prompts, input tokens, output tokens


def parse_log(text: str, job_id: int) -> LogInfo:
    """Parse the benchmark stdout of job ``job_id``. A malformed Namespace is recorded, not raised."""
    namespace, ns_error = None, None
    for line in text.splitlines():
        if line.startswith("Namespace("):
            try:
                namespace = parse_namespace(line)
            except (SyntaxError, ValueError) as exc:
                ns_error = f"unparsable Namespace line: {exc}"
            break
    info = LogInfo(job_id, namespace, ns_error, parse_summary(text))
    if m := _NUM_ADAPTERS.search(text):
        info.num_adapters = int(m.group(1))
    if m := _RATES.search(text):
        info.adapter_rates = [float(x) for x in m.group(1).split()]
        info.adapter_rate_counts = [int(x) for x in m.group(2).split()]
    if m := _PROMPT_LEN.search(text):
        info.prompt_len = int(m.group(1))
    if m := _TRAFFIC.search(text):
        info.traffic_request_rate = float(m.group(1))
    if m := _POOL.search(text):
        info.pool = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    info.poll_errors = text.count(_POLL_ERROR)
    return info


# --- server_out.log (data card 4.7) ------------------------------------------------------------------------

_KV = re.compile(r"GPU KV cache size: ([\d,]+) tokens")
_MODEL_LOAD = re.compile(r"Model loading took ([\d.]+) GiB and ([\d.]+) seconds")
_VERSION = re.compile(r"vLLM API server version (\S+)")
_LOADS = re.compile(r"Total loads from (disk|memory): (\d+)\. Total loading time from \1: ([0-9.eE+-]+) seconds")
_SERVER_ARG = re.compile(r"\b(max_loras|max_lora_rank|max_cpu_loras|max_num_seqs|gpu_memory_utilization|enable_lora"
                         r"|lora_modules|dummy_lora_modules)=([^,)]+)")


@dataclass
class ServerOut:
    """What one ``server_out.log`` says."""

    version: str | None = None
    kv_tokens: int | None = None
    model_memory_gib: float | None = None
    model_loading_s: float | None = None
    args: dict[str, float | int | bool | str | None] = field(default_factory=dict)
    loads: list[tuple[str, int, float]] = field(default_factory=list)  # (source, cumulative N, cumulative s)


def parse_server_out(text: str) -> ServerOut:
    """KV capacity, model memory, server arguments and the cumulative adapter-loading lines."""
    out = ServerOut()
    if m := _VERSION.search(text):
        out.version = m.group(1)
    if m := _KV.search(text):
        out.kv_tokens = int(m.group(1).replace(",", ""))
    if m := _MODEL_LOAD.search(text):
        out.model_memory_gib, out.model_loading_s = float(m.group(1)), float(m.group(2))
    args_line = next((ln for ln in text.splitlines() if "args: Namespace(" in ln), "")
    for key, value in _SERVER_ARG.findall(args_line):
        out.args[key] = _literal(value)
    out.loads = [(s, int(n), float(t)) for s, n, t in _LOADS.findall(text)]
    return out


def _literal(value: str) -> float | int | bool | str | None:
    if value in _NAMES:
        return _NAMES[value]
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


# --- openai-*.json (data card 4.4) --------------------------------------------------------------------------


@dataclass
class JsonResult:
    """A parsed ``openai-*.json``: the summary columns, or ``placeholder`` text for hand-made files."""

    summary: dict[str, float | int] | None
    start_time: float | None
    end_time: float | None
    placeholder: str | None


def parse_result_json(text: str) -> JsonResult:
    """Parse an ``openai-*.json``. Raises ValueError (json) when the file is not valid JSON."""
    data = json.loads(text)
    if "manually created" in data:
        return JsonResult(None, None, None, f"manually created: {data['manually created']}")
    missing = [k for k in JSON_KEYS if k not in data]
    if missing:
        raise ValueError(f"keys {missing} missing")
    summary = {col: data[key] for key, col in JSON_KEYS.items()}
    return JsonResult(summary, data.get("start_time"), data.get("end_time"), None)


# --- failure signatures (data card 4.6) ---------------------------------------------------------------------

#: (status, short reason, substring) in priority order: the first one found decides.
FAILURE_SIGNATURES: tuple[tuple[str, str, str], ...] = (
    ("memory_error", "no memory for KV cache blocks", "No available memory for the cache blocks"),
    ("memory_error", "CUDA out of memory", "CUDA out of memory"),
    ("memory_error", "CUDA out of memory", "OutOfMemoryError"),
    ("memory_error", "cuBLAS allocation failed", "CUBLAS_STATUS_ALLOC_FAILED"),
    ("memory_error", "KV cache below one max-length sequence",
     "is larger than the maximum number of tokens that can be stored in KV cache"),
    ("memory_error", "KV cache below one max-length sequence",
     "To serve at least one request with the models's max seq len"),
    ("crash", "uncorrectable ECC error", "uncorrectable ECC error"),
    ("crash", "illegal memory access", "an illegal memory access was encountered"),
    ("crash", "CUDA unknown error", "CUDA unknown error"),
    ("crash", "port clash", "address already in use"),
    ("no_summary", "by-time benchmark ran out of prompts", "Task without enough requests to send"),
    ("cancelled", "Slurm time limit", "DUE TO TIME LIMIT"),
    ("cancelled", "cancelled manually", "CANCELLED AT"),
    ("no_summary", "server did not start on time", "Server did not start on time"),
)


def classify_failure(texts: dict[str, str]) -> tuple[str, str]:
    """Status and reason of a run without a result, from ``{file name: text}`` of its error logs.

    The reason is ``'<short reason> (<file>: <matching line>)'``. "All requests failed" is spurious (4.6)
    and never matches.
    """
    for status, short, needle in FAILURE_SIGNATURES:
        for name, text in texts.items():
            pos = text.find(needle)
            if pos >= 0:
                return status, f"{short} ({name}: {_line_at(text, pos)})"
    return "no_summary", "no summary block and no known failure signature"


def find_signature(texts: dict[str, str], needle: str) -> str | None:
    """``'<file>: <line>'`` of the first occurrence of ``needle``, or None."""
    for name, text in texts.items():
        pos = text.find(needle)
        if pos >= 0:
            return f"{name}: {_line_at(text, pos)}"
    return None


def _line_at(text: str, pos: int, limit: int = 300) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    line = text[start : end if end >= 0 else len(text)].strip()
    return line[:limit]


_KV_GIB = re.compile(r"\(([\d.]+) GiB KV cache is needed, which is larger than the available KV cache memory "
                     r"\(([\d.]+) GiB\)")


def kv_shortfall(text: str) -> tuple[float, float] | None:
    """(needed GiB, available GiB) from the vLLM 0.8.5 max-seq-len error, or None."""
    m = _KV_GIB.search(text)
    return (float(m.group(1)), float(m.group(2))) if m else None
