"""What LLaVA-ST's language-aligned coordinates (LAPE) cost per training step at the seed's shapes, and
what placing the visual tokens' positions before the packer would cost:
`python -m llava.bench.lape_cost [--repeats N] [--output docs/benchmarks.md]`.

The seed's model (GPT-2 12x768 with a 30,000-word head; packer and projector on a DINOv2-large-shaped
tower's 1024-wide patches, 8 frames of 16 x 16) trains one step (forward and backward) on a batch of two
grounding samples, a clip each given as tower features (the feature cache's path: the tower's own cost,
the same with or without LAPE, would only hide the difference), twice: with coordinate tokens (the clip's
tokens placed by the coordinate tables, the answer's box and span written as bins and scored over words
and bins together) and without (the same sequences, the placeholders ordinary words). Timed side by side,
interleaved, after one unmeasured step.

Placement: LLaVA-ST adds the coordinate tables to every patch after its projector and before its
resampler. Here the packer works on the tower's 1024-wide patches and the tables live in the language
model's 768 dimensions, so the same order would project all 8 x 256 patches instead of the 96 packed
tokens. The projector's forward and backward on both is timed side by side: the ratio is what that order
would add to every step, before anything it might gain.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from .babylm_cost import machine_line
from .report import write_section
from .timing import side_by_side

QUESTION = "dov'è il cerchio rosso in [<WIDTH-INPUT><HEIGHT-INPUT><WIDTH-INPUT><HEIGHT-INPUT>]?"
ANSWER = " il cerchio è in [<WIDTH-OUTPUT><HEIGHT-OUTPUT><WIDTH-OUTPUT><HEIGHT-OUTPUT>] da {<TEMP-OUTPUT><TEMP-OUTPUT>}"
VARIABLES = {
    "spatial_width_input_locations": [0.1, 0.9],
    "spatial_height_input_locations": [0.2, 0.8],
    "spatial_width_output_locations": [0.31, 0.52],
    "spatial_height_output_locations": [0.18, 0.47],
    "temporal_output_locations": [0.25, 0.625],
}


def _seed_model(workdir: Path, coordinates: bool):
    """(model, tokenizer) at the seed's shapes; the tower has one layer (it never runs: its features are
    given), the packer and projector see its 1024-wide, 16 x 16 patches."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from ..model.builder import causal_lm_class
    from ..modeling.coordinate_tokens import PLACEHOLDERS, add_coordinate_tokens
    from ..testing import DINOV2_LARGE, save_dinov2, tiny_vision_args
    from .configs import SHAPES

    seed = SHAPES["seed"]
    tower = workdir / "tower"
    if not tower.exists():
        save_dinov2(tower, dict(DINOV2_LARGE, num_hidden_layers=1), crop=seed.crop, resize=seed.resize)
    words = [f"w{i}" for i in range(seed.gpt2["vocab_size"] - 1)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>", *words])}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<unk>")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(**seed.gpt2)).save_pretrained(workdir / "gpt2")
    model = causal_lm_class("llava_gpt2").from_pretrained(workdir / "gpt2")
    model.get_model().initialize_vision_modules(
        tiny_vision_args(str(tower), mm_projector_hidden_size=seed.projector_hidden)
    )
    if coordinates:
        add_coordinate_tokens(model, tokenizer)
    else:  # the same sequences: the placeholders are words of the vocabulary
        tokenizer.add_tokens(list(PLACEHOLDERS), special_tokens=True)
        model.resize_token_embeddings(len(tokenizer))
    return model.train(), tokenizer


def _batch(model, tokenizer, batch_size: int, coordinates: bool) -> dict:
    from ..constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

    question, answer = tokenizer(QUESTION)["input_ids"], tokenizer(ANSWER)["input_ids"]
    ids = torch.tensor([[IMAGE_TOKEN_INDEX, *question, *answer]] * batch_size)
    labels = torch.tensor([[IGNORE_INDEX] * (1 + len(question)) + answer] * batch_size)
    tower = model.get_vision_tower()
    grid = (8, tower.grid_size, tower.grid_size, tower.hidden_size)
    images = [{"patch_features": torch.randn(grid)} for _ in range(batch_size)]
    batch = {"input_ids": ids, "labels": labels, "images": images}
    if coordinates:
        batch["variables"] = [VARIABLES] * batch_size
    return batch


def measure(repeats: int, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        runs = {}
        for coordinates in (False, True):
            model, tokenizer = _seed_model(workdir, coordinates)
            runs[coordinates] = (model, _batch(model, tokenizer, batch_size, coordinates))

        def step(coordinates):
            model, batch = runs[coordinates]

            def run():
                model.zero_grad(set_to_none=True)
                model(**batch).loss.backward()

            return run

        steps = side_by_side({"plain": step(False), "lape": step(True)}, torch.device("cpu"), repeats)
        projector = runs[True][0].get_model().mm_projector
        tower = runs[True][0].get_vision_tower()
        patches = torch.randn(batch_size, 8 * tower.grid_size**2, tower.hidden_size)
        packed = torch.randn(batch_size, 96, tower.hidden_size)

        def project(x):
            return lambda: projector(x).sum().backward()

        placement = side_by_side({"packed": project(packed), "patches": project(patches)}, torch.device("cpu"), repeats)
    return {"steps": steps, "placement": placement, "batch_size": batch_size, "repeats": repeats}


def report(result: dict) -> str:
    steps, placement = result["steps"], result["placement"]
    lines = [
        "`python -m llava.bench.lape_cost`: one training step of the seed's model with and without LLaVA-ST's",
        "coordinate tokens, and the projector's cost in the two places the visual tokens' positions could go",
        "(see the module's docstring).",
        machine_line(),
        "",
        f"Batch of {result['batch_size']} grounding samples (a clip as tower features, a box in the question, a box "
        f"and a span in the answer), median of {result['repeats']} interleaved steps, this machine's CPU.",
        "",
        "| | seconds | ratio |",
        "| --- | --- | --- |",
        f"| step without coordinate tokens | {steps['plain']:.3f} | 1.00 |",
        f"| step with coordinate tokens (LAPE) | {steps['lape']:.3f} | {steps['lape'] / steps['plain']:.3f} |",
        f"| projector on the 96 packed tokens (positions after it: this project) | {placement['packed']:.4f} | 1.00 |",
        f"| projector on all 2,048 patches (positions before the packer: LLaVA-ST's order) | "
        f"{placement['patches']:.4f} | {placement['patches'] / placement['packed']:.1f} |",
    ]
    return "\n".join(lines)


SECTION = "## Language-aligned coordinates (LAPE)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.bench.lape_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measured steps of each (default 3)")
    parser.add_argument("--batch-size", type=int, default=2, help="grounding samples per step (the seed's 2)")
    parser.add_argument("--output", help="a Markdown file whose LAPE section is replaced by the table")
    args = parser.parse_args(argv)
    text = report(measure(args.repeats, args.batch_size))
    print(text)
    if args.output:
        write_section(Path(args.output), SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
