"""Experiment (not part of the pipeline): two per-step host (CPU) costs of vLLM 0.8.5 that grow with the adapters
served and with the queue, timed on vLLM's own code, and what they would do to the twin.

Why: on starved 5.6 runs at a fixed A_max the twin's throughput error grows with the adapters served (A_max 64,
S_max 16: +5.2 % at 64 served, +14.2 % at 384; its ITL falls short by 1.9 % and 7.4 %; ``--diagnose``), so some
per-step cost grows with them. Two code paths of the 0.8.5 engine process do (read in the 0.8.5 wheel, ``pip download
vllm==0.8.5``):

1. **Registry copy.** Every step, for every adapter in the batch, ``LRUCacheWorkerLoRAManager.add_adapter`` runs
   ``lora_int_id not in self.list_adapters()``, and ``list_adapters`` is ``set(dict(registry.cache))``, where
   ``.cache`` is a Python-level ``UserDict`` view of the CPU cache (``vllm/utils.py`` ``_MappingOrderCacheView``).
   A step then costs c x (adapters in the batch) x (adapters registered in the CPU cache, i.e. served). vLLM
   0.5.0 copies an ``OrderedDict`` at C speed instead; the CPU build of vLLM 0.32 still has the 0.8.5 path.
2. **Skip loop.** V1 ``Scheduler.schedule`` pops and re-queues every waiting request whose adapter cannot join a
   batch that already holds A_max adapters: a cost per visited request, which the twin charges at the 5.5
   tables' fit (``scheduler.waiting``, 0.23 us). The serving runs' gap would need about 0.45 us.

    .venv-vllm/bin/python tools/experiments/host_step_costs.py --micro
    PYTHON tools/experiments/host_step_costs.py --registry-copy    # any interpreter with cachetools
    PYTHON tools/experiments/host_step_costs.py --skip-loop        # any interpreter, no packages needed
    PYTHONPATH=lib .venv/bin/python tools/experiments/host_step_costs.py --diagnose data/validation/runs.parquet \
        [--measurements data/measurements]
    PYTHONPATH=lib .venv/bin/python tools/experiments/host_step_costs.py --profiling CAL.json [--coef S]
    PYTHONPATH=lib .venv/bin/python tools/experiments/host_step_costs.py --validate CAL.json OUT.parquet \
        --variant add|refit [--coef S] [--measurements data/measurements]
    PYTHONPATH=lib .venv/bin/python tools/experiments/validate_full.py --compare BASE.parquet OUT.parquet

``--variant add`` charges c x distinct x served on top of the calibration; ``refit`` first takes the same cost
out of the Llama 5.2-5.3 LoRA rows (5.2 serves 300 registered adapters, 5.3 serves 50; taking the 5.5 tables for
the 0.5 fork's, none there), refits the LoRA form, then charges it; ``refit_all`` also takes it out of the 5.5
rows. ``--profiling`` scores a calibration (with the term) on the model's own 5.2-5.3 runs.

Outcome (2026-12-03, calibration and validation of the ``make repro`` run at cc3f293, whose outputs the
submitted 18646de reproduced; one core, ~300 s per variant):

* ``--micro`` on this machine: registry copy 0.17-0.18 us per registered adapter per adapter in the batch (the
  0.8.5 classes, extracted from the wheel, and vLLM 0.32's give the same); skip loop 0.19-0.20 us per visited
  request, 0.24 us with the queue scattered in memory (flushing 64 MB of cache between calls changes nothing).
  So the skip loop's own cost agrees with the 5.5 fit (0.23 us), not with the 0.45 us the serving runs would
  need: the per-visit lead of the previous sessions is not the code's cost, unless the GPU host's CPU is twice
  as slow as this one.
* Full validation (5.6 / 5.9 SMAPE %, throughput / ITL / TTFT, starvation agreement %, ITL gap A_max >= 128
  minus <= 64 in points):

| variant (c = 0.18 us)        | 5.6 thr | 5.6 ITL | 5.6 TTFT | 5.6 starv | 5.6 ITL gap | 5.9 thr | 5.9 ITL | 5.9 starv |
|------------------------------|---------|---------|----------|-----------|-------------|---------|---------|-----------|
| none (the pipeline)          | 3.31    | 5.65    | 12.24    | 97.7      | -2.92       | 3.24    | 6.98    | 99.2      |
| add                          | 2.82    | 5.51    | 12.53    | 98.5      | -1.63       | 2.96    | 6.64    | 98.9      |
| refit                        | 3.55    | 8.23    | 20.66    | 96.2      | +16.69      | 3.80    | 9.25    | 98.1      |

* ``--profiling``: the pipeline's calibration is 1.45 % off Llama's own 5.2 runs (ITL); ``add`` makes that
  7.41 % (it over-predicts their LoRA seconds by 9 %: those runs already carry the copy of 300 registered
  adapters, which the fitted per-adapter cost absorbed); ``refit`` keeps 1.58 % but moves cost to the token and
  prompt-token terms (5.2 ``find_max_batch_small`` 17.1 -> 24.8 %; per token 5.3 -> 7.5 us, per slot and prompt
  token 0.43 -> 0.49 us, per adapter 0.35 -> 0.30 ms) and its swap fit then picks 17 ms per load: on 5.6 the
  starved runs at A_max >= 128 come out 26 % too slow (ITL) where they were 0.4 % too fast.

So the one variant that meets every 5.6 target contradicts a profiling family the calibration is fitted on, and
the variant consistent with it is worse on the serving runs. Neither is adopted. The registry copy is real but
only identifiable at one registered count (300) in the 0.8.5 profiling data; a GPU host running 0.8.5 could
time it (and the per-step cost at many served adapters) directly.

Follow-up (2026-12-03, same validation frame). Built since: the ``refit_all`` variant, with c timed on vLLM
0.8.5's own classes under the runs' Python 3.12 (``--registry-copy``: 180-181 ns per registered adapter, the
slope between 256 and 512; 161 ns under 3.11), is the calibration's ``calibration.registry_copy_s: 1.8e-7``
(`adaptwin.calibration.fit.REGISTRY_COPY_S`); it is off (0) by default because the surrogates trained on that
twin miss their targets (notebook 03). Run ``--variant`` only on a calibration written with it off.

* ``refit_all`` (``--validate CAL OUT --variant refit_all --coef 1.8e-7``): like ``refit``, but the copy also
  comes out of the 5.5 rows (LoRA rows: ``cpu_loras`` registered; swap rows likewise), which the calibration
  takes as 0.8.5 Llama-3.1-8B runs (`adaptwin.calibration.fit.LORA_TABLE_MODEL`; last session's ``refit``
  assumed the 0.5 fork, so left them alone and moved their copy to other terms). Same LoRA form chosen
  (slot_step_prefill+offset); per adapter 0.35 -> 0.30 ms, per token 5.3 -> 9.7 us; swap stays copy only;
  Llama's 5.2 runs 1.45 % ITL with the copy charged (1.45 % before). 5.6 throughput / ITL / TTFT / starvation /
  ITL gap: 1.89 / 5.09 / 13.08 / 96.95 / -1.65; 5.9: 2.32 / 6.99 / 20.09 / 99.2 / +0.83.

* Which interpreter. The 0.8.5 serving runs' tracebacks show ``/usr/local/lib/python3.12/dist-packages/vllm``
  (5.6 and 5.9); the 0.5 fork of the Llama-2 runs (5.7, 5.8; the 5.5 tables do not record theirs) ran
  ``python3.10``. ``--skip-loop`` under pyenv's 3.10.13 and 3.12.1 (both built without PGO/LTO) on this machine:
  377-427 ns per visit on 3.10, 157-181 ns on 3.12 (150-199 ns on the system 3.11): 3.12 runs this loop 2.4x
  faster (the specialising interpreter of 3.11 on). So the serving runs' Python pays 0.16-0.18 us per visit
  here; the 0.23 us the twin charges (the 5.5 fit) is 1.3-1.4x that, which a slower host CPU explains; the
  0.45 us their gap would need takes a host 2.5-3x slower than this machine, or Python 3.10.
* Where the starved runs' throughput bias comes from (``--diagnose``, last table; "high" = some adapter at
  >= 1 req/s, `validation.runs.rate_set`). On starved runs it is the
  twin's step time, not its batch and not the client: 5.6 starved high-rate runs (58): throughput +6.24 %,
  ITL -4.49 %, batch +1.74 %, unexplained rest +0.01 %; 5.9 starved high (74): +5.71 / -2.53 / +1.53 / +1.34 %.
  (On runs that are not starved throughput follows the arrivals, so their rest is not a step-time measure.)
  The starved runs whose step time the twin misses most are the high-rate ones, whose mean waiting queue is
  23-24k; the 5.9 starved low-rate runs (17.6k waiting) have ITL -0.24 %.
"""

