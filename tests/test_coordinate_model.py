"""Coordinate tokens in the model (LLaVA-ST's LAPE, llava/modeling/coordinate_embedding.py): ids past the
word vocabulary that the tokenizer writes out, placeholders embedded from their values, the loss over
words and bins by hand, visual tokens placed in coordinate units, generation that writes and reads bins,
and checkpoints of every family that reload with no flags."""

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.eval import export_lm, export_remote
from llava.model.builder import causal_lm_class, load_pretrained_model
from llava.modeling.coordinate_tokens import PLACEHOLDERS, add_coordinate_tokens, placeholder_ids
from llava.modeling.coordinates import BINS, bin_token, interpolate
from llava.testing import TINY_LANGUAGE_CONFIGS, tiny_vision_args

from model_helpers import FAMILIES, clip

BOX_QUESTION = "where is the red circle? [<WIDTH-INPUT><HEIGHT-INPUT>]"
BOX_ANSWER = " [<WIDTH-OUTPUT><HEIGHT-OUTPUT><WIDTH-OUTPUT><HEIGHT-OUTPUT>] {<TEMP-OUTPUT><TEMP-OUTPUT>}"
VARIABLES = {
    "spatial_width_input_locations": [0.3],
    "spatial_height_input_locations": [0.7],
    "spatial_width_output_locations": [0.1, 0.55],
    "spatial_height_output_locations": [0.2, 0.605],
    "temporal_output_locations": [0.25, 0.75],
}


