"""The loop on a live engine: profile a real vLLM with the harness, calibrate the twin from those runs, run
by-time serving runs over a small grid, and compare the twin with them.

Why a module of its own: the corpus's calibration reads the GPU fork's profiling families (and log lines stock
vLLM does not print). Stock vLLM exposes less, so this builds the twin's calibration JSON (the public format of
`adaptwin.calibration.costs`) from what a live server does show:

- decode step time against batch: the median time per output token of N requests sent at once to one adapter
  (all prompts fit one step's token budget, so the rest of the run is decode steps of batch N);
- prefill cost per token and per request: the time to first token of requests sent one at a time with a short and a long
  prompt (the per-request part also holds the HTTP and tokenizer work the client waits for);
- LoRA overhead against distinct adapters: the median time per output token of the largest batch spread over
  every served adapter, over the same batch on one adapter (one adapter's cost is inside the step fit, as
  every request of these runs uses an adapter);
- adapter loading: no log line of stock vLLM reports it, so it is the extra time to first token of a
  swap-heavy run (A_max 1, requests round-robin over the adapters, one at a time) over the same run with
  every adapter resident (A_max = served), per swap;
- KV capacity: the server's startup line (the CPU backend's KV cache size does not depend on the slots).

Those are the client's timings, the fallback. Every run also records what the engine's own histograms grew
by over it (``engine_metrics.json``: scheduled-to-first-token, decode and queue times, stamped inside the
engine core), and where the runs a term needs have them the term comes from those instead (`engine_terms`):
the client's times to first token of a crowd hold the API server admitting the requests one after another,
which made the per-request prefill cost several times what a step spends on a prompt. With the server's
``--enable-logging-iteration-details`` every run also keeps the engine's log line of each of its steps
(``engine_steps.csv``), and the step terms are fitted to those steps first (`log_terms`): the histograms
only give per-request means of short runs, which one stall of the shared CPU moves by a factor of two. A
steady run (prompts arriving one by one at one adapter while others decode) gives the fit the steps of a busy
engine, the regime the twin predicts. The calibration JSON's ``sources.step_costs`` names the path each term
took.

The scheduler's fixed time per step is part of the measured steps; its walk past waiting requests it cannot
admit (A_max taken by other adapters) grows with the queue, and is timed on vLLM's own scheduler in-process
(`scan_probe`, run by the loop after the servers stop). Every server is started once and
shared by the runs of its A_max (one start costs about a minute of the core it computes on).

Last, with a ``placement`` section, a small workload is placed with the live calibration, exported, and each
GPU's exported script is served live with its routed traffic (`live_place`); the outcome is the ``placement``
block of the validation JSON.

    python -m adaptwin.profiling.live_loop profiling/live_loop.yaml
    python -m adaptwin.profiling.live_loop profiling/live_loop.yaml --from-runs [--place]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from adaptwin.calibration.costs import from_dict
from adaptwin.io import write_json
from adaptwin.paths import resolve
from adaptwin.profiling import adapters as adapters_mod
from adaptwin.profiling import cpu_share, engine_steps, live_place, replay, runner
from adaptwin.profiling.config import ProfileConfig, RunSpec, config_from_dict, expand, model_key
from adaptwin.profiling.server import ProfilingUnavailable, check_environment, read_logs, vllm_version
from adaptwin.profiling.writers import SENT_NAME, kv_capacity_row, to_frame, write_tables
from adaptwin.rules import STARVATION_RATIO
from adaptwin.rules import smape as smape_terms

#: the contract keys of the validation JSON
METRIC_KEYS = ("throughput_smape_pct", "itl_smape_pct", "ttft_smape_pct", "starvation_agreement", "runs")
TOP_KEYS = {"harness", "calibration", "validation"}
OPTIONAL_KEYS = {"placement"}
CALIBRATION_KEYS = {"model_name", "out", "batches", "decode_output_len", "long_input_len", "swap_requests",
                    "swap_rate_by_lora", "crowd_repeats", "scan_requests", "steady_requests", "steady_rate"}
VALIDATION_KEYS = {"max_loras", "rate_sets", "total_time_s", "repeats", "out", "cpu_share"}
TRACE_NAME = "twin_trace.csv"
CPU_SHARE_NAME = "cpu_share.json"  # per run: the engine core's CPU time and run-queue wait (`cpu_share`)
STEPS_NAME = "engine_steps.csv"  # per run: the engine's iteration log lines of the run (`engine_steps`)
SCAN_PROBE_NAME = "scan_probe.json"  # vLLM's scheduler timed in-process walking the waiting queue (`scan_probe`)
SCAN_PROBE = Path(__file__).with_name("scan_probe.py")


class LoopConfigError(ValueError):
    """A loop configuration that cannot run, with the file and field named."""


@dataclass(frozen=True)
class LoopConfig:
    """The harness config (one grid point: S_max, served adapters, server arguments) and the loop's plan."""

    harness: dict[str, Any]
    calibration: dict[str, Any]
    validation: dict[str, Any]
    source: str
    placement: dict[str, Any] | None = None

    @property
    def served(self) -> int:
        """Served adapters (``max_cpu_loras`` of the harness grid)."""
        return int(self.harness["grid"]["max_cpu_loras"][0])


def load_loop_config(path: str | Path) -> LoopConfig:
    """Read and check the loop YAML; a bad field raises `LoopConfigError` naming the file, field and value."""
    path = Path(path)
    if not path.exists():
        raise LoopConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LoopConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise LoopConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return loop_config_from_dict(data, str(path))


def loop_config_from_dict(data: dict[str, Any], source: str = "<dict>") -> LoopConfig:
    """Check the sections' keys and values (the harness section through the harness's own checks)."""
    for section, allowed in ((data, TOP_KEYS | OPTIONAL_KEYS), (data.get("calibration", {}), CALIBRATION_KEYS),
                             (data.get("validation", {}), VALIDATION_KEYS),
                             (data.get("placement") or {}, live_place.PLACEMENT_KEYS)):
        unknown = sorted(set(section) - allowed)
        if unknown:
            raise LoopConfigError(f"{source}: unknown key {unknown[0]!r} (allowed: {sorted(allowed)})")
    for key in sorted(TOP_KEYS):
        if key not in data:
            raise LoopConfigError(f"{source}: section {key!r} is missing")
    try:
        config_from_dict(data["harness"], f"{source}: harness")
    except ValueError as exc:
        raise LoopConfigError(str(exc)) from exc
    grid = data["harness"].get("grid", {})
    for key in ("max_cpu_loras", "max_lora_rank"):
        if len(grid.get(key, [])) != 1:
            raise LoopConfigError(f"{source}: harness.grid.{key}: one value expected, got {grid.get(key)!r}")
    cfg = LoopConfig(data["harness"], data["calibration"], data["validation"], source, data.get("placement"))
    check_placement(cfg)
    for max_loras in cfg.validation.get("max_loras", []):
        if not isinstance(max_loras, int) or not 1 <= max_loras <= cfg.served:
            raise LoopConfigError(f"{source}: validation.max_loras: {max_loras!r} is not in 1..{cfg.served}")
    for rates in cfg.validation.get("rate_sets", []):
        if not isinstance(rates, list) or not rates or any(not isinstance(r, (int, float)) or r <= 0 for r in rates):
            raise LoopConfigError(f"{source}: validation.rate_sets: {rates!r} is not a list of rates > 0")
    batches = cfg.calibration.get("batches", [])
    if len(batches) < 2 or any(not isinstance(b, int) or b < 1 for b in batches):
        raise LoopConfigError(f"{source}: calibration.batches: {batches!r} needs two or more batch sizes >= 1")
    return cfg


