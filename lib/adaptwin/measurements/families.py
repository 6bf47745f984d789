"""The folder families of the data card (section 5): where each lives, how its run folders are named, which
benchmark and clock it used.

A run folder name encodes the launcher's tested values (data card 4.2): ``_`` + each server value + ``_``,
then ``_`` + the benchmark values joined by ``_``, then ``_run_<i>`` for repetitions. The *meaning* of
each position depends on the family (and sometimes the sub-folder), so it is listed here; the values are
only a fallback and a cross-check, the ``Namespace(...)`` line of the log is the ground truth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adaptwin.model_cards import CARDS

MODELS = tuple(CARDS)

_DTD = "digital_twin_dynamic/estimators/"
_DEF = "benchmarks/lora/definitive_results/"


@dataclass(frozen=True)
class Layout:
    """Meaning of the folder-name values for run folders whose subfamily starts with ``prefix``."""

    prefix: str
    server: tuple[str, ...]
    bench: tuple[str, ...] = ()


@dataclass(frozen=True)
class Family:
    """One folder family: ``root`` is relative to the vllm-measurements folder; runs sit below
    ``root/<model>/<subfamily...>/<run folder>``."""

    name: str
    root: str
    benchmark: str  # fixed_count | by_time
    time_base: str  # perf_counter | poller_start
    layouts: tuple[Layout, ...]
    description: str

    def layout(self, subfamily: str | None) -> Layout:
        """The folder-name layout for ``subfamily`` (longest matching prefix)."""
        sub = subfamily or ""
        matches = [lay for lay in self.layouts if sub.startswith(lay.prefix)]
        return max(matches, key=lambda lay: len(lay.prefix))


FAMILIES: tuple[Family, ...] = (
    Family("default_latency", _DTD + "predictor_default_latency", "fixed_count", "perf_counter",
           (Layout("", ("max_num_seqs",), ("input_words", "output_len")),),
           "5.1 base-model prefill/decode latency without LoRA"),
    Family("lora_compute_overhead", _DTD + "predictor_latency_overhead", "fixed_count", "perf_counter",
           (Layout("find_max_batch_small", ("max_loras", "max_lora_rank"), ("input_words", "output_len")),
            Layout("initial_points_small", ("max_num_seqs",), ("input_words", "output_len")),
            Layout("overhead_small", ("max_num_seqs", "max_loras", "max_lora_rank"),
                   ("input_words", "output_len", "restrict_loras"))),
           "5.2 decode slow-down vs distinct adapters per batch"),
    Family("adapter_loading", _DTD + "predictor_loading", "fixed_count", "perf_counter",
           (Layout("", ("max_lora_rank",)),),
           "5.3 CPU-to-GPU adapter loading time (server_out.log)"),
    Family("available_gpu_memory", _DTD + "find_available_gpu_memory_depending_on_loaded_adapters",
           "fixed_count", "perf_counter",
           (Layout("", ("max_loras", "max_lora_rank")),),
           "5.4 KV-cache capacity left after reserving A_max slots of rank S_max (server_out.log)"),
    Family("real_results", _DEF + "digital_twin_modelling/real_results", "by_time", "perf_counter",
           (Layout("", ("max_loras", "max_cpu_loras", "max_lora_rank")),),
           "5.6 one-hour by-time validation runs, Llama-3.1-8B"),
    Family("heterogeneous_results", _DEF + "ml_modelling/test_dataset", "by_time", "perf_counter",
           (Layout("", ("max_loras", "max_cpu_loras", "max_lora_rank")),),
           "5.9 one-hour by-time runs with hot and cold adapters (three rates up to 128x apart) and mixed ranks"),
    Family("motivation_with_slots", _DEF + "motivation_figure/with_slots", "by_time", "perf_counter",
           (Layout("loaded_adapters_rate", ("max_loras", "max_cpu_loras", "max_lora_rank")),
            Layout("loaded_adapters_without_offloading", ("max_loras", "max_lora_rank"))),
           "5.7 motivation figure, more served adapters than slots, 300 s by-time"),
    Family("motivation_without_slots", _DEF + "motivation_figure/without_slots", "fixed_count",
           "poller_start",
           (Layout("", ("max_loras", "max_lora_rank"), ("request_rate_by_lora",)),
            Layout("varying_output_length", ("max_loras", "max_lora_rank"), ("request_rate_by_lora", "output_len"))),
           "5.7 motivation figure, served = A_max, 4,096-request Poisson stream"),
    Family("memory_overhead", _DEF + "performance_analysis/memory_overhead", "fixed_count", "poller_start",
           (Layout("", ("max_loras", "max_lora_rank")),),
           "5.8 effect of reserving LoRA slot memory (all requests to the base model)"),
    Family("compute_overhead", _DEF + "performance_analysis/compute_overhead", "fixed_count", "poller_start",
           (Layout("", ("max_loras", "max_lora_rank"), ("restrict_loras",)),),
           "5.8 effect of the number of adapters used"),
    Family("loading_overhead", _DEF + "performance_analysis/loading_overhead/latency", "fixed_count",
           "poller_start",
           (Layout("", ("max_loras", "max_lora_rank")),),
           "5.8 one adapter, one slot, 100 requests, 5 repetitions (shared servers)"),
)

#: The two scheduler-overhead CSVs and the hand-transcribed load-time table (relative paths).
SCHEDULER_CSVS = {
    "adapter_rates": _DEF + "performance_analysis/scheduler_overhead/metrics_data_adapter_rates.csv",
    "aggregated_rate": _DEF + "performance_analysis/scheduler_overhead/metrics_data_aggregated_rate.csv",
}
LORA_LOAD_TIMES_CSV = _DEF + "performance_analysis/loading_overhead/loading/lora_load_times.csv"
#: The authors' fitted constants: (estimator, folder, file-name suffix after the model name). The
#: ``qwen-2.5-7b-instruct_results.json`` of predictor_loading duplicates its ``_constants.json`` and is skipped.
CONSTANTS_FILES: tuple[tuple[str, str, str], ...] = (
    ("prefill", _DTD + "predictor_default_latency", "_prefill_constants.json"),
    ("decode", _DTD + "predictor_default_latency", "_decode_constants.json"),
    ("lora_overhead", _DTD + "predictor_latency_overhead", "_constants.json"),
    ("loading", _DTD + "predictor_loading", "_constants.json"),
)

_RUN_SUFFIX = re.compile(r"_run_(\d+)$")
_VALUE = re.compile(r"[^_]+")


@dataclass(frozen=True)
class Location:
    """Where a run folder sits: its family, model folder and subfamily (None if directly under the model)."""

    family: Family
    model: str | None
    subfamily: str | None


def locate(rel_path: str) -> Location | None:
    """Family, model and subfamily of a run folder given relative to the vllm-measurements root, or None."""
    for fam in FAMILIES:
        if rel_path.startswith(fam.root + "/"):
            parts = rel_path[len(fam.root) + 1 :].split("/")
            model = parts[0] if len(parts) > 1 else None
            sub = "/".join(parts[1:-1]) or None
            return Location(fam, model, sub)
    return None


@dataclass(frozen=True)
class FolderName:
    """Values decoded from a run folder name (strings; numbers are converted by the caller)."""

    server: tuple[str, ...]
    bench: tuple[str, ...]
    run_index: int | None


def parse_folder_name(name: str) -> FolderName:
    """Decode ``_<s1>_<s2>_[_<b1>_<b2>][_run_<i>]`` (data card 4.2).

    Raises ValueError naming the folder when it does not follow the pattern.
    """
    run_index = None
    m = _RUN_SUFFIX.search(name)
    stem = name[: m.start()] if m else name
    if m:
        run_index = int(m.group(1))
    if not stem.startswith("_"):
        raise ValueError(f"run folder {name!r}: name does not start with '_' (launcher pattern _<server>_<_bench>)")
    if "__" in stem:
        server_part, bench_part = stem[1:].split("__", 1)
    elif stem.endswith("_"):
        server_part, bench_part = stem[1:-1], ""
    else:
        raise ValueError(f"run folder {name!r}: no '__' separator and no trailing '_' (launcher pattern)")
    server = tuple(_VALUE.findall(server_part))
    bench = tuple(_VALUE.findall(bench_part))
    for value in server:
        if not _is_number(value):
            raise ValueError(f"run folder {name!r}: server value {value!r} is not a number")
    return FolderName(server, bench, run_index)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
