"""Cost models of the twin, read from a calibration file (``data/calibration/<model>.json``).

`adaptwin.calibration` fits these models from the profiling measurements and writes the JSON;
the twin only evaluates them through `Calibration`. The JSON schema (``schema_version`` 1):

```
{
  "schema_version": 1,
  "model": "llama-3.1-8b-instruct",
  "max_model_len": 131072,          # tokens; vLLM refuses to start if the KV cache holds less
  "block_size": 16,                 # tokens per KV block
  "step":      {"form": "linear", "params": {"intercept": s, "decode_seqs": s, "prefill_tokens": s,
                "context_tokens": s, "prefill_seqs": s},
                "lora_exempt": ["context_tokens"]},        # optional: terms the LoRA factor leaves alone
  "lora":      <curve of distinct adapters in the batch -> multiplicative factor on the step time (>= 1)>
               or {"form": "additive", "params": {"intercept": s, "decode_seqs": s, "prefill_tokens": s,
                   "distinct_adapters": s}}   # seconds LoRA adds to a step with >= 1 adapter in the batch,
               or {"form": "factor_ramp", "params": {"coef": [c0, c1, ...], "ramp_tokens": t, "ramp_start": r}}
                   # factor whose excess over 1 ramps with the step's tokens (see Calibration.lora_factor),
               or {"form": "slots", "params": {"launch": s, "distinct_adapters": s, "slots": s, "tokens": s,
                                                 "slot_token": s, "slot_prefill_token": s}}
                   # explicit step coefficients: seconds LoRA adds to a step with >= 1 adapter = launch
                   # + per distinct adapter + per configured slot + per LoRA token + per (slot x token),
                   # slots = A_max + 1; absent terms are 0 (see Calibration.lora_extra); optional
                   # "rank_tile_adapter": s per distinct adapter per rank tile of S_max beyond the first
                   # (RANK_TILE ranks per tile); optional "registered_adapter": s per distinct adapter per
                   # adapter registered in the worker's CPU cache (the served ones: Calibration.lora_extra),
  "loading":   {"form": "table", "params": {"<s_max>": {"<rank>": ms}}},   # CPU -> GPU slot load, ms
  "swap":      {"form": "per_load_slots", "params": {"per_load_ms": ms, "per_slot_ms": ms}},
               # optional (absent = 0): step time a swap costs beyond the copy, + per_slot_ms x (A_max + 1)
  "kv_capacity": {"form": "linear_slots" | "piecewise_slots",
                  "params": {"base_tokens": t, "per_slot_rank_tokens": t,
                             "points": {"<s_max>": {"max_loras": [...], "tokens": [...]}},   # piecewise only
                             "max_feasible": {"<s_max>": max A_max that starts}}},
  "frontend":  {"form": "metrics_scrape", "params": {"base_s": s, "per_series_s": s, "per_entry_s": s}},
               # optional (absent = no render modelled): seconds one /metrics render holds the API server
               # (adaptwin.twin.frontend), + per LoRA label series + per adapter name in those labels
  "scheduler": {"form": "linear", "params": {"intercept": s, "running": s, "waiting": s}},
               # per step: + per running request + per waiting request the admission loop examines
               # (the twin's `visited` count; fitted on that, not on the queue length, since this commit)
  "fit_quality": {...}, "sources": {...}
}
```

Step terms (all in seconds, all optional except ``intercept``): ``decode_seqs`` per sequence decoding one token
in the step; ``context_tokens`` per token of context (prompt + generated so far) summed over those decoding
sequences (attention reads their whole KV); ``prefill_tokens`` per prompt token computed in the step (chunked
prefill); ``prefill_seqs`` per sequence with prompt tokens in the step (per-request CPU/launch cost).

``kv_capacity``: ``linear_slots`` is ``base_tokens - per_slot_rank_tokens x A_max x S_max``;
``piecewise_slots`` interpolates the measured tokens against A_max for a measured S_max (linear extrapolation
beyond the measured ends) and falls back to the line for other S_max.

A *curve* is ``{"form": "linear", "params": {"intercept", "slope"}}``, ``{"form": "poly", "params": {"coef": [c0, c1, ...]}}``
or ``{"form": "piecewise_linear", "params": {"x": [...], "y": [...]}}`` (linear extrapolation beyond the ends).
Calibration may add forms here; the twin sees only the methods of `Calibration`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptwin.errors import InputError

SCHEMA_VERSION = 1
#: ShareGPT tokens per request (input + output) used only by the capacity estimate; the twin uses its own lengths
PROXY_TOKENS_PER_REQUEST = 420.0
#: ranks per tile of vLLM 0.8.5's Triton LoRA kernels (shrink BLOCK_N = expand BLOCK_K = 16 in their default
#: configs): slots sized for S_max 8 or 16 run one tile per adapter, S_max 32 two. The 5.3 runs agree: at batch 1
#: S_max 8 and 16 give the same ITL, S_max 32 adds ~0.16 ms (both models).
RANK_TILE = 16


def rank_tiles(max_lora_rank: int) -> int:
    """Rank tiles of a slot sized for ``max_lora_rank`` beyond the first (0 for S_max <= 16, 1 for 32)."""
    return max(0, math.ceil(int(max_lora_rank) / RANK_TILE) - 1)


class CalibrationError(InputError):
    """A calibration file that cannot be used, with the file and field named."""


@dataclass(frozen=True)
class Curve:
    """A one-dimensional cost curve y(x)."""

    form: str
    params: dict[str, Any]

    def __call__(self, x: float) -> float:
        p = self.params
        if self.form == "linear":
            return p["intercept"] + p["slope"] * x
        if self.form == "poly":
            return sum(c * x**i for i, c in enumerate(p["coef"]))
        if self.form == "piecewise_linear":
            return _interp(x, p["x"], p["y"])
        if self.form in ADDITIVE_FORMS + ("factor_ramp",):
            raise CalibrationError(f"lora form {self.form!r} is not a plain curve; use Calibration.step_time")
        raise CalibrationError(f"unknown curve form {self.form!r}")


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    """Piecewise-linear interpolation with linear extrapolation at both ends."""
    if len(xs) == 1:
        return ys[0]
    i = 1
    while i < len(xs) - 1 and x > xs[i]:
        i += 1
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


#: LoRA forms that add seconds to a step (the others multiply the step time)
ADDITIVE_FORMS = ("additive", "slots")

#: the step-time terms, in the order their contributions are summed
STEP_TERMS = ("intercept", "decode_seqs", "prefill_tokens", "context_tokens", "prefill_seqs")


@functools.lru_cache(maxsize=64)
def _term_masks(exempt: tuple[str, ...]) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
    """Which of `STEP_TERMS` the LoRA factor leaves alone, and which it scales (cached: step_time runs for
    every prefill step)."""
    return tuple(term in exempt for term in STEP_TERMS), tuple(term not in exempt for term in STEP_TERMS)


@functools.lru_cache(maxsize=4096, typed=True)
def _poly(coef: tuple[float, ...], x: float) -> float:
    """sum(c * x**i), cached: a run evaluates it for a handful of adapter counts, thousands of times each."""
    return sum(c * x**i for i, c in enumerate(coef))


@dataclass(frozen=True)
class Calibration:
    """Every cost the twin needs for one base model, evaluated in seconds and tokens."""

    model: str
    max_model_len: int
    block_size: int
    step: dict[str, float]
    lora: Curve
    loading_ms: dict[int, dict[int, float]]
    kv: dict[str, Any]
    scheduler: dict[str, float]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: step terms the LoRA factor does not multiply (e.g. attention over the context: LoRA touches only the
    #: projection layers); from ``step.lora_exempt`` in the JSON, empty by default
    lora_exempt: tuple[str, ...] = ()
    #: rows vLLM's LoRA kernels launch per step: the server's A_max (``max_loras``) + 1 for "no adapter"; 0
    #: until `for_server` binds a server. Only the ``slots`` LoRA form and the swap cost read it.
    kernel_rows: int = 0
    #: step time one adapter swap costs beyond the copy: a constant and a part per configured slot, in ms
    #: (the ``swap`` block; 0 when absent)
    swap_per_load_ms: float = 0.0
    swap_per_slot_ms: float = 0.0
    #: rank tiles of the server's slots beyond the first (`rank_tiles` of S_max); 0 until `for_server` binds
    #: an S_max. Only the ``slots`` form's ``rank_tile_adapter`` term reads it.
    extra_rank_tiles: int = 0
    #: adapters registered in the LoRA worker's CPU cache (every served adapter: the twin keeps them all in CPU
    #: memory); 0 until `for_server` binds them. Only the ``slots`` form's ``registered_adapter`` term reads it.
    registered_adapters: int = 0
    #: the ``frontend`` block's params (base_s, per_series_s, per_entry_s), or None when absent
    scrape: dict[str, float] | None = None

    def for_server(self, max_loras: int, max_lora_rank: int | None = None, registered_adapters: int = 0
                   ) -> Calibration:
        """This calibration bound to a server with ``max_loras`` GPU slots (the ``slots`` LoRA form's cost
        grows with them: vLLM 0.8.5's Triton LoRA kernels launch one block row per slot and let idle rows exit)
        sized for ``max_lora_rank`` (each adapter present runs one kernel tile per `RANK_TILE` ranks of the slot,
        whatever its own rank: the slot's padded weights are what the kernels read) and holding
        ``registered_adapters`` in the CPU cache (its served adapters)."""
        tiles = 0 if max_lora_rank is None else rank_tiles(max_lora_rank)
        return dataclasses.replace(self, kernel_rows=int(max_loras) + 1, extra_rank_tiles=tiles,
                                   registered_adapters=int(registered_adapters))

    # ---- step time -------------------------------------------------------------------------------
    def step_time(self, decode_seqs: int, prefill_tokens: int, context_tokens: int, distinct_adapters: int,
                  prefill_seqs: int = 0) -> float:
        """Seconds for one engine step (forward pass) with this batch, LoRA overhead included.

        ``prefill_seqs`` (sequences with prompt tokens in this step) is optional so older callers keep working;
        pass it: the calibration fits a per-sequence prefill cost (about 1 ms for Llama-3.1-8B).
        """
        s = self.step
        values = (s["intercept"], s.get("decode_seqs", 0.0) * decode_seqs,  # in the order of STEP_TERMS
                  s.get("prefill_tokens", 0.0) * prefill_tokens,
                  s.get("context_tokens", 0.0) * context_tokens, s.get("prefill_seqs", 0.0) * prefill_seqs)
        if self.lora.form in ADDITIVE_FORMS:
            return sum(values) + self.lora_extra(decode_seqs, prefill_tokens, distinct_adapters)
        # the same sums, in the same order, as over a dict of the terms, without building one (prefill steps)
        exempt_mask, scaled_mask = _term_masks(tuple(self.lora_exempt))
        exempt = sum(itertools.compress(values, exempt_mask))
        scaled = sum(itertools.compress(values, scaled_mask))
        return scaled * self.lora_factor(distinct_adapters, decode_seqs + prefill_tokens) + exempt

    def lora_factor(self, distinct_adapters: int, tokens: float) -> float:
        """Multiplicative LoRA factor (>= 1) on the non-exempt step terms; 1 without adapters in the batch.

        ``factor_ramp``: the excess over 1 of the curve ``coef`` grows linearly with the step's tokens
        (decode sequences + prefill tokens) from ``ramp_start`` x excess at 1 token to the full excess at
        ``ramp_tokens``, constant beyond (LoRA costs ~40 % at batch 1 but ~100 % at batch 210)."""
        if distinct_adapters <= 0:
            return 1.0
        p = self.lora.params
        if self.lora.form == "factor_ramp":
            excess = _poly(tuple(p["coef"]), distinct_adapters) - 1.0
            span = max(p["ramp_tokens"] - 1.0, 1e-9)
            ramp = min(1.0, p["ramp_start"] + (1.0 - p["ramp_start"]) * max(tokens - 1.0, 0.0) / span)
            return max(1.0, 1.0 + excess * ramp)
        return max(self.lora(distinct_adapters), 1.0)

    def lora_extra(self, decode_seqs: int, prefill_tokens: int, distinct_adapters: int) -> float:
        """Seconds LoRA adds to a step under an additive form (0 without adapters in the batch).

        ``slots``: launch + distinct_adapters x D + slots x (A_max + 1) + tokens x T + slot_token x (A_max + 1)
        x T + slot_prefill_token x (A_max + 1) x prefill tokens, T = decode sequences + prefill tokens (each
        adapter present is its own tile; every configured slot costs something per step, and possibly per
        token, even when idle), + rank_tile_adapter x distinct adapters x the slots' rank tiles beyond the first
        (`rank_tiles`: S_max 32 runs two tiles per adapter), + registered_adapter x distinct adapters x
        registered adapters (vLLM 0.8.5's LoRA worker checks each adapter of the batch against
        ``list_adapters()``, which copies the whole CPU cache in Python every time). Absent terms are 0, so the
        calibration chooses the terms the profiling data can separate. Needs `for_server`."""
        if distinct_adapters <= 0:
            return 0.0
        p = self.lora.params
        if self.lora.form == "slots":
            if self.kernel_rows <= 0:
                raise CalibrationError("lora form 'slots' needs the server's A_max: use Calibration.for_server")
            tokens = decode_seqs + prefill_tokens
            return (p.get("launch", 0.0) + p.get("distinct_adapters", 0.0) * distinct_adapters
                    + p.get("rank_tile_adapter", 0.0) * self.extra_rank_tiles * distinct_adapters
                    + p.get("registered_adapter", 0.0) * self.registered_adapters * distinct_adapters
                    + p.get("slots", 0.0) * self.kernel_rows + p.get("tokens", 0.0) * tokens
                    + p.get("slot_token", 0.0) * self.kernel_rows * tokens
                    + p.get("slot_prefill_token", 0.0) * self.kernel_rows * prefill_tokens)
        return (p["intercept"] + p.get("decode_seqs", 0.0) * decode_seqs
                + p.get("prefill_tokens", 0.0) * prefill_tokens + p.get("distinct_adapters", 0.0) * distinct_adapters)

    def scheduler_time(self, running: int, waiting: int) -> float:
        """Seconds the scheduler spends per step (CPU side, added to the step)."""
        s = self.scheduler
        return max(0.0, s["intercept"] + s.get("running", 0.0) * running + s.get("waiting", 0.0) * waiting)

    # ---- adapters --------------------------------------------------------------------------------
    def load_time(self, rank: int, s_max: int) -> float:
        """Seconds to copy one adapter of ``rank`` from CPU memory into a GPU slot sized for ``s_max``."""
        table = self.loading_ms
        if s_max in table and rank in table[s_max]:
            return table[s_max][rank] / 1000.0
        # nearest measured S_max at or above, then nearest rank at or below: loading grows with slot size
        smaxes = sorted(table)
        s_key = next((s for s in smaxes if s >= s_max), smaxes[-1])
        ranks = sorted(table[s_key])
        r_key = max((r for r in ranks if r <= rank), default=ranks[0])
        return table[s_key][r_key] / 1000.0

    def swap_time(self, rank: int, s_max: int) -> float:
        """Seconds one CPU -> GPU adapter load adds to its step while serving: the copy (`load_time`) plus
        the ``swap`` block's cost, which grows with the configured slots (bound by `for_server`)."""
        extra_ms = self.swap_per_load_ms + self.swap_per_slot_ms * self.kernel_rows
        return self.load_time(rank, s_max) + extra_ms / 1000.0

    # ---- memory ----------------------------------------------------------------------------------
    def kv_capacity_tokens(self, max_loras: int, max_lora_rank: int) -> int:
        """KV-cache tokens left after reserving ``max_loras`` slots of rank ``max_lora_rank`` (may be <= 0)."""
        p = self.kv
        curve = p.get("points", {}).get(max_lora_rank)
        if curve is not None:
            tokens = _interp(max_loras, curve["max_loras"], curve["tokens"])
        else:
            tokens = p["base_tokens"] - p["per_slot_rank_tokens"] * max_loras * max_lora_rank
        return int(math.floor(tokens / self.block_size) * self.block_size)

    def kv_capacity_blocks(self, max_loras: int, max_lora_rank: int) -> int:
        """KV-cache blocks of ``block_size`` tokens."""
        return max(0, self.kv_capacity_tokens(max_loras, max_lora_rank) // self.block_size)

    def memory_error(self, max_loras: int, max_lora_rank: int) -> bool:
        """True when vLLM would refuse to start: the KV cache cannot hold one max-length sequence,
        or the slot reservation is beyond the largest A_max that started in the measurements."""
        feasible = self.kv.get("max_feasible", {}).get(max_lora_rank)
        if feasible is not None and max_loras > feasible:
            return True
        return self.kv_capacity_tokens(max_loras, max_lora_rank) < self.max_model_len

    def capacity_rate(self, max_loras: int, s_max: int, served: int, max_num_seqs: int) -> float:
        """A rough requests/s the GPU sustains: a full decode batch (limited by ``max_num_seqs`` and the KV
        cache) at this calibration's step time with min(A_max, batch) distinct adapters.

        Why rough: it only centres the dataset's offered loads on the starvation boundary and scales the
        surrogate's load feature; the twin decides the real outcome."""
        kv_tokens = max(self.kv_capacity_tokens(max_loras, s_max), PROXY_TOKENS_PER_REQUEST)
        batch = int(min(max_num_seqs, kv_tokens / PROXY_TOKENS_PER_REQUEST))
        distinct = min(max_loras, batch, served)
        calibration = self.for_server(max_loras, s_max, served)  # the slot LoRA form: A_max, S_max, served
        out_share = 0.47  # output tokens per request token (ShareGPT about 197 / 420)
        step = calibration.step_time(batch, int(batch * (1 - out_share) / out_share), int(batch * 210), distinct)
        step += calibration.scheduler_time(batch, 0)
        tokens_per_s = batch / out_share / max(step, 1e-6)
        return tokens_per_s / PROXY_TOKENS_PER_REQUEST

    def max_feasible_loras(self, max_lora_rank: int, candidates: list[int] | None = None) -> int:
        """The largest A_max (from ``candidates`` or 1..4096) that starts for this S_max; 0 if none."""
        pool = sorted(candidates) if candidates else range(1, 4097)
        best = 0
        for a in pool:
            if not self.memory_error(a, max_lora_rank):
                best = a
        return best


def _curve(obj: dict[str, Any], where: str) -> Curve:
    try:
        return Curve(form=obj["form"], params=obj["params"])
    except (KeyError, TypeError) as exc:
        raise CalibrationError(f"{where}: expected {{'form', 'params'}}, got {obj!r}") from exc


def from_dict(data: dict[str, Any], source: str = "<dict>") -> Calibration:
    """Build a `Calibration` from the parsed JSON, naming the file and field on any problem."""
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CalibrationError(f"{source}: schema_version {version!r}, expected {SCHEMA_VERSION}")
    try:
        loading = {
            int(s): {int(r): float(ms) for r, ms in ranks.items()}
            for s, ranks in data["loading"]["params"].items()
        }
        kv = dict(data["kv_capacity"]["params"])
        swap = data.get("swap", {}).get("params", {})
        kv["max_feasible"] = {int(k): int(v) for k, v in kv.get("max_feasible", {}).items()}
        kv["points"] = {int(k): {"max_loras": [float(a) for a in v["max_loras"]],
                                 "tokens": [float(t) for t in v["tokens"]]}
                        for k, v in kv.get("points", {}).items()}
        return Calibration(
            model=data["model"],
            max_model_len=int(data["max_model_len"]),
            block_size=int(data.get("block_size", 16)),
            step=dict(data["step"]["params"]),
            lora=_curve(data["lora"], f"{source}: lora"),
            loading_ms=loading,
            kv=kv,
            scheduler=dict(data["scheduler"]["params"]),
            raw=data,
            lora_exempt=tuple(data["step"].get("lora_exempt", ())),
            swap_per_load_ms=float(swap.get("per_load_ms", 0.0)),
            swap_per_slot_ms=float(swap.get("per_slot_ms", 0.0)),
            scrape=({k: float(data["frontend"]["params"][k]) for k in ("base_s", "per_series_s", "per_entry_s")}
                    if "frontend" in data else None),
        )
    except KeyError as exc:
        raise CalibrationError(f"{source}: missing field {exc.args[0]!r}") from exc


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration JSON file."""
    path = Path(path)
    if not path.exists():
        raise CalibrationError(f"{path}: calibration file not found (run `dvc repro calibrate`)")
    return from_dict(json.loads(path.read_text()), source=str(path))
