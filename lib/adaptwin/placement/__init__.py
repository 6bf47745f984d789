"""adaptwin.placement: serve many LoRA adapters on the fewest GPUs, none starved and none out of memory.

`place(adapters, context, method)` places a workload (``adapter_id, rank, rate``) with one of `METHODS`;
`make_context(model, ...)` loads the surrogate and calibration it needs. Modules: `core` (records and the
batched surrogate evaluator), `greedy` (the proposed Algorithm 1 and its fast variant), `latency` (ProposedLat),
`baselines` (LoRAServe, dLoRA, FFD, round robin), `bounds` (lower bound), `workloads`, `verify` (twin
re-simulation), `repair` and `shrink` (the twin in the loop: fix the GPUs it fails, then re-deal over fewer), `export` (placement.json, routing.csv, serve scripts), `experiments` (the stage's grid),
`cli` (``adaptwin place``).
"""

from adaptwin.placement.api import METHODS, Context, make_context, place
from adaptwin.placement.core import Evaluator, Gpu, Placement, PlacementError, Predictor

__all__ = ["METHODS", "Context", "Evaluator", "Gpu", "Placement", "PlacementError", "Predictor", "make_context", "place"]
