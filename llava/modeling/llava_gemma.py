"""Gemma: base model at `model`, embeddings at `embed_tokens`. Gemma scales its input embeddings by
sqrt(hidden): transformers 5 in the embedding module (visual tokens spliced in after it are not scaled),
transformers 4 in the model's forward (every input embedding is); `visual_input_scale` says which, so that
the visual tokens reach the layers alike under both (an exported folder runs under either)."""

from transformers import GemmaConfig, GemmaForCausalLM, GemmaModel

from .llava_arch import LlavaMetaForCausalLM, LlavaMetaModel


class LlavaGemmaConfig(GemmaConfig):
    model_type = "llava_gemma"


class LlavaGemmaModel(LlavaMetaModel, GemmaModel):
    config_class = LlavaGemmaConfig

    @property
    def visual_input_scale(self) -> float:
        """What the forward multiplies input embeddings by: 1 where the embedding module scales (5)."""
        return 1.0 if hasattr(self.embed_tokens, "embed_scale") else self.config.hidden_size**0.5


class LlavaGemmaForCausalLM(GemmaForCausalLM, LlavaMetaForCausalLM):
    config_class = LlavaGemmaConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = LlavaGemmaModel(config)
        self.post_init()

    forward = LlavaMetaForCausalLM.forward
    generate = LlavaMetaForCausalLM.generate
    prepare_inputs_for_generation = LlavaMetaForCausalLM.prepare_inputs_for_generation