def check_placement(cfg: LoopConfig) -> None:
    """The placement section's workload: [adapter_id, rank, rate] rows, ranks the harness makes adapters of."""
    if cfg.placement is None:
        return
    rows = cfg.placement.get("adapters")
    if not isinstance(rows, list) or not rows:
        raise LoopConfigError(f"{cfg.source}: placement.adapters: a list of [adapter_id, rank, rate] is needed")
    s_max = int(cfg.harness["grid"]["max_lora_rank"][0])
    for row in rows:
        ok = isinstance(row, list) and len(row) == 3 and isinstance(row[1], int) and 0 < row[1] <= s_max
        if not ok or not isinstance(row[2], (int, float)) or row[2] <= 0:
            raise LoopConfigError(f"{cfg.source}: placement.adapters: {row!r} is not [adapter_id, rank <= "
                                  f"{s_max}, rate > 0]")


# ---- runs on one shared server ---------------------------------------------------------------------------
class SharedServer:
    """One started server (A_max fixed) on which the loop runs its benchmarks one after the other."""

    def __init__(self, loop: LoopConfig, max_loras: int, version: str | None, factory: runner.ServerFactory,
                 work_dir: Path) -> None:
        self.loop, self.version, self.work_dir = loop, version, work_dir
        self.cfg = self._cfg(fixed(1))  # any valid benchmark: the server's spec does not depend on it
        base = self._spec(self.cfg)
        self.spec = replace(base, server=replace(base.server, max_loras=max_loras), vllm_version=version)
        self.factory, self.server, self.log_dir = factory, None, work_dir / "servers" / f"amax{max_loras}"
        self.rows: list[dict[str, Any]] = []
        self.shares: dict[str, dict[str, float]] = {}

    def _cfg(self, benchmark: dict[str, Any]) -> ProfileConfig:
        data = dict(self.loop.harness)
        data["benchmark"] = {**data.get("benchmark", {}), **benchmark}
        data["work_dir"] = str(self.work_dir)
        return config_from_dict(data, self.loop.source)

    @staticmethod
    def _spec(cfg: ProfileConfig) -> RunSpec:
        return expand(cfg)[0]

    @contextlib.contextmanager
    def started(self) -> Iterator[SharedServer]:
        """Start the server with the harness's launcher (adapters as the runs name them), stop it after."""
        shape = adapters_mod.resolve_model_shape(self.spec.model, self.cfg.adapters.get("model_shape"))
        ranks = adapters_mod.ensure_adapters(self.work_dir / "adapters" / model_key(self.spec.model),
                                             list(self.spec.adapter_ranks), self.spec.model, shape,
                                             self.cfg.target_modules)
        with self.factory(self.spec, runner.lora_modules(self.spec, ranks), self.log_dir) as srv:
            self.server = srv
            yield self
        self.server = None

    def spec_for(self, name: str, benchmark: dict[str, Any]) -> tuple[ProfileConfig, RunSpec]:
        """The harness config and run spec of run ``name`` on this server (no server needed)."""
        cfg = self._cfg(benchmark)
        return cfg, replace(self._spec(cfg), server=self.spec.server, vllm_version=self.version,
                            run_id=f"live/loop/amax{self.spec.server.max_loras}/{name}")

    def run(self, name: str, benchmark: dict[str, Any]) -> dict[str, Any]:
        """One harness run (``runner.run_one``) on this server; returns its ``runs`` row (status checked)."""
        cfg, spec = self.spec_for(name, benchmark)
        process = getattr(self.server, "process", None)
        sizes = engine_steps.log_sizes(self.log_dir)
        with cpu_share.measured(process.pid if process is not None else None) as share:
            outcome = runner.run_one(spec, cfg, self.work_dir, lambda *_: contextlib.nullcontext(self.server))
        self.shares[spec.run_id] = share.as_dict()
        if len(steps := engine_steps.steps_since(self.log_dir, sizes)):
            path = self.work_dir / "runs" / spec.run_id / STEPS_NAME
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savetxt(path, steps, delimiter=",", header=",".join(engine_steps.COLUMNS), comments="")
        if spec.benchmark.mode == "by_time":
            write_trace(spec, self.work_dir / "runs" / spec.run_id / TRACE_NAME)
        row = outcome.run
        if row.get("status") != "ok":
            raise RuntimeError(f"live run {spec.run_id} failed: {row.get('status')} {row.get('reason')}")
        print(f"  {spec.run_id}: {row['total_throughput']:.0f} tok/s, ITL {row['itl_median_ms']:.1f} ms, "
              f"TTFT {row['ttft_median_ms']:.1f} ms, CPU slowdown {share.slowdown:.2f}", flush=True)
        self.rows.append(row)
        return row



def write_trace(spec: RunSpec, path: Path) -> Path:
    """The run's request schedule as a twin trace with each request's adapter (`replay.write_trace`; the
    index is the adapter's position in ``dummy-0 .. dummy-(n-1)``, the order of `twin_scenario`).

    The harness draws it from the run's seed, so it is drawn again here: the twin then replays the arrivals
    the server saw, not another Poisson sample (30 s of a few requests/s differ by 10 % from sample to
    sample, as much as the error being measured). Where the run recorded when the client really sent each
    request (``sent.parquet``, `writers.write_sent`), those times replace the schedule's: the client shares a
    busy CPU, wakes late and sends the overdue requests together (requests due after the window were never
    sent and are left out)."""
    names = runner.adapter_names(spec)
    requests, _ = runner.plan_requests(spec, names, np.random.default_rng(spec.seed))
    index = {name: i for i, name in enumerate(names)}
    sent = sent_times(path.parent / SENT_NAME)
    if sent is not None:
        requests = sorted((replace(r, arrival_s=sent[r.index]) for r in requests if r.index in sent),
                          key=lambda r: r.arrival_s)
    return replay.write_trace(path, [(r.arrival_s, r.prompt_len or spec.benchmark.input_len, r.output_len,
                                      index.get(r.model, 0)) for r in requests])


