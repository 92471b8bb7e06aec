"""The data layer, below training, evaluation and serving: what a sample is and how it becomes model input.

- files.py: which files a `--data_path` names (JSON, JSONL, brace groups, YAML mixtures) and their
  problems, listed in one message;
- samples.py: the samples of those files, validated and normalized;
- grounded_samples.py: a sample's coordinates (boxes, spans, time points) as LLaVA-ST's placeholders and
  `variables`, checked; words.py: words as word limits count them (coordinates are not words);
- grounding_tasks.py: LLaVA-ST's grounding tasks (REC, REG, TVG, TR, STVG, SVG, ELC, DGC) as samples;
  localized_narratives.py: Localized Narratives as the three BabyLM conditions (a command);
- templates.py: a conversation as input ids and labels (labels on the answers only), a prompt as the ids
  generation continues (`--version`);
- media.py: a clip or an image read into the pixels the vision tower sees;
- video.py: uniformly spread frames decoded from a video file (decord, PyAV as fallback).

Importing the package loads nothing: each module is imported by its users.
"""
