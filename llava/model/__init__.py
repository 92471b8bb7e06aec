"""Public model classes. Importing this package registers the seven families with AutoConfig and
AutoModelForCausalLM, so `AutoModelForCausalLM.from_pretrained` loads any llava checkpoint."""

import importlib

# family module (and model_type) -> "CausalLMClass, ConfigClass", as LLaVA lists them.
AVAILABLE_MODELS = {
    "llava_gpt2": "LlavaGPT2ForCausalLM, LlavaGPT2Config",
    "llava_llama": "LlavaLlamaForCausalLM, LlavaConfig",
    "llava_mistral": "LlavaMistralForCausalLM, LlavaMistralConfig",
    "llava_mixtral": "LlavaMixtralForCausalLM, LlavaMixtralConfig",
    "llava_qwen": "LlavaQwenForCausalLM, LlavaQwenConfig",
    "llava_gemma": "LlavaGemmaForCausalLM, LlavaGemmaConfig",
    "llava_mpt": "LlavaMptForCausalLM, LlavaMptConfig",
}

__all__ = ["AVAILABLE_MODELS", "LlavaGPT2Model"]
# A family that fails to import raises here: a half-registered package would fail later and obscurely.
for _module_name, _names in AVAILABLE_MODELS.items():
    _module = importlib.import_module(f".language_model.{_module_name}", __name__)
    for _name in _names.split(", "):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)

from .language_model.llava_gpt2 import LlavaGPT2Model  # noqa: E402  (the seed's check script uses it)
