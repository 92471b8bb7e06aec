"""LLaVA's public API on a tiny checkpoint of ours, called the way LLaVA, LLaVA-NeXT and lmms-eval code
calls it: the names they import, `load_pretrained_model` in LLaVA's signature, the model surface they
touch, and clips longer than the model's frame count."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llava.constants import IMAGE_TOKEN_INDEX
from llava.data.video import read_video_frames
from llava.mm_utils import KeywordsStoppingCriteria, get_model_name_from_path, process_images
from llava.model.builder import load_pretrained_model
from llava.modeling.frame_sampling import sample_indices

from train_helpers import ROOT

pytestmark = pytest.mark.slow

NEW = 6


@pytest.fixture(scope="module")
def loaded(checkpoint):
    """LLaVA's positional call: (model_path, model_base, model_name)."""
    return load_pretrained_model(checkpoint, None, get_model_name_from_path(checkpoint))


@pytest.fixture(scope="module")
def frames(assets):
    """32 frames of a validation clip, as a client that samples more frames than the model takes."""
    return read_video_frames(f"{assets['video_folder']}/val_00000.mp4", 32)


def greedy(model, ids, **kwargs):
    return model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, **kwargs)


# ------------------------------------------------------------------------------------------ names
def test_the_names_llava_code_imports():
    from llava import constants
    from llava.utils import disable_torch_init  # noqa: F401

    assert (constants.IGNORE_INDEX, constants.IMAGE_TOKEN_INDEX) == (-100, -200)
    assert (constants.DEFAULT_IMAGE_TOKEN, constants.DEFAULT_IMAGE_PATCH_TOKEN) == ("<image>", "<im_patch>")
    assert (constants.DEFAULT_IM_START_TOKEN, constants.DEFAULT_IM_END_TOKEN) == ("<im_start>", "<im_end>")
    assert constants.IMAGE_PLACEHOLDER == "<image-placeholder>"
    from llava import LlavaLlamaForCausalLM  # LLaVA's package exports its model classes
    from llava.model import LlavaQwenForCausalLM  # noqa: F401

    assert LlavaLlamaForCausalLM.__name__ == "LlavaLlamaForCausalLM"


def test_the_family_module_paths_lmms_eval_imports():
    # lmms-eval's llava_vid imports these first thing, in a process where nothing of llava is loaded yet.
    code = (
        "from llava.model.language_model.llava_llama import LlavaConfig\n"
        "from llava.model.language_model.llava_qwen import LlavaQwenConfig\n"
        "import llava.model.language_model.llava_qwen\n"
        "import llava.model\n"
        "assert LlavaConfig is llava.model.LlavaConfig and LlavaQwenConfig is llava.model.LlavaQwenConfig\n"
        "assert llava.model.language_model.llava_qwen.LlavaQwenForCausalLM is llava.model.LlavaQwenForCausalLM\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_model_name_from_path():
    assert get_model_name_from_path("/ckpt/llava-v1.5-7b/") == "llava-v1.5-7b"
    assert get_model_name_from_path("runs/llava-tiny/checkpoint-500") == "llava-tiny_checkpoint-500"
    assert get_model_name_from_path("lmms-lab/llava-onevision-qwen2-7b-ov") == "llava-onevision-qwen2-7b-ov"


def test_disable_torch_init_then_load_gives_the_same_model(checkpoint, loaded):
    # disable_torch_init changes torch for the whole process: run it in a process of its own.
    code = (
        "import sys, torch\n"
        "from llava.utils import disable_torch_init\n"
        "disable_torch_init()\n"
        "from llava.model.builder import load_pretrained_model\n"
        "_, model, _, _ = load_pretrained_model(sys.argv[1], None, 'llava-tiny')\n"
        "torch.save({k: v for k, v in model.state_dict().items()}, sys.argv[2])\n"
    )
    out = f"{checkpoint}/../state.pt"
    result = subprocess.run(
        [sys.executable, "-c", code, checkpoint, out], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(out, weights_only=True)
    reference = loaded[1].state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in state)


# ----------------------------------------------------------------------------- load_pretrained_model
def test_positional_llava_call_returns_the_four_parts(loaded):
    tokenizer, model, image_processor, context_len = loaded
    assert model.device.type == "cpu" and not model.training  # device_map="auto" on a CPU-only machine
    assert context_len == 256 and image_processor is model.get_vision_tower().image_processor
    assert tokenizer.pad_token_id is not None


def test_llava_keyword_forms(checkpoint, loaded):
    name = get_model_name_from_path(checkpoint)
    # lmms-eval's call: multimodal=True, device_map="auto", attn_implementation="sdpa"
    _, model, _, _ = load_pretrained_model(
        checkpoint, None, name, device_map="auto", multimodal=True, attn_implementation="sdpa"
    )
    assert model.config._attn_implementation == "sdpa"
    # LLaVA-1.5's keywords, and ours
    _, model, _, _ = load_pretrained_model(checkpoint, None, name, use_flash_attn=False, device="cpu")
    _, model, _, _ = load_pretrained_model(checkpoint, device="cpu", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    for dtype_name, dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16), ("auto", loaded[1].dtype)):
        _, model, _, _ = load_pretrained_model(checkpoint, None, name, torch_dtype=dtype_name)
        assert model.dtype == dtype and model.get_vision_tower().dtype == dtype


