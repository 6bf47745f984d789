"""Dummy LoRA adapters: the structure of a real PEFT adapter with every A/B weight zero, at a requested rank.

Why: the recorded corpus used such adapters (data card 3) so that serving cost depends only on rank and
count while the generated text equals the base model's. An adapter folder holds ``adapter_config.json``
(PEFT format, what vLLM's ``PEFTHelper`` reads) and ``adapter_model.safetensors``. The weights are written with
the ``safetensors`` package when it is importable, otherwise by ``write_safetensors`` below: the format is an
8-byte little-endian header length, a JSON header (dtype, shape, byte offsets per tensor), then raw
little-endian bytes. All-zero data needs no buffer: the file is extended with zeros.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptwin.io import atomic_write, write_json
from adaptwin.model_cards import CARDS
from adaptwin.profiling.config import model_key

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_DTYPES = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8")}


@dataclass(frozen=True)
class ModelShape:
    """The layer sizes a LoRA adapter must match (from the base model's Hugging Face ``config.json``)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> ModelShape:
        """Build from a Hugging Face ``config.json`` dict (Llama/Qwen2 key names)."""
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        return cls(
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
        )

    def module_shape(self, module: str) -> tuple[int, int]:
        """(in_features, out_features) of one projection."""
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        h, i = self.hidden_size, self.intermediate_size
        shapes = {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }
        if module not in shapes:
            raise ValueError(f"target module {module!r} not supported (choose from {sorted(shapes)})")
        return shapes[module]


#: The base models of the corpus (data card 3), so no download is needed to size their adapters.
KNOWN_MODELS: dict[str, ModelShape] = {
    name: ModelShape(c.hidden_size, c.intermediate_size, c.layers, c.attention_heads, c.kv_heads, c.head_dim)
    for name, c in CARDS.items()
}


def resolve_model_shape(model: str, override: dict[str, Any] | None = None) -> ModelShape:
    """Shape of ``model``: an explicit override, a local ``config.json``, the known table, or the Hub."""
    if override:
        return ModelShape.from_hf_config(override)
    local = Path(model) / "config.json"
    if local.is_file():
        return ModelShape.from_hf_config(json.loads(local.read_text()))
    if (key := model_key(model)) in KNOWN_MODELS:
        return KNOWN_MODELS[key]
    if importlib.util.find_spec("huggingface_hub") is not None:  # installed with vLLM
        from huggingface_hub import hf_hub_download

        return ModelShape.from_hf_config(json.loads(Path(hf_hub_download(model, "config.json")).read_text()))
    raise ValueError(
        f"model {model!r}: unknown layer sizes; give `model_shape:` (config.json keys) in the config"
    )


def peft_config(
    rank: int, base_model: str, target_modules: tuple[str, ...], lora_alpha: int | None = None
) -> dict:
    """A PEFT ``adapter_config.json`` for a plain LoRA adapter (alpha defaults to 2 x rank)."""
    return {
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "lora_alpha": int(lora_alpha if lora_alpha is not None else 2 * rank),
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": int(rank),
        "target_modules": list(target_modules),
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    }


def lora_tensor_shapes(rank: int, shape: ModelShape, target_modules: tuple[str, ...]) -> dict[str, list[int]]:
    """PEFT tensor names and shapes: ``lora_A`` is (rank, in_features), ``lora_B`` is (out_features, rank)."""
    shapes: dict[str, list[int]] = {}
    for layer in range(shape.num_layers):
        for module in target_modules:
            block = "self_attn" if module in _ATTENTION else "mlp"
            fan_in, fan_out = shape.module_shape(module)
            prefix = f"base_model.model.model.layers.{layer}.{block}.{module}"
            shapes[f"{prefix}.lora_A.weight"] = [rank, fan_in]
            shapes[f"{prefix}.lora_B.weight"] = [fan_out, rank]
    return shapes


def create_dummy_adapter(
    directory: str | os.PathLike,
    rank: int,
    shape: ModelShape,
    base_model: str,
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES,
    lora_alpha: int | None = None,
) -> Path:
    """Write a zero-weight adapter of ``rank`` into ``directory`` (created) and return the folder."""
    if rank < 1:
        raise ValueError(f"adapter rank must be >= 1, got {rank}")
    directory = Path(directory)
    shapes = lora_tensor_shapes(rank, shape, tuple(target_modules))
    write_zero_safetensors(directory / WEIGHTS_NAME, shapes, dtype="F16")
    write_json(directory / CONFIG_NAME, peft_config(rank, base_model, tuple(target_modules), lora_alpha))
    return directory


def write_zero_safetensors(path: str | os.PathLike, shapes: dict[str, list[int]], dtype: str = "F16") -> Path:
    """Write all-zero tensors of ``shapes`` in safetensors format (with the package if importable)."""
    if importlib.util.find_spec("safetensors") is not None:
        from safetensors.numpy import save_file

        tensors = {name: np.zeros(shape, dtype=_DTYPES[dtype]) for name, shape in shapes.items()}
        return atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    return atomic_write(path, lambda p: _write_zero_safetensors(p, shapes, dtype))


def _write_zero_safetensors(path: Path, shapes: dict[str, list[int]], dtype: str) -> None:
    itemsize = _DTYPES[dtype].itemsize
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(shapes):
        nbytes = int(np.prod(shapes[name])) * itemsize
        header[name] = {
            "dtype": dtype,
            "shape": list(shapes[name]),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format recommends an 8-byte aligned data section
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        f.truncate(8 + len(raw) + offset)  # extends with zero bytes: the tensors' data


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a safetensors file into numpy arrays (used to check adapters without the package)."""
    data = Path(path).read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header.pop("__metadata__", None)
    body = memoryview(data)[8 + size :]
    out = {}
    for name, meta in header.items():
        start, end = meta["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype=_DTYPES[meta["dtype"]]).reshape(meta["shape"])
    return out


def ensure_adapters(
    root: str | os.PathLike,
    ranks: list[int],
    model: str,
    shape: ModelShape,
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES,
) -> dict[int, Path]:
    """One adapter folder ``dummy_rank_<r>`` per distinct rank under ``root``, reused if already there."""
    paths: dict[int, Path] = {}
    for rank in sorted(set(ranks)):
        folder = Path(root) / f"dummy_rank_{rank}"
        if not _is_complete(folder, rank, model, target_modules):
            create_dummy_adapter(folder, rank, shape, model, target_modules)
        paths[rank] = folder
    return paths


def _is_complete(folder: Path, rank: int, model: str, target_modules: tuple[str, ...]) -> bool:
    try:
        cfg = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    same = cfg.get("r") == rank and cfg.get("base_model_name_or_path") == model
    return same and cfg.get("target_modules") == list(target_modules) and (folder / WEIGHTS_NAME).is_file()
