"""Shared helpers of the twin tests: the fixture calibration (copied to a temporary path) and scenarios."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adaptwin.twin import Calibration, load_calibration

FIXTURE = Path(__file__).parent / "fixtures" / "calibration_llama_example.json"
MODEL = "llama-3.1-8b-instruct"


def fixture_calibration(tmp_path: Path, edit: Callable[[dict], None] | None = None,
                        name: str = "calibration.json") -> tuple[Path, Calibration]:
    """Copy the hand-made fixture to ``tmp_path`` (``edit`` may change the parsed JSON first)."""
    path = tmp_path / name
    shutil.copy(FIXTURE, path)
    if edit is not None:
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return path, load_calibration(path)


def small_kv(data: dict) -> None:
    """A KV cache of about 24k tokens (and a short max_model_len so the server still starts)."""
    data["max_model_len"] = 4096
    data["kv_capacity"]["params"]["base_tokens"] = 30000


def write_trace(path: Path, rows: list[tuple[float, int, int]]) -> Path:
    """A trace CSV like ../shared/traces (arrived_at, num_prefill_tokens, num_decode_tokens)."""
    lines = ["arrived_at,num_prefill_tokens,num_decode_tokens"] + [f"{t},{p},{o}" for t, p, o in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def scenario(max_loras: int = 8, served: int = 24, rates: tuple[float, ...] = (0.2, 0.1, 0.05), duration: float = 300.0,
             seed: int = 0, **extra: Any) -> dict[str, Any]:
    """A real_results-like scenario: served adapters in thirds over ``rates``, ranks 8/16/8, S_max 16."""
    counts = [served // 3 + (1 if i < served % 3 else 0) for i in range(3)]
    sc = {
        "model": MODEL,
        "server": {"max_loras": max_loras, "max_cpu_loras": served, "max_lora_rank": 16, "max_num_seqs": 2048,
                   "max_num_batched_tokens": 2048},
        "adapters": [{"count": c, "rank": r, "rate": q} for c, r, q in zip(counts, (8, 16, 8), rates, strict=True) if c],
        "arrivals": {"kind": "poisson"},
        "lengths": {"kind": "sharegpt"},
        "duration_s": duration,
        "seed": seed,
    }
    sc.update(copy.deepcopy(extra))
    return sc
