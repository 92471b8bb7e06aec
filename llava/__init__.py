"""LLaVA for small language models, with video.

As in LLaVA, the model classes can be imported from the package itself (`from llava import
LlavaLlamaForCausalLM`); they are loaded on first use, so `import llava.constants` stays light.
"""

import importlib
import importlib.util


def __getattr__(name: str):
    # `from llava import conversation` asks for a submodule: leave it to the import system, loading nothing else.
    if name.startswith("__") or importlib.util.find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(name)
    model = importlib.import_module(".model", __name__)
    if name in model.__all__:
        return getattr(model, name)
    raise AttributeError(f"module 'llava' has no attribute {name!r}")
