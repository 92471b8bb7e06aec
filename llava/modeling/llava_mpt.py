"""MPT: base model at `transformer`, embeddings at `wte`; ALiBi, so its forward takes no position ids
(the core drops them)."""

from transformers import MptConfig, MptForCausalLM, MptModel

from .llava_arch import LlavaMetaForCausalLM, LlavaMetaModel


class LlavaMptConfig(MptConfig):
    model_type = "llava_mpt"


class LlavaMptModel(LlavaMetaModel, MptModel):
    config_class = LlavaMptConfig


class LlavaMptForCausalLM(MptForCausalLM, LlavaMetaForCausalLM):
    config_class = LlavaMptConfig

    def __init__(self, config):
        super().__init__(config)
        self.transformer = LlavaMptModel(config)
        self.post_init()

    forward = LlavaMetaForCausalLM.forward
    generate = LlavaMetaForCausalLM.generate
    prepare_inputs_for_generation = LlavaMetaForCausalLM.prepare_inputs_for_generation
