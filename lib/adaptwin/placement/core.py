"""What every placement method shares: the workload table, the GPU and placement records, and the evaluator
that asks the surrogate "can this GPU serve these adapters, and how well?" for many candidates at once.

Why one evaluator: the methods differ in *which* candidate GPUs they try, not in how a candidate is judged.
Keeping the feature building, the memory cap on A_max and the safety rule (starvation classifier plus an
uncertainty margin on throughput) here means every method is judged by the same oracle, so GPU counts compare
packing strategies, not oracles. Calls are batched (one predictor call for many candidate (set, A_max) pairs)
because a CatBoost call costs far more than one row of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

import numpy as np
import polars as pl

from adaptwin.errors import InputError
from adaptwin.rules import STARVATION_RATIO
from adaptwin.twin.scenario import A_MAX_CHOICES

PREDICTED_KEYS = ("total_throughput", "itl_mean_ms", "starvation_probability")


class Predictor(Protocol):
    """What placement needs from a surrogate: one vectorised call from a feature frame to predictions
    (columns ``total_throughput``, ``itl_mean_ms``, ``starvation_probability``; more are ignored)."""

    def predict(self, features: pl.DataFrame) -> pl.DataFrame: ...


FeatureFn = Callable[..., dict]


class PlacementError(InputError):
    """A placement that cannot be computed (bad workload, impossible configuration), with the cause named."""


@dataclass(frozen=True)
class Gpu:
    """One GPU of a placement: which adapters (by row index of the workload) it serves and its vLLM knobs.

    ``shares`` is the fraction of each adapter's rate routed here (1.0 unless a method splits adapters);
    ``safe`` is the evaluator's verdict on this configuration."""

    members: tuple[int, ...]
    max_loras: int
    max_lora_rank: int
    predicted: dict[str, float]
    shares: tuple[float, ...] = ()
    safe: bool = True

    def share_of(self, position: int) -> float:
        return self.shares[position] if self.shares else 1.0


@dataclass(frozen=True)
class PlacementNotes:
    """What the steps of the placement sequence record about a placement besides its GPUs; None where the
    step that records a field did not run (a baseline splits nothing, an unverified answer has no twin verdict).

    One typed record instead of a string-keyed dict: the proposal, the repair, the shrink, the fallback and
    the command each write their own fields, and a misspelt field fails where it is written rather than
    reading back as absent. Fields read by key too (``notes["shrunk_gpus"]``, ``"twin" in notes``,
    ``notes.get(...)``) like the dict it replaces; a field that is None is absent."""

    load_bound_gpus: int | None = None  # offered load / best per-GPU throughput, rounded up
    overloaded_gpus: list[int] | None = None  # greedy: GPUs holding one adapter too busy for any GPU
    split_adapters: int | None = None  # greedy with extensions: adapters served as shares of several GPUs
    predicted_unsafe_gpus: int | None = None  # GPUs the surrogate rates unsafe
    sanity_bound: str | None = None  # why the answer hit a sanity bound (split cap, a baseline standing in)
    repair_time_s: float | None = None  # every twin check of the repair and shrink, apart from placement time
    repaired_gpus: int | None = None
    repair_twin_runs: int | None = None  # twin checks the repair asked for, cached or not
    unrepaired_gpus: int | None = None
    unsplit_adapters: int | None = None  # split adapters the twin serves whole, kept whole
    shrunk_gpus: int | None = None  # GPUs the shrink removed
    shrink_twin_runs: int | None = None
    verified: bool | None = None  # the command's answer: checked by the twin (True) or surrogate only
    twin: list[dict[str, Any]] | None = None  # per GPU, the twin's verdict (`pipeline.verdicts`)
    twin_window_s: float | None = None
    twin_pass_ratio: float | None = None
    adapter_bound_gpus: int | None = None  # GPUs no placement needs to exceed (`api.adapter_bound`)
    fallback_method: str | None = None  # the baseline whose placement stands in for the method's

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set, by name."""
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlacementNotes:
        """The notes `as_dict` gave; a name that is no field is refused."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise PlacementError(f"placement notes: unknown fields {unknown}")
        return cls(**data)

    def merged(self, other: PlacementNotes) -> PlacementNotes:
        """These notes with every field ``other`` sets taken from ``other``."""
        return replace(self, **other.as_dict())

    def __getitem__(self, name: str) -> Any:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def get(self, name: str, default: Any = None) -> Any:
        """Field ``name`` if it is set, else ``default``."""
        value = getattr(self, name, None) if name in self.__dataclass_fields__ else None
        return default if value is None else value


