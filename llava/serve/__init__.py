"""Inference from a trained checkpoint: `python -m llava.serve.cli` captions clips, images or whole sets
(captioning itself lives in llava/generation.py); checks.py holds what the inference commands check
before they load a model."""
