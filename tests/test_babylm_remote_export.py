"""A checkpoint exported with its code (llava.eval.export_remote) is what the 2025 BabyLM pipeline loads:
in a separate virtual environment that has transformers but not this package,
`AutoModelForCausalLM`/`AutoProcessor.from_pretrained(folder, trust_remote_code=True)` load every family,
and the pipeline's calls (`processor(text=..., images=..., return_offsets_mapping=True)`,
`model(input_ids, attention_mask, pixel_values=...)`) give our model's logits: text only, a picture before
the text, a picture at the image token, a clip of frames. The image tasks (Winoground, VQA) are scored as
the pipeline scores them, checked against log-probabilities computed by hand."""

import json
import subprocess
import sysconfig
import textwrap
import venv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.eval import export_remote
from llava.eval.babylm import causal_scoring, zero_shot
from llava.eval.babylm.tasks import read_task
from llava.mm_utils import process_images, process_video_frames, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.modeling.families import BY_LLAVA_TYPE
from llava.modeling.visual_inputs import IMAGE_TOKEN_GAP
from llava.testing import TINY_LANGUAGE_CONFIGS

from babylm_helpers import gpt2_folder, llama_folder
from model_helpers import llava_checkpoint
from tiers import require_installed
from train_helpers import ROOT

FAMILIES = sorted(TINY_LANGUAGE_CONFIGS)
TEXT = "the red ball rolls under the table"

# Runs in the environment without llava, calling the folder as the pipeline's sentence_zero_shot does.
LOADER = textwrap.dedent("""
    import json, sys
    import torch
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoProcessor
    try:
        import llava
        sys.exit(f"llava is importable here: {llava.__file__}")
    except ModuleNotFoundError:
        pass
    folders, text, picture, out = json.loads(sys.argv[1]), sys.argv[2], Image.open(sys.argv[3]), sys.argv[4]
    results, classes = {}, {}
    for family, folder in folders.items():
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, padding_side="right", trust_remote_code=True)
        classes[family] = [type(model).__module__, type(model).__name__, type(processor).__name__]
        # What the pipeline's DevBench runner (model type git) reads: the encoder, and segment ids it pops.
        devbench = processor(text="x", images=picture, return_tensors="pt")
        classes[family].append([type(model.git.image_encoder).__name__, "token_type_ids" in devbench])
        token = processor.tokenizer.image_token
        calls = {
            "text": dict(text=text),
            "prepended": dict(text=text, images=picture),
            "image_token": dict(text=token + text, images=picture),
            "clip": dict(text=token + text, videos=[picture] * 8),
        }
        for case, kwargs in calls.items():
            encoded = processor(return_offsets_mapping=True, **kwargs)
            # A string is one unbatched row, as a tokenizer gives it.
            ids, mask = torch.tensor([encoded["input_ids"]]), torch.tensor([encoded["attention_mask"]])
            pixels = {} if "pixel_values" not in encoded else {"pixel_values": torch.FloatTensor(encoded["pixel_values"])}
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=mask, **pixels).logits
            results[f"{family}/{case}/ids"] = ids
            results[f"{family}/{case}/logits"] = logits.contiguous()
            if pixels:
                results[f"{family}/{case}/pixels"] = pixels["pixel_values"]
    save_file(results, out)
    print(json.dumps({"classes": classes, "llava_modules": [m for m in sys.modules if m.split(".")[0] == "llava"]}))
""")


def environment_without_llava(folder):
    """A virtual environment whose packages are this one's (a .pth line names our site-packages) except
    this package: its editable install is itself a .pth file in our site-packages, and .pth files are
    read only in an environment's own site folder."""
    venv.create(folder, with_pip=False)
    python = folder / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (folder / site.split(str(folder) + "/", 1)[1] / "ours.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def picture(path=None, size=(70, 60), seed=0):
    image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if path is not None:
        image.save(path)
    return image


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tower_dir):
    """Per family a llava checkpoint: GPT-2 with a byte-level tokenizer that adds no BOS, Llama with one
    that adds a BOS, the others with GPT-2's tokenizer."""
    root = tmp_path_factory.mktemp("remote")
    tokenizers = {"llava_gpt2": gpt2_folder(root / "gpt2"), "llava_llama": llama_folder(root / "llama")}
    return {
        family: llava_checkpoint(family, root / family, tokenizers.get(family, tokenizers["llava_gpt2"]), tower_dir)
        for family in FAMILIES
    }