from __future__ import annotations

import argparse
import enum
import json
import random
import sys
import timeit
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

#: registry-copy seconds per (adapter in the batch x registered adapter), measured by ``--micro`` here
REGISTERED_ADAPTER_S = 1.8e-7


# ---- microbenchmarks (vLLM's own code paths) -----------------------------------------------------------------
def time_registry_copy(sizes: tuple[int, ...] = (8, 64, 256, 512)) -> None:
    """``set(dict(registry.cache))`` with vLLM's adapter LRU cache (the installed vLLM; 0.32 keeps 0.8.5's path)."""
    try:
        from vllm.lora.model_manager import AdapterLRUCache
    except ImportError:
        print("registry copy: needs vLLM (run with .venv-vllm/bin/python)")
        return
    for n in sizes:
        cache = AdapterLRUCache(1024, lambda key: True)
        for i in range(n):
            cache[i + 1] = object()
        seconds = min(timeit.repeat(lambda c=cache, k=n + 5: k in set(dict(c.cache)), number=200, repeat=5)) / 200
        print(f"registry copy, {n} registered: {seconds * 1e6:.1f} us per adapter in the batch, "
              f"{seconds / n * 1e9:.0f} ns per registered adapter")


def time_registry_copy_085(sizes: tuple[int, ...] = (8, 64, 256, 512)) -> None:
    """The same copy with vLLM 0.8.5's own view class (``vllm/utils.py``, verbatim below) on ``cachetools``
    alone, so any interpreter can run it: the 0.8.5 runs used Python 3.12 (``calibration.registry_copy_s``)."""
    try:
        import cachetools
    except ImportError:
        print("registry copy (0.8.5 classes): needs cachetools (pip install cachetools)")
        return
    from collections import UserDict
    from types import MappingProxyType

    class _MappingOrderCacheView(UserDict):  # vllm 0.8.5 vllm/utils.py, verbatim
        def __init__(self, data, ordered_keys):
            super().__init__(data)
            self.ordered_keys = ordered_keys

        def __iter__(self):
            return iter(self.ordered_keys)

        def keys(self):
            return KeysView(self.ordered_keys)

    class LRUCache(cachetools.LRUCache):  # the two properties of vllm 0.8.5's LRUCache that list_adapters reads
        @property
        def cache(self):
            return _MappingOrderCacheView(self._Cache__data, self.order)

        @property
        def order(self):
            return MappingProxyType(self._LRUCache__order)

    from collections.abc import KeysView

    per_call = {}
    for n in sizes:
        cache = LRUCache(1024)
        for i in range(n):
            cache[i + 1] = object()
        # LRUCacheWorkerLoRAManager.add_adapter: id not in set(dict(registered.cache))
        seconds = min(timeit.repeat(lambda c=cache, k=n + 5: k in set(dict(c.cache)), number=200, repeat=5)) / 200
        per_call[n] = seconds
        print(f"registry copy (0.8.5 classes), {n} registered: {seconds * 1e6:.1f} us per adapter in the batch, "
              f"{seconds / n * 1e9:.0f} ns per registered adapter")
    lo, hi = sizes[-2], sizes[-1]  # the twin's term is per registered adapter: the slope, not the call's fixed part
    print(f"registry copy (0.8.5 classes): {(per_call[hi] - per_call[lo]) / (hi - lo) * 1e9:.0f} ns per registered "
          f"adapter between {lo} and {hi}")


