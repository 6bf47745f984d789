"""Place a small workload with the live calibration and serve each GPU's group on a live server.

The last step of the live loop: the placement library (``make_context`` + ``place_verified``, the path
``adaptwin place`` takes) places the workload with the twin calibrated on the live engine, the export writes
``routing.csv`` and ``serve_gpu<N>.sh``, and each GPU's script is started as exported (one at a time: this
machine has cores for one server) and sent that GPU's traffic by its ``routing.csv`` shares. Per GPU the
live offered and achieved throughput, whether it starved, and the twin's prediction for the same requests
are recorded.

The tiny model has no trained surrogate, so `TwinPredictor` stands in for it: the placement's candidates are
judged by short twin runs, and the chosen GPUs are then verified by the twin as usual.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adaptwin.placement import verify
from adaptwin.placement.core import Gpu, Placement
from adaptwin.profiling import adapters as adapters_mod
from adaptwin.profiling import client, cpu_share, replay, runner, server
from adaptwin.rules import is_starved, smape_pct
from adaptwin.twin import simulate
from adaptwin.twin.lengths import mean_tokens, sample_lengths

PLACEMENT_KEYS = {"adapters", "method", "twin_window_s", "predictor_window_s", "serve_time_s", "base_port",
                  "out_dir", "seed", "load_gpus"}
LENGTHS = {"kind": "sharegpt"}  # what the placement's twin checks assume (`verify.gpu_scenario`)
TRACE_NAME = "twin_trace.csv"


# ---- placement ---------------------------------------------------------------------------------------------
@dataclass
class TwinPredictor:
    """The placement's surrogate for a model without one: each feature row becomes a twin run of
    ``served_adapters`` adapters sharing ``sum_rate`` equally at rank ``max_size`` with ``adapter_slots``
    slots (the features keep no per-adapter detail), over ``window_s`` simulated seconds.

    Why the twin: a surrogate is trained on thousands of twin runs; for a handful of adapters asking the
    twin directly is cheaper than training one, and the verification afterwards is the twin's anyway."""

    model: str
    calibration: Any
    window_s: float = 60.0
    tokens_per_request: float = 0.0
    _cache: dict[tuple[int, int, float, int], dict[str, float]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.tokens_per_request:
            self.tokens_per_request = mean_tokens(LENGTHS, self.model)

    def predict(self, features: pl.DataFrame) -> pl.DataFrame:
        """``total_throughput``, ``itl_mean_ms`` and ``starvation_probability`` (0 or 1) per feature row."""
        rows = [self._one(int(round(f["served_adapters"])), int(f["max_size"]), float(f["sum_rate"]),
                          int(f["adapter_slots"])) for f in features.iter_rows(named=True)]
        return pl.DataFrame(rows, schema={"total_throughput": pl.Float64, "itl_mean_ms": pl.Float64,
                                          "starvation_probability": pl.Float64})

    def _one(self, served: int, rank: int, sum_rate: float, max_loras: int) -> dict[str, float]:
        key = (served, rank, round(sum_rate, 6), min(max_loras, served))
        if key not in self._cache:
            workload = pl.DataFrame({"adapter_id": [f"a{i}" for i in range(served)], "rank": [rank] * served,
                                     "rate": [sum_rate / served] * served})
            gpu = Gpu(tuple(range(served)), key[3], rank, {})
            result = simulate(verify.gpu_scenario(Placement(self.model, "probe", workload, [gpu], 1), gpu,
                                                  self.window_s), self.calibration)
            self._cache[key] = {"total_throughput": float(result["total_throughput"] or 0.0),
                                "itl_mean_ms": float(result["itl_mean_ms"] or 0.0),
                                "starvation_probability": float(bool(result["starved"]))}
        return self._cache[key]


def place(workload: pl.DataFrame, calibration: Any, plan: dict[str, Any]) -> Placement:
    """The twin-verified placement of ``workload`` with the live calibration (`TwinPredictor` as surrogate,
    no repository metrics or dataset: they describe the GPU corpus, not this engine). With ``load_gpus`` the
    rates are first scaled to that many GPUs' worth of load (`sized`)."""
    from adaptwin.placement.api import make_context
    from adaptwin.placement.verified import place_verified

    window = float(plan.get("predictor_window_s", 60.0))
    predictor = TwinPredictor(calibration.model, calibration, window)
    context = make_context(calibration.model, predictor=predictor, calibration=calibration, metrics_path=None,
                           dataset_dir=None, twin_duration_s=window)
    if plan.get("load_gpus"):
        workload = sized(workload, float(plan["load_gpus"]), context.best_throughput, predictor.tokens_per_request)
    return place_verified(workload, context, str(plan.get("method", "greedy")),
                          float(plan.get("twin_window_s", 300.0)), workers=1)


def sized(workload: pl.DataFrame, gpus: float, best_tok_s: float, tokens_per_request: float) -> pl.DataFrame:
    """The workload with its rates scaled (proportions kept) to ``gpus`` x the best per-GPU throughput the
    placement's own bound uses: the engine's speed is only known once calibrated, and a workload sized by
    hand fits one GPU of a fast calibration and five of a slow one."""
    offered = float(workload["rate"].sum()) * tokens_per_request
    factor = gpus * best_tok_s / offered
    return workload.with_columns((pl.col("rate") * factor).round(4))


def workload_frame(plan: dict[str, Any]) -> pl.DataFrame:
    """``adapter_id, rank, rate`` from the plan's ``adapters`` list of [id, rank, rate]."""
    ids, ranks, rates = zip(*plan["adapters"], strict=True)
    return pl.DataFrame({"adapter_id": [str(i) for i in ids], "rank": [int(r) for r in ranks],
                         "rate": [float(r) for r in rates]})


# ---- serving one exported script ---------------------------------------------------------------------------
def adapter_dir(workload: pl.DataFrame, model: str, root: Path) -> Path:
    """``root/by_id/<adapter_id>`` links to a zero adapter of the adapter's rank: the layout the exported
    scripts read under ``$ADAPTER_DIR`` (path template ``{adapter_id}``)."""
    shape = adapters_mod.resolve_model_shape(model)
    ranks = adapters_mod.ensure_adapters(root / "ranks", sorted(set(workload["rank"].to_list())), model, shape)
    by_id = root / "by_id"
    by_id.mkdir(parents=True, exist_ok=True)
    for adapter_id, rank in workload.select("adapter_id", "rank").iter_rows():
        link = by_id / adapter_id
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(ranks[rank]).resolve())
    return by_id


