"""Time vLLM's own scheduler walking past waiting requests it cannot admit: the twin's ``scheduler.waiting``.

Why: with every LoRA slot taken, each step's waiting loop of vLLM's V1 scheduler looks at every queued
request of another adapter, skips it and puts it back, so an overloaded server with A_max below the
adapters it serves pays a scheduler cost per queued request per step. Timing that cost from the client (time
per output token against the requests queued) mixes it with everything else that slows a step while requests
arrive: the API server admitting and tokenizing them on the same CPU slows the model's forward itself (seen:
forward times of a 48-request decode batch 13-36 ms while 96 requests were arriving, 7-9 ms after). Here the
engine's own ``Scheduler.schedule`` runs in-process, without a model, on the machine being calibrated: one
adapter's requests fill the running batch, ``W`` requests of another adapter wait, and the time of a
``schedule()`` call grows with ``W`` by exactly the cost of the walk. The slope over several ``W`` (median of
repeats) is the cost per waiting request looked at, in seconds.

This file runs with the vLLM environment's interpreter, by path, so it imports nothing from ``adaptwin``::

    .venv-vllm/bin/python lib/adaptwin/profiling/scan_probe.py MODEL_DIR [--waiting 0 250 500 1000] [--repeats 7]

It prints one JSON object: ``seconds_per_waiting`` (the slope), ``times_s`` (median call time per ``W``),
``vllm_version``. Memory and GPU are not touched (the KV cache is a bookkeeping object).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

#: requests of the adapter that holds the only slot, and their prompt length (one step's budget admits them)
RUNNING, PROMPT = 16, 64


def make_scheduler(model_dir: str, max_loras: int = 1, max_seqs: int = 64, budget: int = 2048,
                   blocks: int = 100_000, block_size: int = 16):
    """A V1 scheduler of the installed vLLM for the model at ``model_dir`` (LoRA on, ``max_loras`` slots,
    no prefix caching, as the harness serves), with a KV cache large enough never to block admission."""
    import torch
    from vllm.config import CacheConfig, LoRAConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    model = ModelConfig(model=model_dir, dtype="float32", seed=0)
    config = VllmConfig(
        model_config=model,
        scheduler_config=SchedulerConfig(max_num_seqs=max_seqs, max_num_batched_tokens=budget, max_model_len=model.max_model_len,
                                         is_encoder_decoder=False),
        cache_config=CacheConfig(block_size=block_size, enable_prefix_caching=False),
        lora_config=LoRAConfig(max_loras=max_loras, max_lora_rank=16, max_cpu_loras=max(max_loras, 2)),
    )
    spec = FullAttentionSpec(block_size=block_size, num_kv_heads=1, head_size=64, dtype=torch.float32)
    kv = KVCacheConfig(num_blocks=blocks, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(["layer"], spec)])
    config.cache_config.num_gpu_blocks = blocks
    return Scheduler(vllm_config=config, kv_cache_config=kv, structured_output_manager=StructuredOutputManager(config),
                     block_size=block_size, log_stats=True)


def make_request(index: int, lora_id: int):
    """One request of adapter ``lora_id`` with a ``PROMPT``-token prompt."""
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest
    from vllm.v1.request import Request

    params = SamplingParams(max_tokens=32, ignore_eos=True)
    return Request(request_id=f"r{index}", prompt_token_ids=[1 + index % 1000] * PROMPT, sampling_params=params,
                   pooling_params=None, arrival_time=float(index),
                   lora_request=LoRARequest(f"a{lora_id}", lora_id, f"/nonexistent/a{lora_id}"))


def time_schedule(model_dir: str, waiting: int) -> float:
    """Seconds of one ``schedule()`` call that admits ``RUNNING`` requests of adapter 1 and walks past
    ``waiting`` requests of adapter 2 (one slot: none of them can be admitted)."""
    sched = make_scheduler(model_dir)
    for i in range(RUNNING):
        sched.add_request(make_request(i, 1))
    for i in range(waiting):
        sched.add_request(make_request(RUNNING + i, 2))
    start = time.perf_counter()
    out = sched.schedule()
    elapsed = time.perf_counter() - start
    admitted = len(out.scheduled_new_reqs)
    if admitted != RUNNING:
        raise RuntimeError(f"scan probe: expected {RUNNING} admitted requests, the scheduler admitted {admitted}")
    return elapsed


def probe(model_dir: str, waiting: list[int], repeats: int) -> dict:
    """Median call time per waiting count and their least-squares slope (seconds per waiting request)."""
    import vllm

    time_schedule(model_dir, max(waiting))  # warm-up: imports, caches
    medians = {w: statistics.median(time_schedule(model_dir, w) for _ in range(repeats)) for w in waiting}
    slope = statistics.linear_regression(list(medians), list(medians.values())).slope
    return {"seconds_per_waiting": max(slope, 0.0), "times_s": {str(k): v for k, v in medians.items()},
            "running": RUNNING, "repeats": repeats, "vllm_version": vllm.__version__}


def main(argv: list[str] | None = None) -> int:
    """Command line: ``scan_probe.py MODEL_DIR [--waiting ...] [--repeats N]``; prints the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--waiting", type=int, nargs="+", default=[0, 250, 500, 1000])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    if len(set(args.waiting)) < 2:
        print("scan_probe: --waiting needs at least two distinct counts", file=sys.stderr)
        return 2
    print(json.dumps(probe(args.model_dir, sorted(set(args.waiting)), args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