class RequestStatus(enum.IntEnum):
    """vLLM 0.8.5 ``vllm/v1/request.py`` (the members the loop reads)."""

    WAITING = enum.auto()
    WAITING_FOR_FSM = enum.auto()
    RUNNING = enum.auto()


class _LoRARequest:
    __slots__ = ("lora_name", "lora_int_id", "lora_path")

    def __init__(self, i: int) -> None:
        self.lora_name, self.lora_int_id, self.lora_path = f"dummy-{i}", i, "/adapters/dummy"


class _Request:
    """The attributes the 0.8.5 loop reads (a plain class there too), and a prompt, so that a request is about
    as large in memory as a server's."""

    def __init__(self, i: int, lora: _LoRARequest) -> None:
        self.request_id, self.status, self.lora_request = str(i), RequestStatus.WAITING, lora
        self.prompt_token_ids = list(range(220))


class _LoraConfig:
    max_loras = 16


class _Scheduler:
    """Just enough of vLLM 0.8.5 ``Scheduler`` for the waiting loop of ``schedule`` (copied, minus the branches
    a request whose adapter cannot join the batch never reaches)."""

    def __init__(self, waiting: deque) -> None:
        self.waiting, self.running, self.max_num_running_reqs = waiting, [], 2048
        self.lora_config = _LoraConfig()

    def skip_all(self, scheduled_loras: set[int], token_budget: int = 1000) -> None:
        skipped_waiting_requests: deque = deque()
        while self.waiting and token_budget > 0:
            if len(self.running) == self.max_num_running_reqs:
                break
            request = self.waiting[0]
            if request.status == RequestStatus.WAITING_FOR_FSM:
                break
            if self.lora_config and request.lora_request and (
                    len(scheduled_loras) == self.lora_config.max_loras
                    and request.lora_request.lora_int_id not in scheduled_loras):
                self.waiting.popleft()
                skipped_waiting_requests.appendleft(request)
                continue
            break
        if skipped_waiting_requests:
            self.waiting.extendleft(skipped_waiting_requests)


