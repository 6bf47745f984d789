"""The profiling config (YAML, see ``profiling/example.yaml``) and its expansion into one spec per run.

Why a grid: the corpus was produced by a launcher that ran one server per combination of tested values and
named each run folder after them (data card 4.2: ``_`` + server values each followed by ``_``, then ``_`` +
benchmark values joined by ``_``). The same naming is used here for ``run_id``, so profiled runs sit beside
the replayed ones in the same tables. As in the launcher, a combination with ``max_cpu_loras < max_loras`` is
skipped (served adapters >= A_max always).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from adaptwin.model_cards import corpus_name
from adaptwin.paths import resolve
from adaptwin.profiling.server import ServerArgs

SERVER_KEYS = ("max_loras", "max_cpu_loras", "max_lora_rank", "max_num_seqs")
TOP_KEYS = {
    "model",
    "family",
    "subfamily",
    "seed",
    "work_dir",
    "server",
    "adapters",
    "grid",
    "benchmark",
    "poller",
}
SERVER_OPTIONS = {
    "host",
    "port",
    "gpu_memory_utilization",
    "enable_prefix_caching",
    "max_num_batched_tokens",
    "python",
    "env",
    "extra_args",
    "ready_timeout_s",
    *SERVER_KEYS,
}
ADAPTER_OPTIONS = {"ranks", "target_modules", "model_shape"}


@dataclass(frozen=True)
class BenchmarkSpec:
    """Benchmark arguments of one run (names as in the ``runs`` table)."""

    mode: str = "by_time"  # by_time | fixed_count
    total_time_s: float | None = None
    adapter_rates: tuple[float, ...] = ()
    num_prompts: int | None = None
    request_rate_by_lora: float = math.inf
    restrict_loras: int | None = None
    disable_loras_users: bool = False
    lora_pre_loading: bool = False
    input_len: int = 250
    output_len: int = 231
    #: fixed-count only (vLLM's benchmark allows 6 h); a by-time request is bounded by the window instead,
    #: since the corpus's overloaded runs have mean TTFTs of over 1,500 s
    request_timeout_s: float = 21_600.0
    #: random_tokens: exactly input_len random token ids, ignore_eos (the profiling runs);
    #: sharegpt: first turns of a ShareGPT JSON file (dataset_path), generation ends at EOS or output_len
    dataset: str = "random_tokens"
    dataset_path: str | None = None
    #: [low, high) of random prompt token ids; a model with a small vocabulary needs a lower high
    token_ids: tuple[int, int] = (1000, 30000)

    @property
    def ignore_eos(self) -> bool:
        """Random-token prompts generate exactly ``output_len`` tokens; text prompts stop at EOS."""
        return self.dataset == "random_tokens"

    def validate(self) -> None:
        """Raise ValueError naming the field when the mode's required arguments are missing."""
        if self.mode not in ("by_time", "fixed_count"):
            raise ValueError(f"benchmark.mode: {self.mode!r} is not 'by_time' or 'fixed_count'")
        if self.dataset not in ("random_tokens", "sharegpt"):
            raise ValueError(f"benchmark.dataset: {self.dataset!r} is not 'random_tokens' or 'sharegpt'")
        low, high = self.token_ids
        if not 0 <= low < high:
            raise ValueError(f"benchmark.token_ids: {list(self.token_ids)} is not a range [low, high) with 0 <= low")
        if self.dataset == "sharegpt" and not self.dataset_path:
            raise ValueError("benchmark.dataset_path: sharegpt needs the path of a ShareGPT JSON file")
        if self.mode == "by_time" and not (self.total_time_s and self.adapter_rates):
            raise ValueError("benchmark: by_time needs total_time_s > 0 and a non-empty adapter_rates list")
        if self.mode == "fixed_count" and not (self.num_prompts and self.num_prompts > 0):
            raise ValueError("benchmark: fixed_count needs num_prompts > 0")
        if self.input_len < 1 or self.output_len < 1:
            raise ValueError(
                f"benchmark: input_len/output_len must be >= 1, got {self.input_len}/{self.output_len}"
            )


