"""The engine's own per-step record: vLLM's iteration log (``--enable-logging-iteration-details``, 0.32) and
the step model fitted to it.

Why: the Prometheus histograms time whole requests, so a step's cost has to be inferred from runs whose steps
are known (one request alone, a batch decoding together), and those runs are short and few: on a shared CPU
one stall of another process moves them by a factor of two (a 64-token prompt alone took 30 ms in one
profiling pass, a 512-token one 180 ms, though a busy step of 2048 prompt tokens took about 85 ms). The engine
core logs every step's composition (prompts and their tokens, decoding requests) and its forward time, so the
step terms are a regression over the hundreds of steps of every profiling run, each step with its own mix,
steps of a busy engine included. The forward time leaves out the engine loop around it (scheduling, output
processing); the decode period of the histograms holds that, so the loop's share comes from there.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

#: flag that makes vLLM (0.32) log every step
FLAG = "--enable-logging-iteration-details"
LINE = re.compile(r"Iteration\((\d+)\): (\d+) context requests, (\d+) context tokens, (\d+) generation requests, "
                  r"(\d+) generation tokens, iteration elapsed time: ([0-9.]+) ms(?! \(dummy\))")
#: columns of a step row
COLUMNS = ("iteration", "ctx_requests", "ctx_tokens", "gen_requests", "gen_tokens", "elapsed_s")


def parse_steps(text: str) -> np.ndarray:
    """Step rows (`COLUMNS`) of the iteration lines in ``text`` (dummy steps left out), shape (n, 6)."""
    rows = [(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), float(m[6]) / 1000) for m in LINE.finditer(text)]
    return np.asarray(rows, dtype=float).reshape(-1, len(COLUMNS))


def log_sizes(log_dir: Path, names: tuple[str, ...] = ("server_out.log", "server_err.log")) -> dict[str, int]:
    """Bytes in each server log now: a run's steps are what its logs grew by (`steps_since`)."""
    return {name: (log_dir / name).stat().st_size if (log_dir / name).exists() else 0 for name in names}


def steps_since(log_dir: Path, sizes: dict[str, int]) -> np.ndarray:
    """Steps logged since ``sizes`` (`log_sizes`) in the server's logs."""
    parts = []
    for name, start in sizes.items():
        path = log_dir / name
        if path.exists():
            with path.open("rb") as f:
                f.seek(start)
                parts.append(f.read().decode("utf-8", "replace"))
    return parse_steps("\n".join(parts))


def fit_steps(steps: np.ndarray, trim: float = 4.0) -> dict[str, float]:
    """Forward time per step, linear in decoding requests, prompt tokens and prompts (least squares):
    ``intercept``, ``decode_seqs``, ``prefill_tokens``, ``prefill_seqs`` in seconds, ``steps`` used.

    Steps whose residual exceeds ``trim`` robust standard deviations (1.4826 x the median absolute residual)
    are left out of a second fit: a stall of the shared CPU in one step says nothing about the step's mix
    (the run's slowdown is modelled separately, `cpu_share`)."""
    x = np.column_stack([np.ones(len(steps)), steps[:, 3], steps[:, 2], steps[:, 1]])
    y = steps[:, 5]
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    resid = y - x @ coef
    scale = 1.4826 * np.median(np.abs(resid - np.median(resid)))
    keep = np.abs(resid) <= trim * scale if scale > 0 else np.ones(len(y), bool)
    coef = np.linalg.lstsq(x[keep], y[keep], rcond=None)[0]
    names = ("intercept", "decode_seqs", "prefill_tokens", "prefill_seqs")
    return {**{k: float(v) for k, v in zip(names, coef, strict=True)}, "steps": int(keep.sum()),
            "trimmed": int((~keep).sum())}
