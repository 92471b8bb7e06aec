"""Public model classes. Importing this package registers the seven families with AutoConfig and
AutoModelForCausalLM, so `AutoModelForCausalLM.from_pretrained` loads any llava checkpoint."""

import importlib

from .families import FAMILIES

# family module (and model_type) -> "CausalLMClass, ConfigClass", as LLaVA lists them (its clients read it).
AVAILABLE_MODELS = {f.llava_type: f"{f.causal_lm}, {f.config}" for f in FAMILIES}

__all__ = ["AVAILABLE_MODELS"]
# A family that fails to import raises here: a half-registered package would fail later and obscurely.
for _family in FAMILIES:
    _module = importlib.import_module(f".language_model.{_family.llava_type}", __name__)
    for _name in (_family.causal_lm, _family.config, *_family.also_exported):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
