"""LLaVA's scripts/merge_lora_weights.py under its old path, with its flags: a LoRA run merged into a plain
checkpoint (python -m llava.model.merge_lora --help)."""

import sys

from llava.model.merge_lora import cli

if __name__ == "__main__":
    sys.exit(cli())