def test_flash_attention_request_falls_back_to_sdpa_where_it_cannot_run(checkpoint, caplog):
    with caplog.at_level(logging.WARNING, logger="llava.model.load_options"):
        _, model, _, _ = load_pretrained_model(checkpoint, None, "x", attn_implementation="flash_attention_2")
    assert model.config._attn_implementation == "sdpa"
    assert "flash_attention_2 needs the flash-attn package and a CUDA GPU" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answers")
def test_what_a_cpu_cannot_do_is_one_clear_error(checkpoint):
    with pytest.raises(ValueError, match=r"asks for a CUDA GPU, but torch sees none .* device_map='auto'"):
        load_pretrained_model(checkpoint, None, "x", device_map="cuda:0")
    for flag in ("load_8bit", "load_4bit"):
        with pytest.raises(ValueError, match=f"{flag} quantizes with bitsandbytes, which needs a CUDA GPU"):
            load_pretrained_model(checkpoint, None, "x", **{flag: True})
    with pytest.raises(ValueError, match="splits the model over several devices"):
        load_pretrained_model(checkpoint, None, "x", device_map={"transformer.h.0": "cpu", "lm_head": "meta"})
    with pytest.raises(ValueError, match="not a floating-point dtype"):
        load_pretrained_model(checkpoint, None, "x", torch_dtype="int8")


def test_overwrite_and_customized_config_reach_the_model(checkpoint, loaded, tmp_path):
    reference = loaded[1]
    _, model, _, _ = load_pretrained_model(
        checkpoint, None, "x", overwrite_config={"mm_spatial_pool_stride": 2, "mm_vision_select_layer": -1}
    )
    assert model.config.mm_spatial_pool_stride == 2  # lmms-eval's keys are kept on the config
    assert model.get_vision_tower().select_layer == -1 != reference.get_vision_tower().select_layer

    custom = json.loads(Path(checkpoint, "config.json").read_text())
    custom["mm_vision_select_layer"] = -3
    (tmp_path / "custom.json").write_text(json.dumps(custom))
    _, model, _, _ = load_pretrained_model(checkpoint, None, "x", customized_config=str(tmp_path / "custom.json"))
    assert model.get_vision_tower().select_layer == -3


# ---------------------------------------------------------------------------------- model surface
def test_the_model_surface_clients_touch(loaded, frames):
    tokenizer, model, processor, _ = loaded
    assert model.config.mm_use_im_start_end is False
    tower = model.get_vision_tower()
    assert tower.num_patches == tower.num_patches_per_side**2 == 64  # the tiny tower's 8x8 patch grid
    clip = processor.preprocess(frames[:8], return_tensors="pt")["pixel_values"]
    ids = torch.tensor([[IMAGE_TOKEN_INDEX] + tokenizer("un").input_ids])
    with torch.no_grad():
        plain = model(ids, labels=ids, images=[clip])
        sized = model(ids, labels=ids, images=[clip], image_sizes=[[64, 64]])
    assert torch.equal(plain.logits, sized.logits)
    assert torch.equal(greedy(model, ids, images=[clip]), greedy(model, ids, images=[clip], image_sizes=[[64, 64]]))


