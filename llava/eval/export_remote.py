"""Export a llava checkpoint as a self-contained transformers folder: the whole model, vision included,
loadable where this package is not installed.

    python -m llava.eval.export_remote --model-path CKPT --out DIR [--model-base BASE_LM]

DIR holds the checkpoint's weights and config, the model's code (every module of llava/modeling, copied
as it is: one implementation, never a second one that could drift), a fast tokenizer that tokenizes as
training did plus the image token `<image>` (`tokenizer.image_token`), the tower's image processor and
processor_config.json. `config.json`'s `auto_map` names the family's classes and the processor, so that

    AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)
    AutoProcessor.from_pretrained(DIR, trust_remote_code=True)

load them as the BabyLM pipeline does; `model(input_ids, attention_mask, pixel_values=...)` places the
pictures where the image token stands, or before the text where it stands nowhere
(llava/modeling/visual_inputs.py). The image token's id lies past the language model's vocabulary on
purpose: it is never embedded, only replaced.

The frozen tower's weights are a shard of their own (model-vision-tower.safetensors). Given a
`shared_dir`, an identical shard already there is hard-linked instead of written again, so that thirty
revisions of one run hold the tower once (where the file system has no hard links, each revision holds a
copy and the log says how much that costs).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from ..constants import DEFAULT_IMAGE_TOKEN
from ..errors import ArgumentParser, entry_point, saving

logger = logging.getLogger("llava.export")

MODELING_DIR = Path(__file__).resolve().parent.parent / "modeling"
TOWER_SHARD = "model-vision-tower.safetensors"
REST_SHARD = "model-language-and-adapter.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def image_token_tokenizer(tokenizer):
    """The same tokenizer with `<image>` as its named image token (`tokenizer.image_token`); transformers
    names such a token only when a tokenizer is loaded, so it goes through a folder."""
    import tempfile

    from transformers import AutoTokenizer

    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{tokenizer.name_or_path}: the tokenizer is not a fast one; the processor needs its offsets")
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return AutoTokenizer.from_pretrained(folder, extra_special_tokens={"image_token": DEFAULT_IMAGE_TOKEN})


def processor_for(model, tokenizer):
    """The processor an export of `model` carries (with `tokenizer`, the checkpoint's), the model's config
    told the image token's id. Scoring a checkpoint in this package goes through it too, so that a
    checkpoint and its export see the same inputs."""
    from ..mm_utils import image_aspect_ratio
    from ..modeling.processing_llava import LlavaFramesProcessor

    tower = model.get_vision_tower()
    if tower is None:
        raise ValueError("this model has no vision tower (a text-only model exports with export_lm)")
    tokenizer = image_token_tokenizer(tokenizer)
    model.config.image_token_index = tokenizer.convert_tokens_to_ids(DEFAULT_IMAGE_TOKEN)
    return LlavaFramesProcessor(tower.image_processor, tokenizer, image_aspect_ratio(model.config))


def auto_map(model) -> dict:
    """config.json's `auto_map`: the family's config and causal-LM classes and the processor, all through
    llava/modeling/auto_classes.py (which imports every module of the folder, for transformers 4)."""
    from ..modeling.processing_llava import AUTO_MODULE, LlavaFramesProcessor

    classes = {
        "AutoConfig": type(model.config),
        "AutoModelForCausalLM": type(model),
        "AutoProcessor": LlavaFramesProcessor,
    }
    return {auto: f"{AUTO_MODULE}.{cls.__name__}" for auto, cls in classes.items()}


def copy_model_code(out: Path) -> list[str]:
    """Every module of llava/modeling into `out` (they import each other one dot deep, nothing else of
    this package)."""
    names = sorted(p.name for p in MODELING_DIR.glob("*.py") if p.name != "__init__.py")
    for name in names:
        shutil.copyfile(MODELING_DIR / name, out / name)
    return names


def tower_in_hub_layout(encoder, tower: dict) -> dict:
    """The tower's tensors under the names of its hub checkpoints. Transformers 5 renames some of a
    tower's weights when it loads them (DINOv2's attention: `attention.attention.query` ->
    `attention.q_proj`) and maps the hub's names onto its own at every load, the tower's inside our model
    too; transformers 4 knows only the hub's names. Written in those, the shard loads in both."""
    from transformers.core_model_loading import revert_weight_conversion

    marker = "vision_tower.vision_tower."
    prefixes = {key.split(marker, 1)[0] + marker for key in tower}
    if len(prefixes) != 1:
        return tower
    (prefix,) = prefixes
    local = revert_weight_conversion(encoder, {key[len(prefix) :]: value for key, value in tower.items()})
    return {prefix + key: value for key, value in dict(local).items()}