@dataclass
class Placement:
    """The result of one method on one workload (adapter ids, ranks and rates travel with it)."""

    model: str
    method: str
    workload: pl.DataFrame
    gpus: list[Gpu]
    lower_bound_gpus: int
    placement_time_s: float = 0.0
    notes: PlacementNotes = field(default_factory=PlacementNotes)

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    def gpu_adapters(self, g: int) -> pl.DataFrame:
        """``adapter_id, rank, rate`` served by GPU ``g`` (rate already multiplied by the routed share)."""
        return self.adapters_of(self.gpus[g])

    def adapters_of(self, gpu: Gpu) -> pl.DataFrame:
        """`gpu_adapters` for any `Gpu` over this workload, in the placement or not (e.g. a repair candidate)."""
        rows = self.workload[list(gpu.members)]
        shares = [gpu.share_of(i) for i in range(len(gpu.members))]
        return rows.with_columns(pl.col("rate") * pl.Series(shares, dtype=pl.Float64))

    def to_json(self) -> dict[str, Any]:
        """The ``placement.json`` contract that operators and outside checks read (exactly these keys)."""
        ids = self.workload["adapter_id"].to_list()
        return {
            "model": self.model,
            "method": self.method,
            "gpus": [
                {
                    "gpu": g,
                    "adapters": [ids[i] for i in gpu.members],
                    "max_loras": int(gpu.max_loras),
                    "max_cpu_loras": len(gpu.members),
                    "max_lora_rank": int(gpu.max_lora_rank),
                    "predicted": {k: float(gpu.predicted.get(k, float("nan"))) for k in PREDICTED_KEYS},
                }
                for g, gpu in enumerate(self.gpus)
            ],
            "lower_bound_gpus": int(self.lower_bound_gpus),
        }

    def routing(self) -> pl.DataFrame:
        """``adapter_id, gpu``: one row per (adapter, GPU) it is routed to (split adapters appear once per GPU)."""
        ids = self.workload["adapter_id"].to_list()
        rows = [(ids[i], g) for g, gpu in enumerate(self.gpus) for i in gpu.members]
        return pl.DataFrame(rows, schema={"adapter_id": pl.Utf8, "gpu": pl.Int64}, orient="row")


#: features proportional to the rates: scaled together to ask "what if the load were heavier?"
RATE_FEATURES: tuple[str, ...] = ("sum_rate", "std_rate", "mean_rate")


