"""Mixtral (mixture of experts): base model at `model`, embeddings at `embed_tokens`."""

from transformers import MixtralConfig, MixtralForCausalLM, MixtralModel

from .llava_arch import LlavaMetaForCausalLM, LlavaMetaModel


class LlavaMixtralConfig(MixtralConfig):
    model_type = "llava_mixtral"


class LlavaMixtralModel(LlavaMetaModel, MixtralModel):
    config_class = LlavaMixtralConfig


class LlavaMixtralForCausalLM(MixtralForCausalLM, LlavaMetaForCausalLM):
    config_class = LlavaMixtralConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = LlavaMixtralModel(config)
        self.post_init()

    forward = LlavaMetaForCausalLM.forward
    generate = LlavaMetaForCausalLM.generate
    prepare_inputs_for_generation = LlavaMetaForCausalLM.prepare_inputs_for_generation
