"""Inference from trained checkpoints: load_pretrained_model (full, and base LM + adapter) and the
captioning command line (one clip, one image, a whole set with a broken clip)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, IMAGE_TOKEN_INDEX
from llava.data.dataset import LazySupervisedDataset, MediaFolders
from llava.data.prompts import PromptSettings
from llava.data.templates import get_template
from llava.data.video import read_video_frames
from llava.demo.synthetic import write_clip
from llava.errors import InputError
from llava.eval import captions
from llava.generation import single_turn_prompt
from llava.mm_utils import process_images, process_video_frames
from llava.model.builder import causal_lm_class, load_pretrained_model
from llava.modeling.adapter_weights import adapter_state_dict
from llava.serve import cli
from llava.testing import TINY_LANGUAGE_CONFIGS, tiny_vision_args
from llava.train import train

from train_helpers import ROOT, train_args

MAX_NEW = 6


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    """A clip of this test's own: a white square crossing a dark background."""
    frames = np.full((12, 64, 64, 3), 30, dtype=np.uint8)
    for t in range(12):
        frames[t, 20:36, 4 * t : 4 * t + 16] = 255
    path = tmp_path_factory.mktemp("clip") / "square.mp4"
    write_clip(path, frames, codec="mpeg4")
    return str(path)


def greedy_reference(model, tokenizer, pixels) -> str:
    """The caption written by hand: the plain template's prompt (the visual block alone), greedy."""
    ids = torch.tensor([[IMAGE_TOKEN_INDEX]])
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            images=[pixels],
            max_new_tokens=MAX_NEW,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.decode(out[0], skip_special_tokens=True).strip()


@pytest.mark.slow
def test_cli_captions_a_clip(checkpoint, clip_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llava.serve.cli",
            "--model-path",
            checkpoint,
            "--video",
            clip_path,
            "--max-new-tokens",
            str(MAX_NEW),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tokenizer, model, processor, context = load_pretrained_model(checkpoint)
    assert context == 256 and tokenizer.pad_token_id == tokenizer.eos_token_id
    expected = greedy_reference(model, tokenizer, process_video_frames(read_video_frames(clip_path, 8), processor))
    assert result.stdout == expected + "\n"


@pytest.mark.slow
def test_cli_sampling_and_frame_limits(checkpoint, clip_path, capsys):
    args = ["--model-path", checkpoint, "--video", clip_path, "--max-new-tokens", str(MAX_NEW)]
    assert cli.main(args + ["--temperature", "0.8", "--top-p", "0.9", "--seed", "1"]) == 0
    first = capsys.readouterr().out
    cli.main(args + ["--temperature", "0.8", "--top-p", "0.9", "--seed", "1"])
    assert capsys.readouterr().out == first  # seeded sampling repeats
    with pytest.raises(SystemExit) as exit_status:
        cli.cli(args + ["--num-frames", "16"])
    assert exit_status.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: --num-frames 16: this model takes at most 8 frames per clip (python -m llava.serve.cli --help lists the flags)"
    )
    with pytest.raises(SystemExit) as exit_status:
        cli.cli(["--model-path", checkpoint, "--video", clip_path + ".missing"])
    assert exit_status.value.code == 1
    assert capsys.readouterr().err == f"error: --video file does not exist ({clip_path}.missing)\n"


@pytest.mark.slow
def test_cli_captions_an_image(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(path)
    assert cli.main(["--model-path", checkpoint, "--image", str(path), "--max-new-tokens", str(MAX_NEW)]) == 0
    tokenizer, model, processor, _ = load_pretrained_model(checkpoint)
    with Image.open(path) as image:
        pixels = process_images([image], processor)
    assert capsys.readouterr().out == greedy_reference(model, tokenizer, pixels) + "\n"


@pytest.mark.slow
def test_images_are_preprocessed_as_the_checkpoint_was_trained(checkpoint, tmp_path):
    """A checkpoint trained with --image_aspect_ratio pad (recorded in its config) gets letterboxed images,
    one image (--image) or a set (--data), not the centre crop of 'square'."""
    tokenizer, model, processor, _ = load_pretrained_model(checkpoint)
    model.config.image_aspect_ratio = "pad"
    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 96, 3), dtype=np.uint8)).save(path)
    with Image.open(path) as image:
        letterboxed, cropped = process_images([image], processor, model.config), process_images([image], processor)
    assert not torch.equal(letterboxed, cropped)
    assert torch.equal(cli.media_pixels(str(path), "image", processor, model.config, 8), letterboxed)
    data = tmp_path / "set.json"
    data.write_text(
        json.dumps([{"id": "wide", "image": "wide.png", "conversations": [{"from": "human", "value": "<image>\n"}]}])
    )
    dataset = cli.CaptionSet(model, tokenizer, processor, str(data), image_folder=str(tmp_path))
    assert torch.equal(dataset[0]["pixels"], letterboxed)