def time_skip_loop(sizes: tuple[int, ...] = (1_000, 10_000, 25_000)) -> None:
    """Per visited request of `_Scheduler.skip_all` (16 adapters scheduled, 384 served)."""
    loras = [_LoRARequest(i + 1) for i in range(384)]
    scheduled = set(range(1001, 1017))
    for n in sizes:
        sched = _Scheduler(deque(_Request(i, loras[i % 384]) for i in range(n)))
        seconds = min(timeit.repeat(lambda s=sched: s.skip_all(scheduled), number=20, repeat=5)) / 20
        print(f"skip loop, {n} waiting: {seconds * 1e3:.2f} ms per step, {seconds / n * 1e9:.0f} ns per visit")
    # a server's queue was allocated among other objects and is not in allocation order
    keep, requests = [], []
    for i in range(sizes[-1]):
        requests.append(_Request(i, loras[i % 384]))
        keep.append([object() for _ in range(20)])
    random.Random(0).shuffle(requests)
    sched = _Scheduler(deque(requests))
    seconds = min(timeit.repeat(lambda: sched.skip_all(scheduled), number=20, repeat=5)) / 20
    print(f"skip loop, {sizes[-1]} waiting, scattered in memory: {seconds / sizes[-1] * 1e9:.0f} ns per visit")


