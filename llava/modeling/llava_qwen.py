"""Qwen2: base model at `model`, embeddings at `embed_tokens`."""

from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Model

from .llava_arch import LlavaMetaForCausalLM, LlavaMetaModel


class LlavaQwenConfig(Qwen2Config):
    model_type = "llava_qwen"


class LlavaQwenModel(LlavaMetaModel, Qwen2Model):
    config_class = LlavaQwenConfig


class LlavaQwenForCausalLM(Qwen2ForCausalLM, LlavaMetaForCausalLM):
    config_class = LlavaQwenConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = LlavaQwenModel(config)
        self.post_init()

    forward = LlavaMetaForCausalLM.forward
    generate = LlavaMetaForCausalLM.generate
    prepare_inputs_for_generation = LlavaMetaForCausalLM.prepare_inputs_for_generation