@torch.no_grad()
def our_logits(checkpoint, image):
    """Per case (ids with our placeholder, logits) from this package's own API."""
    tokenizer, model, image_processor, _ = load_pretrained_model(str(checkpoint), device="cpu")
    pixels = process_images([image], image_processor, model.config)
    clip = process_video_frames(np.stack([np.asarray(image)] * 8), image_processor)
    text_ids = torch.tensor([tokenizer(TEXT)["input_ids"]])
    with_token = tokenizer_image_token("<image>" + TEXT, tokenizer, return_tensors="pt")[None]
    prepended = torch.cat([torch.tensor([[IMAGE_TOKEN_INDEX]]), text_ids], dim=1)
    cases = {"text": (text_ids, None), "prepended": (prepended, pixels), "image_token": (with_token, pixels)}
    cases["clip"] = (with_token, clip)
    out = {}
    for case, (ids, visual) in cases.items():
        images = None if visual is None else [visual[0] if case != "clip" else visual]
        out[case] = (ids, model(input_ids=ids, images=images).logits, visual)
    return out


# The BabyLM pipeline's own transformers (its requirements.txt pins 4.51.3), installed by `make babylm-env`.
PIPELINE_PYTHON = ROOT / ".venv-babylm" / "bin" / "python"
# Transformers 5 stores Mixtral's experts fused (`mlp.experts.gate_up_proj`), which transformers 4 cannot
# read: a Mixtral export needs transformers 5.
NOT_IN_TRANSFORMERS_4 = {"llava_mixtral"}


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    return {family: str(export_remote.export(str(c), str(root / family))) for family, c in checkpoints.items()}


def pipeline_python() -> str:
    if not PIPELINE_PYTHON.exists():
        require_installed("the BabyLM pipeline's transformers", "make babylm-env", f"{PIPELINE_PYTHON} is missing")
    return str(PIPELINE_PYTHON)