# ---- the twin with the registry copy ----------------------------------------------------------------------
def variant_calibration(calibration: str, variant: str, coef: float, measurements: str, out: Path) -> Path:
    """A calibration of ``calibration``'s model whose twin charges the registry copy at ``coef`` (the
    ``registered_adapter`` term): ``add`` on top of ``calibration`` as fitted; ``refit`` refitted with the copy
    taken out of the 5.2-5.3 LoRA rows only (the 5.5 tables taken for the 0.5 fork's); ``refit_all`` the
    pipeline's own (`calibration.registry_copy_s`: every row that carries it, LoRA and swap)."""
    import numpy as np
    import polars as pl

    from adaptwin.calibration import fit, lora_forms

    model = json.loads(Path(calibration).read_text())["model"]
    if variant == "refit_all":
        return fit.calibrate(measurements, out, [model], registry_copy_s=coef)[model]
    if variant == "add":
        data = json.loads(Path(calibration).read_text())
        out.mkdir(parents=True, exist_ok=True)
        written = out / f"{model}.json"
    else:
        original_rows = lora_forms.lora_rows

        def lora_rows(tables, model, step, sched, registry_copy_s=0.0):
            rows = original_rows(tables, model, step, sched)
            prof = lora_forms.inputs.lora_points(tables, model).filter(pl.col("kind") != "base")
            served = np.concatenate([np.zeros(rows.frame.height - prof.height), prof["served_adapters"].to_numpy()])
            copy_s = coef * rows.frame["distinct_adapters"].to_numpy() * served
            return lora_forms.LoraRows(rows.frame.with_columns(pl.col("fixed_s") + pl.Series(copy_s)), rows.design)

        fit.lora_rows = lora_rows
        try:
            written = fit.calibrate(measurements, out, [model])[model]
        finally:
            fit.lora_rows = original_rows
        data = json.loads(written.read_text())
    data["lora"]["params"]["registered_adapter"] = coef
    written.write_text(json.dumps(data))
    return written


def profiling(calibration: str, coef: float, measurements: str) -> None:
    """ITL error (%) of the model's own 5.2-5.3 runs, without the registry copy and with it at ``coef`` (the
    calibration's own check, `adaptwin.calibration.models.check_lora_slots`, which charges the term)."""
    from adaptwin.calibration.inputs import load_tables, lora_points
    from adaptwin.calibration.models import check_lora_slots

    cal = json.loads(Path(calibration).read_text())
    points = lora_points(load_tables(measurements), cal["model"])
    bare = {k: v for k, v in cal["lora"]["params"].items() if k != "registered_adapter"}
    for label, params in (("without the copy", bare), (f"+ copy at {coef * 1e6:.2f} us",
                                                        {**bare, "registered_adapter": coef})):
        quality, _, _ = check_lora_slots(points, cal["step"]["params"], cal["scheduler"]["params"], params)
        for kind in ("lora", "lora_long", "lora_single"):
            q = quality[f"itl_{kind}"]
            print(f"{label}: {kind} mean |ITL error| {q['mean_abs_rel_err_pct']:.2f} % ({q['n']} runs)")


def diagnose(runs_path: str, measurements: str) -> None:
    """From a validation frame (``data/validation/runs.parquet``): the 5.6 runs' twin bias by starvation and
    A_max, the starved ones' by A_max and served adapters, the light-load TTFT gap (runs without swaps or starvation, < 40 running) by A_max, and the
    throughput bias split into step time and batch (below)."""
    import polars as pl

    runs = pl.read_parquet(runs_path).filter(pl.col("real_itl").is_not_null())
    bias = {"thr_bias_pct": (pl.col("twin_throughput") / pl.col("real_throughput") - 1) * 100,
            "itl_bias_pct": (pl.col("twin_itl") / pl.col("real_itl") - 1) * 100}
    starved = (runs.filter((pl.col("family") == "real_results") & pl.col("real_starved"))
               .group_by("max_loras", "served_adapters", "max_lora_rank")
               .agg(pl.len().alias("runs"), *(e.mean().round(1).alias(k) for k, e in bias.items()))
               .sort("max_loras", "max_lora_rank", "served_adapters"))
    light = (runs.filter(~pl.col("real_starved") & (pl.col("served_adapters") == pl.col("max_loras"))
                         & (pl.col("real_mean_running") < 40))
             .group_by("family", "max_loras")
             .agg(pl.len().alias("runs"), pl.col("real_ttft").mean().round(1), pl.col("twin_ttft").mean().round(1),
                  (pl.col("real_ttft") - pl.col("twin_ttft")).mean().round(1).alias("gap_ms"),
                  pl.col("real_itl").mean().round(1))
             .sort("family", "max_loras"))
    by_a_max = (runs.filter((pl.col("family") == "real_results") & pl.col("real_throughput").is_not_null()
                            & ~pl.col("twin_memory_error"))
                .group_by("real_starved", "max_loras")
                .agg(pl.len().alias("runs"), *(e.mean().round(2).alias(k) for k, e in bias.items()))
                .sort("real_starved", "max_loras"))
    with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=250):
        print(by_a_max)
        print(starved)
        print(light)
        print(bias_split(runs, measurements))


