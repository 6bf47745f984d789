"""adaptwin.placement: serve many LoRA adapters on the fewest GPUs, none starved and none out of memory.

`place(adapters, context, method)` places a workload (``adapter_id, rank, rate``) with one of `METHODS`;
`make_context(model, ...)` loads the surrogate and calibration it needs; `pipeline.run` adds the twin's steps.
Modules: `core` (records, `PlacementNotes` and the batched surrogate evaluator), `methods` (the registry: each
method's name, packing and role), `greedy` (the proposed Algorithm 1 and its fast variant), `latency`
(ProposedLat), `baselines` (LoRAServe, dLoRA, FFD, round robin), `bounds` (lower bound), `workloads`, `verify`
(twin re-simulation), `repair` and `shrink` (the twin in the loop: fix the GPUs it fails, then re-deal over
fewer), `pipeline` (the whole sequence, for the command and the stage), `verified` (the operator's answers),
`export` (placement.json, routing.csv, serve scripts), `experiments` (the stage's grid), `cli` (``adaptwin place``).
"""

from adaptwin.placement.api import METHODS, Context, make_context, place
from adaptwin.placement.core import Evaluator, Gpu, Placement, PlacementError, PlacementNotes, Predictor

__all__ = ["METHODS", "Context", "Evaluator", "Gpu", "Placement", "PlacementError", "PlacementNotes", "Predictor",
           "make_context", "place"]