@dataclass
class Evaluator:
    """Judges candidate GPUs with a surrogate, in batches.

    ``margin`` is the uncertainty margin: a candidate is *ok* when the classifier's starvation probability is at
    most ``starvation_threshold``, its predicted throughput is at least ``(0.9 + margin) x ideal`` (ideal = sum of
    rates x ``tokens_per_request``, the paper's starvation rule moved up by the surrogate's error on real runs),
    and vLLM would start with this A_max (calibrated memory cap for the GPU's S_max).

    ``load_headroom`` h > 0 adds a robustness check: the same GPU with every rate raised by the factor
    (1 + h) must also pass the classifier and the 0.9 x ideal rule. A throughput margin saturates (throughput
    never exceeds the ideal, so a bar above ~0.98 x ideal rejects everything); a load margin does not, and
    it reads directly as "safe even if the surrogate under-estimates the load's cost by h".
    """

    predictor: Predictor
    calibration: Any  # adaptwin.calibration.costs.Calibration
    tokens_per_request: float
    margin: float = 0.05
    starvation_threshold: float = 0.5
    load_headroom: float = 0.0
    candidates: tuple[int, ...] = A_MAX_CHOICES
    max_served: int = 576
    features_fn: FeatureFn | None = None
    predict_calls: int = 0
    predict_rows: int = 0
    _caps: dict[int, int] = field(default_factory=dict, repr=False)
    _slot_keys: tuple[str, ...] | None = field(default=None, repr=False)

    # ---- A_max ---------------------------------------------------------------------------------------
    def memory_cap(self, s_max: int) -> int:
        """Largest A_max vLLM starts with at this S_max (calibrated KV capacity must hold one max-length
        sequence); 0 when even the smallest candidate fails."""
        if s_max not in self._caps:
            pool = sorted(set(self.candidates) | set(range(1, min(self.candidates))))
            self._caps[s_max] = self.calibration.max_feasible_loras(int(s_max), pool)
        return self._caps[s_max]

    def a_max_options(self, served: int, s_max: int) -> list[int]:
        """A_max values allowed for ``served`` adapters at ``s_max``: grid values <= served and <= the memory
        cap, plus ``min(served, cap)`` itself (vLLM takes any A_max; A_max = served keeps every adapter
        resident, which the grid misses between its points, e.g. 10 adapters would otherwise swap on 8 slots)."""
        limit = min(served, self.memory_cap(s_max))
        if limit <= 0:
            return []
        options = [a for a in self.candidates if a < limit]
        return [*options, limit]

    def largest_a_max(self, served: int, s_max: int) -> int:
        """The largest A_max memory allows for this GPU (what FFD, dLoRA and round robin use)."""
        options = self.a_max_options(served, s_max)
        if not options:
            raise PlacementError(f"no A_max starts at S_max={s_max} (memory cap 0)")
        return options[-1]

    # ---- features ------------------------------------------------------------------------------------
    def _features(self) -> FeatureFn:
        if self.features_fn is None:
            from adaptwin.surrogate.features import gpu_features

            self.features_fn = gpu_features
        return self.features_fn

    def _slot_dependent_keys(self, fn: FeatureFn) -> tuple[str, ...]:
        """Feature names whose value changes with A_max (probed once on a small GPU)."""
        if self._slot_keys is None:
            ranks, rates = np.array([8, 16, 8, 32]), np.array([0.1, 0.2, 0.3, 0.05])
            one, two = fn(ranks, rates, 2), fn(ranks, rates, 4)
            self._slot_keys = tuple(k for k in one if one[k] != two[k])
            if "adapter_slots" not in self._slot_keys:
                raise PlacementError(f"feature function {fn!r} has no adapter_slots feature")
        return self._slot_keys

    def feature_rows(self, sets: Sequence[tuple[np.ndarray, np.ndarray]], max_loras: Sequence[Sequence[int]]) -> pl.DataFrame:
        """One feature row per (set, A_max): ``sets[i]`` is (ranks, rates) and ``max_loras[i]`` its A_max values.

        A set's features are computed once (`gpu_features`); across its A_max values only ``adapter_slots``
        changes. Other features that depend on A_max (ratios such as slot_fraction) are left out: the
        surrogate recomputes its extra features from the paper's seven (`adaptwin.surrogate.features`)."""
        fn = self._features()
        drop = set(self._slot_dependent_keys(fn)) - {"adapter_slots"}
        columns: dict[str, list] | None = None
        for (ranks, rates), values in zip(sets, max_loras, strict=True):
            if not values:
                continue
            base = fn(ranks, rates, values[0])
            if columns is None:
                columns = {k: [] for k in base if k not in drop}
            for k, col in columns.items():
                col.extend([base[k]] * len(values))
            columns["adapter_slots"][-len(values):] = [float(a) for a in values]
        return pl.DataFrame(columns or {})

    # ---- judging -------------------------------------------------------------------------------------
    def evaluate(self, sets: Sequence[tuple[np.ndarray, np.ndarray]], max_loras: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """Predictions for every (set, A_max) pair in one call: arrays ``set`` (index into ``sets``),
        ``a_max``, ``total_throughput``, ``itl_mean_ms``, ``starvation_probability``, ``ideal``, ``ok``."""
        if not any(max_loras):
            return _empty_evaluation()
        sum_rate = np.array([float(np.sum(r)) for _, r in sets])
        return self._predict(self.feature_rows(sets, max_loras), sum_rate, max_loras)

    def evaluate_prefixes(self, ranks: np.ndarray, rates: np.ndarray, ks: Sequence[int],
                          max_loras: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """`evaluate` for the sets ``(ranks[:k], rates[:k])``, k in ``ks``, with features from cumulative sums
        (`prefix_features`): what makes Algorithm 1 fast."""
        return self.evaluate_features(prefix_features(ranks, rates, np.asarray(ks, dtype=np.int64)), max_loras)

    def evaluate_features(self, feats: dict[str, np.ndarray], max_loras: Sequence[Sequence[int]],
                          sets: Callable[[], Sequence[tuple[np.ndarray, np.ndarray]]] | None = None,
                          ) -> dict[str, np.ndarray]:
        """`evaluate` for sets given by their features (`stats_features`, one entry per set). ``sets`` builds the
        (ranks, rates) behind the features; only an evaluator that records its questions calls it
        (`adaptwin.placement.questions`), so the inner loops never build them otherwise."""
        if not any(max_loras):
            return _empty_evaluation()
        counts = np.array([len(v) for v in max_loras])
        names = [*feats, "adapter_slots"]
        matrix = np.column_stack([*(np.repeat(np.asarray(v, dtype=float), counts) for v in feats.values()),
                                  np.array([a for v in max_loras for a in v], dtype=float)])
        frame = pl.DataFrame(matrix, schema=dict.fromkeys(names, pl.Float64), orient="row")
        return self._predict(frame, feats["sum_rate"], max_loras)

    def _predict(self, frame: pl.DataFrame, sum_rate: np.ndarray, max_loras: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        index = np.repeat(np.arange(len(max_loras)), [len(v) for v in max_loras])
        pred = self.predictor.predict(frame)
        self.predict_calls += 1
        self.predict_rows += frame.height
        out = {
            "set": index,
            "a_max": np.array([a for v in max_loras for a in v], dtype=np.int64),
            "total_throughput": pred["total_throughput"].to_numpy().astype(float),
            "itl_mean_ms": pred["itl_mean_ms"].to_numpy().astype(float),
            "starvation_probability": pred["starvation_probability"].to_numpy().astype(float),
            "ideal": sum_rate[index] * self.tokens_per_request,
        }
        out["ok"] = self.is_ok(out)
        if self.load_headroom > 0:
            out["ok"] &= self._ok_under_more_load(frame, out["ideal"])
        return out

    def _ok_under_more_load(self, frame: pl.DataFrame, ideal: np.ndarray) -> np.ndarray:
        """The safety rule for the same GPUs with every rate multiplied by (1 + load_headroom)."""
        scale = 1.0 + self.load_headroom
        rate_columns = [c for c in RATE_FEATURES if c in frame.columns]
        pred = self.predictor.predict(frame.with_columns(pl.col(c) * scale for c in rate_columns))
        self.predict_calls += 1
        self.predict_rows += frame.height
        heavier = {"ideal": ideal * scale,
                   "total_throughput": pred["total_throughput"].to_numpy().astype(float),
                   "starvation_probability": pred["starvation_probability"].to_numpy().astype(float)}
        return (heavier["starvation_probability"] <= self.starvation_threshold) & (
            heavier["total_throughput"] >= STARVATION_RATIO * heavier["ideal"])

    def is_ok(self, ev: dict[str, np.ndarray]) -> np.ndarray:
        """The safety rule (see the class docstring) on evaluated rows."""
        need = (STARVATION_RATIO + self.margin) * ev["ideal"]
        return (ev["starvation_probability"] <= self.starvation_threshold) & (ev["total_throughput"] >= need)

    def judge(self, ranks: np.ndarray, rates: np.ndarray, max_loras: int) -> dict[str, float]:
        """Predictions and verdict for one configured GPU."""
        ev = self.evaluate([(ranks, rates)], [[max_loras]])
        return {k: float(ev[k][0]) for k in (*PREDICTED_KEYS, "ideal")} | {"ok": bool(ev["ok"][0])}


def stats_features(count: np.ndarray, sum_rate: np.ndarray, sumsq_rate: np.ndarray, sum_rank: np.ndarray,
                   sumsq_rank: np.ndarray, max_rank: np.ndarray) -> dict[str, np.ndarray]:
    """The paper's features except ``adapter_slots`` from running sums, for many candidate GPUs at once, as
    `adaptwin.surrogate.features.gpu_features` defines them (population standard deviations, largest rank).
    Placement's inner loops only add adapters to sets, so running sums avoid rebuilding every set; a test
    checks the result against `gpu_features` on random sets."""
    k = np.asarray(count, dtype=float)
    mean_rate, mean_size = sum_rate / k, sum_rank / k
    return {
        "sum_rate": np.asarray(sum_rate, dtype=float),
        "std_rate": np.sqrt(np.clip(sumsq_rate / k - mean_rate**2, 0.0, None)),
        "max_size": np.asarray(max_rank, dtype=float),
        "mean_size": mean_size,
        "std_size": np.sqrt(np.clip(sumsq_rank / k - mean_size**2, 0.0, None)),
        "served_adapters": k,
    }


def prefix_features(ranks: np.ndarray, rates: np.ndarray, ks: np.ndarray) -> dict[str, np.ndarray]:
    """`stats_features` of every prefix ``[:k]`` of a sequence, k in ``ks``."""
    ranks = np.asarray(ranks, dtype=float)
    rates = np.asarray(rates, dtype=float)
    i = np.asarray(ks, dtype=np.int64) - 1
    return stats_features(i + 1, np.cumsum(rates)[i], np.cumsum(rates**2)[i], np.cumsum(ranks)[i],
                          np.cumsum(ranks**2)[i], np.maximum.accumulate(ranks)[i])


@dataclass
class GroupStats:
    """Running sums of adapter groups (GPUs being filled), to evaluate "group g plus adapter i" for every g
    in one vectorised step (first-fit and the latency variant)."""

    count: np.ndarray
    sum_rate: np.ndarray
    sumsq_rate: np.ndarray
    sum_rank: np.ndarray
    sumsq_rank: np.ndarray
    max_rank: np.ndarray

    @classmethod
    def empty(cls, groups: int) -> GroupStats:
        return cls(*(np.zeros(groups) for _ in range(6)))

    def grow(self) -> int:
        """Append an empty group; return its index."""
        for name in ("count", "sum_rate", "sumsq_rate", "sum_rank", "sumsq_rank", "max_rank"):
            setattr(self, name, np.append(getattr(self, name), 0.0))
        return len(self.count) - 1

    def add(self, g: int, rank: float, rate: float) -> None:
        self.count[g] += 1
        self.sum_rate[g] += rate
        self.sumsq_rate[g] += rate * rate
        self.sum_rank[g] += rank
        self.sumsq_rank[g] += rank * rank
        self.max_rank[g] = max(self.max_rank[g], rank)

    def with_adapter(self, groups: np.ndarray, rank: float, rate: float) -> dict[str, np.ndarray]:
        """Features of each of ``groups`` with one more adapter of ``rank`` and ``rate``."""
        return stats_features(self.count[groups] + 1, self.sum_rate[groups] + rate,
                              self.sumsq_rate[groups] + rate * rate, self.sum_rank[groups] + rank,
                              self.sumsq_rank[groups] + rank * rank, np.maximum(self.max_rank[groups], rank))


def with_member(groups: Sequence[Sequence[int]], which: np.ndarray, i: int, ranks: np.ndarray,
                rates: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (ranks, rates) of each group in ``which`` with adapter ``i`` added: the sets behind
    `GroupStats.with_adapter`, built only when an evaluator records its questions."""
    members = [np.append(np.asarray(groups[g], dtype=np.int64), i) for g in which]
    return [(ranks[m], rates[m]) for m in members]


def _empty_evaluation() -> dict[str, np.ndarray]:
    keys = ("set", "a_max", "total_throughput", "itl_mean_ms", "starvation_probability", "ideal", "ok")
    return {k: np.array([]) for k in keys}


def predicted_of(ev: dict[str, np.ndarray], row: int) -> dict[str, float]:
    """The ``predicted`` block of placement.json from one evaluated row."""
    return {k: float(ev[k][row]) for k in PREDICTED_KEYS}


def make_gpu(members: Sequence[int], max_loras: int, s_max: int, ev: dict[str, np.ndarray], row: int,
             shares: Sequence[float] = ()) -> Gpu:
    """A `Gpu` record from an evaluated row."""
    return Gpu(tuple(int(m) for m in members), int(max_loras), int(s_max), predicted_of(ev, row), tuple(shares),
               bool(ev["ok"][row]))


def build_gpus(workload: pl.DataFrame, ev: Evaluator, groups: Sequence[Sequence[int]],
               max_loras: Sequence[int] | None = None, shares: Sequence[Sequence[float]] | None = None) -> list[Gpu]:
    """`Gpu` records for fixed adapter groups, predicted in one surrogate call.

    ``max_loras[g]`` defaults to the largest A_max memory allows for the group; ``shares[g]`` are the fractions of
    each member's rate routed to the group (default all 1)."""
    ranks = workload["rank"].to_numpy()
    rates = workload["rate"].to_numpy().astype(float)
    sets, options, s_maxes = [], [], []
    for g, members in enumerate(groups):
        idx = np.asarray(members, dtype=np.int64)
        share = np.asarray(shares[g], dtype=float) if shares else np.ones(len(idx))
        s_max = int(ranks[idx].max())
        a = max_loras[g] if max_loras is not None else ev.largest_a_max(len(idx), s_max)
        sets.append((ranks[idx], rates[idx] * share))
        options.append([int(a)])
        s_maxes.append(s_max)
    res = ev.evaluate(sets, options)
    return [
        make_gpu(members, options[g][0], s_maxes[g], res, g, shares[g] if shares else ())
        for g, members in enumerate(groups)
    ]
