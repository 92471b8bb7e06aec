"""Is this a model folder we can load? The one check behind every entry point that takes a model path
(training's --model_name_or_path, inference's --model-path and --model-base), done before anything heavy
is loaded, so that a wrong path, a half-copied folder or a foreign model fails in one line that names it.

`check_model_folder` returns the parsed config.json; `family_from_config` maps it to one of our families.
"""

from __future__ import annotations

import json
import logging
import os
import re

from ..errors import InputError
from ..modeling.families import LLAVA_TYPES, STOCK_TO_LLAVA, SUPPORTED_TEXT

logger = logging.getLogger(__name__)

ADAPTER_FILES = ("mm_projector.bin", "mm_projector.safetensors")
# A LoRA run's folder (lora.py): peft's adapter beside the run's config.json, no model weights.
LORA_CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

# A hub id is `name` or `owner/name`; anything else that is not on disk can only be a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_PROBE_TIMEOUT_S = 5


class MissingModelFile(InputError, FileNotFoundError):
    """A model folder or a file it needs is not there (a FileNotFoundError too, as callers catch)."""


def check_model_folder(path: str, what: str = "--model-path") -> dict:
    """The parsed config.json of the model at `path`, after checking that it is one we can load.

    `path` is a local folder, or a Hugging Face hub id (`gpt2`, `owner/name`) where no such folder exists:
    then the cached copy is used, or, where the hub can be reached, its config.json is fetched. Raises
    InputError with one line naming `what` (the flag) and the path for: a folder that does not exist (and
    no hub model of that name), a file, a folder without config.json, a config.json that is empty, cut
    short or not a JSON object, a model_type that no family here loads, and a local folder without
    weights (an adapter-only run's folder among them: its language model is loaded from elsewhere).
    """
    local_without_weights = os.path.isdir(path) and not has_weights(path)
    if local_without_weights and is_lora_folder(path):
        raise InputError(
            f"{what} folder holds a LoRA adapter ({LORA_CONFIG_FILE}) but no model weights: load it with the "
            "language model it was trained on (--model-base; in training, --load_lora_path), or merge it into a "
            f"plain checkpoint with python -m llava.model.merge_lora ({path})"
        )
    adapter = adapter_file(path) if local_without_weights else None
    if adapter:
        raise InputError(
            f"{what} folder holds an adapter ({os.path.basename(adapter)}) but no model weights: load it "
            f"with the language model it was trained on (--model-base) ({path})"
        )
    config_file = config_file_of(path, what)
    config = read_config(config_file, what)
    family_from_config(config, path, what, config_file)
    if local_without_weights:
        names = " or ".join(WEIGHT_FILES[::2])
        raise MissingModelFile(
            f"{what} folder has a config.json but no model weights ({names}): was it copied completely? ({path})"
        )
    return config


def has_weights(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHT_FILES)


def is_lora_folder(folder: str) -> bool:
    """Whether a folder holds a LoRA adapter (a --lora_enable run's output or checkpoint)."""
    return os.path.isfile(os.path.join(folder, LORA_CONFIG_FILE))


def adapter_file(folder: str) -> str | None:
    """The adapter file (mm_projector.bin/.safetensors) of an adapter-only run's folder, if any."""
    return next((os.path.join(folder, n) for n in ADAPTER_FILES if os.path.isfile(os.path.join(folder, n))), None)


def family_of(path: str, what: str = "--model-path") -> str:
    """The llava family (a key of AVAILABLE_MODELS) of the model at `path` (see family_from_config)."""
    config_file = config_file_of(path, what)
    return family_from_config(read_config(config_file, what), path, what, config_file)


def family_from_config(config: dict, path: str, what: str = "--model-path", config_file: str | None = None) -> str:
    """The llava family of a parsed config: its llava model_type, or the one wrapping its stock type.
    Where it names no family we know, the seed's path rule applies: 'gpt2' or 'bambi' in the path
    selects GPT-2."""
    model_type = config.get("model_type")
    if model_type in LLAVA_TYPES:
        return model_type
    if model_type in STOCK_TO_LLAVA:
        return STOCK_TO_LLAVA[model_type]
    lowered = str(path).lower()
    if "gpt2" in lowered or "bambi" in lowered:
        logger.info("model_type %r is not a known family; the path names GPT-2 (%s)", model_type, path)
        return "llava_gpt2"
    where = config_file or os.path.join(path, "config.json")
    if not model_type:
        raise InputError(
            f"{what} config.json names no model_type, so its model family is unknown; "
            f"supported: {SUPPORTED_TEXT} ({where})"
        )
    raise InputError(
        f"{what} config.json has model_type {model_type!r}, which no family here loads; "
        f"supported: {SUPPORTED_TEXT} ({where})"
    )


