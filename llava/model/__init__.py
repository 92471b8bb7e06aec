"""Public model classes. Importing this package registers the seven families with AutoConfig and
AutoModelForCausalLM, so `AutoModelForCausalLM.from_pretrained` loads any llava checkpoint.

The classes are defined in llava/modeling/, which registers nothing itself: an exported checkpoint carries
those modules as custom code, and loading it must not change transformers' global mappings.
"""

import importlib

from transformers import AutoConfig, AutoModelForCausalLM
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping

from ..modeling.families import FAMILIES


def register_family(config_class, causal_lm_class) -> None:
    """Registers a family with AutoConfig and AutoModelForCausalLM. Checkpoint key conversions that
    transformers keeps for the base model type (Mixtral's expert layout, for one) are shared with the
    llava type, so that stock checkpoints load into the wrapper and round trips keep their layout."""
    AutoConfig.register(config_class.model_type, config_class)
    AutoModelForCausalLM.register(config_class, causal_lm_class)
    base_type = next(c.model_type for c in config_class.__mro__[1:] if getattr(c, "model_type", ""))
    conversions = get_checkpoint_conversion_mapping(base_type)
    if conversions:
        register_checkpoint_conversion_mapping(config_class.model_type, conversions, overwrite=True)


# family module (and model_type) -> "CausalLMClass, ConfigClass", as LLaVA lists them (its clients read it).
AVAILABLE_MODELS = {f.llava_type: f"{f.causal_lm}, {f.config}" for f in FAMILIES}

__all__ = ["AVAILABLE_MODELS"]
# A family that fails to import raises here: a half-registered package would fail later and obscurely.
for _family in FAMILIES:
    _module = importlib.import_module(f"..modeling.{_family.llava_type}", __name__)
    register_family(getattr(_module, _family.config), getattr(_module, _family.causal_lm))
    for _name in (_family.causal_lm, _family.config, *_family.also_exported):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
