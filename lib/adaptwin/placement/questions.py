"""The questions placement asks the surrogate: every candidate GPU a method judges, recorded.

A placement's final GPUs are only the candidates a method kept. On the way it asks about many more: first-fit
tries each adapter on every open GPU, dLoRA tries balanced splits over too few GPUs, the greedy tries prefixes
at every A_max. The candidates it turned down decide how many GPUs a placement uses, so the surrogate's exam
must hold some of them too (final GPUs alone are nearly all unstarved, and a starvation score on them rests on
a handful of rows).

`RecordingEvaluator` is an `Evaluator` that keeps every (adapter set, A_max, verdict) it is asked about and
otherwise behaves exactly as the evaluator it copies: placements made through it are identical (a test checks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from adaptwin.placement.core import Evaluator

Sets = Sequence[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Question:
    """One candidate GPU a method judged: its adapters' ranks and routed rates, the A_max asked about, and the
    surrogate's verdict (``ok``: the evaluator's safety rule)."""

    ranks: np.ndarray
    rates: np.ndarray
    a_max: int
    ok: bool

    def key(self) -> tuple:
        """Identity of the candidate (adapters as a sorted multiset of (rank, rate), and the A_max)."""
        pairs = sorted(zip(self.ranks.tolist(), np.round(self.rates, 12).tolist(), strict=True))
        return self.a_max, tuple(pairs)


@dataclass
class RecordingEvaluator(Evaluator):
    """An `Evaluator` that records every question (`Question`) asked through `evaluate`, `evaluate_prefixes`
    and `evaluate_features` (when the caller passes the sets behind the features)."""

    questions: list[Question] = field(default_factory=list, repr=False)

    @classmethod
    def around(cls, evaluator: Evaluator) -> RecordingEvaluator:
        """A recorder with ``evaluator``'s settings (surrogate, calibration, margin, thresholds)."""
        return cls(**{f.name: getattr(evaluator, f.name) for f in fields(evaluator) if f.init})

    def evaluate(self, sets: Sets, max_loras: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        out = super().evaluate(sets, max_loras)
        self._record(sets, out)
        return out

    def evaluate_prefixes(self, ranks: np.ndarray, rates: np.ndarray, ks: Sequence[int],
                          max_loras: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        out = super().evaluate_prefixes(ranks, rates, ks, max_loras)
        self._record([(np.asarray(ranks)[:k], np.asarray(rates)[:k]) for k in ks], out)
        return out

    def evaluate_features(self, feats: dict[str, np.ndarray], max_loras: Sequence[Sequence[int]],
                          sets: Callable[[], Sets] | None = None) -> dict[str, np.ndarray]:
        out = super().evaluate_features(feats, max_loras)
        if sets is not None:
            self._record(sets(), out)
        return out

    def _record(self, sets: Sets, out: dict[str, np.ndarray]) -> None:
        for row, s in enumerate(out["set"].astype(np.int64)):
            ranks, rates = sets[s]
            self.questions.append(Question(np.asarray(ranks, dtype=np.int64).copy(),
                                           np.asarray(rates, dtype=float).copy(), int(out["a_max"][row]),
                                           bool(out["ok"][row])))


def recording(context: Any) -> tuple[Any, RecordingEvaluator]:
    """A copy of the placement `adaptwin.placement.api.Context` ``context`` whose evaluator records, and that
    recorder."""
    recorder = RecordingEvaluator.around(context.evaluator)
    return replace(context, evaluator=recorder), recorder


def rejected(questions: Sequence[Question]) -> list[Question]:
    """The distinct candidates the surrogate turned down, first occurrence kept."""
    seen: set[tuple] = set()
    out = []
    for q in questions:
        if q.ok:
            continue
        key = q.key()
        if key not in seen:
            seen.add(key)
            out.append(q)
    return out


def question_scenario(model: str, question: Question, duration_s: float) -> dict[str, Any]:
    """The twin scenario of a candidate GPU, built as the verification builds a placed GPU
    (`adaptwin.placement.verify.gpu_scenario`)."""
    from adaptwin.twin.scenario import make_scenario

    return make_scenario(model, question.ranks.tolist(), question.rates.tolist(), question.a_max,
                         duration_s=duration_s)