def test_longer_clips_are_sampled_uniformly_down_once_logged(checkpoint, frames, caplog):
    # A model of its own: the shared one may have logged the sampling already, in another test.
    tokenizer, model, processor, _ = load_pretrained_model(checkpoint)
    clip = processor.preprocess(frames, return_tensors="pt")["pixel_values"]  # 32 frames, the model takes 8
    kept = clip[sample_indices(32, 8)]
    ids = torch.tensor([[IMAGE_TOKEN_INDEX]])
    with caplog.at_level(logging.WARNING, logger="llava.modeling.llava_arch"):
        long = greedy(model, ids, images=[clip], modalities="video")  # lmms-eval's llava_vid passes a string
        again = greedy(model, ids, images=[clip.half()], modalities=["video"])  # and half-precision pixels
    assert torch.equal(long, greedy(model, ids, images=[kept]))
    assert torch.equal(long, again)
    assert caplog.text.count("sampled uniformly down to the 8 frames") == 1
    with torch.no_grad():
        assert torch.equal(model(ids, images=[clip]).logits, model(ids, images=[kept]).logits)


def test_generate_with_images_returns_only_new_tokens_text_only_included(loaded):
    tokenizer, model, _, _ = loaded
    ids = torch.tensor([tokenizer("un cerchio").input_ids])
    full = greedy(model, ids)  # transformers' call: prompt + new tokens
    assert torch.equal(full[:, : ids.shape[1]], ids)
    assert torch.equal(greedy(model, ids, images=None), full[:, ids.shape[1] :])  # LLaVA's call: new tokens
    keyword = model.generate(
        input_ids=ids,
        images=None,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=NEW,
        min_new_tokens=NEW,
        do_sample=False,
    )
    assert torch.equal(keyword, full[:, ids.shape[1] :])


def test_keywords_stopping_criteria_stops_a_generate_with_images(loaded, frames):
    tokenizer, model, processor, _ = loaded
    clip = processor.preprocess(frames[:8], return_tensors="pt")["pixel_values"]
    # A prompt longer than where the keyword appears: the criterion must not skip that many new tokens.
    ids = torch.tensor([[IMAGE_TOKEN_INDEX] + tokenizer(" un cerchio rosso si muove").input_ids])
    free = model.generate(ids, images=[clip], max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)[0]
    keyword = tokenizer.decode(free[:2]).strip()  # what the model writes first
    assert keyword and ids.shape[1] > 3
    stop = KeywordsStoppingCriteria([keyword], tokenizer, ids)
    stopped = model.generate(ids, images=[clip], max_new_tokens=NEW, do_sample=False, stopping_criteria=[stop])[0]
    assert keyword in tokenizer.decode(stopped) and len(stopped) < NEW
    assert torch.equal(stopped, free[: len(stopped)])
    never = KeywordsStoppingCriteria([""], tokenizer, ids)  # mistral_instruct's stop text is empty
    assert never(free[None], None).tolist() == [False]


# --------------------------------------------------------------------------------- process_images
def test_process_images_pads_as_llava_does_with_the_models_config(loaded):
    _, model, processor, _ = loaded
    wide = Image.fromarray(np.full((20, 80, 3), 255, dtype=np.uint8))
    square = process_images([wide], processor, model.config)
    assert square.shape == (1, 3, 56, 56)
    assert float(square.min()) > 1.5  # the white image fills the centre crop: no background shows

    class Config:
        image_aspect_ratio = "pad"

    padded = process_images([wide], processor, Config())
    assert padded.shape == (1, 3, 56, 56)
    # rows above and below the image are the processor's mean colour, which normalizes to about 0
    assert padded[0, :, :8].abs().max() < 0.02 and padded[0, :, 28].min() > 1.5
    Config.image_aspect_ratio = "anyres_max_9"
    with pytest.raises(ValueError, match="image_aspect_ratio 'anyres_max_9' is not supported.*use 'pad'"):
        process_images([wide], processor, Config())


# ------------------------------------------------------------------------------ client snippets
def reference_caption(model, tokenizer, pixels) -> str:
    """Greedy words of the plain template's prompt (the visual block alone), written out by hand."""
    ids = torch.tensor([[IMAGE_TOKEN_INDEX]])
    out = model.generate(ids, images=[pixels], max_new_tokens=NEW, do_sample=False, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0], skip_special_tokens=True).strip()