def send_lag_p90_ms(path: Path) -> float | None:
    """90th percentile of how late the client sent a run's requests against their schedule, in ms (None
    without ``sent.parquet``): how far the replayed arrivals are from the drawn ones."""
    frame = pl.read_parquet(path) if path.exists() else None
    if frame is None or not frame.height:
        return None
    return float(np.percentile((frame["sent_s"] - frame["scheduled_s"]).to_numpy(), 90) * 1000)


def sent_times(path: Path) -> dict[int, float] | None:
    """Request index -> seconds after the start at which the client sent it (None without the file)."""
    frame = pl.read_parquet(path) if path.exists() else None
    return None if frame is None else dict(zip(frame["index"].to_list(), frame["sent_s"].to_list(), strict=True))


def kv_tokens(log_dir: Path) -> int | None:
    """KV-cache tokens from a server's startup line (read once the server has stopped)."""
    row = {"run_id": str(log_dir), "model": "", "max_loras": 1, "max_lora_rank": 16, "status": "ok"}
    return kv_capacity_row(row, read_logs(log_dir)).get("kv_tokens")


# ---- profiling and calibration ---------------------------------------------------------------------------
def profile_runs(srv: SharedServer, plan: dict[str, Any]) -> None:
    """The profiling runs on the all-resident server (A_max = served): decode batches on one adapter, the
    largest batch over every adapter, long prompts one at a time, and the round-robin run for loading."""
    decode = {"output_len": int(plan["decode_output_len"])} if "decode_output_len" in plan else {}
    for n in plan["batches"]:
        srv.run(f"decode_{n}", fixed(n, restrict=1, **decode))
    srv.run(f"spread_{max(plan['batches'])}", fixed(max(plan["batches"]), **decode))
    for k in range(int(plan.get("crowd_repeats", 1))):
        srv.run(f"crowd_{k}", fixed(crowd_batch(srv.loop), restrict=1, output_len=4))
    srv.run("long_prompt", swap_benchmark(plan) | {"input_len": int(plan["long_input_len"]), "restrict_loras": 1})
    srv.run("round_robin", swap_benchmark(plan))
    if plan.get("steady_requests"):
        srv.run("steady", steady_benchmark(plan, srv.loop.served))


def steady_benchmark(plan: dict[str, Any], served: int) -> dict[str, Any]:
    """Requests to one adapter at a steady rate (``steady_rate`` per second, ``steady_requests`` of them).

    Why: every other profiling run has its prompts arrive at an idle engine (one request at a time) or in a
    burst the API server admits on the shared CPU while the engine steps; a serving engine takes prompts one
    by one while it keeps decoding others. The step log of this run holds hundreds of such steps (a prompt
    beside a few decoding requests), so the step fit sees the prompts' cost in the regime the twin predicts
    (forward times of a 64-token prompt step: ~13 ms after idle, ~9 ms on a busy engine)."""
    # the harness sends a fixed-count run at request_rate_by_lora x the served adapters (the corpus's rule),
    # whatever restrict_loras keeps
    return {"mode": "fixed_count", "num_prompts": int(plan["steady_requests"]),
            "request_rate_by_lora": float(plan.get("steady_rate", 20.0)) / max(served, 1), "restrict_loras": 1}


def fixed(n: int, restrict: int | None = None, **lengths: int) -> dict[str, Any]:
    """A fixed-count benchmark of ``n`` requests sent at once (to the first ``restrict`` adapters)."""
    bench = {"mode": "fixed_count", "num_prompts": n, "request_rate_by_lora": math.inf, **lengths}
    return bench | ({"restrict_loras": restrict} if restrict else {})


def swap_benchmark(plan: dict[str, Any]) -> dict[str, Any]:
    """Requests round-robin over the adapters at a low rate (about one in flight): every one swaps at A_max 1."""
    return {"mode": "fixed_count", "num_prompts": int(plan["swap_requests"]),
            "request_rate_by_lora": float(plan["swap_rate_by_lora"]), "output_len": 4, "lora_pre_loading": True}


def run_name(max_loras: int, name: str) -> str:
    """The run id of a loop run on the server with ``max_loras`` slots."""
    return f"live/loop/amax{max_loras}/{name}"


