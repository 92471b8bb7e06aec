"""Speed of every training stage, measured side by side in one run: `python -m llava.bench`.

Two configurations:
- seed: the headline model's shapes. GPT-2 12x768 with a 30,000-token vocabulary and 1,024 positions,
  a DINOv2-large-shaped tower (24 layers, width 1024, random weights), 8 frames at 224 pixels, packer
  64 + 32 tokens, projector 1024 -> 2560 -> 768; web-like clips (640x360, 25 fps, 10 s, H.264).
- demo: the `make demo` model (GPT-2 4x128, a 2-layer DINOv2 on 56-pixel crops) on the demo's clips.

For each it reports:
- train-step samples/s online (pixels through the frozen tower), from the feature cache, and of the
  language model alone on text of the same length: a training step is forward, backward and a fused
  AdamW step (the Trainer's default), on batches already loaded. The language model's own step is the
  bound of any multimodal step: 'the bound' is the online step over it, the most the cache could gain;
- multimodal overhead: an online forward+backward against the sum of its parts (tower forward, and the
  language model's forward+backward on a sequence of the same length), and the cached forward+backward
  against the language model's, beside its floor: the ratio of their FLOPs;
- clip decoding: clips/s with decord and with PyAV on the same files;
- the data path alone (data_path.py): this machine's memory-copy bandwidth; the loader at the recipe's
  batch and workers, workers kept across epochs, the step replaced by nothing: each epoch's wait for
  its first batch, clips/s and GiB/s, online and cached; and what an H100's cached step at these shapes
  would consume, from its FLOPs at a stated share of the GPU's peak;
- epochs, online and cached: training steps fed by the data loader, the first epoch (worker start-up
  included) and the later ones (workers kept), against the bound;
- achieved FLOP/s of the step (torch's FLOP counter over one step, divided by the step time) as a
  share of this machine's measured matmul FLOP/s;
- generation, the captioning path of evaluation clients: captions/s of greedy decoding, 32 new tokens
  (EOS stopping off, so every call writes all 32), KV cache on, at batch 1 and 16, through the model's
  own `generate(input_ids, images=...)`; the share of that time in the tower, the prefill and the decode
  steps; and the forward-only bound: one forward of the language model over the prompt and the first 31
  new tokens (logits on the last 32 positions), the same arithmetic as the cached decoding in one pass.

`python -m llava.bench --eval-milestones` measures instead what evaluating milestone checkpoints beside
training (--eval_milestones) costs the training (llava/bench/eval_milestones.py).

The table goes to stdout and to --output (docs/benchmarks.md under the working directory: run it from a
checkout's root to update the repository's table) with a description of the machine. Models and clips are
written under --workdir (bench_work/ under the working directory; kept, so a second run skips their
creation).

The modules: cli.py (the flags, checked before anything is built), configs.py (seed and demo),
assets.py (the clips, models and training flags they are measured on), workload.py (the model, data and
steps measured), measurements.py (the rows, group by group: `Bench.run`), data_path.py (the loader
alone, the machine's copy bandwidth, an H100's demand), generation_speed.py (the captioning rows),
timing.py (medians of interleaved calls, matmul rate, FLOP counting), report.py (the
machine, the load and the Markdown table), eval_milestones.py (--eval-milestones). Importing the package
imports no torch (cli.py imports what measures once the flags are accepted): `--help` answers at once.
"""

from .cli import build_parser, main

__all__ = ["build_parser", "main"]