def test_llava_readme_quick_start(checkpoint, loaded, frames, tmp_path, capsys):
    from llava.eval.run_llava import eval_model

    image_file = tmp_path / "frame.png"
    Image.fromarray(frames[5]).save(image_file)
    model_path = checkpoint
    args = type(
        "Args",
        (),
        {
            "model_path": model_path,
            "model_base": None,
            "model_name": get_model_name_from_path(model_path),
            "query": "Cosa si vede?",
            "conv_mode": None,
            "image_file": str(image_file),
            "sep": ",",
            "temperature": 0,
            "top_p": None,
            "num_beams": 1,
            "max_new_tokens": NEW,
        },
    )()
    answer = eval_model(args)
    tokenizer, model, processor, _ = loaded
    expected = reference_caption(model, tokenizer, process_images([Image.open(image_file)], processor, model.config))
    assert answer == expected and capsys.readouterr().out == expected + "\n"


def test_run_llava_command_line_on_a_clip(checkpoint, loaded, assets):
    clip = f"{assets['video_folder']}/val_00001.mp4"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llava.eval.run_llava",
            "--model-path",
            checkpoint,
            "--image-file",
            clip,
            "--query",
            "Descrivi il video.",
            "--temperature",
            "0",
            "--max_new_tokens",
            str(NEW),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    tokenizer, model, processor, _ = loaded
    pixels = processor.preprocess(read_video_frames(clip, 8), return_tensors="pt")["pixel_values"]
    assert result.stdout == reference_caption(model, tokenizer, pixels) + "\n"
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "llava.eval.run_llava",
            "--model-path",
            checkpoint,
            "--image-file",
            clip + ".missing",
            "--query",
            "?",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 1
    assert missing.stderr == f"error: --image-file file does not exist ({clip}.missing)\n"


def test_llava_next_video_snippet_with_more_frames_than_the_model_takes(loaded, frames):
    from llava.conversation import conv_templates
    from llava.mm_utils import tokenizer_image_token

    tokenizer, model, image_processor, _ = loaded
    video = image_processor.preprocess(frames[:16], return_tensors="pt")["pixel_values"].half()
    video = [video]
    conv = conv_templates["plain"].copy()
    conv.append_message(conv.roles[0], "<image>\nDescrivi il video in dettaglio.")
    conv.append_message(conv.roles[1], None)
    input_ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    cont = model.generate(
        input_ids, images=video, modalities=["video"], do_sample=False, temperature=0, max_new_tokens=NEW
    )
    text = tokenizer.batch_decode(cont, skip_special_tokens=True)[0].strip()
    kept = image_processor.preprocess(frames[:16][sample_indices(16, 8)], return_tensors="pt")["pixel_values"]
    assert text == reference_caption(model, tokenizer, kept)


def test_generation_stops_at_a_templates_stop_text(loaded, frames):
    from llava.generation import generate_texts

    tokenizer, model, processor, _ = loaded
    clip = processor.preprocess(frames[:8], return_tensors="pt")["pixel_values"]
    free = generate_texts(model, tokenizer, [[IMAGE_TOKEN_INDEX]], [clip], max_new_tokens=NEW)[0]
    words = free.split()
    assert len(words) >= 3
    stop = words[1]  # a stop text the model writes, as a GPT-2 model trained on vicuna_v1 writes "</s>"
    cut = generate_texts(model, tokenizer, [[IMAGE_TOKEN_INDEX]], [clip], max_new_tokens=NEW, stop_strings=[stop])[0]
    assert cut == free[: free.index(stop)].strip()


def test_llava_budgets_of_new_tokens_are_fitted_to_the_models_positions(loaded, frames, caplog):
    tokenizer, model, processor, context_len = loaded
    clip = processor.preprocess(frames[:8], return_tensors="pt")["pixel_values"]
    ids = torch.tensor([[IMAGE_TOKEN_INDEX]])
    with caplog.at_level(logging.WARNING, logger="llava.modeling.sequence_budget"):
        out = model.generate(
            ids, images=[clip], max_new_tokens=1024, min_new_tokens=1024, do_sample=False
        )  # lmms-eval's
    assert out.shape[1] == context_len - 96  # 96 visual tokens of an 8-frame clip fill the rest
    assert "max_new_tokens=1024 does not fit the language model's 256 positions" in caplog.text
