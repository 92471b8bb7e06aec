"""Grounding evaluation as LLaVA-ST reports it (github appletea233/LLaVA-ST, inference/): where and when a
model says something is, and ELC's event captions.

    python -m llava.eval.grounding predict --model-path CKPT --data DATA.json --task TASK [--out PREDICTIONS.jsonl] [--score]
    python -m llava.eval.grounding score --task rec|tvg|stvg|svg|elc PREDICTIONS.jsonl [--out SCORES.json]

`score` (score.py) reads a predictions file (one generated answer and its truth per line; the format is in
score.py's docstring), reads each answer back (llava.data.grounding_answers), scores the set
(llava.eval.grounding_metrics; ELC: llava.eval.grounding_captions), prints the table and writes it as JSON.
`predict` (predict.py) writes that file: a model's greedy answers to a grounding set, each with the truth
read from the sample's reference answer.
"""