def build_calibration(rows: dict[str, dict[str, Any]], loop: LoopConfig, kv: int, max_model_len: int,
                      slowdown: dict[str, float] | None = None, scan_s: float | None = None,
                      engine: dict[str, dict[str, float]] | None = None,
                      steps: dict[str, np.ndarray] | None = None,
                      scan_source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The twin's calibration JSON (schema 1) from the profiling rows (see the module docstring).

    Step times are medians of time per output token (decode time / (tokens - 1) of each request): the API
    server coalesces tokens into one chunk when it lags, so single inter-token gaps are often ~0 and the
    median gap says little. Times to first token alone come from the round-robin and long-prompt runs (one
    request in flight, medians over all of them). The per-request prefill cost comes from a batch sent at
    once whose prompts share one step: its extra time to first token over one request, less its prompt
    tokens; the median of ``crowd_repeats`` such batches, since one stall of the shared CPU (seen: 1 s) in a
    single batch sets this cost anywhere from 0 to 20 ms. One request's own time to first token also holds the
    HTTP and tokenizer work outside the engine, which does not hold up steps.

    ``slowdown`` (run id -> the shared CPU's slowdown of that run, `cpu_share`) is divided out of every time
    measured, so the calibration describes the engine with a core to itself (validation puts each run's
    own back).

    ``engine`` (run id -> `engine_times` of the run's ``engine_metrics.json``) replaces those client timings
    term by term where the engine measured them (`engine_terms`); ``sources.step_costs`` says which path
    each term took. ``steps`` (run id -> the engine's logged steps of the run, `engine_steps`) take
    precedence over both where present (`log_terms`). ``scan_s`` is the scheduler's cost per waiting request
    looked at (`scheduler_scan`), ``scan_source`` where it came from (``sources.scheduler``)."""
    served, plan = loop.served, loop.calibration
    engine = {k: uncontended_engine(v, (slowdown or {}).get(k, 1.0)) for k, v in (engine or {}).items()}
    rows = {k: uncontended(r, (slowdown or {}).get(k, 1.0)) for k, r in rows.items()}
    run = lambda name, max_loras=served: rows[run_name(max_loras, name)]  # noqa: E731
    batches = sorted(int(n) for n in plan["batches"])
    step_s = [run(f"decode_{n}")["tpot_median_ms"] / 1000 for n in batches]
    per_seq, intercept = np.polyfit(batches, step_s, 1, w=1 / np.asarray(step_s))  # relative errors
    per_seq, intercept = max(float(per_seq), 0.0), max(float(intercept), 1e-4)
    alone, long = run("round_robin"), run("long_prompt")
    prompt, crowd_n = int(loop.harness["benchmark"]["input_len"]), crowd_batch(loop)
    per_token = max((long["ttft_median_ms"] - alone["ttft_median_ms"]) / 1000 / (plan["long_input_len"] - prompt), 0.0)
    crowds = [r["ttft_median_ms"] for k, r in rows.items() if k.startswith(run_name(served, "crowd_"))]
    crowd_ms = float(np.median(crowds)) if crowds else run(f"decode_{crowd_n}")["ttft_median_ms"]
    crowd = (crowd_ms - alone["ttft_median_ms"]) / 1000
    per_request = max((crowd - per_token * prompt * (crowd_n - 1)) / max(crowd_n - 1, 1), 0.0)
    top = batches[-1]
    ratio = max(run(f"spread_{top}")["tpot_median_ms"] / run(f"decode_{top}")["tpot_median_ms"], 1.0)
    swaps = swap_fraction(int(plan["swap_requests"]), served)
    swapped = run("round_robin", 1)["ttft_median_ms"] - alone["ttft_median_ms"]
    load_ms = max(swapped / max(swaps, 1e-9), 0.1)
    sources = dict.fromkeys(("decode", "lora", "prefill", "loading"), "client")
    fit_engine: dict[str, Any] = {}
    measured = engine_terms(engine, loop)
    if "decode" in measured:
        step_s, (per_seq, intercept) = measured["decode"]["step_s"], measured["decode"]["fit"]
        ratio, sources["decode"], sources["lora"] = measured["decode"]["lora_ratio"], "engine", "engine"
    if "prefill" in measured:
        per_token = measured["prefill"]["per_token"]
        per_request = max(measured["prefill"]["alone_s"] - per_token * prompt - intercept, 0.0)
        sources["prefill"] = "engine"
        fit_engine["prefill_alone_ms"] = measured["prefill"]["alone_s"] * 1000
    if "loading" in measured:
        load_ms, sources["loading"] = max(measured["loading"]["swapped_s"] * 1000 / max(swaps, 1e-9), 0.1), "engine"
    logged = log_terms(steps or {}, engine, loop, slowdown or {})
    if logged:
        intercept, per_seq = logged["intercept"], logged["decode_seqs"]
        per_token, per_request = logged["prefill_tokens"], logged["prefill_seqs"]
        sources["decode"], sources["prefill"] = logged["decode_source"], "engine iteration log"
        fit_engine["iteration_fit"] = logged["fit"]
        if logged.get("lora_ratio"):
            ratio, sources["lora"] = logged["lora_ratio"], "engine iteration log (median full-batch steps)"
    if crowd_engine := [engine[k]["prefill_s"] * 1000 for k in sorted(engine) if k.startswith(run_name(served, "crowd_"))]:
        fit_engine["crowd_prefill_ms"] = crowd_engine  # the crowd's own steps (diagnostic: arrivals are staggered)
    s_max = int(loop.harness["grid"]["max_lora_rank"][0])
    ranks = loop.harness.get("adapters", {}).get("ranks", [8])
    return {
        "schema_version": 1,
        "model": plan["model_name"],
        "max_model_len": max_model_len,
        "block_size": 16,
        "step": {"form": "linear", "params": {"intercept": intercept, "decode_seqs": per_seq,
                                               "prefill_tokens": per_token, "prefill_seqs": per_request}},
        "lora": {"form": "piecewise_linear", "params": {"x": [1, served], "y": [1.0, ratio]}},
        "loading": {"form": "table", "params": {str(s_max): {str(r): load_ms for r in ranks}}},
        "kv_capacity": {"form": "linear_slots", "params": {"base_tokens": kv, "per_slot_rank_tokens": 0}},
        "scheduler": {"form": "linear", "params": {"intercept": 0.0, **({"waiting": scan_s} if scan_s else {})}},
        "fit_quality": {"decode_step_ms": {str(n): v * 1000 for n, v in zip(batches, step_s, strict=True)},
                        "lora_spread_ratio": ratio, "swap_fraction": swaps, "crowd_batch": crowd_n,
                        "crowd_ttft_ms": crowds or [crowd_ms], **fit_engine},
        "sources": {"runs": sorted(r for r in rows if "/rates" not in r),
                    "vllm_version": alone.get("vllm_version"), "engine": "live CPU build, stock vLLM",
                    "step_costs": sources, **({"scheduler": scan_source} if scan_source else {})},
    }


#: engine histograms a run's step costs are read from (`engine_times`)
PREFILL, DECODE, QUEUE = ("vllm:request_prefill_time_seconds", "vllm:request_decode_time_seconds",
                          "vllm:request_queue_time_seconds")
GENERATED, STEPS = "vllm:request_generation_tokens", "vllm:iteration_tokens_total"


def engine_times(delta: dict[str, dict[str, Any]]) -> dict[str, float] | None:
    """Per-request means of one run from the engine's histograms grown over it (`runner.write_engine_metrics`):
    ``prefill_s`` (scheduled to first token: the step that computed the prompt), ``queue_s`` (queued to
    scheduled), ``decode_step_s`` (decode time over the tokens after the first: the engine's step period
    while the request decoded) and the run's ``requests`` and ``steps``. None without a prefill histogram
    (a server that exports none, the fake one): the calibration then keeps the client's timings.

    Why engine-side: the engine core stamps these times itself, so they hold neither the API server admitting
    a crowd of requests one after another (16 at once took 60-200 ms more to first token than one alone)
    nor HTTP and detokenizing, which the client's times to first token do and which do not hold up a step."""
    prefill = delta.get(PREFILL)
    if not prefill or prefill.get("count", 0) <= 0:
        return None
    n = float(prefill["count"])
    out = {"requests": n, "prefill_s": prefill["sum"] / n}
    if (queue := delta.get(QUEUE)) and queue.get("count", 0) > 0:
        out["queue_s"] = queue["sum"] / queue["count"]
    decode, generated = delta.get(DECODE), delta.get(GENERATED)
    if decode and generated and generated["sum"] - generated["count"] > 0:
        out["decode_step_s"] = decode["sum"] / (generated["sum"] - generated["count"])
    if steps := delta.get(STEPS):
        out["steps"] = float(steps["count"])
    return out


def uncontended_engine(times: dict[str, float], slowdown: float) -> dict[str, float]:
    """Engine times of a run with the shared CPU's slowdown of that run divided out (counts stay)."""
    return {k: v / slowdown if k.endswith("_s") else v for k, v in times.items()}


def engine_terms(engine: dict[str, dict[str, float]], loop: LoopConfig) -> dict[str, dict[str, Any]]:
    """The step terms the engine's histograms give, each only when every run it needs has them:

    - ``decode``: the engine's decode step period of each decode batch (one adapter), fitted linear in the
      batch (relative errors) as the client path does; ``lora_ratio`` the largest batch over every adapter
      against one adapter.
    - ``prefill``: a request alone has its prompt computed in a step of its own, so its prefill time is that
      step: ``alone_s`` the round-robin run's (A_max = served, no load) and ``per_token`` the growth of it to
      the long prompt's. The per-request prefill cost is then the alone step less its tokens and the step
      intercept (`build_calibration`): what one more prompt adds to a step besides its tokens.
    - ``loading``: the round-robin run at A_max 1 against A_max = served, queue plus prefill time (a swap
      happens in the step that needs the adapter, or holds the request in the queue until a slot frees).
    """
    served, plan = loop.served, loop.calibration
    times = lambda name, max_loras=served: engine.get(run_name(max_loras, name)) or {}  # noqa: E731
    out: dict[str, dict[str, Any]] = {}
    batches = sorted(int(n) for n in plan["batches"])
    steps = [times(f"decode_{n}").get("decode_step_s") for n in batches]
    if all(steps):
        per_seq, intercept = np.polyfit(batches, steps, 1, w=1 / np.asarray(steps))
        spread = times(f"spread_{batches[-1]}").get("decode_step_s")
        out["decode"] = {"step_s": steps, "fit": (max(float(per_seq), 0.0), max(float(intercept), 1e-4)),
                         "lora_ratio": max(spread / steps[-1], 1.0) if spread else 1.0}
    alone, long = times("round_robin").get("prefill_s"), times("long_prompt").get("prefill_s")
    prompt = int(loop.harness["benchmark"]["input_len"])
    if alone and long and "decode" in out:
        out["prefill"] = {"alone_s": alone, "per_token": max((long - alone) / (int(plan["long_input_len"]) - prompt), 0.0)}
    one = times("round_robin", 1)
    if alone and one.get("prefill_s"):
        waited = lambda t: t.get("queue_s", 0.0) + t["prefill_s"]  # noqa: E731
        out["loading"] = {"swapped_s": waited(one) - waited(times("round_robin"))}
    return out


def log_terms(steps: dict[str, np.ndarray], engine: dict[str, dict[str, float]], loop: LoopConfig,
              slowdown: dict[str, float]) -> dict[str, Any] | None:
    """Step terms from the engine's logged steps of the profiling runs on one adapter at a time (decode
    batches, crowds, the long prompt, the round robin, the steady run; A_max = served, so no swaps): the forward time fitted
    over every step (`engine_steps.fit_steps`, each run's slowdown divided out), plus the engine loop around
    the forward, which the log does not time: per decode run the histograms' decode period less the mean
    logged forward time of its decoding steps (`token_weighted`), linear in the batch. None without logged
    decode batches."""
    served, plan = loop.served, loop.calibration
    batches = sorted(int(n) for n in plan["batches"])
    names = [f"decode_{n}" for n in batches] + ["long_prompt", "round_robin", "steady"] + [
        f"crowd_{k}" for k in range(int(plan.get("crowd_repeats", 1)))]
    runs = {run_name(served, n): steps[run_name(served, n)] for n in names if len(steps.get(run_name(served, n), []))}
    if not all(run_name(served, f"decode_{n}") in runs for n in batches):
        return None
    scaled = {k: v * np.r_[np.ones(5), 1 / slowdown.get(k, 1.0)] for k, v in runs.items()}
    fit = engine_steps.fit_steps(np.vstack(list(scaled.values())))
    out = {k: max(fit[k], 0.0) for k in ("intercept", "decode_seqs", "prefill_tokens", "prefill_seqs")}
    out["intercept"] = max(out["intercept"], 1e-4)
    loop_s, loop_x = [], []
    for n in batches:
        key = run_name(served, f"decode_{n}")
        period = (engine.get(key) or {}).get("decode_step_s")
        if period and (weighted := token_weighted(scaled[key])):
            loop_x.append(weighted[0])
            loop_s.append((n, period - weighted[1]))
    out["decode_source"] = "engine iteration log"
    if len(loop_s) >= 2:
        per_seq, base = np.polyfit(loop_x, [v for _, v in loop_s], 1)
        out["intercept"] += max(float(base), 0.0)
        out["decode_seqs"] += max(float(per_seq), 0.0)
        out["decode_source"] = "engine iteration log + histogram decode period (engine loop)"
    out["fit"] = fit | {"engine_loop_s": {str(n): v for n, v in loop_s}, "runs": sorted(runs)}
    top = batches[-1]
    full = [full_batch_median(steps.get(run_name(served, f"{name}_{top}"), np.empty((0, 6))), top)
            for name in ("decode", "spread")]
    if all(full):
        # the twin's LoRA factor multiplies the whole step, the engine loop included, which LoRA does not slow
        around = max(out["intercept"] + out["decode_seqs"] * top - (fit["intercept"] + fit["decode_seqs"] * top), 0.0)
        out["lora_ratio"] = max((full[1] + around) / (full[0] + around), 1.0)
    return out


def token_weighted(steps: np.ndarray) -> tuple[float, float] | None:
    """The decoding batch and forward time of a run's decode steps (no prompt in them), each step weighted by
    the requests it decodes (None when no step only decodes).

    Why weighted: the histograms' decode period is a mean over output tokens, so a step counts once for every
    request it decodes; the engine loop is that period less the forward time averaged the same way. A plain
    mean over decode steps also counts the warm-up request's batch-1 steps (the step log's window holds them,
    the histograms' does not) as much as the run's full-batch steps: in one live pass that read the loop of a
    4- and a 16-request batch as 2.4 and 3.0 ms, and the weighted means as 1.2 and 1.1 ms (a 1-request batch:
    2.1 ms either way)."""
    decoding = steps[(steps[:, 1] == 0) & (steps[:, 3] > 0)] if len(steps) else steps
    if not len(decoding):
        return None
    weights = decoding[:, 3]
    return float(np.average(weights, weights=weights)), float(np.average(decoding[:, 5], weights=weights))


def full_batch_median(steps: np.ndarray, batch: int) -> float | None:
    """Median forward time of the steps decoding ``batch`` requests and computing no prompt, None if none.

    Why the median: the LoRA ratio compares two runs of about a second each, and a stall of the shared CPU in
    either moves its mean a lot; the median of the ~60 full-batch steps of each does not move with a few."""
    chosen = steps[(steps[:, 1] == 0) & (steps[:, 3] == batch)] if len(steps) else steps
    return float(np.median(chosen[:, 5])) if len(chosen) else None


def read_steps(work: Path, run_ids: list[str]) -> dict[str, np.ndarray]:
    """Run id -> the engine's logged steps of the run (``<run>/engine_steps.csv``), runs that have them."""
    out = {}
    for run_id in run_ids:
        path = work / "runs" / run_id / STEPS_NAME
        if path.exists():
            out[run_id] = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return out


def read_engine(work: Path, run_ids: list[str]) -> dict[str, dict[str, float]]:
    """Run id -> `engine_times` of the runs that recorded engine metrics (``<run>/engine_metrics.json``)."""
    out = {}
    for run_id in run_ids:
        path = work / "runs" / run_id / runner.ENGINE_METRICS_NAME
        if path.exists() and (times := engine_times(json.loads(path.read_text()))):
            out[run_id] = times
    return out


def uncontended(row: dict[str, Any], slowdown: float) -> dict[str, Any]:
    """A profiling row with its latencies divided by the run's CPU slowdown: the engine's own times."""
    times = ("tpot_median_ms", "ttft_median_ms")
    return row | {k: row[k] / slowdown for k in times if row.get(k) is not None}


def read_slowdowns(work: Path) -> dict[str, float]:
    """Run id -> the CPU slowdown recorded by the live runs (empty when not recorded)."""
    path = work / CPU_SHARE_NAME
    if not path.exists():
        return {}
    shares = json.loads(path.read_text())
    return {k: cpu_share.CpuShare(v["on_cpu_s"], v["waiting_s"]).slowdown for k, v in shares.items()}


def scan_cost(requests: pl.DataFrame, slowdown: float = 1.0) -> float | None:
    """Seconds the scheduler spends per waiting request it looks at, from the ``scan`` run at A_max 1.

    Why: with A_max 1 the waiting loop walks past every queued request of another adapter at each step (it
    skips them and puts them back), so an overloaded A_max 1 server whose other adapters pile up requests
    slows down with its queue: a live overload at A_max 1 ran steps twice as long as at A_max 3. The scan run
    sends requests of every adapter at once, interleaved; the adapters then run one after the other (phases),
    the first with the other adapters' requests all waiting, the last with none. The difference of their
    median times per output token over the difference of waiting requests is the cost per request looked
    at. None when the run has fewer than two phases. It also holds the API server admitting the burst on the
    shared CPU, so it is the fallback for ``scheduler.waiting`` (`scheduler_scan`) and a diagnostic beside
    the in-process timing of `scan_probe`, which the calibration takes where it exists."""
    ok = requests.filter(pl.col("success") & (pl.col("output_tokens") > 1))
    if ok.is_empty():
        return None
    phases = (ok.with_columns(((pl.col("latency_s") - pl.col("ttft_s")) / (pl.col("output_tokens") - 1)).alias("tpot"))
              .group_by("model").agg(pl.col("ttft_s").min().alias("start"), pl.col("tpot").median(), pl.len())
              .sort("start"))
    if phases.height < 2:
        return None
    counts, tpots = phases["len"].to_list(), phases["tpot"].to_list()
    waiting = [sum(counts[k + 1:]) for k in range(len(counts))]  # requests of later phases, queued meanwhile
    slope = float(np.polyfit(waiting, tpots, 1)[0]) / slowdown
    return max(slope, 0.0)


def scheduler_scan(work: Path, slowdown: dict[str, float]) -> tuple[float | None, dict[str, Any] | None]:
    """The scheduler's cost per waiting request looked at, and where it came from: the in-process timing of
    vLLM's scheduler (``scan_probe.json``) where the loop recorded one, else the client's slope over the scan
    run's phases (`scan_cost`), which also holds the API server admitting the requests on the shared CPU and
    so reads 20-60x the scheduler's own cost (59 and 187 us against 3 us measured in-process). The source
    holds both numbers where both exist."""
    scan_file = work / "runs" / run_name(1, "scan") / "requests.parquet"
    client = scan_cost(pl.read_parquet(scan_file), slowdown.get(run_name(1, "scan"), 1.0)) if scan_file.exists() else None
    probe_file = work / SCAN_PROBE_NAME
    if probe_file.exists():
        probe = json.loads(probe_file.read_text())
        return float(probe["seconds_per_waiting"]), {"path": "vLLM Scheduler.schedule timed in-process (scan_probe)",
                                                    "probe_times_s": probe["times_s"], "client_slope_s": client}
    if client is None:
        return None, None
    return client, {"path": "client: scan run's time per output token against requests queued", "client_slope_s": client}


def crowd_batch(loop: LoopConfig) -> int:
    """The largest profiled batch whose prompts fit one step's token budget (one prefill step for all)."""
    prompt = int(loop.harness["benchmark"]["input_len"])
    budget = int(loop.harness.get("server", {}).get("max_num_batched_tokens", 2048))
    batches = sorted(int(n) for n in loop.calibration["batches"])
    return max((n for n in batches if n * prompt <= budget), default=batches[0])


def swap_fraction(requests: int, served: int) -> float:
    """Share of round-robin requests (``i % served``) that need another adapter than the previous one."""
    return (requests - 1) / requests if served > 1 and requests > 1 else 0.0


# ---- validation ------------------------------------------------------------------------------------------
def validation_runs(srv: SharedServer, plan: dict[str, Any]) -> None:
    """By-time runs of every rate set, ``repeats`` times each (the same schedule), on this server's A_max."""
    for name, bench in validation_benchmarks(plan):
        srv.run(name, bench)


def validation_benchmarks(plan: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(run name, by-time benchmark) of every rate set and repeat."""
    return [(f"rates{i}_rep{rep}", {"mode": "by_time", "total_time_s": float(plan["total_time_s"]),
                                    "adapter_rates": [float(r) for r in rates]})
            for i, rates in enumerate(plan["rate_sets"]) for rep in range(int(plan.get("repeats", 1)))]


def write_validation_traces(loop: LoopConfig, work: Path) -> None:
    """Every validation run's trace drawn again from its spec (deterministic): runs recorded before the
    trace held each request's adapter are then replayed exactly too."""
    for max_loras in loop.validation["max_loras"]:
        srv = SharedServer(loop, max_loras, None, runner.vllm_server_factory, work)
        for name, bench in validation_benchmarks(loop.validation):
            _, spec = srv.spec_for(name, bench)
            write_trace(spec, work / "runs" / spec.run_id / TRACE_NAME)


def twin_scenario(row: dict[str, Any], loop: LoopConfig, model: str, trace: Path) -> dict[str, Any]:
    """The twin scenario of a live by-time run: the same server (and vLLM release, ``server.vllm_version``),
    adapters and rates, replaying its arrivals (and, through `replay`, each request's adapter: the rates'
    order then only matters to the twin's own mapping, which the replay does not use)."""
    rates = [v for v, c in zip(row["adapter_rates"], row["adapter_rate_counts"], strict=True) for _ in range(c)]
    ranks = list(row["adapter_ranks"])
    server = loop.harness.get("server", {})
    version = {"vllm_version": str(row["vllm_version"])} if row.get("vllm_version") else {}
    return {
        "model": model,
        "server": {"max_loras": int(row["max_loras"]), "max_cpu_loras": loop.served,
                   "max_lora_rank": int(row["max_lora_rank"]), "max_num_seqs": int(server.get("max_num_seqs", 256)),
                   "max_num_batched_tokens": int(server.get("max_num_batched_tokens", 2048)), **version},
        "adapters": {"ranks": [ranks[i % len(ranks)] for i in range(len(rates))], "rates": rates},
        "arrivals": {"kind": "trace", "path": str(trace)},
        "lengths": {"kind": "trace", "path": str(trace)},
        "duration_s": float(row["total_time_s"]),
        "seed": 0,
    }


def smape(a: float, b: float) -> float:
    """SMAPE of two values in %, the convention every adaptwin report uses."""
    return float(smape_terms(a, b))


def validate(rows: dict[str, dict[str, Any]], calibration: dict[str, Any], loop: LoopConfig, work: Path,
             slowdown: dict[str, float] | None = None) -> dict[str, Any]:
    """The twin against every live by-time run, and the live runs against their own repeats. Both are called
    starved by the twin's rule against the offered load of the replayed schedule. With ``slowdown`` (run id
    -> the shared CPU's slowdown of that run) each run is simulated on the engine that run had: the costs
    times its factor (`replay.simulate_replay`)."""
    per_run, keys = [], ("total_throughput", "itl_mean_ms", "ttft_mean_ms")
    for max_loras in loop.validation["max_loras"]:
        for i in range(len(loop.validation["rate_sets"])):
            for rep in range(int(loop.validation.get("repeats", 1))):
                run_id = run_name(max_loras, f"rates{i}_rep{rep}")
                row = rows[run_id]
                factor = (slowdown or {}).get(run_id, 1.0)
                scenario = twin_scenario(row, loop, calibration["model"], work / "runs" / run_id / TRACE_NAME)
                twin = replay.simulate_replay(scenario, calibration, factor)
                ideal = float(twin["ideal_throughput"])
                per_run.append({
                    "run_id": run_id, "max_loras": max_loras, "rate_set": i, "repeat": rep, "ideal_throughput": ideal,
                    "cpu_slowdown": factor, "step_inflation": step_inflation(work / "runs" / run_id / STEPS_NAME,
                                                                            calibration),
                    "live_starved": bool(row["total_throughput"] < STARVATION_RATIO * ideal),
                    "twin_starved": bool(twin["starved"]),
                    **{f"live_{k}": float(row[k]) for k in keys}, **{f"twin_{k}": float(twin[k]) for k in keys},
                    **live_itl(row, read_engine(work, [run_id]).get(run_id)),
                    "send_lag_p90_ms": send_lag_p90_ms(work / "runs" / run_id / SENT_NAME)})
    mean = lambda key: float(np.mean([smape(r[f"live_{key}"], r[f"twin_{key}"]) for r in per_run]))  # noqa: E731
    return {
        "throughput_smape_pct": mean("total_throughput"),
        "itl_smape_pct": mean("itl_mean_ms"),
        "ttft_smape_pct": mean("ttft_mean_ms"),
        "starvation_agreement": float(np.mean([r["live_starved"] == r["twin_starved"] for r in per_run])),
        "runs": per_run,
        "repeat_spread": repeat_spread(per_run),
    }


def live_itl(row: dict[str, Any], engine: dict[str, float] | None) -> dict[str, Any]:
    """A live run's mean inter-token latency as the engine stamped it (its decode time over the tokens after
    the first, `engine_times`), with the client's beside it; the client's alone when the server exports no
    histograms.

    Why: the API server sends a request's tokens in one chunk when it lags, so the client sees gaps of ~0 and
    a mean inter-token latency half the engine's step (seen: 2.3 ms for a 5 ms batch-1 step, medians of 0.0
    ms); the twin's ITL is the gap between a request's tokens as the engine makes them."""
    client_ms = float(row["itl_mean_ms"])
    if not engine or not engine.get("decode_step_s"):
        return {"live_itl_source": "client", "live_client_itl_mean_ms": client_ms}
    return {"live_itl_mean_ms": engine["decode_step_s"] * 1000, "live_itl_source": "engine decode histogram",
            "live_client_itl_mean_ms": client_ms}


def step_inflation(path: Path, calibration: dict[str, Any]) -> float | None:
    """A diagnostic, never fed to the twin: the run's logged forward time over what the profiled forward fit
    (``fit_quality.iteration_fit``, one adapter, no CPU slowdown) gives for the same steps. Why: it shows how
    much slower the engine stepped in a serving run than in profiling, against ``cpu_slowdown``, the part the
    twin is told of. None without the run's step log or the fit."""
    fit = calibration.get("fit_quality", {}).get("iteration_fit")
    if fit is None or not path.exists():
        return None
    steps = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    model = (fit["intercept"] + fit["decode_seqs"] * steps[:, 3] + fit["prefill_tokens"] * steps[:, 2]
             + max(fit["prefill_seqs"], 0.0) * steps[:, 1])
    return float(steps[:, 5].sum() / model.sum()) if len(steps) and model.sum() > 0 else None


def repeat_spread(per_run: list[dict[str, Any]]) -> dict[str, Any]:
    """Run-to-run spread of the live repeats of one grid point: SMAPE between every pair of repeats (the
    same measure as the twin's error) and (max - min) / mean of their throughput, in %."""
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in per_run:
        groups.setdefault((r["max_loras"], r["rate_set"]), []).append(r)
    pairs = {k: [smape(a[f"live_{k}"], b[f"live_{k}"]) for g in groups.values() for a, b in combinations(g, 2)]
             for k in ("total_throughput", "itl_mean_ms", "ttft_mean_ms")}
    ranges = [100 * (max(t) - min(t)) / np.mean(t) for g in groups.values() if len(g) > 1
              for t in [[r["live_total_throughput"] for r in g]]]
    out: dict[str, Any] = {f"{k}_pair_smape_pct": float(np.mean(v)) if v else None for k, v in pairs.items()}
    out["throughput_range_pct_max"] = float(max(ranges)) if ranges else None
    out["pairs"] = len(pairs["total_throughput"])
    return out


# ---- the loop ----------------------------------------------------------------------------------------------
def model_max_len(model: str) -> int:
    """The model's context length (``max_position_embeddings`` of its config), vLLM's default max_model_len."""
    config = resolve(model) / "config.json"
    return int(json.loads(config.read_text()).get("max_position_embeddings", 2048)) if config.exists() else 2048


def work_dir(loop: LoopConfig) -> Path:
    """Where the loop's runs, servers' logs and runs table go."""
    return resolve(loop.harness.get("work_dir", "data/live/loop"))


def serve_and_measure(loop: LoopConfig, factory: runner.ServerFactory | None = None) -> None:
    """Every live run of the loop, one server per A_max (served first), into ``<work_dir>/runs.parquet``.

    Without a factory the real vLLM of ``harness.server.python`` is started."""
    python = loop.harness.get("server", {}).get("python")
    python = str(resolve(python)) if python else None
    if factory is None:
        check_environment(python)
        factory = runner.vllm_server_factory
    version = vllm_version(python) if factory is runner.vllm_server_factory else None
    work, served = work_dir(loop), loop.served
    max_loras_values = [served] + sorted((set(loop.validation["max_loras"]) | {1}) - {served})
    rows: list[dict[str, Any]] = []
    shares: dict[str, dict[str, float]] = {}
    for max_loras in max_loras_values:
        print(f"live loop: server A_max {max_loras} of {served} adapters", flush=True)
        srv = SharedServer(loop, max_loras, version, factory, work)
        with srv.started():
            if max_loras == served:
                profile_runs(srv, loop.calibration)
            elif max_loras == 1:
                srv.run("round_robin", swap_benchmark(loop.calibration))
                if loop.calibration.get("scan_requests"):
                    srv.run("scan", fixed(int(loop.calibration["scan_requests"]), output_len=32))
            if max_loras in loop.validation["max_loras"]:
                validation_runs(srv, loop.validation)
        rows += srv.rows
        shares |= srv.shares
    write_tables(work, {"runs": to_frame("runs", rows)})
    write_json(work / CPU_SHARE_NAME, shares)
    if factory is runner.vllm_server_factory and loop.calibration.get("scan_requests"):
        write_json(work / SCAN_PROBE_NAME, run_scan_probe(python or sys.executable, loop.harness["model"]))


def run_scan_probe(python: str, model: str) -> dict[str, Any]:
    """`scan_probe` run by the vLLM environment's ``python`` on ``model`` (after the servers stopped, so the
    core is free): the scheduler's own time per waiting request it walks past."""
    import subprocess

    done = subprocess.run([python, str(SCAN_PROBE), str(resolve(model))], capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{SCAN_PROBE.name} failed (exit {done.returncode}): {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def calibrate_and_validate(loop: LoopConfig) -> dict[str, Any]:
    """Calibration JSON and validation JSON from the recorded live runs (``<work_dir>/runs.parquet``)."""
    work = work_dir(loop)
    table = work / "runs.parquet"
    if not table.exists():
        raise LoopConfigError(f"{table}: no live runs recorded (run the loop without --from-runs first)")
    rows = {r["run_id"]: r for r in pl.read_parquet(table).iter_rows(named=True)}
    log_dir = work / "servers" / f"amax{loop.served}"
    kv = kv_tokens(log_dir)
    if kv is None:
        raise RuntimeError(f"no KV cache size line in the server logs of {log_dir}")
    write_validation_traces(loop, work)
    slowdown = read_slowdowns(work) if loop.validation.get("cpu_share", True) else {}
    scan_s, scan_source = scheduler_scan(work, slowdown)
    profiling = [r for r in rows if "/rates" not in r]  # no serving run enters the calibration
    engine, steps = read_engine(work, profiling), read_steps(work, profiling)
    calibration = build_calibration(rows, loop, kv, model_max_len(loop.harness["model"]), slowdown, scan_s, engine,
                                    steps, scan_source)
    cal_path = write_json(resolve(loop.calibration["out"]), calibration)
    metrics = validate(rows, calibration, loop, work, slowdown) | {"calibration": str(loop.calibration["out"]),
                                                                  "cpu_share": bool(slowdown)}
    previous = resolve(loop.validation["out"])
    if previous.exists() and "placement" in (old := json.loads(previous.read_text())):
        metrics["placement"] = old["placement"]  # the last live placement stays until served again
    write_json(previous, metrics)
    spread = metrics["repeat_spread"]["total_throughput_pair_smape_pct"]
    print(f"live loop: calibration -> {cal_path}; throughput SMAPE {metrics['throughput_smape_pct']:.1f} %, "
          f"ITL {metrics['itl_smape_pct']:.1f} %, TTFT {metrics['ttft_smape_pct']:.1f} %, starvation agreement "
          f"{metrics['starvation_agreement']:.2f} over {len(metrics['runs'])} runs; repeats' throughput SMAPE "
          f"{spread if spread is None else round(spread, 1)} % -> {loop.validation['out']}", flush=True)
    return metrics


def place_step(loop: LoopConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """Place the configured workload with the live calibration and serve every GPU from its exported script
    (`live_place.place_and_serve`); the outcome goes into the metrics JSON under ``placement``."""
    if loop.placement is None:
        return metrics
    server = loop.harness.get("server", {})
    python = str(resolve(server.get("python", ".venv-vllm/bin/python")))
    check_environment(python)
    calibration = from_dict(json.loads(resolve(loop.calibration["out"]).read_text()), "live calibration")
    model = str(resolve(loop.harness["model"]))
    token_ids = tuple(loop.harness.get("benchmark", {}).get("token_ids", [10, 2000]))
    env = {k: str(v) for k, v in server.get("env", {}).items()}
    block = live_place.place_and_serve(loop.placement, calibration, python, model, model_max_len(model),
                                       (int(token_ids[0]), int(token_ids[1])), env)
    metrics = metrics | {"placement": block}
    write_json(resolve(loop.validation["out"]), metrics)
    return metrics


def run_loop(loop: LoopConfig, factory: runner.ServerFactory | None = None) -> dict[str, Any]:
    """Profile, calibrate, serve and validate: the live runs, then the calibration and the metrics JSON; with
    a real server (no factory), then place and serve the placement workload live."""
    serve_and_measure(loop, factory)
    metrics = calibrate_and_validate(loop)
    return place_step(loop, metrics) if factory is None else metrics


def main(argv: list[str] | None = None) -> int:
    """``python -m adaptwin.profiling.live_loop CONFIG``: 0 on success, 2 on a bad config or missing vLLM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="loop YAML (profiling/live_loop.yaml)")
    parser.add_argument("--from-runs", action="store_true",
                        help="calibrate and validate from the recorded live runs, starting no server")
    parser.add_argument("--place", action="store_true",
                        help="with --from-runs: then place and serve the placement workload live")
    args = parser.parse_args(argv)
    try:
        loop = load_loop_config(resolve(args.config))
        if not args.from_runs:
            run_loop(loop)
        elif args.place:
            place_step(loop, calibrate_and_validate(loop))
        else:
            calibrate_and_validate(loop)
    except (LoopConfigError, ProfilingUnavailable) as exc:
        print(f"live loop: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