def is_llava_checkpoint(config: dict) -> bool:
    """Whether a config describes a model with visual modules (a vision tower), not a plain language model."""
    return bool(config.get("mm_vision_tower"))


def require_llava_checkpoint(
    config: dict, path: str, what: str = "--model-path", needed_for: str = "caption images or videos"
) -> None:
    """InputError unless `config` (of the model at `path`) has visual modules."""
    if is_llava_checkpoint(config):
        return
    kind = config.get("model_type") or "language"
    raise InputError(
        f"{what} is a plain {kind} model with no vision tower, not a llava checkpoint, "
        f"so it cannot {needed_for} ({path})"
    )


def read_config(config_file: str, what: str = "--model-path") -> dict:
    """The JSON object in `config_file`; InputError naming the file (and line:column) when it is not one."""
    with open(config_file, encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise InputError(f"{what} config.json is empty ({config_file})")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        problem = e.msg[0].lower() + e.msg[1:]
        cut = " cut short or" if e.pos >= len(text.rstrip()) else ""
        where = f"{config_file}:{e.lineno}:{e.colno}"
        raise InputError(f"{what} config.json is{cut} not valid JSON: {problem} ({where})") from None
    if not isinstance(config, dict):
        kind = type(config).__name__
        raise InputError(f"{what} config.json holds a JSON {kind}, not an object of settings ({config_file})")
    return config


def config_file_of(path: str, what: str = "--model-path") -> str:
    """The config.json of the model at `path`: in the folder, or in the hub cache (fetched if reachable);
    one-line InputError where there is none."""
    path = str(path)
    if os.path.isdir(path):
        config_file = os.path.join(path, "config.json")
        if not os.path.isfile(config_file):
            hint = _models_inside(path)
            raise MissingModelFile(f"{what} folder has no config.json, so it is not a model folder{hint} ({path})")
        return config_file
    if os.path.exists(path):
        raise InputError(f"{what} is a file, not a model folder ({path})")
    if not _HUB_ID.match(path):
        raise MissingModelFile(f"{what} folder does not exist ({path})")
    return _hub_config_file(path, what)


def _models_inside(folder: str) -> str:
    """A hint naming the subfolders that are model folders (a run's checkpoint-N), if any."""
    try:
        names = sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n, "config.json")))
    except OSError:
        return ""
    if not names:
        return ""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"; model folders inside it: {shown}"


def _hub_config_file(repo_id: str, what: str) -> str:
    """config.json of hub model `repo_id` from the local cache, or fetched where the hub can be reached.

    Asking transformers directly would retry an unreachable hub for about half a minute and end in a
    page of traceback; one short probe decides instead."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return cached
    absent = (
        f"{what} folder does not exist ({repo_id}), and no hub model of that name is in the Hugging Face "
        f"cache ({constants.HF_HUB_CACHE})"
    )
    if constants.HF_HUB_OFFLINE:
        raise MissingModelFile(f"{absent} or can be downloaded (HF_HUB_OFFLINE is set)")
    if not _hub_reachable(constants.ENDPOINT):
        raise MissingModelFile(f"{absent} or can be downloaded ({constants.ENDPOINT} cannot be reached)")
    try:
        return hf_hub_download(repo_id, "config.json")
    except Exception as e:  # noqa: BLE001 - any failure to fetch means: no such hub model here
        reason = " ".join(str(e).split("\n")[0].split()) or type(e).__name__
        raise MissingModelFile(f"{absent} or on the hub ({constants.ENDPOINT}/{repo_id}: {reason})") from None


def _hub_reachable(endpoint: str) -> bool:
    """One request to the hub, no retries (proxies as the hub client has them)."""
    try:
        from huggingface_hub.utils import get_session

        get_session().head(endpoint, timeout=_HUB_PROBE_TIMEOUT_S)
        return True
    except Exception:  # noqa: BLE001 - any failure (name resolution, refused, timeout) means unreachable
        return False