@dataclass(frozen=True)
class PollerSpec:
    """Metrics polling: interval (the corpus used ~2 s) and how long to keep polling after the benchmark."""

    interval_s: float = 2.0
    tail_s: float = 10.0


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs: its id, server arguments, adapter ranks (cycled over served adapters)."""

    run_id: str
    family: str
    subfamily: str | None
    model: str
    server: ServerArgs
    adapter_ranks: tuple[int, ...]
    benchmark: BenchmarkSpec
    poller: PollerSpec
    seed: int
    ready_timeout_s: float = 1200.0
    vllm_version: str | None = None  # of the target environment, when known before the server starts

    @property
    def served_adapters(self) -> int:
        """``--max-cpu-loras`` when given, else A_max; 0 without LoRA."""
        if not self.server.max_loras:
            return 0
        return self.server.max_cpu_loras or self.server.max_loras


@dataclass
class ProfileConfig:
    """A parsed config file: fixed settings plus the grid of tested values."""

    model: str
    family: str = "profiling"
    subfamily: str | None = None
    seed: int = 0
    work_dir: str = "data/profiling"
    server: dict[str, Any] = field(default_factory=dict)
    adapters: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    benchmark: dict[str, Any] = field(default_factory=dict)
    poller: dict[str, Any] = field(default_factory=dict)
    source: str = "<dict>"

    @property
    def ranks(self) -> tuple[int, ...]:
        """Adapter ranks to cycle over (each run keeps those <= its S_max)."""
        return tuple(int(r) for r in self.adapters.get("ranks", [8]))

    @property
    def target_modules(self) -> tuple[str, ...]:
        """LoRA target modules of the dummy adapters."""
        return tuple(self.adapters.get("target_modules", ("q_proj", "k_proj", "v_proj", "o_proj")))


def load_config(path: str | os.PathLike) -> ProfileConfig:
    """Read and check a profiling YAML file; errors name the file and the offending key."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return config_from_dict(data, source=str(path))


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> ProfileConfig:
    """Build a ``ProfileConfig`` from a dict (the YAML content)."""
    _check_keys(data, TOP_KEYS, source, "")
    _check_keys(data.get("server", {}), SERVER_OPTIONS, source, "server.")
    _check_keys(data.get("adapters", {}), ADAPTER_OPTIONS, source, "adapters.")
    _check_keys(data.get("grid", {}), set(SERVER_KEYS) | _bench_fields(), source, "grid.")
    _check_keys(data.get("benchmark", {}), _bench_fields(), source, "benchmark.")
    _check_keys(data.get("poller", {}), {f.name for f in fields(PollerSpec)}, source, "poller.")
    if "model" not in data:
        raise ValueError(f"{source}: `model` is required")
    known = {k: data[k] for k in TOP_KEYS if k in data}
    known["model"] = local_model(str(data["model"]))
    return ProfileConfig(**known, source=source)


def local_model(model: str) -> str:
    """A relative model folder that exists under the repository root becomes absolute (the server runs in
    another environment and the adapters are sized from its config.json, whatever the working directory);
    a Hugging Face id stays as given."""
    try:
        path = resolve(model)
    except FileNotFoundError:
        return model
    return str(path) if not os.path.isabs(model) and (path / "config.json").is_file() else model


def expand(cfg: ProfileConfig) -> list[RunSpec]:
    """One ``RunSpec`` per grid combination (cartesian product in the grid's key order)."""
    keys = list(cfg.grid)
    specs = []
    for values in itertools.product(*(_as_list(cfg.grid[k]) for k in keys)):
        spec = _spec(cfg, dict(zip(keys, values, strict=True)))
        if spec is not None:
            specs.append(spec)
    if len({s.run_id for s in specs}) != len(specs):
        raise ValueError(f"{cfg.source}: grid gives duplicate run ids")
    return specs


