"""Identity check of the Digital Twin: every output of a varied set of scenarios, written to JSON.

Why: speed work on the twin must not change any number it produces. Run this on the code before and after
a change and compare the two files (``--compare``): every value must be equal, floats bit for bit.

The set: the ten `benchmarks/twin_speed.py` configurations, placement-shaped mixes
(`adaptwin.dataset.mixes.mix_scenarios`), and hand-made edge cases (idle, starved, swapping, a tight client
port limit, fixed and quantile-shaped lengths, unpredictable and trace arrivals, few sequences), each under
several calibrations: the hand-made fixture, two variants of it that exercise the other step-time paths
(additive ``slots`` LoRA cost with context, prefill-sequence and scheduler waiting terms; the multiplicative
``factor_ramp`` form, not affine in the decode count), and the repository's Llama and Qwen calibrations when present (``--real-dir``).
Besides `simulate`'s result dict (with its time series), each case records a digest of the engine's raw
outputs (every step duration, the finish order, the ITL step ranges), which the aggregates could hide.

    PYTHONPATH=lib python tools/experiments/twin_identity.py --out /tmp/before.json
    PYTHONPATH=lib python tools/experiments/twin_identity.py --out /tmp/after.json --compare /tmp/before.json
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from adaptwin import paths
from adaptwin.calibration.costs import from_dict
from adaptwin.dataset.mixes import mix_scenarios
from adaptwin.dataset.sampler import SamplerConfig
from adaptwin.twin import simulate
from adaptwin.twin.api import prepare
from adaptwin.twin.arrivals import make_workload
from adaptwin.twin.engine import run_engine

MODEL = "llama-3.1-8b-instruct"
FIXTURE = Path("tests/fixtures/calibration_llama_example.json")
QWEN = "qwen-2.5-7b-instruct"
REAL_DIR = Path("data/calibration")  # the repository's calibrations, each used when present (--real-dir)
DURATION = 600.0
LOW, HIGH = (0.1, 0.05, 0.025), (1.6, 0.8, 0.4)
SPEED_CONFIGS = [(32, 128, LOW, 16), (128, 384, LOW, 16), (32, 128, HIGH, 16), (8, 384, HIGH, 16),
                 (8, 8, LOW, 16), (8, 64, HIGH, 16), (64, 256, LOW, 16), (192, 384, LOW, 16),
                 (384, 384, LOW, 8), (128, 384, HIGH, 16)]


def calibrations(real_dir: Path = REAL_DIR) -> dict[str, object]:
    """The fixture, two variants of it on the other step-time paths, and the real calibrations if present
    (``real`` for Llama, ``qwen``)."""
    base = json.loads(paths.resolve(FIXTURE).read_text())
    slots = copy.deepcopy(base)
    slots["step"]["params"] = {"intercept": 0.0105, "decode_seqs": 4.4e-05, "prefill_tokens": 6e-05,
                               "context_tokens": 3.1e-08, "prefill_seqs": 9e-4}
    slots["lora"] = {"form": "slots", "params": {"launch": 0.0011, "distinct_adapters": 7e-5, "slots": 1.3e-5,
                                                 "tokens": 2e-6, "slot_token": 3e-9, "rank_tile_adapter": 1e-5}}
    slots["scheduler"] = {"form": "linear", "params": {"intercept": 0.0004, "running": 2e-6, "waiting": 1.5e-7}}
    slots["swap"] = {"params": {"per_load_ms": 1.2, "per_slot_ms": 0.01}}
    ramp = copy.deepcopy(slots)
    ramp["step"]["lora_exempt"] = ["context_tokens"]
    ramp["lora"] = {"form": "factor_ramp", "params": {"coef": [1.3, 0.004], "ramp_tokens": 201.0,
                                                      "ramp_start": 0.4}}
    out = {"fixture": from_dict(base, "fixture"), "slots": from_dict(slots, "slots"),
           "ramp": from_dict(ramp, "ramp")}
    for name, model in (("real", MODEL), ("qwen", QWEN)):
        path = paths.resolve(real_dir / f"{model}.json")
        if path.exists():
            out[name] = from_dict(json.loads(path.read_text()), str(path))
    return out


def for_model(sc: dict, model: str) -> dict:
    """``sc`` for another base model (the calibration's)."""
    return {**sc, "model": model}


def speed_scenario(a_max: int, served: int, rates: tuple[float, ...], s_max: int) -> dict:
    """`benchmarks/twin_speed.py`'s layout: served adapters in thirds over three rates, ranks alternating."""
    counts = [served // 3 + (1 if i < served % 3 else 0) for i in range(3)]
    ranks = [8, min(16, s_max), 8]
    return {"model": MODEL,
            "server": {"max_loras": a_max, "max_cpu_loras": served, "max_lora_rank": s_max,
                       "max_num_seqs": 2048, "max_num_batched_tokens": 2048},
            "adapters": [{"count": c, "rank": r, "rate": x} for c, r, x in zip(counts, ranks, rates, strict=True)],
            "arrivals": {"kind": "poisson"}, "lengths": {"kind": "sharegpt"}, "duration_s": DURATION, "seed": 0}


def edge_scenarios() -> dict[str, dict]:
    """Hand-made cases for the paths the other scenarios may not reach."""
    base = speed_scenario(8, 64, HIGH, 16)
    cases = {}

    def variant(name: str, **changes) -> None:
        sc = copy.deepcopy(base)
        for key, value in changes.items():
            if key in ("max_loras", "max_num_seqs", "max_num_batched_tokens", "max_cpu_loras"):
                sc["server"][key] = value
            else:
                sc[key] = value
        cases[name] = sc

    variant("idle", adapters=[{"count": 4, "rank": 8, "rate": 0.002}], max_cpu_loras=4, max_loras=2)
    variant("empty", adapters=[{"count": 4, "rank": 8, "rate": 0.0}], max_cpu_loras=4, max_loras=2)
    variant("starved_swapping", adapters=[{"count": 48, "rank": 8, "rate": 0.4}, {"count": 16, "rank": 16,
                                                                                   "rate": 1.2}], max_loras=2)
    variant("tight_client", client={"max_connections": 400, "time_wait_s": 20.0})
    variant("no_client_limit", client={"max_connections": None})
    variant("fixed_lengths", lengths={"kind": "fixed", "input": 900, "output": 300})
    variant("quantile_lengths", lengths={"kind": "sharegpt", "shape": "quantiles"})
    variant("unpredictable", arrivals={"kind": "unpredictable"})
    variant("few_seqs", max_num_seqs=24, max_num_batched_tokens=512)
    variant("long_prompts_preempt", lengths={"kind": "fixed", "input": 3000, "output": 1500},
            adapters=[{"count": 64, "rank": 16, "rate": 0.2}], max_num_batched_tokens=8192)
    variant("trace", arrivals={"kind": "trace", "path": "../shared/traces/azure_llm_2023_code.csv", "speedup": 2.0},
            lengths={"kind": "trace", "path": "../shared/traces/azure_llm_2023_code.csv"})
    if not paths.resolve(Path("../shared/traces/azure_llm_2023_code.csv")).exists():
        del cases["trace"]
    return cases


def digest(sc: dict, cal) -> dict:
    """Hashes of the engine's raw outputs (step durations, finish order, TTFTs, ITL ranges, time series)."""
    scenario, cal = prepare(sc, cal)
    if cal.memory_error(scenario.server.max_loras, scenario.server.max_lora_rank):
        return {}
    run = run_engine(scenario, cal, make_workload(scenario), timeseries=True)
    done = run.scheduler.done

    def h(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:20]

    return {"durations": h(run.durations.tobytes()), "itl_counts": h(run.itl_counts.tobytes()),
            "idx": h(np.asarray(done.idx, dtype=np.int64).tobytes()),
            "ttft": h(np.asarray(done.ttft, dtype=np.float64).tobytes()),
            "runs": h(np.asarray([done.run_starts, done.run_ends], dtype=np.int64).tobytes()),
            "special": h(np.asarray(done.special, dtype=np.float64).tobytes()),
            # values, not Python types: a clock starting at int 0 or 0.0 gives the same outputs
            "series": h(np.asarray(run.recorder.series or [], dtype=np.float64).tobytes()),
            "end_time": float(run.end_time),
            "busy": run.recorder.busy, "distinct_busy": run.recorder.distinct_busy,
            "loads": run.scheduler.loads, "reloads": run.scheduler.reloads,
            "admissions": run.scheduler.admissions}


def cases(cals: dict[str, object]) -> list[tuple[str, dict, str]]:
    """(name, scenario, calibration name) of every case."""
    out = []
    for cfg in SPEED_CONFIGS:
        name = f"speed {cfg[0]}/{cfg[1]}/{'low' if cfg[2] == LOW else 'high'} S{cfg[3]}"
        for cal in cals:
            if cal in ("fixture", "real", "qwen") or cfg in SPEED_CONFIGS[:6]:
                out.append((name, for_model(speed_scenario(*cfg), cals[cal].model), cal))
    llama = [name for name in cals if name != "qwen"]
    mixes = mix_scenarios(SamplerConfig(MODEL, duration_s=DURATION), 24, seed=11, calibration=cals["fixture"])
    for i, sc in enumerate(mixes):
        out.append((f"mix {i} {sc['server']['max_loras']}/{sc['server']['max_cpu_loras']} "
                    f"{sc['arrivals']['kind']}", sc, llama[i % len(llama)]))
    if "qwen" in cals:
        mixes = mix_scenarios(SamplerConfig(QWEN, duration_s=DURATION), 8, seed=12, calibration=cals["qwen"])
        for i, sc in enumerate(mixes):
            out.append((f"qwen mix {i} {sc['server']['max_loras']}/{sc['server']['max_cpu_loras']} "
                        f"{sc['arrivals']['kind']}", sc, "qwen"))
    for name, sc in edge_scenarios().items():
        for cal in cals:
            out.append((f"edge {name}", for_model(sc, cals[cal].model), cal))
    return out


def run_all(real_dir: Path = REAL_DIR) -> dict[str, dict]:
    cals = calibrations(real_dir)
    results = {}
    for name, sc, cal_name in cases(cals):
        key = f"{name} [{cal_name}]"
        cal = cals[cal_name]
        result = simulate(sc, cal, timeseries=True, zero_wall_time=True)
        results[key] = {"result": result, "raw": digest(sc, cal)}
    return results


def differences(a: dict, b: dict, where: str = "") -> list[str]:
    """Paths at which two JSON-like values differ (floats compared exactly)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}: only on one side" for k in set(a) ^ set(b)]
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b and type(a) is type(b) else [f"{where}: {a!r} != {b!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="write every case's outputs here (JSON)")
    parser.add_argument("--compare", help="a previous --out file that every output must equal")
    parser.add_argument("--real-dir", type=Path, default=REAL_DIR, help="folder of the real calibrations")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = run_all(args.real_dir)
    Path(args.out).write_text(json.dumps(results, sort_keys=True, indent=1))
    starved = sum(r["result"]["starved"] for r in results.values())
    print(f"{len(results)} cases ({starved} starved) in {time.perf_counter() - started:.0f} s -> {args.out}")
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        after = json.loads(Path(args.out).read_text())  # both through JSON: floats round-trip exactly
        diffs = differences(before, after)
        for d in diffs[:40]:
            print("DIFF", d)
        print(f"identity: {'OK, all equal' if not diffs else f'{len(diffs)} differences'}")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
