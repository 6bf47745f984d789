"""Generate notebooks/02_calibrate.ipynb (run from the repository root: python tools/gen_02_calibrate.py)."""

from new_notebook import write_notebook

CELLS = [
    ("md", """
# 02 · Calibrate the twin's cost models from the profiling runs

**Question.** How long does one vLLM 0.8.5 engine step take for a given batch, how much do LoRA adapters
add, how long does an adapter take to load, how much KV cache is left after reserving A_max slots of rank
S_max (and when does the server refuse to start), and what does the scheduler cost?

**Method.** `adaptwin.calibration` reads the measurement tables of notebook 01 and fits, per base model, from
the *profiling* families only (data card 5.1-5.5; the serving runs are kept for notebook 03):
step time jointly from the decode runs (ITL at the mean running batch) and the prefill runs (duration per
2048-token step), with terms per decode sequence, per context token, per prefill token and per admitted
request; a LoRA factor on the step time against the expected distinct adapters per batch, fitted on the
LoRA-overhead runs (batch ~210), whose excess over 1 ramps with the tokens of the step from the value the
batch-1 loading runs show (LoRA adds ~40 % at batch 1, ~100 % at batch 210; whether it also scales attention
is decided by the residuals); the measured CPU->GPU load time per (S_max, rank); KV capacity
piecewise-linear in A_max per S_max with the measured start failures; scheduler time linear in running and
waiting requests. Output: `data/calibration/<model>.json` (schema in `adaptwin.twin.costs`) and one residual
figure per cost model in `<figures_dir>/calibration/`.
"""),
    ("code", """
data_dir = ".smoke/data"        # relative to the repository root; DVC passes "data"
figures_dir = ".smoke/figures"
shared_dir = "../shared"
reports_dir = ".smoke/reports"
models = ["llama-3.1-8b-instruct", "qwen-2.5-7b-instruct"]
"""),
    ("code", """
import json

import polars as pl
from IPython.display import Image, display

from adaptwin.calibration import calibrate, quality_table
from adaptwin.paths import resolve

fig_dir = resolve(figures_dir) / "calibration"
paths = calibrate(resolve(data_dir) / "measurements", resolve(data_dir) / "calibration", models, fig_dir)
pl.Config.set_tbl_rows(40)
quality_table(paths)
"""),
    ("md", """
**Result.** The table lists, per model and cost model, the relative residuals of each fit (`decode`,
`prefill`: step model; `itl_lora`: LoRA runs with the fitted factor; `itl_lora_long`, `itl_base`: runs held
out of the factor fit; `piecewise`: KV capacity). The fitted parameters:
"""),
    ("code", """
for model, path in paths.items():
    cal = json.loads(path.read_text())
    print(model, "step", cal["step"], "\\nlora", cal["lora"], "\\nmax_feasible", cal["kv_capacity"]["params"]["max_feasible"])
"""),
    ("md", """
## Residual figures

Step time (decode ITL and prefill steps), LoRA factor vs expected distinct adapters, KV capacity vs A_max (x:
the server did not start), loading time per (S_max, rank), scheduler time.
"""),
    ("code", """
for model in models:
    for name in ("step", "lora", "kv_capacity", "loading"):
        display(Image(filename=str(fig_dir / f"{model}_{name}_residuals.png")))
display(Image(filename=str(fig_dir / "scheduler_residuals.png")))
"""),
    ("md", """
**Caveats.** The aggregate profiling runs do not record per-step times, so the step model treats a saturated
run's mean ITL as the step time at its mean running batch (residuals about ±5 %). The LoRA runs do not record
the distinct adapters per batch; their expectation under uniform request spreading is used. LoRA overhead was
profiled only at rank 8, at batch 1 (one adapter) and batch ~210-250; between them the ramp is linear, above
them the factor is held (an additive LoRA time fits the profiling runs as well but grows without bound with
the tokens of a step; all candidates' residuals are in `fit_quality.lora`).
The scheduler CSVs do not name their model; both models share that fit. Llama-2-7B (vLLM 0.5.0, V0 engine)
is not calibrated.
"""),
]

if __name__ == "__main__":
    write_notebook("notebooks/02_calibrate.ipynb", CELLS)