def grounding_model(family, folder, tokenizer_dir, tower_dir):
    """A llava model of `family` with a tower and coordinate tokens, and its tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = TINY_LANGUAGE_CONFIGS[family]()
    config.vocab_size = len(tokenizer)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder / "stock")
    model = causal_lm_class(family).from_pretrained(folder / "stock")
    model.get_model().initialize_vision_modules(tiny_vision_args(tower_dir))
    assert add_coordinate_tokens(model, tokenizer)
    return model, tokenizer


def sample(tokenizer):
    """(input_ids, labels) of one grounding sample: the clip, the question, the answer (labelled)."""
    question, answer = tokenizer(BOX_QUESTION)["input_ids"], tokenizer(BOX_ANSWER)["input_ids"]
    ids = [IMAGE_TOKEN_INDEX, *question, *answer]
    labels = [IGNORE_INDEX] * (1 + len(question)) + answer
    return torch.tensor([ids]), torch.tensor([labels])


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory, tokenizer_dir, tower_dir):
    return grounding_model("llava_gpt2", tmp_path_factory.mktemp("gpt2"), tokenizer_dir, tower_dir)


def test_bin_tokens_follow_the_word_vocabulary_in_the_model_and_the_tokenizer(gpt2):
    model, tokenizer = gpt2
    words = model.config.vocab_size
    assert model.get_input_embeddings().num_embeddings == words
    for axis_index, axis in enumerate(("TEMP", "HEIGHT", "WIDTH")):
        for k in (0, 42, BINS - 1):
            token_id = words + axis_index * BINS + k
            assert tokenizer.convert_tokens_to_ids(bin_token(axis, k)) == token_id
            assert tokenizer.decode([token_id]) == bin_token(axis, k)
    ids = placeholder_ids(model.config)
    assert set(ids) == set(PLACEHOLDERS) and all(i < words for i in ids.values())
    assert not add_coordinate_tokens(model, tokenizer)  # a second call finds them


def test_a_coordinate_round_trip_stays_within_half_a_bin(gpt2):
    """value -> the bin token the model would write -> its text -> its embedding -> the value read back."""
    model, tokenizer = gpt2
    tables = model.get_model().mm_coordinates
    words = model.config.vocab_size
    for value in (0.0, 0.013, 0.5, 0.777, 1.0):
        k = round(value * (BINS - 1))
        text = tokenizer.decode([words + 2 * BINS + k])  # a width bin
        assert text == f"<WIDTH-{k:03d}>"
        token_id = tokenizer.convert_tokens_to_ids(text)
        with torch.no_grad():
            embedded = model.embed_text(torch.tensor([[token_id]]))[0, 0]
            read = int(torch.cdist(embedded[None], tables.inputs["width"].weight)[0].argmin())
        assert abs(read / (BINS - 1) - value) <= 0.5 / (BINS - 1) + 1e-9


def test_a_placeholder_is_embedded_as_its_two_nearest_bins_mixed(gpt2):
    model, tokenizer = gpt2
    question = tokenizer(BOX_QUESTION)["input_ids"]
    values = torch.full((1, len(question)), math.nan)
    ids = placeholder_ids(model.config)
    values[0, question.index(ids["<WIDTH-INPUT>"])] = 0.3
    values[0, question.index(ids["<HEIGHT-INPUT>"])] = 0.7
    with torch.no_grad():
        embeds = model.embed_text(torch.tensor([question]), values)[0]
        tables = model.get_model().mm_coordinates
        # 0.3 of 99 bins: 29.7, so bins 29 and 30 weighted 0.3 and 0.7
        width = 0.3 * tables.inputs["width"].weight[29] + 0.7 * tables.inputs["width"].weight[30]
    torch.testing.assert_close(embeds[question.index(ids["<WIDTH-INPUT>"])], width)
    torch.testing.assert_close(
        embeds[question.index(ids["<HEIGHT-INPUT>"])],
        interpolate(torch.tensor([0.7]), tables.inputs["height"].weight)[0],
    )
    words = model.get_input_embeddings()(torch.tensor(question))
    other = [i for i, t in enumerate(question) if t not in ids.values()]
    torch.testing.assert_close(embeds[other], words[other])
    with pytest.raises(ValueError, match="has no value: pass the sample's variables"):
        model.embed_text(torch.tensor([question]))


def test_the_loss_is_cross_entropy_over_words_and_bins_with_two_hot_targets_by_hand(gpt2):
    model, tokenizer = gpt2
    ids, labels = sample(tokenizer)
    frames = clip()
    out = model(input_ids=ids, labels=labels, images=[frames], variables=[VARIABLES])
    logits = out.logits[0].double()
    words, placeholders = model.config.vocab_size, placeholder_ids(model.config)
    assert logits.shape[-1] == words + 3 * BINS
    # the logits' positions: the clip's 96 tokens stand where the placeholder was
    answer = labels[0, 1:].tolist()
    shifted = [IGNORE_INDEX] * 96 + answer  # labels of the spliced sequence, position by position
    outputs = {placeholders[p]: (axis, key) for p, (axis, key) in PLACEHOLDERS.items() if p.endswith("-OUTPUT>")}
    queue = {token: list(VARIABLES[key]) for token, (_, key) in outputs.items()}
    first = {token: words + ("TEMP", "HEIGHT", "WIDTH").index(axis) * BINS for token, (axis, _) in outputs.items()}
    total, count = 0.0, 0
    for position in range(len(shifted) - 1):
        target = shifted[position + 1]
        if target == IGNORE_INDEX:
            continue
        log_p = torch.log_softmax(logits[position], -1)
        if target in outputs:
            value = queue[target].pop(0) * (BINS - 1)
            low, weight = math.floor(value), value - math.floor(value)
            high = math.ceil(value)
            total -= (1 - weight) * log_p[first[target] + low] + weight * log_p[first[target] + high]
        else:
            total -= log_p[target]
        count += 1
    assert out.loss.item() == pytest.approx(total.item() / count, rel=1e-5)
    out.loss.backward()
    assert model.get_model().mm_coordinates.outputs["temp"].weight.grad.abs().sum() > 0


def test_visual_tokens_sit_at_their_regions_centres_in_coordinate_units(gpt2):
    model, _ = gpt2
    inner = model.get_model()
    tables = inner.mm_coordinates
    positions = inner.vision_resampler.positions(8)  # fast 8x2x4 then slow 2x4x4 over 8 x 8 x 8 patches
    with torch.no_grad():
        placed = tables.visual_positions(positions, (8, 8, 8))

        def at(time, row, column):
            mean = {a: (tables.inputs[a].weight + tables.outputs[a].weight) / 2 for a in ("temp", "height", "width")}
            return sum(interpolate(torch.tensor([v]), mean[a])[0] for a, v in zip(mean, (time, row, column)))

        # the first fast token: frame 0 of 8 (centre 1/16), rows 0-3 of 8 (centre 1/4), columns 0-1 (1/8)
        torch.testing.assert_close(placed[0], at(1 / 16, 1 / 4, 1 / 8))
        # the first slow token: frames 0-3 (centre 1/4), rows 0-1 (1/8), columns 0-1 (1/8)
        torch.testing.assert_close(placed[64], at(1 / 4, 1 / 8, 1 / 8))
        # an image, one frame: its time is the middle of the clip it is
        torch.testing.assert_close(
            tables.visual_positions(inner.vision_resampler.positions(1), (1, 8, 8))[0], at(0.5, 1 / 4, 1 / 8)
        )


def only_bins(words):
    """A logits processor that leaves the bins alone in the running: generation then writes coordinates."""

    def process(input_ids, scores):
        scores = scores.clone()  # the raw logits stay as the model gave them (output_logits)
        scores[:, :words] = -math.inf
        return scores

    return LogitsProcessorList([process])


def test_generation_writes_bins_and_reads_them_back_as_its_own_input(gpt2):
    model, tokenizer = gpt2
    model.eval()
    words = model.config.vocab_size
    question = sample(tokenizer)[0][:, : 1 + len(tokenizer(BOX_QUESTION)["input_ids"])]
    frames, steps = clip(), 4
    ask = {k: v for k, v in VARIABLES.items() if "input" in k}
    out = model.generate(
        question,
        images=[frames],
        variables=[ask],
        max_new_tokens=steps,
        do_sample=False,
        logits_processor=only_bins(words),
        return_dict_in_generate=True,
        output_logits=True,
    )
    written = out.sequences
    assert written.shape == (1, steps) and bool((written >= words).all())
    assert all(t.startswith("<") and t.endswith(">") for t in tokenizer.convert_ids_to_tokens(written[0]))
    assert tokenizer.batch_decode(written)[0].count("<") == steps  # each a bin token, read by the tokenizer
    # The cached steps embedded the bins they wrote as one uncached forward embeds them.
    full = torch.cat([question, written[:, :-1]], dim=1)
    values = torch.full(full.shape, math.nan)
    ids = placeholder_ids(model.config)
    values[full == ids["<WIDTH-INPUT>"]] = 0.3
    values[full == ids["<HEIGHT-INPUT>"]] = 0.7
    with torch.no_grad():
        uncached = model(input_ids=full, images=[frames], coordinate_values=values).logits[:, -steps:]
    cached = torch.stack(out.logits, dim=1)
    assert cached.shape[-1] == words + 3 * BINS
    assert (cached - uncached).abs().max() <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_and_reloads_its_coordinate_tokens_with_no_flags(
    family, tmp_path, tokenizer_dir, tower_dir
):
    model, tokenizer = grounding_model(family, tmp_path, tokenizer_dir, tower_dir)
    ids, labels = sample(tokenizer)
    frames = clip()
    model.train()
    loss = model(input_ids=ids, labels=labels, images=[frames], variables=[VARIABLES]).loss
    loss.backward()
    tables = model.get_model().mm_coordinates
    assert all(t.weight.grad is not None for t in [*tables.inputs.values(), *tables.outputs.values()])
    model.save_pretrained(tmp_path / "llava")
    tokenizer.save_pretrained(tmp_path / "llava")
    again = causal_lm_class(family).from_pretrained(tmp_path / "llava").eval()
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids, images=[frames], variables=[VARIABLES]).logits
        torch.testing.assert_close(again(input_ids=ids, images=[frames], variables=[VARIABLES]).logits, expected)
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "llava")
    assert reloaded.convert_tokens_to_ids("<TEMP-000>") == again.config.vocab_size


def test_a_checkpoint_with_coordinate_tokens_loads_with_no_flags_and_exports(gpt2, tmp_path):
    model, tokenizer = gpt2
    model.eval()
    model.save_pretrained(tmp_path / "llava")
    tokenizer.save_pretrained(tmp_path / "llava")
    loaded_tokenizer, loaded, _, _ = load_pretrained_model(str(tmp_path / "llava"), device="cpu")
    ids, _ = sample(tokenizer)
    frames = clip()
    with torch.no_grad():
        expected = model(input_ids=ids, images=[frames], variables=[VARIABLES]).logits
        torch.testing.assert_close(loaded(input_ids=ids, images=[frames], variables=[VARIABLES]).logits, expected)
    assert loaded_tokenizer.convert_tokens_to_ids("<WIDTH-099>") == loaded.config.vocab_size + 3 * BINS - 1

    # With its code (the BabyLM pipeline's multimodal loader): the same logits, bins and placeholders read
    remote_folder = export_remote.export(str(tmp_path / "llava"), str(tmp_path / "remote"))
    remote = AutoModelForCausalLM.from_pretrained(remote_folder, trust_remote_code=True).eval()
    assert (Path(remote_folder) / "coordinate_embedding.py").is_file()  # the code travels with the weights
    text = torch.tensor([tokenizer("il cerchio")["input_ids"] + [model.config.vocab_size + 5]])
    with torch.no_grad():
        for case in ({"input_ids": text}, {"input_ids": ids, "images": [frames], "variables": [VARIABLES]}):
            ours = model(**case).logits
            torch.testing.assert_close(remote(**case).logits[..., : ours.shape[-1]], ours)

    # The language model alone (the BabyLM text tasks): the words' logits, no coordinate tables
    stock = export_lm.export(str(tmp_path / "llava"), str(tmp_path / "lm"))
    assert stock.config.vocab_size == model.config.vocab_size
    assert not any("mm_coordinates" in key for key in stock.state_dict())
    words = tokenizer("il cerchio rosso")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(
            stock(input_ids=torch.tensor([words])).logits,
            model(input_ids=torch.tensor([words])).logits[..., : model.config.vocab_size],
        )
