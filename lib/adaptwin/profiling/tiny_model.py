"""Build a tiny Llama-architecture model folder (random weights from a seed, a locally trained tokenizer).

Why: no model can be downloaded on the machines that test the harness, yet a live vLLM server needs a real
Hugging Face model folder. Random weights serve the purpose: serving cost depends on the shapes, not on what
the weights say, and the dummy LoRA adapters are zero anyway. The same seed gives the same folder.

This file runs with the vLLM environment's interpreter (which has ``torch``, ``transformers`` and
``tokenizers``), by path, so it imports nothing from ``adaptwin``::

    .venv-vllm/bin/python lib/adaptwin/profiling/tiny_model.py OUT_DIR [--seed 0]

The folder is complete once ``tiny_model.json`` (the shape and seed) is written, last.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

#: The model's shape: head size 64 (supported by the CPU attention kernels), 2 layers, about 3 M parameters.
SHAPE = {
    "vocab_size": 2048,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 1024,
}
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
MARKER = "tiny_model.json"


def training_text(seed: int, lines: int = 4000) -> list[str]:
    """Sentences of pseudo-words from a seeded syllable table: enough text for a BPE of ``vocab_size``."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) + "." for _ in range(lines)]


def build_tokenizer(seed: int, out_dir: Path) -> None:
    """Train a byte-level BPE tokenizer on the seeded text and save it as a Hugging Face fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=SHAPE["vocab_size"],
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_text(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", model_max_length=1024
    )
    fast.save_pretrained(out_dir)


def build_model(seed: int, out_dir: Path) -> int:
    """Save a randomly initialised ``LlamaForCausalLM`` (seeded) in bfloat16; return its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**SHAPE, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out_dir, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def build(out_dir: str | Path, seed: int = 0) -> Path:
    """Build the model folder unless a complete one with the same seed and shape is there; return it."""
    out = Path(out_dir)
    marker = out / MARKER
    wanted = {"seed": seed, **SHAPE}
    if marker.is_file() and {k: v for k, v in json.loads(marker.read_text()).items() if k in wanted} == wanted:
        return out
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(seed, out)
    params = build_model(seed, out)
    marker.write_text(json.dumps({**wanted, "parameters": params}, indent=1, sort_keys=True) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: ``tiny_model.py OUT_DIR [--seed N]``; prints the folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build(args.out_dir, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
