"""The data layer, below training, evaluation and serving: what a sample is and how it becomes model input.

- files.py: which files a `--data_path` names (JSON, JSONL, brace groups, YAML mixtures) and their
  problems, listed in one message;
- samples.py: the samples of those files, validated and normalized;
- templates.py: a conversation as input ids and labels (labels on the answers only), a prompt as the ids
  generation continues (`--version`);
- media.py: a clip or an image read into the pixels the vision tower sees;
- video.py: uniformly spread frames decoded from a video file (decord, PyAV as fallback).

Importing the package loads nothing: each module is imported by its users.
"""
