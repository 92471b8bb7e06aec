"""Gemma (scales input embeddings by sqrt(hidden) inside the model, visual ones included): base model at `model`, embeddings at `embed_tokens`."""

from transformers import GemmaConfig, GemmaForCausalLM, GemmaModel

from .llava_arch import LlavaMetaForCausalLM, LlavaMetaModel


class LlavaGemmaConfig(GemmaConfig):
    model_type = "llava_gemma"


class LlavaGemmaModel(LlavaMetaModel, GemmaModel):
    config_class = LlavaGemmaConfig


class LlavaGemmaForCausalLM(GemmaForCausalLM, LlavaMetaForCausalLM):
    config_class = LlavaGemmaConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = LlavaGemmaModel(config)
        self.post_init()

    forward = LlavaMetaForCausalLM.forward
    generate = LlavaMetaForCausalLM.generate
    prepare_inputs_for_generation = LlavaMetaForCausalLM.prepare_inputs_for_generation
