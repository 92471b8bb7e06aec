"""The language-model families, one row each: everything that lists families follows from `FAMILIES`
(LLaVA's AVAILABLE_MODELS, the stock <-> llava model_type mapping, the supported-types text of errors,
the tiny test configs; a test checks the README's table against it).

Adding a family: its file in this folder, named after its llava model_type (config, base-model and
causal-LM classes; llava.model registers them), and one row here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Tiny test sizes (llava.testing adds the vocabulary and special token ids that every family shares).
_TINY_GPT2 = dict(n_layer=2, n_embd=32, n_head=4, n_positions=256)
_TINY_DECODER = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)
_TINY_MIXTRAL = dict(_TINY_DECODER, num_local_experts=4, num_experts_per_tok=2)
_TINY_GEMMA = dict(_TINY_DECODER, head_dim=8)
_TINY_MPT = dict(d_model=32, n_heads=4, n_layers=2, max_seq_len=256)


@dataclass(frozen=True)
class Family:
    llava_type: str  # model_type of the llava config, and the name of its module in llava/modeling/
    stock_type: str  # model_type of the transformers language model it wraps
    display_name: str  # as the README's table names the family
    causal_lm: str  # class names in the family module; llava.model exports them
    config: str
    tiny_config: dict = field(default_factory=dict)  # a tiny stock config's sizes, for tests (llava.testing)
    also_exported: tuple[str, ...] = ()  # further classes of the module that llava.model exports


# LlavaGPT2Model is exported too: the seed's check script imports it.
FAMILIES = (
    Family("llava_gpt2", "gpt2", "GPT-2", "LlavaGPT2ForCausalLM", "LlavaGPT2Config", _TINY_GPT2, ("LlavaGPT2Model",)),
    Family("llava_llama", "llama", "Llama", "LlavaLlamaForCausalLM", "LlavaConfig", _TINY_DECODER),
    Family("llava_mistral", "mistral", "Mistral", "LlavaMistralForCausalLM", "LlavaMistralConfig", _TINY_DECODER),
    Family("llava_mixtral", "mixtral", "Mixtral", "LlavaMixtralForCausalLM", "LlavaMixtralConfig", _TINY_MIXTRAL),
    Family("llava_qwen", "qwen2", "Qwen2", "LlavaQwenForCausalLM", "LlavaQwenConfig", _TINY_DECODER),
    Family("llava_gemma", "gemma", "Gemma", "LlavaGemmaForCausalLM", "LlavaGemmaConfig", _TINY_GEMMA),
    Family("llava_mpt", "mpt", "MPT", "LlavaMptForCausalLM", "LlavaMptConfig", _TINY_MPT),
)

BY_LLAVA_TYPE = {f.llava_type: f for f in FAMILIES}
STOCK_TO_LLAVA = {f.stock_type: f.llava_type for f in FAMILIES}
LLAVA_TO_STOCK = {f.llava_type: f.stock_type for f in FAMILIES}
LLAVA_TYPES = frozenset(BY_LLAVA_TYPE)
SUPPORTED_TEXT = f"{', '.join(sorted(STOCK_TO_LLAVA))}, or their llava_* types"
