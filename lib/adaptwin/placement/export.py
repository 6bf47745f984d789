"""Deployable output of a placement (issue 5, section 3): ``placement.json``, ``routing.csv`` and one
``serve_gpu<N>.sh`` per GPU with the ``vllm serve`` command that realises it.

The serve scripts repeat exactly the configuration the placement was judged with (A_max, served adapters held
in CPU memory, S_max, and the twin's ``max_num_seqs``/token budget), so what runs is what was verified.
Adapter paths come from a template (``{adapter_id}``, ``{rank}``) under ``$ADAPTER_DIR``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from adaptwin.io import atomic_write, write_json, write_text
from adaptwin.placement.core import Placement

#: Hugging Face ids of the models the corpus covers; other names are passed to vLLM unchanged
HF_IDS = {
    "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "qwen-2.5-7b-instruct": "Qwen/Qwen2.5-7B-Instruct",
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "llama-2-13b": "meta-llama/Llama-2-13b-hf",
}
PATH_TEMPLATE = "{adapter_id}"  # relative to $ADAPTER_DIR (default ./adapters)
BASE_PORT = 8000


def serve_command(placement: Placement, g: int, path_template: str = PATH_TEMPLATE) -> str:
    """The shell script serving GPU ``g``."""
    from adaptwin.dataset.sampler import MAX_NUM_BATCHED_TOKENS, MAX_NUM_SEQS

    gpu = placement.gpus[g]
    adapters = placement.gpu_adapters(g)
    # name=$ADAPTER_DIR/<template>: everything quoted except the variable, so any adapter id is safe
    modules = [
        shlex.quote(f"{a}=") + '"${ADAPTER_DIR:-adapters}"/' + shlex.quote(path_template.format(adapter_id=a, rank=r))
        for a, r in zip(adapters["adapter_id"].to_list(), adapters["rank"].to_list(), strict=True)
    ]
    module_args = " \\\n    ".join(modules)
    model = HF_IDS.get(placement.model, placement.model)
    return (
        "#!/usr/bin/env bash\n"
        f"# GPU {g} of a {placement.method} placement: {len(gpu.members)} adapters, "
        f"predicted {gpu.predicted['total_throughput']:.0f} tok/s, ITL {gpu.predicted['itl_mean_ms']:.1f} ms\n"
        "set -euo pipefail\n"
        f"export CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-{g}}}\n"
        f"exec vllm serve {shlex.quote(model)} --port $(({BASE_PORT} + {g})) --enable-lora \\\n"
        f"  --max-loras {gpu.max_loras} --max-cpu-loras {len(gpu.members)} --max-lora-rank {gpu.max_lora_rank} \\\n"
        f"  --max-num-seqs {MAX_NUM_SEQS} --max-num-batched-tokens {MAX_NUM_BATCHED_TOKENS} \\\n"
        f"  --lora-modules \\\n    {module_args}\n"
    )


def write_placement(placement: Placement, out_dir: str | Path, path_template: str = PATH_TEMPLATE) -> list[Path]:
    """Write placement.json, routing.csv and serve_gpu<N>.sh (executable) into ``out_dir``."""
    out = Path(out_dir)
    paths = [write_json(out / "placement.json", placement.to_json())]
    routing = placement.routing()
    paths.append(atomic_write(out / "routing.csv", lambda p: routing.write_csv(p)))
    for stale in out.glob("serve_gpu*.sh"):
        stale.unlink()
    for g in range(placement.num_gpus):
        script = write_text(out / f"serve_gpu{g}.sh", serve_command(placement, g, path_template))
        script.chmod(0o755)
        paths.append(script)
    return paths
