"""The LLaVA-ST BabyLM fork's training switches and LLaVA-ST's fast/slow resampler, translated (called by
legacy_flags.translate, whose table describes each flag).

- `--mm_resampler_type fast_slow_resampler` is this trainer's fast/slow TokenPacker. Its latent counts are
  tokens per frame: `--mm_perceiver_latents` sizes the slow track, `--mm_perceiver_latents_fast` the fast
  one, each as the grid (rows x columns dividing the tower's patch grid) nearest in tokens; a count such as
  81 or 9 that no grid tiles becomes the nearest one (8x8, 2x4 on DINOv2's 16x16) with one line saying so.
- The fork's environment variables: `USE_PLAIN_LM=1` trains plain language-model text (`--version plain`,
  whatever `--version` says); `MM_PERCEIVER_LATENTS(_FAST)` stand for the flags; `BABYLM_ENABLED=true`
  saves BabyLM's word milestones; `BABYLM_WORD_LIMIT=N` stops at N words.
- `--version llama_v2` (Llama-2's chat template) on GPT-2 without USE_PLAIN_LM is refused in one line.

This module imports neither torch nor transformers.
"""

from __future__ import annotations

import json
import logging
import math
import os

from .legacy_flags import LEGACY_FLAGS, PACKER_DOES_IT, FlagError, Note

# The environment variables of the LLaVA-ST BabyLM fork's training scripts, read as the flags they stand for.
FORK_ENVIRONMENT = {
    "MM_PERCEIVER_LATENTS": "mm_perceiver_latents",
    "MM_PERCEIVER_LATENTS_FAST": "mm_perceiver_latents_fast",
}
# Model types of plain language models, which no chat template fits (GPT-2 has no chat format of its own).
PLAIN_MODEL_TYPES = ("gpt2", "llava_gpt2")
# The packer's slow track keeps this many frames where the clip's frame count allows (VisionSettings' default).
SLOW_FRAMES = 2
DEFAULT_FRAMES = 8


def read_environment(own: dict, legacy: dict, notes: list[Note], environ) -> None:
    """USE_PLAIN_LM, MM_PERCEIVER_LATENTS(_FAST), BABYLM_ENABLED and BABYLM_WORD_LIMIT, as the fork's
    training reads them; and --version llama_v2 on GPT-2, refused unless USE_PLAIN_LM maps it."""
    for variable, name in FORK_ENVIRONMENT.items():
        if environ.get(variable, "").strip():
            value = LEGACY_FLAGS[name].read(name, environ[variable])
            if name in legacy and legacy[name] != value:
                raise FlagError(
                    f"{variable}={value} and --{name} {legacy[name]} disagree (the fork let the variable win); keep one"
                )
            legacy[name] = value
    plain = environ.get("USE_PLAIN_LM", "0").strip().lower() in ("1", "true", "yes")
    version = own.get("version")
    if plain:
        if version not in (None, "plain"):
            notes.append(
                (logging.INFO, f"USE_PLAIN_LM=1: plain language-model text (--version plain), not --version {version}")
            )
        own["version"] = "plain"
    elif str(version).startswith("llama_v2") and _model_type(own.get("model_name_or_path")) in PLAIN_MODEL_TYPES:
        raise FlagError(
            f"--version {version} is Llama-2's chat template, and {own.get('model_name_or_path')} is GPT-2, a plain "
            "language model: use --version plain (the fork's scripts say so with USE_PLAIN_LM=1)"
        )
    if environ.get("BABYLM_ENABLED", "").strip().lower() == "true" and "babylm_word_milestones" not in own:
        own["babylm_word_milestones"] = True
        notes.append(
            (
                logging.INFO,
                "BABYLM_ENABLED=true: a model is saved at BabyLM's word milestones (--babylm_word_milestones)",
            )
        )
    limit = environ.get("BABYLM_WORD_LIMIT", "").strip()
    if limit and "max_words" not in own:
        own["max_words"] = int(float(limit))
        notes.append(
            (logging.INFO, f"BABYLM_WORD_LIMIT={limit}: training stops at {int(float(limit)):,} words (--max_words)")
        )


