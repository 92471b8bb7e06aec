"""LLaVA's module paths of the family files, `llava.model.language_model.llava_<family>`, which clients
import (lmms-eval's llava_vid: `from llava.model.language_model.llava_qwen import LlavaQwenConfig`).

The families live in llava/modeling/; each is entered here under its old dotted name, so that both names
give the same module object and the same classes. The import system looks a submodule up in
`sys.modules` once its parent package is imported, so these entries are all the old paths need.
"""

import importlib
import sys

from ...modeling.families import FAMILIES

for _family in FAMILIES:
    _module = importlib.import_module(f"...modeling.{_family.llava_type}", __name__)
    sys.modules[f"{__name__}.{_family.llava_type}"] = _module
    globals()[_family.llava_type] = _module  # `from llava.model.language_model import llava_qwen`