@pytest.mark.slow
def test_prompts_are_written_with_the_checkpoint_s_prompt_options(checkpoint, assets, tmp_path):
    """A checkpoint trained with --mm_use_im_start_end and --add_time_instruction (its config records both)
    is prompted as its training prompted it: in a set (--data, and eval.captions) and for one --video."""
    tokenizer, model, processor, _ = load_pretrained_model(checkpoint)
    tokenizer.add_tokens([DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN], special_tokens=True)
    model.config.mm_use_im_start_end = model.config.add_time_instruction = True
    sample = json.loads(Path(assets["val"]).read_text())[0]
    data = tmp_path / "one.json"
    data.write_text(json.dumps([sample]))
    version, folder = "llava_v1", assets["video_folder"]
    training = LazySupervisedDataset(
        str(data), tokenizer, num_frames=8, folders=MediaFolders(video_folder=folder), image_processor=processor,
        prompt=PromptSettings(add_time_instruction=True, mm_use_im_start_end=True), template=version,
    )  # fmt: skip
    expected = get_template(version).prompt_ids(training.prompt_turns(training.samples[0]), tokenizer)
    text = tokenizer.decode([i for i in expected if i >= 0])
    assert "<im_start>" in text and "<im_end>" in text and "frames are uniformly sampled" in text, text

    assert (
        cli.CaptionSet(model, tokenizer, processor, str(data), version, video_folder=folder)[0]["prompt_ids"]
        == expected
    )
    _, items = captions.load_items(model, tokenizer, processor, str(data), folder, version=version)
    assert items[0]["prompt_ids"] == expected
    clip = str(Path(folder) / sample["video"])
    question = sample["conversations"][0]["value"].replace("<video>", "").strip()
    options = cli.prompt_options(model.config, clip, "video", 8)
    assert single_turn_prompt(get_template(version), tokenizer, question, "video", options) == expected


@pytest.mark.slow
def test_cli_batch_mode_skips_a_broken_clip(checkpoint, assets, tmp_path, capsys, caplog):
    samples = json.loads(Path(assets["val"]).read_text())
    broken = tmp_path / "broken.mp4"
    broken.write_text("this is not a video\n")
    samples.insert(
        1,
        {
            "id": "broken",
            "video": str(broken),
            "conversations": [{"from": "human", "value": "<video>\n"}, {"from": "gpt", "value": "niente"}],
        },
    )
    samples.append(
        {"id": "no-reference", "video": samples[0]["video"], "conversations": [{"from": "human", "value": "<video>\n"}]}
    )
    samples.append(
        {
            "id": "text-only",
            "conversations": [{"from": "human", "value": "ciao"}, {"from": "gpt", "value": "un cerchio"}],
        }
    )
    data = tmp_path / "set.json"
    data.write_text(json.dumps(samples))
    out = tmp_path / "captions.jsonl"
    code = cli.main(
        [
            "--model-path",
            checkpoint,
            "--data",
            str(data),
            "--video-folder",
            assets["video_folder"],
            "--out",
            str(out),
            "--batch-size",
            "2",
            "--max-new-tokens",
            str(MAX_NEW),
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "captioning" in err and "captioned 6 samples" in err and "skipped 1" in err  # progress bar, summary
    assert "skipping broken" in caplog.text and "opening/demuxing failed" in caplog.text
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == [s["id"] for s in samples if s["id"] != "broken"]
    references = {s["id"]: s["conversations"][-1]["value"] for s in samples if len(s["conversations"]) == 2}
    for line in lines:
        assert isinstance(line["caption"], str)
        assert line.get("reference") == references.get(line["id"])
    listed = [json.loads(line) for line in (tmp_path / "captions.skipped.jsonl").read_text().splitlines()]
    assert [entry["id"] for entry in listed] == ["broken"] and listed[0]["reason"]

    # batched (and left-padded) captions are the captions of one sample at a time
    tokenizer, model, processor, _ = load_pretrained_model(checkpoint)
    first = process_video_frames(read_video_frames(f"{assets['video_folder']}/{samples[0]['video']}", 8), processor)
    assert lines[0]["caption"] == greedy_reference(model, tokenizer, first)
    assert lines[-2]["caption"] == lines[0]["caption"]  # the same clip, without a reference
    # a text-only sample under the plain template: generation starts from BOS, beside clips in its batch
    ids = torch.tensor([[tokenizer.bos_token_id]])
    with torch.no_grad():
        text = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=MAX_NEW,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )[0, 1:]
    assert lines[-1]["caption"] == tokenizer.decode(text, skip_special_tokens=True).strip()


@pytest.mark.slow
def test_batches_of_prompts_of_different_lengths_match_single_prompts(checkpoint, assets):
    from llava.data.media import load_clip
    from llava.data.templates import get_template
    from llava.generation import generate_texts, single_turn_prompt

    tokenizer, model, processor, _ = load_pretrained_model(checkpoint)
    template = get_template("chatml")
    clips = [load_clip(f"{assets['video_folder']}/val_0000{i}.mp4", processor, 8) for i in range(3)]
    prompts = [single_turn_prompt(template, tokenizer, p, "video") for p in ("", "descrivi il video con cura", "ciao")]
    assert len({len(p) for p in prompts}) == 3
    batched = generate_texts(model, tokenizer, prompts, clips, max_new_tokens=MAX_NEW)
    assert batched == [
        generate_texts(model, tokenizer, [p], [c], max_new_tokens=MAX_NEW)[0] for p, c in zip(prompts, clips)
    ]


@pytest.mark.slow
def test_base_model_plus_adapter_gives_the_trained_model(assets, tmp_path, capsys):
    out = tmp_path / "adapter"
    trainer = train.main(
        train_args(
            assets, out, "--mm_tunable_parts", "mm_vision_resampler,mm_mlp_adapter", "--save_steps", "1000", steps=4
        )
    )
    assert (out / "mm_projector.bin").exists()
    tokenizer, model, processor, context = load_pretrained_model(str(out), model_base=assets["gpt2"])
    assert processor is not None and context == 256 and tokenizer.pad_token_id == tokenizer.eos_token_id
    trained = trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    batch.pop("skipped")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, trained(**batch).logits)

    # the adapter file itself works as model_path (its config.json beside it)
    _, from_file, _, _ = load_pretrained_model(str(out / "mm_projector.bin"), model_base=assets["gpt2"])
    for key, value in adapter_state_dict(from_file.get_model()).items():
        assert torch.equal(value, adapter_state_dict(trained.get_model())[key]), key

    # the command line takes the same pair
    clip = f"{assets['video_folder']}/val_00000.mp4"
    capsys.readouterr()  # the training's own output
    assert (
        cli.main(
            [
                "--model-path",
                str(out),
                "--model-base",
                assets["gpt2"],
                "--video",
                clip,
                "--max-new-tokens",
                str(MAX_NEW),
            ]
        )
        == 0
    )
    pixels = process_video_frames(read_video_frames(clip, 8), processor)
    assert capsys.readouterr().out == greedy_reference(trained, tokenizer, pixels) + "\n"

    with pytest.raises(FileNotFoundError) as error:
        load_pretrained_model(str(out), model_base=assets["gpt2"], vision_tower=str(tmp_path / "moved-away"))
    assert str(error.value) == (
        "the vision tower cannot be loaded: an adapter-only run does not carry the tower's weights, they come from the "
        f"folder that mm_vision_tower names in {out / 'config.json'}; make it available there, or pass where it is now "
        f"(--vision-tower PATH, load_pretrained_model(..., vision_tower=PATH)) ({tmp_path / 'moved-away'})"
    )


