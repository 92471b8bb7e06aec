"""GPT-2 (the seed's Italian BAMBI model): base model at `transformer`, embeddings at `wte`."""

from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

from .llava_arch import LlavaMetaForCausalLM, LlavaMetaModel


class LlavaGPT2Config(GPT2Config):
    model_type = "llava_gpt2"
    # Generation defaults: config fields that transformers copies into the model's generation config
    # (greedy captions of a caption's length).
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = False
    num_beams: int = 1
    max_new_tokens: int = 64


class LlavaGPT2Model(LlavaMetaModel, GPT2Model):
    config_class = LlavaGPT2Config

    @property
    def model(self):
        return self

    @property
    def embed_tokens(self):
        return self.wte


class LlavaGPT2ForCausalLM(GPT2LMHeadModel, LlavaMetaForCausalLM):
    config_class = LlavaGPT2Config

    def __init__(self, config):
        super().__init__(config)
        self.transformer = LlavaGPT2Model(config)
        self.post_init()

    def get_model(self):
        return self.transformer

    forward = LlavaMetaForCausalLM.forward
    generate = LlavaMetaForCausalLM.generate
    prepare_inputs_for_generation = LlavaMetaForCausalLM.prepare_inputs_for_generation
