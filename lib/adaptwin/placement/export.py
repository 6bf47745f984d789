"""Deployable output of a placement: ``placement.json``, ``routing.csv`` and one
``serve_gpu<N>.sh`` per GPU with the ``vllm serve`` command that realises it.

The serve scripts repeat exactly the configuration the placement was judged with (A_max, served adapters held
in CPU memory, S_max, and the twin's ``max_num_seqs``/token budget, prefix caching off), so what runs is what
was verified; ``routing.csv`` gives every (adapter, GPU) pair its endpoint and share of the adapter's traffic.
Adapter paths come from a template (``{adapter_id}``, ``{rank}``) under ``$ADAPTER_DIR``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import polars as pl

from adaptwin.io import atomic_write, write_json, write_text
from adaptwin.model_cards import CARDS
from adaptwin.placement.core import Placement

#: Hugging Face ids of the models with a card; other names are passed to vLLM unchanged
HF_IDS = {name: c.hub_id for name, c in CARDS.items()}
PATH_TEMPLATE = "{adapter_id}"  # relative to $ADAPTER_DIR (default ./adapters)
BASE_PORT = 8000
HOST = "127.0.0.1"
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def endpoint(g: int, host: str = HOST, base_port: int = BASE_PORT) -> str:
    """The OpenAI API base URL of GPU ``g``'s server (the port its script binds by default)."""
    return f"http://{host}:{base_port + g}/v1"


def device_selection(g: int) -> str:
    """Shell lines making GPU ``g`` the ``g``-th entry of an inherited ``CUDA_VISIBLE_DEVICES`` list (what a
    scheduler hands a job), else device ``g``; a list too short for ``g`` stops the script (exit 2)."""
    return (
        'if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then\n'
        '  IFS=, read -r -a devices <<< "$CUDA_VISIBLE_DEVICES"\n'
        f'  if [ "${{#devices[@]}}" -le {g} ]; then\n'
        f'    echo "serve_gpu{g}.sh: CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES lists ${{#devices[@]}} device(s);'
        f' GPU {g} is entry {g + 1}" >&2\n'
        "    exit 2\n"
        "  fi\n"
        f'  export CUDA_VISIBLE_DEVICES="${{devices[{g}]}}"\n'
        "else\n"
        f"  export CUDA_VISIBLE_DEVICES={g}\n"
        "fi\n"
    )


def lora_module(name: str, relative_path: str) -> str:
    """One ``--lora-modules`` shell word for ``name`` at ``$ADAPTER_DIR/relative_path``: ``name=path``, or
    vLLM's JSON form when the name or path holds ``=`` or ``,`` (vLLM splits ``name=path`` at ``=``). Everything
    is shell-quoted except the variable, so any adapter id is safe."""
    directory = '"${ADAPTER_DIR:-adapters}"/'
    if not any(ch in name + relative_path for ch in "=,"):
        return shlex.quote(f"{name}=") + directory + shlex.quote(relative_path)
    head = '{"name": ' + json.dumps(name) + ', "path": "'
    return shlex.quote(head) + directory + shlex.quote(json.dumps(relative_path)[1:] + "}")


def serve_command(
    placement: Placement, g: int, path_template: str = PATH_TEMPLATE, host: str = HOST, base_port: int = BASE_PORT
) -> str:
    """The shell script serving GPU ``g``.

    Every flag is one that vLLM 0.8.5 (the corpus's version, ``vllm serve``) and current releases accept
    alike; with ``VLLM_PYTHON`` set the server starts as ``$VLLM_PYTHON -m vllm.entrypoints.openai.api_server``
    (current CPU builds have no working ``vllm`` script). Prefix caching is off and the step token budget is
    the twin's, as in the runs the twin was calibrated on. ``VLLM_MODEL``, ``VLLM_HOST``, ``VLLM_PORT`` and
    extra arguments (``"$@"``) override or extend the defaults."""
    from adaptwin.twin.scenario import MAX_NUM_BATCHED_TOKENS, MAX_NUM_SEQS

    gpu = placement.gpus[g]
    adapters = placement.gpu_adapters(g)
    modules = [
        lora_module(a, path_template.format(adapter_id=a, rank=r))
        for a, r in zip(adapters["adapter_id"].to_list(), adapters["rank"].to_list(), strict=True)
    ]
    module_args = " \\\n    ".join(modules)
    model = shlex.quote(HF_IDS.get(placement.model, placement.model))
    return (
        "#!/usr/bin/env bash\n"
        f"# GPU {g} of a {placement.method} placement: {len(gpu.members)} adapters, "
        f"predicted {gpu.predicted['total_throughput']:.0f} tok/s, ITL {gpu.predicted['itl_mean_ms']:.1f} ms\n"
        "set -euo pipefail\n"
        + device_selection(g)
        + 'if [ -n "${VLLM_PYTHON:-}" ]; then\n'
        f'  server=("$VLLM_PYTHON" -m {API_SERVER_MODULE} --model)\n'
        "else\n"
        "  server=(vllm serve)\n"
        "fi\n"
        f'exec "${{server[@]}}" "${{VLLM_MODEL:-{model}}}" \\\n'
        f'  --host "${{VLLM_HOST:-{host}}}" --port "${{VLLM_PORT:-{base_port + g}}}" --enable-lora \\\n'
        f"  --max-loras {gpu.max_loras} --max-cpu-loras {len(gpu.members)} --max-lora-rank {gpu.max_lora_rank} \\\n"
        f"  --max-num-seqs {MAX_NUM_SEQS} --max-num-batched-tokens {MAX_NUM_BATCHED_TOKENS} --no-enable-prefix-caching \\\n"
        f'  --lora-modules \\\n    {module_args} \\\n  "$@"\n'
    )


def routing_table(placement: Placement, host: str = HOST, base_port: int = BASE_PORT) -> pl.DataFrame:
    """``adapter_id, gpu, endpoint, share``: one row per (adapter, GPU) pair, ``share`` the fraction of the
    adapter's requests sent there (below 1 for an adapter split over GPUs, as the placement checked it)."""
    ids = placement.workload["adapter_id"].to_list()
    rows = [
        (ids[i], g, endpoint(g, host, base_port), gpu.share_of(k))
        for g, gpu in enumerate(placement.gpus)
        for k, i in enumerate(gpu.members)
    ]
    schema = {"adapter_id": pl.Utf8, "gpu": pl.Int64, "endpoint": pl.Utf8, "share": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def write_placement(
    placement: Placement,
    out_dir: str | Path,
    path_template: str = PATH_TEMPLATE,
    host: str = HOST,
    base_port: int = BASE_PORT,
) -> list[Path]:
    """Write placement.json, routing.csv and serve_gpu<N>.sh (executable) into ``out_dir``; GPU ``g`` serves
    on ``host:base_port + g``."""
    out = Path(out_dir)
    paths = [write_json(out / "placement.json", placement.to_json())]
    routing = routing_table(placement, host, base_port)
    paths.append(atomic_write(out / "routing.csv", lambda p: routing.write_csv(p)))
    for stale in out.glob("serve_gpu*.sh"):
        stale.unlink()
    for g in range(placement.num_gpus):
        script = write_text(out / f"serve_gpu{g}.sh", serve_command(placement, g, path_template, host, base_port))
        script.chmod(0o755)
        paths.append(script)
    return paths