def _model_type(path) -> str | None:
    try:
        with open(os.path.join(str(path), "config.json"), encoding="utf-8") as f:
            return json.load(f).get("model_type")
    except (OSError, ValueError, TypeError):
        return None


def packer_from_latents(own: dict, legacy: dict, notes: list[Note]) -> None:
    """LLaVA-ST's fast_slow_resampler is this trainer's packer; its tokens per frame become the tracks'
    grids (fast: every frame; slow: SLOW_FRAMES of them), each the grid nearest in tokens that tiles the
    tower's patch grid, with one line where the count had to change."""
    latents = {name: legacy[name] for name in ("mm_perceiver_latents", "mm_perceiver_latents_fast") if name in legacy}
    if own.get("mm_resampler_type") != "fast_slow_resampler":
        for name, value in latents.items():
            if value != LEGACY_FLAGS[name].default:
                notes.append(
                    (
                        logging.WARNING,
                        f"--{name} {value} has no effect: it sizes a resampler not built here; {PACKER_DOES_IT}",
                    )
                )
        return
    own["mm_resampler_type"] = "fast_slow_token_packer"
    notes.append(
        (
            logging.INFO,
            "--mm_resampler_type fast_slow_resampler: LLaVA-ST's resampler is the fast/slow TokenPacker here",
        )
    )
    frames = int(own.get("num_frames") or DEFAULT_FRAMES)
    side, assumed = tower_grid_side(own.get("vision_tower"))
    for name, grid, track, track_frames in (
        ("mm_perceiver_latents_fast", "mm_fast_grid", "fast", frames),
        ("mm_perceiver_latents", "mm_slow_grid", "slow", math.gcd(SLOW_FRAMES, frames)),
    ):
        if name not in latents:
            continue
        if grid in own:
            raise FlagError(f"--{name} and --{grid} both size the {track} track; keep one")
        rows, columns = nearest_grid(latents[name], side)
        own[grid] = [track_frames, rows, columns]
        said = f"--{name} {latents[name]}: the {track} track's {rows}x{columns} tokens per frame (--{grid} {track_frames} {rows} {columns})"
        if rows * columns != latents[name]:
            said += f"; {latents[name]} per frame cannot tile the tower's {side}x{side} patch grid{assumed}"
        notes.append((logging.WARNING if rows * columns != latents[name] else logging.INFO, said))


def coordinates_from_stage(own: dict, legacy: dict, notes: list[Note]) -> None:
    """LLaVA-ST's --stage: 2 and 3 train with its coordinate tokens, which stage 2 adds (LLaVA-ST's stage
    3 starts from a stage-2 checkpoint, which has them already)."""
    stage = legacy.get("stage")
    if stage is None or str(stage) == "1":
        return
    if str(stage) not in ("2", "3"):
        raise FlagError(f"--stage {stage}: LLaVA-ST's stages are 1, 2 and 3")
    own.setdefault("coordinate_tokens", True)
    notes.append((logging.INFO, f"--stage {stage}: the model trains with coordinate tokens (--coordinate_tokens)"))


def nearest_grid(tokens: int, side: int) -> tuple[int, int]:
    """(rows, columns), each dividing `side`, whose product is nearest `tokens` (then the squarest)."""
    divisors = [d for d in range(1, side + 1) if side % d == 0]
    return min(
        ((r, c) for r in divisors for c in divisors if r <= c), key=lambda g: (abs(g[0] * g[1] - tokens), g[1] - g[0])
    )


def tower_grid_side(tower) -> tuple[int, str]:
    """Patches per side of the tower's input, from its folder's config.json and preprocessor_config.json;
    16 (DINOv2 at 224 pixels, the seed's tower) where the folder is not here, said in the returned note."""
    try:
        with open(os.path.join(str(tower), "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        with open(os.path.join(str(tower), "preprocessor_config.json"), encoding="utf-8") as f:
            processor = json.load(f)
        patch = config.get("vision_config", config)["patch_size"]
        size = processor["crop_size"] if processor.get("do_center_crop") else processor["size"]
        size = size if isinstance(size, int) else size.get("height", size.get("shortest_edge"))
        return int(size) // int(patch), ""
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 16, f" (assumed 16x16: {tower} is not a folder here)"