def bias_split(runs: pl.DataFrame, measurements: str) -> pl.DataFrame:
    """Throughput bias against the ITL and batch biases, by family, starvation and rate set
    (`adaptwin.validation.runs.rate_set`).

    Tokens per second are about batch / step time, so (1 + throughput bias) x (1 + ITL bias) / (1 + batch bias)
    - 1 (``rest_pct``) is what neither the twin's step time nor its batch explains: a client-side loss of
    tokens would show there. ``real_waiting`` is the mean of the time series' waiting gauge in the window."""
    import polars as pl

    series = (pl.scan_parquet(Path(measurements) / "timeseries.parquet").filter(pl.col("in_window"))
              .group_by("run_id").agg(pl.col("num_waiting").mean().alias("real_waiting")).collect())
    ratio = {"thr": pl.col("twin_throughput") / pl.col("real_throughput"),
             "itl": pl.col("twin_itl") / pl.col("real_itl"),
             "batch": pl.col("twin_mean_batch_size") / pl.col("real_mean_running")}
    frame = (runs.filter(pl.col("real_throughput").is_not_null() & ~pl.col("twin_memory_error"))
             .join(series, on="run_id", how="left").with_columns(**ratio)
             .with_columns(rest=pl.col("thr") * pl.col("itl") / pl.col("batch")))
    pct = [((pl.col(k) - 1) * 100).mean().round(2).alias(f"{k}_bias_pct") for k in (*ratio, "rest")]
    return (frame.group_by("family", "real_starved", "rate_set")
            .agg(pl.len().alias("runs"), *pct, pl.col("real_waiting").mean().round(0))
            .sort("family", "real_starved", "rate_set"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--micro", action="store_true")
    ap.add_argument("--skip-loop", action="store_true", help="only the skip loop: any Python, no packages")
    ap.add_argument("--registry-copy", action="store_true", help="the copy on 0.8.5's classes: any Python + cachetools")
    ap.add_argument("--profiling", metavar="CAL")
    ap.add_argument("--diagnose", metavar="RUNS")
    ap.add_argument("--validate", nargs=2, metavar=("CAL", "OUT"))
    ap.add_argument("--variant", choices=("add", "refit", "refit_all"), default="add")
    ap.add_argument("--coef", type=float, default=REGISTERED_ADAPTER_S)
    ap.add_argument("--measurements", default="data/measurements")
    args = ap.parse_args()
    if args.micro:
        time_registry_copy()
    if args.micro or args.skip_loop or args.registry_copy:
        print(f"Python {sys.version.split()[0]}")
    if args.micro or args.registry_copy:
        time_registry_copy_085()
    if args.micro or args.skip_loop:
        time_skip_loop()
    if args.diagnose:
        diagnose(args.diagnose, args.measurements)
    if args.profiling:
        profiling(args.profiling, args.coef, args.measurements)
    if args.validate:
        calibration, out = args.validate
        calibration = str(variant_calibration(calibration, args.variant, args.coef, args.measurements,
                                              Path(out).with_suffix(".cal")))
        print(f"variant calibration: {calibration}")
        sys.path.insert(0, str(Path(__file__).parent))
        from validate_full import run

        run(calibration, out)


if __name__ == "__main__":
    main()
