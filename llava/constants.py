"""Constants shared by the model, the data pipeline and inference."""

# Label value that the loss ignores (prompts, visual positions, padding).
IGNORE_INDEX = -100

# Placeholder id written into input_ids where a visual block (image or clip) is spliced in. It is
# negative so that it can never collide with a real vocabulary id.
IMAGE_TOKEN_INDEX = -200

DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_VIDEO_TOKEN = "<video>"