def _spec(cfg: ProfileConfig, point: dict[str, Any]) -> RunSpec | None:
    server_opts = {k: v for k, v in cfg.server.items() if k != "ready_timeout_s"}
    if server_opts.get("python"):
        server_opts["python"] = str(resolve(server_opts["python"]))
    server_opts["env"] = {str(k): str(v) for k, v in (server_opts.get("env") or {}).items()}
    server_opts.update({k: v for k, v in point.items() if k in SERVER_KEYS})
    server = ServerArgs(
        model=cfg.model,
        max_loras=server_opts.pop("max_loras", None),
        max_cpu_loras=server_opts.pop("max_cpu_loras", None),
        max_lora_rank=server_opts.pop("max_lora_rank", None),
        max_num_seqs=int(server_opts.pop("max_num_seqs", 256)),
        seed=cfg.seed,
        **server_opts,
    )
    if server.max_loras and server.max_cpu_loras is not None and server.max_cpu_loras < server.max_loras:
        return None  # the launcher skipped these: served adapters >= A_max
    ranks = _ranks(cfg, server)
    if server.max_loras and server.max_lora_rank is None:
        server = replace(server, max_lora_rank=max(ranks))
    bench_args = {**cfg.benchmark, **{k: v for k, v in point.items() if k not in SERVER_KEYS}}
    if "token_ids" in bench_args:
        bench_args["token_ids"] = tuple(int(t) for t in _as_list(bench_args["token_ids"]))
    if "adapter_rates" in bench_args:
        bench_args["adapter_rates"] = tuple(float(r) for r in _as_list(bench_args["adapter_rates"]))
    bench = BenchmarkSpec(**bench_args)
    bench.validate()
    return RunSpec(
        run_id=_run_id(cfg, point),
        family=cfg.family,
        subfamily=cfg.subfamily,
        model=cfg.model,
        server=server,
        adapter_ranks=ranks,
        benchmark=bench,
        poller=PollerSpec(**cfg.poller),
        seed=cfg.seed,
        ready_timeout_s=float(cfg.server.get("ready_timeout_s", 1200.0)),
    )


def _ranks(cfg: ProfileConfig, server: ServerArgs) -> tuple[int, ...]:
    if not server.max_loras:
        return ()
    ranks = tuple(r for r in cfg.ranks if server.max_lora_rank is None or r <= server.max_lora_rank)
    if not ranks:
        raise ValueError(
            f"{cfg.source}: no adapter rank in {list(cfg.ranks)} fits max_lora_rank {server.max_lora_rank}"
        )
    return ranks


def model_key(model: str) -> str:
    """The model's name in the tables: last path component, lower case, with the corpus's spelling
    (``meta-llama/Llama-3.1-8B-Instruct`` -> ``llama-3.1-8b-instruct``, ``Qwen/Qwen2.5-7B-Instruct`` ->
    ``qwen-2.5-7b-instruct``)."""
    return corpus_name(model)


def folder_name(server_values: list[Any], bench_values: list[Any]) -> str:
    """The launcher's run folder name: ``_128_16_`` or ``_400__1_200`` (data card 4.2)."""
    name = "_" + "".join(f"{_fmt(v)}_" for v in server_values)
    return name + ("_" + "_".join(_fmt(v) for v in bench_values) if bench_values else "")


def _run_id(cfg: ProfileConfig, point: dict[str, Any]) -> str:
    server_values = [point[k] for k in SERVER_KEYS if k in point]  # the corpus's order: A_max, served, S_max
    bench_values = [v for k, v in point.items() if k not in SERVER_KEYS]
    parts = [cfg.family, model_key(cfg.model), cfg.subfamily, folder_name(server_values, bench_values)]
    return "/".join(p for p in parts if p)


def _fmt(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "-".join(_fmt(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _bench_fields() -> set[str]:
    return {f.name for f in fields(BenchmarkSpec)}


def _check_keys(section: Any, allowed: set[str], source: str, prefix: str) -> None:
    if not isinstance(section, dict):
        raise ValueError(f"{source}: `{prefix.rstrip('.') or 'config'}` must be a mapping, got {section!r}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {[prefix + k for k in unknown]} (allowed: {sorted(allowed)})"
        )
