"""The scenario: what one simulated vLLM server serves, parsed and validated before anything runs.

A scenario is the dict (or YAML file) of ``adaptwin simulate``; its keys are a contract used by other tools:

```yaml
model: llama-3.1-8b-instruct      # picks data/calibration/<model>.json unless a calibration is given
server: {max_loras: 32, max_cpu_loras: 128, max_lora_rank: 16, max_num_seqs: 2048, max_num_batched_tokens: 2048}
                                  # (+ vllm_version: 0.8.5, the default, or 0.32: `VLLM_VERSIONS`)
adapters:                         # groups {count, rank, rate}, or {ranks: [...], rates: [...]},
  - {count: 43, rank: 8, rate: 0.1}   # or `adapters_csv: file.csv` with columns adapter_id,rank,rate
arrivals: {kind: poisson}         # poisson | unpredictable (period_s, sigma) | trace (path, mapping, speedup)
lengths: {kind: sharegpt}         # sharegpt (input_mean, output_mean, shape) | fixed (input, output) | trace (path)
duration_s: 3600
seed: 0
client: {max_connections: 28232, time_wait_s: 60, metrics_poll_s: 2.0}
                                  # optional; the benchmark machine's ports (`client`) and its /metrics
                                  # poller (`frontend`; null: no poller)
```

Validation happens here so that a bad scenario fails in one line naming the field and the value, before the
calibration is read or a single random number is drawn.

Paths (``adapters_csv``, trace ``path``): in a scenario *file*, relative to the file's folder
(`load_scenario_file` rewrites them); in a dict given to the library, as given (relative to the current
folder). `parse_scenario` makes them absolute, so later reads do not depend on the current folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from adaptwin.errors import InputError
from adaptwin.layout import Layout
from adaptwin.twin.client import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIME_WAIT_S
from adaptwin.twin.frontend import DEFAULT_POLL_INTERVAL_S


class ScenarioError(InputError):
    """An invalid scenario; the message names the field and the value."""


TOP_KEYS = {"model", "server", "adapters", "adapters_csv", "arrivals", "lengths", "duration_s", "seed", "client"}
CLIENT_KEYS = {"max_connections", "time_wait_s", "metrics_poll_s"}
SERVER_KEYS = {"max_loras", "max_cpu_loras", "max_lora_rank", "max_num_seqs", "max_num_batched_tokens",
               "vllm_version"}
#: the vLLM releases the twin models (``server.vllm_version``) and each one's ``max_num_seqs`` when the
#: scenario gives none: 0.8.5's API server default, and 0.32's on the CPU platform (``get_batch_defaults``)
VLLM_VERSIONS = {"0.8.5": 256, "0.32": 128}
DEFAULT_VLLM_VERSION = "0.8.5"
GROUP_KEYS = {"count", "rank", "rate"}
ARRIVAL_KEYS = {
    "poisson": {"kind"},
    "unpredictable": {"kind", "period_s", "sigma"},
    "trace": {"kind", "path", "mapping", "speedup"},
}
LENGTH_KEYS = {
    "sharegpt": {"kind", "input_mean", "output_mean", "shape"},
    "fixed": {"kind", "input", "output"},
    "trace": {"kind", "path"},
}
TRACE_MAPPINGS = ("weighted", "round_robin")


@dataclass(frozen=True)
class Server:
    """vLLM 0.8.5 server arguments that shape the schedule (defaults are vLLM's)."""

    max_loras: int
    max_cpu_loras: int
    max_lora_rank: int
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    vllm_version: str = DEFAULT_VLLM_VERSION  # the scheduler's release (`VLLM_VERSIONS`, see `scheduler`)


@dataclass(frozen=True)
class Client:
    """The benchmark client's connection limit (see `adaptwin.twin.client`; None = unlimited) and the
    harness's /metrics poll interval (see `adaptwin.twin.frontend`; None = no poller)."""

    max_connections: int | None = DEFAULT_MAX_CONNECTIONS
    time_wait_s: float = DEFAULT_TIME_WAIT_S
    metrics_poll_s: float | None = DEFAULT_POLL_INTERVAL_S


@dataclass(frozen=True)
class Scenario:
    """A validated scenario; ``ranks`` and ``rates`` hold one entry per served adapter."""

    model: str
    server: Server
    ranks: np.ndarray
    rates: np.ndarray
    arrivals: dict[str, Any]
    lengths: dict[str, Any]
    duration_s: float
    seed: int
    client: Client = Client()

    @property
    def served(self) -> int:
        return int(len(self.ranks))


def load_scenario_file(path: str | Path) -> dict[str, Any]:
    """Read a scenario YAML file into a dict (validation is `parse_scenario`'s job)."""
    path = Path(path)
    if not path.exists():
        raise ScenarioError(f"scenario: file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"scenario: {str(path)!r} is not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario: {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return relative_to(data, path.parent)


def relative_to(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with its relative paths (``adapters_csv``, ``arrivals.path``, ``lengths.path``) joined to
    ``folder``: a scenario file names files beside it, wherever the command runs."""
    out = dict(data)
    if isinstance(out.get("adapters_csv"), str):
        out["adapters_csv"] = str(folder / Path(out["adapters_csv"]).expanduser())
    for key in ("arrivals", "lengths"):
        if isinstance(out.get(key), dict) and isinstance(out[key].get("path"), str):
            out[key] = {**out[key], "path": str(folder / Path(out[key]["path"]).expanduser())}
    return out


def parse_scenario(data: dict[str, Any], *, check_model: bool = True) -> Scenario:
    """Validate ``data`` and return a `Scenario`; raise `ScenarioError` naming the first bad field.

    ``check_model`` asks that ``data/calibration/<model>.json`` exists (skip it when a calibration is given)."""
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario: expected a mapping, got {type(data).__name__}")
    _no_unknown(data, TOP_KEYS, "")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise ScenarioError(f"model: expected a model name, got {model!r}")
    if check_model:
        _check_model_known(model)
    ranks, rates = _adapters(data)
    server = _server(data.get("server"), served=len(ranks))
    bad = np.flatnonzero(ranks > server.max_lora_rank)
    if bad.size:
        raise ScenarioError(
            f"adapters[{int(bad[0])}].rank: {int(ranks[bad[0]])} > server.max_lora_rank {server.max_lora_rank}"
        )
    duration = _number(data.get("duration_s", 3600), "duration_s", positive=True)
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ScenarioError(f"seed: expected a non-negative integer, got {seed!r}")
    return Scenario(
        model=model,
        server=server,
        ranks=ranks,
        rates=rates,
        arrivals=_section(data.get("arrivals", {"kind": "poisson"}), "arrivals", ARRIVAL_KEYS),
        lengths=_section(data.get("lengths", {"kind": "sharegpt"}), "lengths", LENGTH_KEYS),
        duration_s=float(duration),
        seed=int(seed),
        client=_client(data.get("client", {})),
    )


def calibration_path(model: str) -> Path:
    """Where the calibration of ``model`` lives (repository-relative ``data/calibration/<model>.json``)."""
    return Layout.default().calibration(model)


def _check_model_known(model: str) -> None:
    if calibration_path(model).exists():
        return
    folder = calibration_path(model).parent
    known = sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []
    raise ScenarioError(f"model: {model!r} unknown (no {calibration_path(model)}; calibrated: {known})")


def _no_unknown(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise ScenarioError(f"{where}{key}: unknown key (allowed: {sorted(allowed)})")


def _number(value: Any, field: str, *, positive: bool = False, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScenarioError(f"{field}: expected a number, got {value!r}")
    if positive and value <= 0:
        raise ScenarioError(f"{field}: must be > 0, got {value!r}")
    if value < minimum:
        raise ScenarioError(f"{field}: must be >= {minimum:g}, got {value!r}")
    return float(value)


def _integer(value: Any, field: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ScenarioError(f"{field}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _server(obj: Any, served: int) -> Server:
    if not isinstance(obj, dict):
        raise ScenarioError(f"server: expected a mapping with max_loras and max_lora_rank, got {obj!r}")
    _no_unknown(obj, SERVER_KEYS, "server.")
    for key in ("max_loras", "max_lora_rank"):
        if key not in obj:
            raise ScenarioError(f"server.{key}: missing")
    max_loras = _integer(obj["max_loras"], "server.max_loras")
    cpu = _integer(obj.get("max_cpu_loras", served), "server.max_cpu_loras")
    if cpu < served:
        raise ScenarioError(f"server.max_cpu_loras: {cpu} < served adapters {served} (disk loads are not modelled)")
    if max_loras > served:
        raise ScenarioError(f"server.max_loras: {max_loras} > served adapters {served}")
    version = vllm_release(obj.get("vllm_version", DEFAULT_VLLM_VERSION))
    seqs = _integer(obj.get("max_num_seqs", VLLM_VERSIONS[version]), "server.max_num_seqs")
    budget = _integer(obj.get("max_num_batched_tokens", 2048), "server.max_num_batched_tokens")
    if seqs > budget:
        raise ScenarioError(
            f"server.max_num_seqs: {seqs} > max_num_batched_tokens {budget} is not modelled "
            "(decodes would not fit one step's token budget)"
        )
    return Server(max_loras, cpu, _integer(obj["max_lora_rank"], "server.max_lora_rank"), seqs, budget, version)


def vllm_release(value: Any) -> str:
    """The modelled release of a ``server.vllm_version`` value: an exact key of `VLLM_VERSIONS`, or a full
    version of that release line (``0.32.0`` -> ``0.32``, as the live runs record it)."""
    text = str(value)
    for release in VLLM_VERSIONS:
        if text == release or text.startswith(release + ".") and release.count(".") == 1:
            return release
    raise ScenarioError(f"server.vllm_version: {value!r} is not modelled (known: {', '.join(VLLM_VERSIONS)})")


def _client(obj: Any) -> Client:
    if not isinstance(obj, dict):
        raise ScenarioError(f"client: expected a mapping {{max_connections, time_wait_s, metrics_poll_s}}, "
                            f"got {obj!r}")
    _no_unknown(obj, CLIENT_KEYS, "client.")
    limit = obj.get("max_connections", Client.max_connections)
    if limit is not None:
        limit = _integer(limit, "client.max_connections")
    wait = _number(obj.get("time_wait_s", Client.time_wait_s), "client.time_wait_s")
    poll = obj.get("metrics_poll_s", Client.metrics_poll_s)
    if poll is not None:
        poll = _number(poll, "client.metrics_poll_s", positive=True)
    return Client(limit, wait, poll)


def _adapters(data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    has_list, has_csv = "adapters" in data, "adapters_csv" in data
    if has_list == has_csv:
        raise ScenarioError("adapters: give exactly one of `adapters` or `adapters_csv`")
    if has_csv:
        return _adapters_csv(data["adapters_csv"])
    obj = data["adapters"]
    if isinstance(obj, dict):
        return _adapter_lists(obj)
    if not isinstance(obj, list) or not obj:
        raise ScenarioError(f"adapters: expected a non-empty list of {{count, rank, rate}} groups, got {obj!r}")
    ranks, rates = [], []
    for i, group in enumerate(obj):
        if not isinstance(group, dict):
            raise ScenarioError(f"adapters[{i}]: expected a mapping {{count, rank, rate}}, got {group!r}")
        _no_unknown(group, GROUP_KEYS, f"adapters[{i}].")
        count = _integer(group.get("count", 1), f"adapters[{i}].count")
        rank = _integer(group.get("rank"), f"adapters[{i}].rank")
        rate = _number(group.get("rate"), f"adapters[{i}].rate")
        ranks += [rank] * count
        rates += [rate] * count
    return np.asarray(ranks, dtype=np.int64), np.asarray(rates, dtype=np.float64)


def _adapter_lists(obj: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    _no_unknown(obj, {"ranks", "rates"}, "adapters.")
    ranks, rates = obj.get("ranks"), obj.get("rates")
    if not isinstance(ranks, list) or not isinstance(rates, list) or len(ranks) != len(rates) or not ranks:
        raise ScenarioError("adapters: `ranks` and `rates` must be non-empty lists of equal length")
    return _check_arrays(np.asarray(ranks), np.asarray(rates), "adapters")


def _adapters_csv(path_value: Any) -> tuple[np.ndarray, np.ndarray]:
    path = Path(str(path_value)).absolute()
    if not path.is_file():
        raise ScenarioError(f"adapters_csv: file {str(path_value)!r} not found")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"adapter_id", "rank", "rate"} <= set(rows[0]):
        raise ScenarioError(f"adapters_csv: {str(path_value)!r} needs columns adapter_id,rank,rate")
    try:
        ranks = np.asarray([float(r["rank"]) for r in rows])
        rates = np.asarray([float(r["rate"]) for r in rows])
    except ValueError as exc:
        raise ScenarioError(f"adapters_csv: {str(path_value)!r} has a non-numeric value ({exc})") from exc
    return _check_arrays(ranks, rates, "adapters_csv")


def _check_arrays(ranks: np.ndarray, rates: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        ranks_f, rates_f = ranks.astype(np.float64), rates.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"{where}: ranks and rates must be numbers ({exc})") from exc
    bad = np.flatnonzero((ranks_f < 1) | (ranks_f != np.round(ranks_f)))
    if bad.size:
        raise ScenarioError(f"{where}[{int(bad[0])}].rank: expected a positive integer, got {ranks[bad[0]]!r}")
    bad = np.flatnonzero(~np.isfinite(rates_f) | (rates_f < 0))
    if bad.size:
        raise ScenarioError(f"{where}[{int(bad[0])}].rate: must be >= 0, got {rates[bad[0]]!r}")
    return ranks_f.astype(np.int64), rates_f


def _section(obj: Any, name: str, kinds: dict[str, set[str]]) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("kind") not in kinds:
        kind = obj.get("kind") if isinstance(obj, dict) else obj
        raise ScenarioError(f"{name}.kind: {kind!r} unknown (one of {sorted(kinds)})")
    _no_unknown(obj, kinds[obj["kind"]], f"{name}.")
    out = dict(obj)
    for key in ("input_mean", "output_mean", "speedup", "period_s", "sigma"):
        if key in out:
            _number(out[key], f"{name}.{key}", positive=True)
    for key in ("input", "output"):
        if key in out or out["kind"] == "fixed":
            out[key] = _integer(out.get(key), f"{name}.{key}")
    if out["kind"] == "trace":
        if "path" not in out:
            raise ScenarioError(f"{name}.path: missing (a CSV with arrived_at,num_prefill_tokens,num_decode_tokens)")
        path = Path(str(out["path"])).absolute()
        if not path.is_file():
            raise ScenarioError(f"{name}.path: file {str(out['path'])!r} not found")
        out["path"] = str(path)
    if name == "lengths" and out.get("shape", "pool") not in ("pool", "quantiles"):
        raise ScenarioError(f"lengths.shape: {out['shape']!r} unknown (one of ['pool', 'quantiles'])")
    if name == "arrivals" and out.get("mapping", "weighted") not in TRACE_MAPPINGS:
        raise ScenarioError(f"arrivals.mapping: {out['mapping']!r} unknown (one of {list(TRACE_MAPPINGS)})")
    return out


# ---- building scenarios --------------------------------------------------------------------------------------
# Every part of adaptwin that asks the twin about one GPU (the dataset sampler, placement's checks, the
# validation against real runs) builds its scenario here, so a GPU's identity and seed are the same wherever
# it is built.

#: A_max values placement chooses from
A_MAX_CHOICES: tuple[int, ...] = (8, 16, 32, 64, 96, 128, 160, 192, 256, 320, 384, 448, 512, 576)

#: vLLM server settings of the real runs (max-num-seqs 2048, default token budget)
MAX_NUM_SEQS = 2048
MAX_NUM_BATCHED_TOKENS = 2048


def canonical_json(obj: Any) -> str:
    """Compact, key-sorted JSON: the byte string a scenario's identity and seed are hashed from."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_seed(scenario: dict[str, Any]) -> int:
    """A seed from the scenario's content (everything but ``seed``): recomputing a row needs only the row."""
    body = {k: v for k, v in scenario.items() if k != "seed"}
    return int(hashlib.sha256(canonical_json(body).encode()).hexdigest()[:8], 16) % (2**31 - 1)


def scenario_id(scenario: Any) -> str:
    """Stable identity of a scenario (16 hex chars of the SHA-256 of its canonical JSON): the resume key."""
    return hashlib.sha256(canonical_json(scenario).encode()).hexdigest()[:16]


def adapter_groups(ranks: Sequence[int], rates: Sequence[float]) -> list[dict[str, Any]]:
    """Per-adapter ranks and rates -> the scenario's ``adapters`` groups, sorted so equal sets hash equal."""
    if len(ranks) != len(rates):
        raise ScenarioError(f"adapters: {len(ranks)} ranks but {len(rates)} rates")
    counts = Counter((int(k), float(r)) for k, r in zip(ranks, rates, strict=True))
    return [{"count": c, "rank": k, "rate": r} for (k, r), c in sorted(counts.items())]


def expand_groups(groups: Sequence[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """The inverse of `adapter_groups`: per-adapter ranks and rates."""
    ranks: list[int] = []
    rates: list[float] = []
    for g in groups:
        ranks += [int(g["rank"])] * int(g["count"])
        rates += [float(g["rate"])] * int(g["count"])
    return ranks, rates


def make_scenario(model: str, ranks: Sequence[int], rates: Sequence[float], max_loras: int, *,
                  arrivals: str = "poisson", duration_s: float = 600.0) -> dict[str, Any]:
    """One single-GPU scenario with S_max = largest rank, every adapter held in CPU memory, content seed."""
    served = len(ranks)
    if served < 1:
        raise ScenarioError("adapters: empty adapter set")
    if not 1 <= max_loras <= served:
        raise ScenarioError(f"server.max_loras: {max_loras} not in [1, served={served}]")
    scenario = {
        "model": model,
        "server": {"max_loras": int(max_loras), "max_cpu_loras": served, "max_lora_rank": int(max(ranks)),
                   "max_num_seqs": MAX_NUM_SEQS, "max_num_batched_tokens": MAX_NUM_BATCHED_TOKENS},
        "adapters": adapter_groups(ranks, rates),
        "arrivals": {"kind": arrivals},
        "lengths": {"kind": "sharegpt"},
        "duration_s": float(duration_s),
    }
    scenario["seed"] = content_seed(scenario)
    return scenario


def unique(scenarios: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scenarios with duplicates (same id) removed, first occurrence kept."""
    seen: set[str] = set()
    out = []
    for s in scenarios:
        key = scenario_id(s)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out
