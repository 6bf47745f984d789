"""Generate notebooks/06_placement.ipynb (run from the repository root:
PYTHONPATH=tools python tools/gen_06_placement.py)."""

from new_notebook import parameters_cell, write_notebook

CELLS = [
    ("md", """
# 06 · Placement: serve many adapters on the fewest GPUs

**Question.** Given a workload of LoRA adapters (rank and request rate each), how few GPUs serve it with no
starved GPU and no memory error, and how do the proposed greedy (the paper's Algorithm 1) and its variants
compare with LoRAServe, dLoRA, first-fit decreasing and round robin?

**Method.** Every method asks the same CatBoost surrogates (notebook 05) whether a candidate GPU is safe:
starvation probability at most `starvation_threshold`, predicted throughput at least (0.9 + margin) x ideal,
where the margin is the surrogates' throughput error on real runs (`margin: auto`), and an A_max vLLM can start
(calibrated KV cache, notebook 02). Workloads: Azure trace windows replicated and mapped to adapters with a
Zipf popularity, and synthetic rates (see `adaptwin.placement.workloads`). Every GPU of every placement is then
re-simulated by the twin: the GPU counts below are checked, not just predicted. Beyond the paper, the proposed
methods' placements are first *repaired* with the twin (`repair: true`, `adaptwin.placement.repair`): a GPU the
twin fails (another seed than the verification, bar 0.92 x ideal) gets more slots, is rebalanced with the
lightest GPU, or is split. Then it is *shrunk* (`adaptwin.placement.shrink`): its adapters are dealt over fewer
GPUs, from the lower bound up, until the twin passes every GPU. The twin's time is reported apart from the
placement time. The lower bound is the offered load divided by the best per-GPU throughput the twin found (its
source is printed below); where that gives 1 GPU, the twin also tries the whole workload on one GPU at every
A_max memory allows, and raises the bound to 2 if none serves it (`twin_lower_bound: true`).
"""),
    ("code", parameters_cell("06_placement")),
    ("code", """
import json

import polars as pl
from IPython.display import Image, Markdown, display

from adaptwin.figures import placement as figs
from adaptwin.paths import resolve
from adaptwin.placement import experiments, make_context
from adaptwin.calibration.costs import load_calibration

data = resolve(data_dir)
calibration = load_calibration(data / "calibration" / f"{model}.json")
context = make_context(model, calibration=calibration, models_dir=data / "models",
                       metrics_path=data / "metrics" / "surrogates.json", dataset_dir=data / "dataset" / model,
                       margin=margin, starvation_threshold=starvation_threshold, max_served=max_served,
                       extensions=extensions, load_headroom=load_headroom,
                       twin_bound_s=verify_duration_s if twin_lower_bound else 0.0)
cfg = experiments.StageConfig(model=model, methods=methods, grid=grid, verify_duration_s=verify_duration_s,
                              verify_workers=verify_workers, single_gpu_adapters=single_gpu_adapters,
                              single_gpu_rate=single_gpu_rate, single_gpu_rank_mix=single_gpu_rank_mix,
                              repair=repair, repair_duration_s=repair_duration_s)
tables = experiments.run_stage(cfg, context, calibration, resolve(shared_dir), data / "placement",
                               data / "metrics" / "placement.json")
print(f"margin {context.evaluator.margin:.3f} ({context.margin_source}); lower bound from "
      f"{context.best_throughput_source}: {context.best_throughput:.0f} tok/s per GPU; "
      f"{context.evaluator.tokens_per_request:.0f} tokens/request")
"""),
    ("md", """
## GPUs used per method and workload, after twin verification

`gpus_used` against `lower_bound_gpus` (`load_bound_gpus`: the load formula alone); `predicted_unsafe_gpus` are GPUs the surrogate itself flags (a
baseline may knowingly overload); `repaired_gpus` and `shrunk_gpus` count the twin's repairs and the GPUs its shrinking removed; `starved_gpus` and
`memory_errors` come from the twin re-simulation.
"""),
    ("code", """
pl.Config.set_tbl_rows(60)
pl.Config.set_tbl_cols(16)
tables["summary"].select("workload", "method", "gpus_used", "lower_bound_gpus", "ratio_to_lower_bound",
                         "load_bound_gpus", "predicted_unsafe_gpus", "repaired_gpus", "shrunk_gpus", "starved_gpus", "memory_errors", "itl_mean_ms",
                         "placement_time_s", "repair_time_s")
"""),
    ("code", """
metrics = json.loads((data / "metrics" / "placement.json").read_text())
print(json.dumps({k: v for k, v in metrics.items() if k != "workloads"}, indent=1))
"""),
    ("md", """
## Fig. 10 · One GPU: throughput and chosen A_max against adapters to serve
"""),
    ("code", """
fig_dir = resolve(figures_dir) / "placement"
display(Image(filename=str(figs.single_gpu(tables["single_gpu"], fig_dir)[0])))
"""),
    ("md", """
## Fig. 11 · GPUs used and ITL against adapters (arrival multipliers x1 / x10)
"""),
    ("code", """
display(Image(filename=str(figs.gpus_and_itl(tables["summary"], fig_dir, kind=grid["kinds"][0])[0])))
"""),
    ("md", """
## Fig. 12 · ITL of the latency variant (same GPU count as the greedy)
"""),
    ("code", """
display(Image(filename=str(figs.latency_variant(tables["summary"], fig_dir)[0])))
"""),
    ("md", """
## Table 6 · Mean placement time per method
"""),
    ("code", """
display(Markdown((data / "placement" / "placement_times.md").read_text()))
display(Image(filename=str(figs.placement_times(tables["times"], fig_dir)[0])))
"""),
    ("md", """
**Result.** The table and `data/metrics/placement.json` give, per workload, the GPUs each method uses, the ratio
to the lower bound, and the starved GPUs and memory errors the twin finds; `proposed_never_more_gpus` compares
the greedy with every baseline placement that the twin finds valid.

**Caveats.** Verification replays Poisson arrivals at each adapter's mean rate (the trace only shapes the
rates, not the burstiness within a GPU) for `verify_duration_s` simulated seconds; the lower bound uses the
single best GPU configuration the twin found, which no real mix of ranks and rates may reach; LoRAServe splits
an adapter's traffic between GPUs (routing lists it once per GPU); in the smoke profile the workloads are tiny,
so the GPU counts are small integers and ratios to the bound are coarse.
"""),
]

if __name__ == "__main__":
    write_notebook("notebooks/06_placement.ipynb", CELLS)
