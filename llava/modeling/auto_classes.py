"""The module an exported folder's config.json names for transformers' Auto classes (its `auto_map`):
every family's config and causal-LM class and the processor, and, through them, every other module of
this folder, each imported here directly. Transformers 4 (the BabyLM pipeline pins 4.51) copies from a
local folder only the modules that the named module imports itself, not the ones those import; naming
each here makes it copy them all. A test checks that every module of the folder is imported here.
"""

from .adapter_weights import ADAPTER_MODULES  # noqa: F401
from .constants import IMAGE_TOKEN_INDEX  # noqa: F401
from .coordinate_embedding import CoordinateEmbedding  # noqa: F401
from .coordinate_tokens import PLACEHOLDERS  # noqa: F401
from .coordinates import BINS  # noqa: F401
from .expected_warnings import unmasked_generation_steps  # noqa: F401
from .families import FAMILIES  # noqa: F401
from .frame_sampling import sample_indices  # noqa: F401
from .llava_arch import max_positions  # noqa: F401
from .llava_gemma import LlavaGemmaConfig, LlavaGemmaForCausalLM  # noqa: F401
from .llava_gpt2 import LlavaGPT2Config, LlavaGPT2ForCausalLM  # noqa: F401
from .llava_llama import LlavaConfig, LlavaLlamaForCausalLM  # noqa: F401
from .llava_mistral import LlavaMistralConfig, LlavaMistralForCausalLM  # noqa: F401
from .llava_mixtral import LlavaMixtralConfig, LlavaMixtralForCausalLM  # noqa: F401
from .llava_mpt import LlavaMptConfig, LlavaMptForCausalLM  # noqa: F401
from .llava_qwen import LlavaQwenConfig, LlavaQwenForCausalLM  # noqa: F401
from .position_embedding import VisualPositionEmbedding  # noqa: F401
from .processing_llava import LlavaFramesProcessor  # noqa: F401
from .projector import build_vision_projector  # noqa: F401
from .sequence_budget import fit_new_tokens  # noqa: F401
from .splicing import splice_sample  # noqa: F401
from .token_packer import build_vision_resampler  # noqa: F401
from .vision_settings import VisionSettings  # noqa: F401
from .vision_tower import VisionTower  # noqa: F401
from .visual_inputs import as_clips  # noqa: F401
from .zero3 import zero3_init  # noqa: F401
