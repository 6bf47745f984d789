"""What vLLM accepts: LoRA ranks and adapter names a placement or scenario may use.

Why: a setting vLLM refuses only shows up when an operator starts the server. vLLM checks ``max_lora_rank``
against a fixed set (``LoRAConfig``), and an adapter name travels through ``--lora-modules name=path`` (split
on ``=``), through shell scripts and through file names, so names holding ``=``, ``,``, ``/`` or spaces break
one of them. Checking here, before anything is simulated or exported, turns those late failures into one
line naming the file, the field and the value.

Versions: the twin reproduces vLLM 0.8.5 (`TARGET_VLLM`); newer releases also accept rank 1.
"""

from __future__ import annotations

import re

#: ``max_lora_rank`` values vLLM accepts, per version family
ALLOWED_RANKS: dict[str, tuple[int, ...]] = {
    "0.8.5": (8, 16, 32, 64, 128, 256, 320, 512),
    "current": (1, 8, 16, 32, 64, 128, 256, 320, 512),
}
#: the vLLM version the twin is calibrated on and the serve scripts target
TARGET_VLLM = "0.8.5"
#: adapter names safe in ``--lora-modules name=path``, in shell words and as file names
ADAPTER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ADAPTER_ID_RULE = "1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"


def allowed_ranks(version: str = TARGET_VLLM) -> tuple[int, ...]:
    """The ``max_lora_rank`` values ``version`` accepts (`ALLOWED_RANKS`)."""
    if version not in ALLOWED_RANKS:
        raise ValueError(f"vLLM version {version!r} unknown (known: {', '.join(ALLOWED_RANKS)})")
    return ALLOWED_RANKS[version]


def rank_problem(rank: int, version: str = TARGET_VLLM) -> str | None:
    """Why vLLM ``version`` refuses ``rank`` as a LoRA rank, or None when it accepts it."""
    allowed = allowed_ranks(version)
    if int(rank) in allowed:
        return None
    return f"{rank} is not a LoRA rank vLLM {version} accepts ({', '.join(map(str, allowed))})"


def adapter_id_problem(adapter_id: str) -> str | None:
    """Why ``adapter_id`` cannot be served under that name, or None when it can."""
    if ADAPTER_ID_PATTERN.fullmatch(adapter_id):
        return None
    return f"{adapter_id!r} cannot be an adapter name ({ADAPTER_ID_RULE})"


def calibrated_problem(rank: int, calibrated_max: int) -> str | None:
    """Why ``rank`` lies outside what the calibration measured (None when inside): beyond its largest S_max
    the twin's loading and memory costs are extrapolated, not measured."""
    if int(rank) <= calibrated_max:
        return None
    return (f"{rank} is beyond the calibrated ranks (largest {calibrated_max}); "
            "pass --extrapolate to accept extrapolated costs")
