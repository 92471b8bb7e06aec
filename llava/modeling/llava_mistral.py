"""Mistral: base model at `model`, embeddings at `embed_tokens`."""

from transformers import MistralConfig, MistralForCausalLM, MistralModel

from .llava_arch import LlavaMetaForCausalLM, LlavaMetaModel


class LlavaMistralConfig(MistralConfig):
    model_type = "llava_mistral"


class LlavaMistralModel(LlavaMetaModel, MistralModel):
    config_class = LlavaMistralConfig


class LlavaMistralForCausalLM(MistralForCausalLM, LlavaMetaForCausalLM):
    config_class = LlavaMistralConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = LlavaMistralModel(config)
        self.post_init()

    forward = LlavaMetaForCausalLM.forward
    generate = LlavaMetaForCausalLM.generate
    prepare_inputs_for_generation = LlavaMetaForCausalLM.prepare_inputs_for_generation
