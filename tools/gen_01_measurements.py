"""Generate notebooks/01_measurements.ipynb (run from the repository root: python tools/gen_01_measurements.py)."""

from new_notebook import parameters_cell, write_notebook

CELLS = [
    ("md", """
# 01 · Measurements: ingest the vLLM corpus and redraw the measurement figures

**Question.** What limits the throughput of one GPU serving many LoRA adapters: adapter rank, request rate,
the number of GPU adapter slots (A_max), the memory those slots reserve, the compute of mixing adapters in a
batch, adapter loading, or the scheduler?

**Method.** With `backend = "replay"` the recorded corpus (`../shared/vllm-measurements`, described by its
data card) is ingested into tidy Parquet tables (`adaptwin.measurements`, columns documented in
`adaptwin.measurements.schema`); with `backend = "vllm"` the profiling harness measures a live server (GPU
needed) and writes the same tables. Every figure below reads only those tables
(`adaptwin.figures.measurements`), and is written as PNG + PDF to `<figures_dir>/measurements/`. A profile
writes only `runs`, `timeseries` and `kv_capacity`, with the families its config names; a figure whose input
tables or run families are absent is skipped with a sentence saying what is missing.
"""),
    ("code", parameters_cell("01_measurements")),
    ("code", """
import polars as pl
from IPython.display import Image, display

from adaptwin.figures import measurements as figs
from adaptwin.measurements import ingest, read_table
from adaptwin.measurements.stage import MeasurementsConfig
from adaptwin.paths import resolve

config = MeasurementsConfig.from_params(dict(backend=backend, profiling_config=profiling_config))
measurements_dir = resolve(data_dir) / "measurements"
out_dir = resolve(figures_dir) / "measurements"
if config.backend == "replay":
    report = ingest(resolve(shared_dir) / "vllm-measurements", measurements_dir)
else:
    from adaptwin.profiling.cli import run_from_config  # needs vLLM and a GPU

    report = run_from_config(resolve(config.profiling_config), measurements_dir)
report
"""),
    ("code", """
names = ("runs", "timeseries", "scheduler_overhead", "lora_load_times")
tables = {name: read_table(measurements_dir, name) for name in figs.available_tables(measurements_dir, names)}
runs = tables["runs"]
pl.Config.set_tbl_rows(20)
(runs.group_by("family", "status").len()
 .pivot(on="status", index="family", values="len", sort_columns=True)
 .fill_null(0).sort("family"))
"""),
    ("md", """
The table counts run folders per family and status (`ok`, `memory_error`, `crash`, `cancelled`,
`placeholder`, `no_summary`); the data card's inventory (section 2) lists the same families, and the ingest
tests assert its numbers.

## Fig. 1 · Throughput vs served adapters (Llama-2-7B, 250 in / 231 out tokens per request)

**Question.** How does throughput grow with the number of served adapters, and where does it stop following
the offered load?
**Method.** Panels (a) and (b) use the `without_slots` runs (served = A_max, a 4,096-request Poisson stream):
(a) `initial_point` (rank 16) plus `varying_adapter_size` (ranks 8, 32, 64) at 0.05 req/s per adapter;
(b) `initial_point` (0.05 req/s) plus `varying_arrival_rate` (0.0125 to 0.2 req/s), rank 16. Panel (c) uses
the `with_slots` by-time runs at 0.0125 req/s per adapter: one line per A_max, plus the runs without
offloading (A_max = served). A run is starved (hollow marker) when its throughput is below 0.9 x ideal,
ideal = served adapters x rate per adapter x 481 tokens; x marks a memory error (drawn at 0).
"""),
    ("code", """
if skipped := figs.skip_reason("fig1", tables):
    print(skipped)
else:
    paths = figs.fig1_motivation(runs, out_dir)
    display(Image(filename=str(paths[0])))
    fig1 = figs.motivation_points(runs)
    display(fig1.group_by("panel", "outcome").len().sort("panel", "outcome"))
"""),
    ("md", """
**Result** (recorded corpus). Throughput follows the offered load up to a knee, then falls while the server
starves: every extra adapter takes slot memory from the KV cache and adds adapters to the batch. Larger ranks
and higher rates reach the knee with fewer adapters (rank 8 peaks near 3,950 tok/s at 192 adapters, rank 64 at
about 2,170 tok/s at 96 and runs out of memory from 128; at 0.2 req/s per adapter the knee is at about 48
adapters, at 0.0125 req/s none is reached before memory runs out at 512). With offloading (panel c) an
intermediate A_max is best: 144 to 256 slots reach about 2,500 tok/s at 448 served adapters, while few slots
(12: about 1,570 tok/s) cap the adapters served at once and A_max = served runs out of memory from 448.
**Caveats.** In `without_slots` the summary stops when the last request is sent, so requests still running are
not counted (throughput is slightly underestimated for every run alike). Runs that failed for other reasons
(port clash, time limit, "Task without enough requests to send", e.g. every `_*_256_16_` at 0.0125 req/s) have
no result and are not drawn.

## Fig. 4 · Memory overhead: reserving adapter slots (Llama-2-7B solid, Llama-2-13B dotted)

**Question.** What does reserving A_max slots of rank S_max cost, before any adapter is used?
**Method.** `memory_overhead` runs, `mean` request size (250 / 231 tokens), all requests to the base model
(`disable_loras_users`), 1,500 (7B) or 1,000 (13B) requests sent at once. Batch size = mean `num_running`
inside the benchmark window; x / + marks the smallest A_max whose reservation no longer fits (memory error).
"""),
    ("code", """
if skipped := figs.skip_reason("fig4", tables):
    print(skipped)
else:
    paths = figs.fig4_memory_overhead(runs, out_dir)
    display(Image(filename=str(paths[0])))
"""),
    ("md", """
**Result** (recorded corpus). Slots take memory from the KV cache: past a rank-dependent A_max the mean batch
shrinks and the throughput with it, until the reservation no longer fits (7B: first failure at A_max 848 /
448 / 240 for S_max 8 / 16 / 32; 13B: 368 / 208 / 112). Enabling LoRA costs throughput even with one slot and
no adapter in use (7B: about 5,500 tok/s without LoRA, 5,150 / 4,880 / 4,460 with S_max 8 / 16 / 32), because
the ITL at the same batch grows with S_max. ITL grows about linearly with batch size, steeper for 13B.
**Caveats.** Llama-2 runs used the older vLLM 0.5 fork (V0 engine, no chunked prefill); do not pool them with
the 0.8.5 runs. The no-LoRA baseline exists for 7B only.

## Fig. 5 · Compute overhead: adapters in the batch

**Question.** How much slower is a batch that mixes many adapters?
**Method.** `compute_overhead` runs: A_max near the memory limit, adapter rank = S_max, all requests sent at
once and spread over the first N adapters (N = 0 is the base model, the reference). Slowdown =
1 - throughput / reference; ITL overhead = ITL / reference - 1, both in %.
"""),
    ("code", """
if skipped := figs.skip_reason("fig5", tables):
    print(skipped)
else:
    paths = figs.fig5_compute_overhead(runs, out_dir)
    display(Image(filename=str(paths[0])))
"""),
    ("md", """
**Result** (recorded corpus). One adapter already costs 9 to 16 % of throughput (and about as much ITL)
against the base model; the cost stays nearly flat up to a few tens of adapters and then climbs, to 14-18 %
(p75), 24-27 % (mean) and 49-64 % (p25) at the largest N; the p25 runs reach the most adapters (A_max up to
448), so short requests lose the most. Rank 8 is cheapest; ranks 16 and 32 are close (their A_max differ too,
so rank and A_max are confounded here).
**Caveats.** N is the number of adapters the requests are spread over, an upper bound on the distinct adapters
in one batch (the per-step count is in `server_out.log`, not copied). Two runs failed on port clashes.

## Fig. 6 · Loading overhead

**Question.** How long does loading an adapter take, and does it matter next to a request's latency?
**Method.** (a) the hand-transcribed `lora_load_times` (disk to CPU plus CPU to GPU, first load vs three later
loads). (b, c) the `loading_overhead/latency` runs (one adapter, one slot, 100 requests at once) give the mean
request latency = mean TTFT + mean TPOT x (output tokens - 1) for the p25 / mean / p75 request sizes; from CPU
adds the activation time, from disk adds the first load's disk time too. Data-card caveat (shared servers):
the five repetitions shared one port, and some benchmarks measured a sibling's server while another benchmark
ran on it. We keep only *clean* repetitions (the polled server's `finished` counter reached at most 100
requests + 1 warm-up) and take their median; where a configuration has no clean repetition we use its fastest
one (interference only adds time) and hatch its bar.
"""),
    ("code", """
if skipped := figs.skip_reason("fig6", tables):
    print(skipped)
else:
    paths = figs.fig6_loading_overhead(runs, tables["timeseries"], tables["lora_load_times"], out_dir)
    display(Image(filename=str(paths[0])))
    display(figs.loading_latency_points(runs, tables["timeseries"], tables["lora_load_times"]))
"""),
    ("md", """
**Result** (recorded corpus). A first load from disk takes about 0.1 / 0.27 / 0.52 s for rank 8 / 16 / 32;
later loads take about 40-110 ms (file cache), and the CPU-to-GPU step only about 9 ms at every rank. For mean and
p75 requests a first load from disk adds 1-5 % to the mean request latency; for short p25 requests (about 1 s)
it adds 11 / 22 / 46 %, while an adapter already in CPU memory adds under 1 % everywhere. Keeping adapters in
CPU memory matters most for short requests and large ranks.
**Caveats.** The load times are a dozen hand-transcribed log lines; the latency runs are not independent
repetitions (see above).

## Fig. 7 · Scheduler overhead

**Question.** Does the scheduler's own time per step grow with the number of served adapters?
**Method.** The two pre-aggregated CSVs (rank 8, about 600 s per run): scheduler time per step = total
scheduling time / steps, (a) at one per-adapter rate, (b) at one total rate, one line per A_max, and (c) every
run of both tables against the mean waiting queue.
"""),
    ("code", """
if skipped := figs.skip_reason("fig7", tables):
    print(skipped)
else:
    paths = figs.fig7_scheduler_overhead(tables["scheduler_overhead"], out_dir)
    display(Image(filename=str(paths[0])))
"""),
    ("md", """
**Result** (recorded corpus). The scheduler's time per step follows the waiting queue (Spearman rank
correlation about 0.8 in both tables) more than the served adapters: queued requests whose adapter has no
slot are scanned again at every step. It ranges from about 0.02 ms to 7.9 ms per step, against a median ITL
of 66 / 105 ms in the two tables; with A_max >= 256 it never exceeds about 1.2 ms, with A_max <= 64 it reaches
7.9 ms.
**Caveats.** The raw runs behind the CSVs are not in the corpus and the model is not recorded; the values
cannot be re-derived, only re-plotted.
"""),
]

if __name__ == "__main__":
    write_notebook("notebooks/01_measurements.ipynb", CELLS)
