"""What is known about each base model without running it: a small registry of model cards.

Every per-model fact adaptwin uses lives on a card here: the Hugging Face id, the architecture (which sizes
the dummy adapters and transfers LoRA costs between models), the default max model length, the ShareGPT
length pool's mean tokens per request in the model's tokenizer, and the vLLM release it was measured on.
Adding a model means one card here and one profiling run.

The twin's costs are measured per model, but a model without serving runs (Qwen-2.5-7B) can only borrow what
another model measured through facts both share: the architecture decides how much work a LoRA adapter adds
per token and how many LoRA kernels run per step. Every number here comes from the model's ``config.json``
on the Hugging Face hub (the revision the corpus used, data card 3) or from the data card itself; each card
names its sources so a calibration that uses a fact can cite it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the modules vLLM 0.8.5 applies LoRA to in these decoder blocks (packed as the model executes them): the
#: fused q/k/v projection, the attention output, the fused gate/up projection and the MLP down projection.
#: The corpus's dummy adapters copy a real adapter's structure (data card 3) whose targets are these four.
LORA_TARGET_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


@dataclass(frozen=True)
class ModelCard:
    """Architecture and serving facts of one base model (sizes in elements, lengths in tokens)."""

    name: str
    hub_id: str
    layers: int
    hidden_size: int
    intermediate_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    max_model_len: int
    vllm_version: str
    #: the vLLM release of the corpus's runs of this model (``runs.vllm_version``)
    vllm_release: str = "0.8.5"
    #: mean (prompt, output) tokens of the ShareGPT requests in this model's tokenizer
    length_means: tuple[float, float] = (251.0, 231.0)
    #: whether the corpus holds the profiling families calibration fits (data card 5.1-5.5) for this model
    calibratable: bool = True
    lora_target_modules: tuple[str, ...] = LORA_TARGET_MODULES
    sources: tuple[str, ...] = ()

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(input, output) width of every LoRA target module of one decoder layer."""
        h, inter = self.hidden_size, self.intermediate_size
        q, kv = self.attention_heads * self.head_dim, self.kv_heads * self.head_dim
        shapes = {"qkv_proj": (h, q + 2 * kv), "o_proj": (q, h), "gate_up_proj": (h, 2 * inter),
                  "down_proj": (inter, h)}
        return {m: shapes[m] for m in self.lora_target_modules}

    def lora_width(self) -> int:
        """Sum over layers and target modules of (input + output) width: a rank-r adapter's A and B matrices
        hold r times this many weights, and a token multiplies through r times this many (shrink + expand)."""
        return self.layers * sum(i + o for i, o in self.module_shapes().values())

    def lora_kernels(self) -> int:
        """LoRA target modules over all layers: each runs its own shrink and expand kernels every step, so
        fixed per-step (and per-slot) launch costs scale with this count."""
        return self.layers * len(self.lora_target_modules)


_VLLM = "vLLM 0.8.5 fork (0.1.dev6216+g1125ba0), data card 3"
_VLLM_05 = "vLLM 0.5.0 fork (FairnessInLLMAdapterServing), data card 3"
#: Llama-3.1's by-time logs print the sampled pool's totals, 18,042,231 / 15,885,629 tokens for 81,000
#: prompts; Qwen-2.5's tokenizer is of the same family (about 150k-token BPE), so it uses the same means;
#: Llama-2 models use the data card's raw 251 / 231 (data card 3)
_LLAMA3_POOL = (18042231 / 81000, 15885629 / 81000)

CARDS: dict[str, ModelCard] = {
    "llama-3.1-8b-instruct": ModelCard(
        name="llama-3.1-8b-instruct", hub_id="meta-llama/Llama-3.1-8B-Instruct", layers=32, hidden_size=4096,
        intermediate_size=14336, attention_heads=32, kv_heads=8, head_dim=128, max_model_len=131072,
        vllm_version=_VLLM, length_means=_LLAMA3_POOL,
        sources=("config.json of meta-llama/Llama-3.1-8B-Instruct: num_hidden_layers 32, hidden_size 4096, "
                 "intermediate_size 14336, num_attention_heads 32, num_key_value_heads 8",
                 "data card 3: default max model length 131,072 tokens")),
    "qwen-2.5-7b-instruct": ModelCard(
        name="qwen-2.5-7b-instruct", hub_id="Qwen/Qwen2.5-7B-Instruct", layers=28, hidden_size=3584,
        intermediate_size=18944, attention_heads=28, kv_heads=4, head_dim=128, max_model_len=32768,
        vllm_version=_VLLM, length_means=_LLAMA3_POOL,
        sources=("config.json of Qwen/Qwen2.5-7B-Instruct: num_hidden_layers 28, hidden_size 3584, "
                 "intermediate_size 18944, num_attention_heads 28, num_key_value_heads 4",
                 "data card 3: default max model length 32,768 tokens")),
    "llama-2-7b": ModelCard(
        name="llama-2-7b", hub_id="meta-llama/Llama-2-7b-hf", layers=32, hidden_size=4096,
        intermediate_size=11008, attention_heads=32, kv_heads=32, head_dim=128, max_model_len=4096,
        vllm_version=_VLLM_05, vllm_release="0.5.0", calibratable=False,
        sources=("config.json of meta-llama/Llama-2-7b-hf: num_hidden_layers 32, hidden_size 4096, "
                 "intermediate_size 11008, num_attention_heads 32, num_key_value_heads 32",
                 "data card 3: max model length 4,096 tokens")),
    "llama-2-13b": ModelCard(
        name="llama-2-13b", hub_id="meta-llama/Llama-2-13b-hf", layers=40, hidden_size=5120,
        intermediate_size=13824, attention_heads=40, kv_heads=40, head_dim=128, max_model_len=4096,
        vllm_version=_VLLM_05, vllm_release="0.5.0", calibratable=False,
        sources=("config.json of meta-llama/Llama-2-13b-hf: num_hidden_layers 40, hidden_size 5120, "
                 "intermediate_size 13824, num_attention_heads 40, num_key_value_heads 40",
                 "data card 3: max model length 4,096 tokens")),
}


def corpus_name(hub_name: str) -> str:
    """The corpus's name of a model given by its Hugging Face id or folder (``Qwen/Qwen2.5-7B-Instruct`` ->
    ``qwen-2.5-7b-instruct``); an unknown name comes back as its last path component in lower case."""
    key = hub_name.rstrip("/").rsplit("/", 1)[-1].lower()
    aliases = {c.hub_id.rsplit("/", 1)[-1].lower(): name for name, c in CARDS.items()}
    return aliases.get(key, key)


def card(model: str) -> ModelCard:
    """The card of ``model``; an unknown name is named with the known ones."""
    try:
        return CARDS[model]
    except KeyError:
        raise ValueError(f"model: unknown model {model!r}; known: {', '.join(CARDS)}") from None