@pytest.mark.slow  # every family loaded in a second interpreter
@pytest.mark.parametrize("transformers_version", ["ours (5)", "the pipeline's (4.51.3)"])
def test_every_family_loads_without_llava_and_gives_our_logits(checkpoints, exported, tmp_path, transformers_version):
    if transformers_version.startswith("ours"):
        python = environment_without_llava(tmp_path / "env")
        folders = exported
    else:
        python = pipeline_python()
        folders = {f: path for f, path in exported.items() if f not in NOT_IN_TRANSFORMERS_4}
    image_file = tmp_path / "picture.png"
    image = picture(image_file)
    results_file = tmp_path / "remote.safetensors"
    result = subprocess.run(
        [python, "-c", LOADER, json.dumps(folders), TEXT, str(image_file), str(results_file)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # every weight found where the loader looks for it (transformers 4 reports the others, 5 raises)
    assert "newly initialized" not in result.stderr and "were not used" not in result.stderr, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["llava_modules"] == [] and sorted(report["classes"]) == sorted(folders)
    from safetensors.torch import load_file

    remote = load_file(results_file)
    for family in folders:
        module, name, processor_class, devbench_view = report["classes"][family]
        assert devbench_view == ["VisionTower", True], family
        assert module.startswith("transformers_modules.") and module.endswith(f".{family}"), family
        assert (name, processor_class) == (BY_LLAVA_TYPE[family].causal_lm, "LlavaFramesProcessor")
        image_token = json.loads((Path(folders[family]) / "config.json").read_text())["image_token_index"]
        for case, (ids, logits, visual) in our_logits(checkpoints[family], image).items():
            got_ids = remote[f"{family}/{case}/ids"]
            mapped = got_ids.masked_fill(got_ids == image_token, IMAGE_TOKEN_INDEX)
            if case == "prepended":  # no image token in the text: the picture goes before it
                mapped = torch.cat([torch.tensor([[IMAGE_TOKEN_INDEX]]), mapped], dim=1)
            assert torch.equal(mapped, ids), (family, case)
            if visual is not None:
                assert torch.equal(remote[f"{family}/{case}/pixels"][0], visual[0] if case != "clip" else visual)
            got = remote[f"{family}/{case}/logits"]
            vocab = logits.shape[-1]
            assert got.shape[:-1] == logits.shape[:-1], (family, case)
            torch.testing.assert_close(got[..., :vocab], logits, rtol=0, atol=1e-5, msg=f"{family} {case}")
            # The image token's own column, past the vocabulary: far below every real logit.
            assert got.shape[-1] == image_token + 1
            torch.testing.assert_close(got[..., vocab:], logits.amax(-1, keepdim=True) - IMAGE_TOKEN_GAP)
    # The checkpoint's Llama tokenizer adds a BOS, which stays first with a picture's token after it.
    assert remote["llava_llama/image_token/ids"][0, 0] != remote["llava_gpt2/image_token/ids"][0, 0]


def test_auto_classes_imports_every_module_of_the_folder_itself():
    """transformers 4 copies, from a local folder, only what the auto_map's module imports directly."""
    import ast

    tree = ast.parse((ROOT / "llava" / "modeling" / "auto_classes.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
    modules = {p.stem for p in (ROOT / "llava" / "modeling").glob("*.py")} - {"__init__", "auto_classes"}
    assert imported == modules


def test_the_processor_gives_our_pixels_in_transformers_forms(checkpoints):
    tokenizer, model, image_processor, _ = load_pretrained_model(str(checkpoints["llava_gpt2"]), device="cpu")
    processor = export_remote.processor_for(model, tokenizer)
    a, b = picture(seed=1), picture(size=(40, 90), seed=2)
    images = processor(text=["x", "y"], images=[a, b])
    assert isinstance(images["pixel_values"], np.ndarray)  # no return_tensors: numpy, as transformers' own
    torch.testing.assert_close(torch.from_numpy(images["pixel_values"]), process_images([a, b], image_processor))
    one = processor(text="x", images=a, return_tensors="pt")
    assert one["pixel_values"].shape[0] == 1 and one["input_ids"].shape[0] == 1
    frames = [a] * 3
    clip = processor(videos=frames, return_tensors="pt")["pixel_values"]
    expected = process_video_frames(np.stack([np.asarray(f) for f in frames]), image_processor)
    assert torch.equal(clip, expected[None])
    two = processor(videos=[frames, frames], return_tensors="pt")["pixel_values"]
    assert two.shape == (2, 3, *expected.shape[1:])
    with pytest.raises(ValueError, match="not both"):
        processor(images=a, videos=frames)


def test_pixel_values_without_an_image_token_need_one_picture_per_row(checkpoints):
    tokenizer, model, image_processor, _ = load_pretrained_model(str(checkpoints["llava_gpt2"]), device="cpu")
    pixels = process_images([picture()], image_processor)
    ids = torch.tensor([tokenizer(TEXT)["input_ids"]] * 2)
    with pytest.raises(ValueError, match="1 visual inputs for 2 rows"):
        model(input_ids=ids, pixel_values=pixels)
    with pytest.raises(ValueError, match="not both"):
        model(input_ids=ids[:1], pixel_values=pixels, images=[pixels[0]])


# ----------------------------------------------------------------------------------- the image tasks
CAPTIONS = [("the red ball rolls", "the ball red rolls"), ("a girl walks to the park", "the park walks to a girl")]
QUESTIONS = [("what is it", "a ball", ["a dog", "the cat", "a box", "a key", "a bird", "the park", "an apple"])]


def write_image_tasks(root):
    """Winoground and VQA folders in the pipeline's formats, their pictures in local parquet datasets."""
    import datasets

    pictures = [picture(seed=s) for s in range(2)]
    frame = datasets.Dataset.from_dict({"image_0": pictures, "image_1": pictures[::-1]})
    (root / "wino_images").mkdir(parents=True)
    frame.cast_column("image_0", datasets.Image()).cast_column("image_1", datasets.Image()).to_parquet(
        root / "wino_images" / "test.parquet"
    )
    (root / "winoground_filtered").mkdir()
    with open(root / "winoground_filtered" / "winoground.jsonl", "w") as f:
        for i, (right, wrong) in enumerate(CAPTIONS):
            record = {"caption_0": right, "caption_1": wrong, "image_idx": i, "image_key": f"image_{i}"}
            f.write(json.dumps({**record, "collapsed_tag": "Object", "tag": "Noun", "secondary_tag": "Order"}) + "\n")
    (root / "vqa_images").mkdir()
    datasets.Dataset.from_dict({"image": pictures}).cast_column("image", datasets.Image()).to_parquet(
        root / "vqa_images" / "train.parquet"
    )
    (root / "vqa_filtered").mkdir()
    with open(root / "vqa_filtered" / "vqa.jsonl", "w") as f:
        for question, answer, distractors in QUESTIONS:
            record = {"question": question, "target_ans": answer, "distractors": distractors, "idx_in_hf_dataset": 1}
            f.write(json.dumps(record) + "\n")
    return pictures


@torch.no_grad()
def visual_log_probs(model, ids: list[int], pixels) -> torch.Tensor:
    """log_softmax of the logits at every position of `ids` (one IMAGE_TOKEN_INDEX among them) with the
    picture spliced in: (positions after splicing, vocabulary and the image token's column)."""
    logits = model(input_ids=torch.tensor([ids]), images=[pixels]).logits[0]
    return torch.log_softmax(logits.double(), dim=-1)


def by_hand(model, tokenizer, pixels, sentence: str, completion: str, template: bool) -> float:
    """The pipeline's score of one candidate, from log-probabilities. The picture goes before the text, or
    at the image token the template writes first. Scored: the sentence's tokens that end past the start
    of the completion, each from everything before it, except a first token that is an input only (the
    first the tokenizer returns, without a picture token before it). With the template and a BOS, the
    pipeline measures the completion's start from the image token's offset, 7 characters (`<image>`)
    before the text: the scored span starts 7 characters early, and the image token itself is scored
    where it ends past that start, from the visual block's second-to-last position (where the slice of
    the logits puts that target)."""
    encoded = tokenizer(sentence, return_offsets_mapping=True)
    tokens, offsets = encoded["input_ids"], encoded["offset_mapping"]
    bos = tokens[0] == tokenizer.bos_token_id and offsets[0] == (0, 0)
    text, ends = (tokens[1:], [e for _, e in offsets[1:]]) if bos else (tokens, [e for _, e in offsets])
    start_char = len(sentence) - len(completion)
    if template:
        ids = [tokens[0], IMAGE_TOKEN_INDEX, *text] if bos else [IMAGE_TOKEN_INDEX, *text]
        shift = len(DEFAULT_IMAGE_TOKEN) if bos else 0
        scored = [j for j, end in enumerate(ends) if end > start_char - shift]
    else:
        ids = [IMAGE_TOKEN_INDEX, *tokens]
        scored = [j for j, end in enumerate(ends) if end > start_char and (bos or j > 0)]
    lp = visual_log_probs(model, ids, pixels)
    first = lp.shape[0] - len(text)  # the first text token's position after splicing
    score = sum(float(lp[first + j - 1, text[j]]) for j in scored)
    if template and bos and len(DEFAULT_IMAGE_TOKEN) > start_char:
        score += float(lp[first - 2, model.config.image_token_index])
    return score


@pytest.mark.parametrize("family", ["llava_gpt2", "llava_llama"])
@pytest.mark.parametrize("template", [None, "append_image_token"])
def test_the_image_tasks_score_what_the_pipeline_scores(checkpoints, tmp_path, family, template):
    import datasets

    pictures = write_image_tasks(tmp_path)
    tokenizer, model, image_processor, _ = load_pretrained_model(str(checkpoints[family]), device="cpu")
    processor = export_remote.processor_for(model, tokenizer)
    fill = zero_shot.IMAGE_TEMPLATES.get(template)
    for task, folder, images, split in (
        ("winoground", "winoground_filtered", "wino_images", "test"),
        ("vqa", "vqa_filtered", "vqa_images", "train"),
    ):
        items = read_task(tmp_path / folder, task, images=datasets.load_dataset(str(tmp_path / images), split=split))
        # the pictures are the datasets' rows the records name (image_1's column holds them reversed)
        named = [pictures[0], pictures[0]] if task == "winoground" else [pictures[1]]
        assert [np.asarray(i["image"].load()).tolist() for i in items] == [np.asarray(p).tolist() for p in named]
        for batch, candidates in causal_scoring.candidate_batches(processor, items, 1, fill):
            got = causal_scoring.score_candidates(model, candidates, [1.0], "cpu")[1.0][0]
            pixels = process_images([batch[0]["image"].load()], image_processor, model.config)[0]
            expected = [
                by_hand(model, tokenizer, pixels, sentence, completion, template is not None)
                for sentence, completion in zip(batch[0]["sentences"], batch[0]["completions"])
            ]
            assert got.tolist() == pytest.approx(expected, abs=2e-3), (task, family, template)


def test_a_picture_the_dataset_lacks_is_one_line_naming_the_record(tmp_path):
    """A row or column the images dataset does not have is found when the records are read; a row whose
    picture is empty when it is scored (pictures are decoded then, not all held at once)."""
    import datasets

    from llava.errors import InputError
    from llava.eval.babylm import tasks

    write_image_tasks(tmp_path)
    images = datasets.load_dataset(str(tmp_path / "vqa_images"), split="train")
    items = tasks.read_task(tmp_path / "vqa_filtered", "vqa", images=images)
    assert isinstance(items[0]["image"], tasks.Picture)  # not decoded yet
    assert items[0]["image"].load().size == picture(seed=1).size
    bad = tmp_path / "bad_vqa"
    bad.mkdir()
    record = {"question": "q", "target_ans": "a", "distractors": ["b"], "idx_in_hf_dataset": 7}
    (bad / "vqa.jsonl").write_text(json.dumps({**record, "idx_in_hf_dataset": 0}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(
        InputError, match=r"bad_vqa/vqa.jsonl, line 2: image row 7 is not in the images dataset \(2 rows\)"
    ):
        tasks.read_task(bad, "vqa", images=images)
    holes = datasets.Dataset.from_dict({"image": [picture(seed=0), None]}).cast_column("image", datasets.Image())
    (bad / "vqa.jsonl").write_text(json.dumps({**record, "idx_in_hf_dataset": 1}) + "\n")
    (item,) = tasks.read_task(bad, "vqa", images=holes)
    with pytest.raises(InputError, match=r"bad_vqa/vqa.jsonl, line 1: image row 1 has no picture in column 'image'"):
        item["image"].load()
