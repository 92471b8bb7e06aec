"""The training data pipeline on real clips, images and a real tokenizer written by the tests."""

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, HfArgumentParser

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.data.dataset import DataCollatorForSupervisedDataset, LazySupervisedDataset, MediaFolders, ensure_pad_token
from llava.data.prompts import PromptSettings
from llava.data.samples import load_samples
from llava.demo.synthetic import ClipSpec, make_dataset, render_frames
from llava.testing import IMAGE_SIZE, TINY_TOWERS
from llava.train.arguments import DataArguments
from llava.train.skipped_samples import SKIPPED_FILE, SkipTracker

from media_helpers import write_broken_inputs

FRAMES = 8


def visual_tokens(num_frames):
    """The seed grids' packer token counts: 64 fast + 32 slow for 8 frames, 16 + 8 for an image."""
    return 96 if num_frames == 8 else 24 * num_frames


def conv(human, answer):
    return [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]


@pytest.fixture
def tokenizer(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ensure_pad_token(tok)
    return tok


@pytest.fixture(scope="module")
def processor():
    return TINY_TOWERS["dinov2"]()[1]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Two good clips (make_dataset), one good image, and every kind of broken video."""
    root = tmp_path_factory.mktemp("media")
    data = make_dataset(root, num_train=2, num_val=0, num_frames=12, size=48)
    videos = root / "videos"
    images = root / "images"
    images.mkdir()
    Image.fromarray(render_frames(ClipSpec("blu", "quadrato", "alto"), 1, 48)[0]).save(images / "good.png")
    (images / "fake.png").write_text("not an image")

    write_broken_inputs(videos, videos / "train_00000.mp4")
    train = json.loads(Path(data["train"]).read_text())
    return {"root": root, "videos": str(videos), "images": str(images), "train": train}


def folders(media):
    return MediaFolders(video_folder=media["videos"], image_folder=media["images"])


def write_json(path, samples):
    path.write_text(json.dumps(samples, ensure_ascii=False))
    return str(path)


def dataset(path, tokenizer, media, processor, **kwargs):
    kwargs.setdefault("template", "plain")
    kwargs.setdefault("model_max_length", 256)
    kwargs.setdefault("visual_tokens_per_input", visual_tokens)
    return LazySupervisedDataset(
        path, tokenizer, num_frames=FRAMES, folders=folders(media), image_processor=processor, **kwargs
    )


MIXED = [
    {"id": "text", "conversations": conv("Scrivi una frase.", "un triangolo verde va verso sinistra")},
    {
        "id": "vid",
        "video": "train_00000.mp4",
        "conversations": conv("<video>\nDescrivi.", "un cerchio rosso si muove verso destra"),
    },
    {"id": "img", "image": "good.png", "conversations": conv("<image>\nCosa vedi?", "un quadrato blu")},
    {
        "id": "vid2",
        "video": "train_00001.mp4",
        "conversations": conv("Descrivi.", "un cerchio verde si muove verso il basso"),
    },
]


# --------------------------------------------------------------------------------------- mixing
def test_text_image_video_mix_in_one_file_and_one_batch(tmp_path, tokenizer, media, processor):
    ds = dataset(write_json(tmp_path / "mixed.json", MIXED), tokenizer, media, processor)
    items = [ds[i] for i in range(len(ds))]
    assert [i["modality"] for i in items] == [None, "video", "image", "video"]
    assert items[0]["pixel_values"] is None and IMAGE_TOKEN_INDEX not in items[0]["input_ids"]  # nothing fake
    assert items[1]["pixel_values"].shape == (FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert items[2]["pixel_values"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)  # a one-frame clip
    # 'vid2' had no placeholder: one is prepended, as LLaVA does
    assert (items[3]["input_ids"] == IMAGE_TOKEN_INDEX).sum() == 1

    batch = DataCollatorForSupervisedDataset(tokenizer)(items)
    assert batch["skipped"] == []
    assert len(batch["images"]) == 3 == int((batch["input_ids"] == IMAGE_TOKEN_INDEX).sum())
    assert batch["images"][0] is items[1]["pixel_values"] and batch["images"][1] is items[2]["pixel_values"]
    assert batch["modalities"] == ["video", "image", "video"]
    lengths = [len(i["input_ids"]) for i in items]
    assert batch["attention_mask"].sum(1).tolist() == lengths
    for row, item in enumerate(items):
        n = lengths[row]
        assert torch.equal(batch["input_ids"][row, :n], item["input_ids"])
        assert torch.equal(batch["labels"][row, :n], item["labels"])
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
        assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()


def test_plain_labels_in_the_dataset(tmp_path, tokenizer, media, processor):
    ds = dataset(write_json(tmp_path / "d.json", MIXED[1:2]), tokenizer, media, processor)
    item = ds[0]
    caption = tokenizer("un cerchio rosso si muove verso destra", add_special_tokens=False).input_ids
    assert item["input_ids"].tolist() == [IMAGE_TOKEN_INDEX] + caption + [tokenizer.eos_token_id]
    assert item["labels"].tolist() == [IGNORE_INDEX] + caption + [tokenizer.eos_token_id]


def test_chat_template_in_the_dataset(tmp_path, tokenizer, media, processor):
    ds = dataset(write_json(tmp_path / "d.json", MIXED[1:2]), tokenizer, media, processor, template="chatml")
    item = ds[0]
    labelled = item["labels"][item["labels"] != IGNORE_INDEX].tolist()
    assert tokenizer.decode(labelled) == "un cerchio rosso si muove verso destra" + tokenizer.eos_token
    assert item["labels"][item["input_ids"] == IMAGE_TOKEN_INDEX].tolist() == [IGNORE_INDEX]


# ------------------------------------------------------------------------------------ truncation
def test_truncation_cuts_text_and_keeps_the_visual_block(tmp_path, tokenizer, media, processor, caplog):
    long = " ".join(["un cerchio rosso si muove verso destra"] * 20)
    samples = [
        {"id": "v", "video": "train_00000.mp4", "conversations": conv("<video>", long)},
        {"id": "i", "image": "good.png", "conversations": conv("<image>", long)},
        {"id": "t", "conversations": conv("", long)},
        {"id": "short", "video": "train_00001.mp4", "conversations": conv("<video>", "un cerchio")},
    ]
    max_len = 120
    ds = dataset(write_json(tmp_path / "long.json", samples), tokenizer, media, processor, model_max_length=max_len)
    with caplog.at_level(logging.WARNING, logger="llava.data"):
        items = [ds[i] for i in range(4)]
    full = tokenizer(long, add_special_tokens=False).input_ids
    for item, visual in zip(items[:3], (96, 24, 0)):
        ids = item["input_ids"].tolist()
        assert ids.count(IMAGE_TOKEN_INDEX) == (1 if visual else 0)
        text = [i for i in ids if i != IMAGE_TOKEN_INDEX]
        assert len(text) + visual == max_len  # exactly filled, the visual block whole
        assert text == full[: len(text)]  # the end of the text is what goes
        assert item["truncated"] == len(full) + 1 + visual - max_len
        if visual:
            assert ids[0] == IMAGE_TOKEN_INDEX and item["labels"][0] == IGNORE_INDEX
    assert items[3]["truncated"] == 0 and items[3]["labels"][-1] == tokenizer.eos_token_id
    assert ds.num_truncated == 3
    assert "text tokens cut" in caplog.text


def test_visual_block_longer_than_the_context_is_refused(tmp_path, tokenizer, media, processor):
    path = write_json(tmp_path / "d.json", MIXED[1:2])
    with pytest.raises(ValueError, match="96 visual tokens"):
        dataset(path, tokenizer, media, processor, model_max_length=96)


# --------------------------------------------------------------------------------- validation
def test_placeholder_without_media_is_an_error_naming_the_sample(tmp_path):
    path = write_json(tmp_path / "bad.json", [{"id": "orphan-7", "conversations": conv("<video>\nDescrivi.", "x")}])
    with pytest.raises(ValueError, match="orphan-7.*placeholder.*no 'video' or 'image'"):
        load_samples(path)


def test_other_malformed_samples_are_errors(tmp_path):
    cases = [
        ({"id": "a", "video": "v.mp4", "conversations": conv("<video><video>", "x")}, "2 visual placeholders"),
        ({"id": "b", "video": "v.mp4", "image": "i.png", "conversations": conv("", "x")}, "both a video and an image"),
        ({"id": "c"}, "no 'conversations'"),
        ({"id": "d", "video": "v.mp4", "conversations": conv("", "<video>")}, "placeholder in an answer"),
    ]
    for sample, message in cases:
        with pytest.raises(ValueError, match=message):
            load_samples(write_json(tmp_path / "bad.json", [sample]))


def test_jsonl_and_comma_joined_paths(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(s) for s in MIXED[:2]) + "\n\n")
    write_json(tmp_path / "b.json", MIXED[2:])
    samples = load_samples(f"{tmp_path / 'a.jsonl'}, {tmp_path / 'b.json'}")
    assert [s["id"] for s in samples] == ["text", "vid", "img", "vid2"]
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_samples(f"{tmp_path / 'a.jsonl'},{tmp_path / 'missing.json'}")


def test_data_arguments_parse():
    (args,) = HfArgumentParser(DataArguments).parse_args_into_dataclasses(
        ["--data_path", "a.json,b.jsonl", "--video_folder", "v", "--max_skip_fraction", "0.2"]
    )
    assert (args.data_path, args.video_folder, args.image_folder, args.max_skip_fraction) == (
        "a.json,b.jsonl",
        "v",
        None,
        0.2,
    )


# --------------------------------------------------------------------------------- broken inputs
BROKEN = {
    "empty": ("video", "zero.mp4", "empty"),
    "truncated": ("video", "truncated.mp4", "failed"),
    "text": ("video", "text.mp4", "failed"),
    "missing": ("video", "missing.mp4", "does not exist"),
    "audio": ("video", "audio.mp4", "no video stream"),
    "fake_image": ("image", "fake.png", "cannot read image"),
    "missing_image": ("image", "nope.png", "does not exist"),
}


def test_broken_inputs_are_skipped_listed_once_and_limited(tmp_path, tokenizer, media, processor, caplog):
    samples = [
        {"id": name, modality: file, "conversations": conv("", "un cerchio")}
        for name, (modality, file, _) in BROKEN.items()
    ] + MIXED
    ds = dataset(write_json(tmp_path / "broken.json", samples), tokenizer, media, processor)
    items = [ds[i] for i in range(len(ds))]
    skipped = {i["id"]: i for i in items if i.get("skipped")}
    assert set(skipped) == set(BROKEN)  # every broken one, and nothing else
    for name, (_, file, reason) in BROKEN.items():
        item = skipped[name]
        assert set(item) == {"index", "id", "skipped", "reason", "path"}
        assert item["path"].endswith(file) and file in item["reason"] and reason in item["reason"]

    collate = DataCollatorForSupervisedDataset(tokenizer)
    batch = collate(items)
    assert batch["input_ids"].shape[0] == len(MIXED) and len(batch["images"]) == 3
    assert [s["id"] for s in batch["skipped"]] == list(BROKEN)
    everything_skipped = collate([skipped["empty"], skipped["audio"]])
    assert everything_skipped["input_ids"].shape == (0, 0) and everything_skipped["images"] == []
    assert len(everything_skipped["skipped"]) == 2

    # the tracker lists each unique sample once, even when it comes back (next epoch, resumed run)
    out = tmp_path / "run"
    tracker = SkipTracker(str(out), dataset_size=len(ds), max_fraction=1.0, rank=0)
    with caplog.at_level(logging.WARNING, logger="llava.data"):
        tracker.note(batch["skipped"])
        tracker.sync()
        tracker.note(batch["skipped"] + everything_skipped["skipped"])
        tracker.sync()
    assert tracker.count == len(BROKEN)
    lines = [json.loads(line) for line in (out / SKIPPED_FILE).read_text().splitlines()]
    assert [entry["id"] for entry in lines] == list(BROKEN)
    assert all(set(e) == {"index", "id", "path", "reason", "rank"} and e["rank"] == 0 for e in lines)
    assert sum("skipping sample" in r.message for r in caplog.records) == len(BROKEN)
    resumed = SkipTracker(str(out), dataset_size=len(ds), max_fraction=1.0)
    resumed.note(batch["skipped"])
    resumed.sync()
    assert resumed.count == len(BROKEN) and len((out / SKIPPED_FILE).read_text().splitlines()) == len(BROKEN)

    # past the limit: a clear error saying how many, the share, the limit, the list and the flag
    strict = SkipTracker(str(tmp_path / "strict"), dataset_size=len(ds), max_fraction=0.2)
    strict.note(batch["skipped"][:2])  # 2/11 = 18%: allowed
    strict.sync()
    strict.note(batch["skipped"][2:3])  # 3/11 = 27%
    with pytest.raises(RuntimeError) as error:
        strict.sync()
    message = str(error.value)
    assert "3 of 11" in message and "27.3%" in message and "20.0%" in message
    assert SKIPPED_FILE in message and "--max_skip_fraction" in message


# ---------------------------------------------------------------------------------------- padding
def test_ensure_pad_token_keeps_eos_learned(tokenizer_dir, tmp_path, media, processor):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert tok.pad_token is None  # like BAMBI's
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(tok), n_positions=64))
    pad = ensure_pad_token(tok, model)
    assert pad == tok.eos_token_id == model.config.pad_token_id
    assert model.get_input_embeddings().num_embeddings == len(tok)  # vocabulary untouched

    ds = dataset(write_json(tmp_path / "d.json", MIXED[:2]), tok, media, processor)
    batch = DataCollatorForSupervisedDataset(tok)([ds[0], ds[1]])
    for row in range(2):
        n = int(batch["attention_mask"][row].sum())
        eos_position = n - 1  # the answer's EOS, although it equals the pad id
        assert batch["input_ids"][row, eos_position] == tok.eos_token_id
        assert batch["labels"][row, eos_position] == tok.eos_token_id != IGNORE_INDEX
        assert batch["attention_mask"][row, eos_position] == 1


def test_ensure_pad_token_without_eos_adds_a_pad_and_keeps_the_head_tied(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.eos_token = None
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(tok), n_positions=64))
    pad = ensure_pad_token(tok, model)
    assert tok.pad_token == "<pad>" and pad == len(tok) - 1
    assert model.get_input_embeddings().num_embeddings == len(tok)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    existing = AutoTokenizer.from_pretrained(tokenizer_dir)
    existing.pad_token = "<|endoftext|>"
    assert ensure_pad_token(existing) == existing.pad_token_id  # a tokenizer with a pad keeps it


def test_dataloader_workers_carry_skips_to_the_main_process(tmp_path, tokenizer, media, processor):
    samples = MIXED + [{"id": "empty", "video": "zero.mp4", "conversations": conv("", "x")}]
    ds = dataset(write_json(tmp_path / "d.json", samples), tokenizer, media, processor)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, num_workers=2, collate_fn=DataCollatorForSupervisedDataset(tokenizer), timeout=60
    )
    batches = list(loader)
    assert sum(b["input_ids"].shape[0] for b in batches) == len(MIXED)
    assert sum(len(b["images"]) for b in batches) == 3
    assert [s["id"] for b in batches for s in b["skipped"]] == ["empty"]


# ---------------------------------------------------------------------- LLaVA-NeXT's data options
def test_yaml_mixture_reads_the_samples_each_strategy_names(tmp_path):
    def file(name, count, jsonl=False):
        samples = [{"id": f"{name}{i}", "conversations": conv("Scrivi.", f"frase {i}")} for i in range(count)]
        path = tmp_path / "parts" / f"{name}.{'jsonl' if jsonl else 'json'}"
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(json.dumps(s) for s in samples) if jsonl else json.dumps(samples))
        return path

    file("a", 10), file("b", 8, jsonl=True), file("c", 5), file("d", 20), file("e", 7)
    mixture = tmp_path / "mix.yaml"
    mixture.write_text(f"""datasets:
  - json_path: parts/a.json          # relative to the YAML file
    sampling_strategy: "first:30%"
  - json_path: {tmp_path}/parts/b.jsonl
    sampling_strategy: "end:2"
  - json_path: parts/c.json
    sampling_strategy: all
  - json_path: parts/d.json
    sampling_strategy: "random:25%"
  - json_path: parts/e.json
""")
    ids = [s["id"] for s in load_samples(str(mixture), seed=3)]
    assert ids[:3] == ["a0", "a1", "a2"]  # first 30% of 10
    assert ids[3:5] == ["b6", "b7"]  # the last 2
    assert ids[5:10] == [f"c{i}" for i in range(5)]
    drawn = ids[10:15]  # 25% of 20, drawn with the seed: the same on every rank and every restart
    assert len(drawn) == 5 == len(set(drawn)) and all(i.startswith("d") for i in drawn)
    assert [s["id"] for s in load_samples(str(mixture), seed=3)][10:15] == drawn
    assert ids[15:] == [f"e{i}" for i in range(7)]  # no strategy: all

    percent = tmp_path / "percent.yaml"  # LLaVA-NeXT rounds a share up
    percent.write_text("datasets:\n  - json_path: parts/e.json\n    sampling_strategy: first:50%\n")
    assert len(load_samples(str(percent))) == 4


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            "  - json_path: parts/missing.json\n",
            r"^datasets\[0\]: json_path parts/missing.json does not exist \(looked at \S+/parts/missing.json and parts/missing.json\) \(\S+/bad.yaml\)$",
        ),
        (
            "  - json_path: parts/a.json\n    sampling_strategy: middle:3\n",
            r"^datasets\[0\] \(parts/a.json\): sampling_strategy 'middle:3'; expected all, first:N, end:N or random:N \(N a count or a percentage\) \(\S+/bad.yaml\)$",
        ),
        (
            "  - json_path: parts/a.json\n    sampling_strategy: first:many\n",
            r"^datasets\[0\] \(parts/a.json\): sampling_strategy 'first:many': 'many' is not a count or a percentage \(\S+/bad.yaml\)$",
        ),
        ("  - sampling_strategy: all\n", r"^datasets\[0\] has no json_path \(\S+/bad.yaml\)$"),
    ],
)
def test_mixture_errors_name_the_file_and_the_entry(tmp_path, entry, message):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.json").write_text(json.dumps([{"id": "x", "conversations": conv("a", "b")}]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n" + entry)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_samples(str(bad))


def test_brace_form_names_several_files(tmp_path):
    for name in ("x", "y"):
        write_json(tmp_path / f"{name}.json", [{"id": name, "conversations": conv("a", "b")}])
    write_json(tmp_path / "z.json", [{"id": "z", "conversations": conv("a", "b")}])
    assert [s["id"] for s in load_samples(f"{tmp_path}/{{x,y}}.json,{tmp_path}/z.json")] == ["x", "y", "z"]


def test_time_instruction_and_start_end_tokens_in_the_human_turn(tmp_path, tokenizer, media, processor):
    from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN
    from llava.modeling.frame_sampling import sample_indices

    tokenizer.add_tokens([DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN], special_tokens=True)
    path = write_json(tmp_path / "d.json", MIXED[1:2])
    ds = dataset(
        path,
        tokenizer,
        media,
        processor,
        template="chatml",
        model_max_length=1024,
        prompt=PromptSettings(add_time_instruction=True, mm_use_im_start_end=True),
    )
    text = tokenizer.decode([t for t in ds[0]["input_ids"].tolist() if t != IMAGE_TOKEN_INDEX])
    # make_dataset's clips: 12 frames at 8 fps, read at 8 frames (segment centres)
    times = ",".join(f"{i / 8:.2f}s" for i in sample_indices(12, FRAMES))
    expected = (
        f"{DEFAULT_IM_START_TOKEN}{DEFAULT_IM_END_TOKEN}\nThe video lasts for 1.50 seconds, and 8 frames are uniformly "
        f"sampled from it. These frames are located at {times}.Please answer the following questions related to this video.\nDescrivi."
    )
    assert expected in text, text
    ids = ds[0]["input_ids"].tolist()
    at = ids.index(IMAGE_TOKEN_INDEX)
    assert ids[at - 1] == tokenizer.convert_tokens_to_ids(DEFAULT_IM_START_TOKEN)
    assert ids[at + 1] == tokenizer.convert_tokens_to_ids(DEFAULT_IM_END_TOKEN)


def test_pad_letterboxes_images_as_inference_does(tmp_path, tokenizer, media, processor):
    from types import SimpleNamespace

    from llava.mm_utils import process_images

    wide = Image.new("RGB", (96, 40), (200, 30, 30))
    wide.save(media["root"] / "images" / "wide.png")
    path = write_json(
        tmp_path / "d.json", [{"id": "w", "image": "wide.png", "conversations": conv("<image>", "rosso")}]
    )
    padded = dataset(path, tokenizer, media, processor, prompt=PromptSettings(image_aspect_ratio="pad"))[0]
    square = dataset(path, tokenizer, media, processor)[0]
    padded, square = padded["pixel_values"], square["pixel_values"]
    assert torch.equal(padded, process_images([wide], processor, SimpleNamespace(image_aspect_ratio="pad")))
    assert not torch.equal(padded, square)


def test_sample_lengths_count_words_and_visual_tokens(tmp_path, tokenizer, media, processor):
    ds = dataset(write_json(tmp_path / "mixed.json", MIXED), tokenizer, media, processor)
    lengths, has_media = ds.sample_lengths()
    assert has_media == [False, True, True, True]
    # words include the placeholder, which "vid2" gets prepended
    assert lengths == [3 + 6, 2 + 7 + visual_tokens(FRAMES), 3 + 3 + visual_tokens(1), 2 + 8 + visual_tokens(FRAMES)]
