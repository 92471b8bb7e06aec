"""Constants shared by the model, the data pipeline and inference (LLaVA's names and values)."""

import re

# Label value that the loss ignores (prompts, visual positions, padding).
IGNORE_INDEX = -100

# Placeholder id written into input_ids where a visual block (image or clip) is spliced in. It is
# negative so that it can never collide with a real vocabulary id.
IMAGE_TOKEN_INDEX = -200

DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_VIDEO_TOKEN = "<video>"
# Either placeholder, as a capturing group: re.split keeps the placeholders, so chunk offsets into the
# text stay known.
PLACEHOLDER_PATTERN = re.compile(f"({re.escape(DEFAULT_IMAGE_TOKEN)}|{re.escape(DEFAULT_VIDEO_TOKEN)})")

# Tokens that LLaVA adds to the tokenizer with --mm_use_im_patch_token / --mm_use_im_start_end: the
# visual block is then written `<im_start><image><im_end>` in prompts (config.mm_use_im_start_end).
DEFAULT_IMAGE_PATCH_TOKEN = "<im_patch>"
DEFAULT_IM_START_TOKEN = "<im_start>"
DEFAULT_IM_END_TOKEN = "<im_end>"

# Where LLaVA's run_llava puts the image inside a query (`--query "Is <image-placeholder> a cat?"`).
IMAGE_PLACEHOLDER = "<image-placeholder>"
