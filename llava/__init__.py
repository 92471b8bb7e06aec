"""LLaVA for small language models, with video."""
