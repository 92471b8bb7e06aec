"""LLaVA's constants, where LLaVA's clients import them (`from llava.constants import IMAGE_TOKEN_INDEX`).

They are defined with the model (llava/modeling/constants.py), whose folder an exported checkpoint carries;
this module only names them here. Importing it loads neither torch nor transformers.
"""

# Every name of the defining module, so that a constant added there is here too without a second list.
from .modeling.constants import *  # noqa: F403