def test_adapter_errors_are_clear(assets, tmp_path):
    adapter_only = tmp_path / "only-adapter"
    adapter_only.mkdir()
    (adapter_only / "mm_projector.bin").write_bytes(b"")
    with pytest.raises(InputError) as error:
        load_pretrained_model(str(adapter_only))
    assert str(error.value) == (
        f"--model-path folder holds an adapter (mm_projector.bin) but no model weights: load it with "
        f"the language model it was trained on (--model-base) ({adapter_only})"
    )
    with pytest.raises(FileNotFoundError) as error:
        load_pretrained_model(str(adapter_only), model_base=assets["gpt2"])
    assert str(error.value) == (
        "config.json is missing beside the adapter: its run writes the mm_* settings there, and "
        f"without them the visual modules cannot be rebuilt ({adapter_only / 'config.json'})"
    )
    with pytest.raises(FileNotFoundError) as error:
        load_pretrained_model(assets["gpt2"], model_base=assets["gpt2"])
    assert str(error.value) == (
        "--model-path holds no adapter (mm_projector.bin or mm_projector.safetensors): with --model-base it must be the "
        "output folder of an adapter-only run (--mm_tunable_parts mm_vision_resampler,mm_mlp_adapter); a full checkpoint "
        f"loads without --model-base ({assets['gpt2']})"
    )


def test_base_plus_adapter_for_llama(tower_dir, tokenizer_dir, tmp_path):
    """Another family, built from a tiny config: an adapter file and the run's config beside it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = TINY_LANGUAGE_CONFIGS["llava_llama"]()
    config.vocab_size = len(tokenizer)
    base = tmp_path / "llama"
    AutoModelForCausalLM.from_config(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    model = causal_lm_class("llava_llama").from_pretrained(base)
    model.get_model().initialize_vision_modules(tiny_vision_args(tower_dir))
    with torch.no_grad():  # "trained" adapter weights, unlike any fresh initialization
        for name, p in model.named_parameters():
            if "mm_pos_embed" in name or "mm_projector" in name or "vision_resampler" in name:
                p.add_(torch.randn_like(p) * 0.1)
    run = tmp_path / "run"
    model.config.save_pretrained(run)
    torch.save(adapter_state_dict(model.get_model()), run / "mm_projector.bin")

    _, loaded, processor, context = load_pretrained_model(str(run), model_base=str(base))
    assert type(loaded).__name__ == "LlavaLlamaForCausalLM" and context == 256 and processor is not None
    ids = torch.tensor([[5, IMAGE_TOKEN_INDEX, 7, 9]])
    clip = torch.randn(8, 3, 56, 56)
    with torch.no_grad():
        assert torch.equal(
            loaded(input_ids=ids, images=[clip]).logits, model.eval()(input_ids=ids, images=[clip]).logits
        )