def split_tower_shard(out: Path, encoder) -> None:
    """Rewrites the saved weights as two shards, the tower's (in its hub layout) and the rest, with
    transformers' index."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    files = sorted(glob.glob(str(out / "*.safetensors")))
    tensors = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not iterable
                tensors[key] = f.get_tensor(key)
    for file in [*files, str(out / INDEX_FILE)]:
        if os.path.exists(file):
            os.remove(file)
    tower = {k: v for k, v in sorted(tensors.items()) if ".vision_tower." in f".{k}"}
    rest = {k: v for k, v in sorted(tensors.items()) if k not in tower}
    tower = dict(sorted(tower_in_hub_layout(encoder, tower).items()))
    weight_map = {}
    for name, part in ((TOWER_SHARD, tower), (REST_SHARD, rest)):
        save_file(part, str(out / name), metadata={"format": "pt"})
        os.chmod(out / name, 0o666 & ~_umask())  # safetensors writes owner-only files; the others are shared
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in [*tower.values(), *rest.values()])
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def link_shared(file: Path, shared_dir: Path) -> bool:
    """Replaces `file` by a hard link to the identical file kept in `shared_dir` (kept there first if it is
    new). False where the file system refused the link (the copy stays)."""
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    shared_dir.mkdir(parents=True, exist_ok=True)
    kept = shared_dir / f"{digest.hexdigest()}{file.suffix}"
    if not kept.exists():
        partial = kept.with_name(kept.name + ".partial")
        shutil.copyfile(file, partial)
        partial.rename(kept)
    linked = file.with_name(file.name + ".link")
    try:
        os.link(kept, linked)
    except OSError as e:
        logger.warning(
            "%s: no hard link possible (%s); this revision holds its own copy of the tower (%.1f MiB)",
            file,
            e.strerror,
            file.stat().st_size / 2**20,
        )
        return False
    os.replace(linked, file)
    return True


def export(
    model_path: str,
    out: str,
    model_base: str | None = None,
    vision_tower: str | None = None,
    shared_dir: str | None = None,
) -> Path:
    """Writes the self-contained folder of `model_path` to `out` (see the module's docstring)."""
    from .export_lm import load_for_export, weight_bytes

    tokenizer, model = load_for_export(model_path, out, model_base, vision_tower)
    processor = processor_for(model, tokenizer)
    model.config.auto_map = auto_map(model)
    model.config.use_cache = True  # training turns the cache off; inference wants it
    folder = Path(out)
    # written once, then split into two shards
    with saving(out, "the exported model", needed=2 * weight_bytes(model)):
        folder.mkdir(parents=True, exist_ok=True)
        # The weights as the classes hold them: transformers would write Mixtral's experts (and any `.mlp.`,
        # the tower's too) in the original layout, which only a registered conversion reads back.
        model.save_pretrained(folder, save_original_format=False)
        split_tower_shard(folder, model.get_vision_tower().vision_tower)
        processor.save_pretrained(folder)
        copy_model_code(folder)
    if shared_dir is not None:
        link_shared(folder / TOWER_SHARD, Path(shared_dir))
    logger.info(
        "wrote %s (%s) with its code, processor and tokenizer to %s", type(model).__name__, model.config.model_type, out
    )
    return folder


def main(argv=None) -> int:
    from .export_lm import add_source_arguments

    parser = ArgumentParser(prog="python -m llava.eval.export_remote", description=__doc__.split("\n\n")[0])
    add_source_arguments(parser)
    parser.add_argument("--shared-dir", help="keep the tower's shard here once and hard-link it into --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    export(args.model_path, args.out, args.model_base, args.vision_tower, args.shared_dir)
    return 0


cli = entry_point(main)

if __name__ == "__main__":
    sys.exit(cli())