def script_env(python: str, model: str, adapters: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment an exported ``serve_gpu<N>.sh`` reads: the interpreter (CPU builds have no working
    ``vllm`` script), the model folder and the adapter folder."""
    return {"VLLM_PYTHON": python, "VLLM_MODEL": model, "ADAPTER_DIR": str(adapters), **(extra or {})}


@contextlib.contextmanager
def exported_server(script: Path, base_url: str, log_dir: Path, env: dict[str, str],
                    ready_timeout_s: float = 600.0) -> Iterator[server.VllmServer]:
    """The exported script started as a cluster would start it (``bash serve_gpu<N>.sh``), stopped after."""
    with server.VllmServer(["bash", str(script)], base_url, log_dir, ready_timeout_s, 1.0, env) as srv:
        yield srv


def routed_schedule(routing: pl.DataFrame, workload: pl.DataFrame, g: int, window_s: float, model: str,
                    max_model_len: int, rng: np.random.Generator, token_ids: tuple[int, int]
                    ) -> list[client.Request]:
    """GPU ``g``'s requests: each adapter's Poisson stream at its rate x its ``routing.csv`` share, lengths
    drawn from the distribution the placement's twin checks assumed (cut to fit ``max_model_len``)."""
    rates = dict(workload.select("adapter_id", "rate").iter_rows())
    mine = routing.filter(pl.col("gpu") == g)
    arrivals = sorted((float(t), a) for a, share in mine.select("adapter_id", "share").iter_rows()
                      for t in client.poisson_arrivals(rng, rates[a] * share, window_s))
    prompts, outputs = sample_lengths(LENGTHS, len(arrivals), rng, model)
    prompts = np.minimum(prompts, max_model_len // 2)
    outputs = np.minimum(outputs, max_model_len - prompts - 1)
    return [client.Request(i, t, a, client.synthetic_prompt(rng, int(p), *token_ids), int(p), int(o))
            for i, ((t, a), p, o) in enumerate(zip(arrivals, prompts, outputs, strict=True))]


def write_trace(requests: list[client.Request], adapter_ids: list[str], path: Path) -> Path:
    """The requests as a twin trace with each one's adapter (its position in ``adapter_ids``): the twin then
    replays what the server was sent (`replay`)."""
    index = {a: i for i, a in enumerate(adapter_ids)}
    return replay.write_trace(path, [(r.arrival_s, int(r.prompt_len or 0), r.output_len, index[r.model])
                                     for r in requests])


def replay_scenario(placement: Placement, g: int, window_s: float, trace: Path) -> dict[str, Any]:
    """GPU ``g``'s verification scenario with the live requests replayed (arrivals, lengths, adapters); its
    adapters listed one by one in `Placement.gpu_adapters` order, the trace's adapter indices."""
    scenario = verify.gpu_scenario(placement, placement.gpus[g], window_s)
    adapters = placement.gpu_adapters(g)
    spec = {"kind": "trace", "path": str(trace)}
    return scenario | {"arrivals": spec, "lengths": spec, "seed": 0,
                       "adapters": {"ranks": adapters["rank"].to_list(), "rates": adapters["rate"].to_list()}}


def serve_gpu(placement: Placement, g: int, deploy: Path, env: dict[str, str], plan: dict[str, Any],
              calibration: Any, max_model_len: int, token_ids: tuple[int, int]) -> dict[str, Any]:
    """Start ``serve_gpu<g>.sh``, send its routed traffic for ``serve_time_s``, and compare with the twin
    replaying the same requests on the engine the server had (its costs stretched by the CPU slowdown
    measured over the window, `cpu_share`)."""
    routing = pl.read_csv(deploy / "routing.csv")
    endpoint = routing.filter(pl.col("gpu") == g)["endpoint"][0]
    window = float(plan.get("serve_time_s", 30.0))
    rng = np.random.default_rng(int(plan.get("seed", 0)) + g)
    requests = routed_schedule(routing, placement.workload, g, window, placement.model, max_model_len, rng,
                               token_ids)
    run_dir = deploy / "live" / f"gpu{g}"
    trace = write_trace(requests, placement.gpu_adapters(g)["adapter_id"].to_list(), run_dir / TRACE_NAME)
    base_url = endpoint.removesuffix("/v1")
    with exported_server(deploy / f"serve_gpu{g}.sh", base_url, run_dir / "server", env) as srv:
        client.run_benchmark(base_url, warmup(placement, g, token_ids), None, timeout_s=300)
        with cpu_share.measured(srv.process.pid if srv.process else None) as share:
            result = client.run_benchmark(base_url, requests, window, timeout_s=window + 300)
    live = runner.summarize(result.outputs, result.duration_s)
    twin = replay.simulate_replay(replay_scenario(placement, g, window, trace), calibration.raw,
                                  share.slowdown)
    done = Counter(o.model for o in result.outputs if o.success)
    return gpu_record(placement, g, requests, live, twin, result.cancelled) | {
        "done_per_adapter": dict(done), "cpu_slowdown": share.slowdown,
        "cpu_share": share.as_dict()}


def warmup(placement: Placement, g: int, token_ids: tuple[int, int]) -> list[client.Request]:
    """One short request per adapter of GPU ``g`` before the window: a fresh server's first requests pay
    one-off costs (compilation, allocation, first adapter loads) the twin does not model."""
    ids = placement.gpu_adapters(g)["adapter_id"].to_list()
    prompt = client.synthetic_prompt(np.random.default_rng(0), 16, *token_ids)
    return [client.Request(i, 0.0, a, prompt, 16, 4) for i, a in enumerate(ids)]


def gpu_record(placement: Placement, g: int, requests: list[client.Request], live: dict[str, Any],
               twin: dict[str, Any], cancelled: int) -> dict[str, Any]:
    """One GPU's outcome: offered (the twin's ideal of the replayed requests) and achieved throughput,
    starved by the project's rule, the twin's prediction for the same requests, and its verification
    verdict from the placement."""
    gpu, offered = placement.gpus[g], float(twin["ideal_throughput"])
    adapters = placement.gpu_adapters(g)
    verdicts = placement.notes.get("twin") or []
    return {
        "gpu": g, "adapters": adapters["adapter_id"].to_list(), "routed_rates": adapters["rate"].to_list(),
        "max_loras": gpu.max_loras, "max_lora_rank": gpu.max_lora_rank, "requests_sent": len(requests),
        "requests_done": int(live["successful_requests"]), "cancelled_at_window_end": int(cancelled),
        "offered_tok_s": offered, "live_tok_s": float(live["total_throughput"]),
        "live_starved": is_starved(float(live["total_throughput"]), offered),
        "live_itl_mean_ms": float(live["itl_mean_ms"]), "live_ttft_mean_ms": float(live["ttft_mean_ms"]),
        "twin_tok_s": float(twin["total_throughput"]), "twin_starved": bool(twin["starved"]),
        "twin_itl_mean_ms": float(twin["itl_mean_ms"]), "twin_ttft_mean_ms": float(twin["ttft_mean_ms"]),
        "verification": verdicts[g] if g < len(verdicts) else None,
    }


# ---- the step ----------------------------------------------------------------------------------------------
def place_and_serve(plan: dict[str, Any], calibration: Any, python: str, model: str, max_model_len: int,
                    token_ids: tuple[int, int], env: dict[str, str] | None = None,
                    gpus: list[int] | None = None) -> dict[str, Any]:
    """Place the plan's workload, export it into ``out_dir/deploy``, serve ``gpus`` (default: every GPU) one
    after the other from their exported scripts; returns the ``placement`` block of the validation JSON."""
    from adaptwin.paths import resolve
    from adaptwin.placement.export import write_placement

    out = resolve(plan.get("out_dir", "data/live/placement"))
    workload = workload_frame(plan)
    placement = place(workload, calibration, plan)
    deploy = out / "deploy"
    write_placement(placement, deploy, base_port=int(plan.get("base_port", 18100)))
    script_vars = script_env(python, model, adapter_dir(workload, model, out / "adapters"), env)
    print(f"live loop: placed {workload.height} adapters ({placement.workload['rate'].sum():.2f} req/s) on {placement.num_gpus} GPUs "
          f"(lower bound {placement.lower_bound_gpus}) -> {deploy}", flush=True)
    records = []
    for g in range(placement.num_gpus) if gpus is None else gpus:
        record = serve_gpu(placement, g, deploy, script_vars, plan, calibration, max_model_len, token_ids)
        print(f"  gpu {g}: offered {record['offered_tok_s']:.0f} tok/s, live {record['live_tok_s']:.0f} "
              f"(starved {record['live_starved']}), twin {record['twin_tok_s']:.0f} "
              f"(starved {record['twin_starved']})", flush=True)
        records.append(record)
    return {
        "method": placement.method, "num_gpus": placement.num_gpus,
        "lower_bound_gpus": placement.lower_bound_gpus, "verified": bool(placement.notes.get("verified")),
        "deploy_dir": str(deploy), "workload": placement.workload.to_dicts(), "gpus": records,
        "any_live_starved": any(r["live_starved"] for r in records),
        "any_twin_starved": any(r["twin_starved"] for r in records),
        "throughput_smape_pct": mean_smape(records),
    }


def mean_smape(records: list[dict[str, Any]]) -> float | None:
    """The twin's throughput SMAPE over the served GPUs, in % (validation's SMAPE)."""
    if not records:
        return None
    return smape_pct([r["live_tok_s"] for r in records], [r["twin_tok_s"] for r in records])
