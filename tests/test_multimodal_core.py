"""The splice: mixed batches, labels at visual positions, padding sides, truncation, input checks."""

import pytest
import torch

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.testing import IMAGE_SIZE

from model_helpers import IMAGE_TOKENS, VIDEO_TOKENS, clip, llava_model, prompt, right_padded


@pytest.fixture
def gpt2(tmp_path, tower_dir):
    return llava_model("llava_gpt2", tmp_path, tower_dir)[1]


def expected_labels(row, visual_lengths):
    """The label row the splice must produce: text labels kept, IGNORE_INDEX over each visual block."""
    lengths = iter(visual_lengths)
    out = []
    for token in row:
        out += [IGNORE_INDEX] * next(lengths) if token == IMAGE_TOKEN_INDEX else [token]
    return out


def test_mixed_batch_text_image_video(gpt2):
    rows = [prompt(3, 4, 5, 6, 7), prompt(8, None, 9, 10), prompt(None, 11, 12, 13, 14, 15)]
    ids, mask = right_padded(rows)
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    image = torch.randn(3, IMAGE_SIZE, IMAGE_SIZE)
    visual = [image, clip()]

    _, positions, new_mask, _, embeds, new_labels = gpt2.prepare_inputs_labels_for_multimodal(
        ids, None, mask, None, labels, visual, ["image", "video"]
    )
    lengths = [5, 3 + IMAGE_TOKENS, 5 + VIDEO_TOKENS]
    assert embeds.shape[:2] == (3, max(lengths))
    for b, (row, n) in enumerate(zip(rows, lengths)):
        visual_lengths = [IMAGE_TOKENS] if b == 1 else [VIDEO_TOKENS]
        assert new_labels[b, :n].tolist() == expected_labels(row, visual_lengths)
        assert (new_labels[b, n:] == IGNORE_INDEX).all()
        assert new_mask[b].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert positions[b, :n].tolist() == list(range(n))

    with torch.no_grad():
        batch_logits = gpt2(input_ids=ids, attention_mask=mask, images=visual, modalities=["image", "video"]).logits
        alone = gpt2(input_ids=torch.tensor([rows[0]])).logits
    assert (batch_logits[0, :5] - alone[0]).abs().max() <= 1e-5


def test_visual_tokens_are_spliced_at_the_placeholder(gpt2):
    video = clip()
    ids = torch.tensor([prompt(3, 4, None, 5)])
    _, _, _, _, embeds, _ = gpt2.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, [video])
    (features,) = gpt2.encode_videos([video])
    text = gpt2.get_input_embeddings()(torch.tensor([3, 4, 5]))
    assert torch.equal(embeds[0, 2 : 2 + VIDEO_TOKENS], features)
    assert torch.equal(embeds[0, :2], text[:2]) and torch.equal(embeds[0, -1], text[2])


def test_text_is_truncated_never_the_visual_block(gpt2):
    limit = gpt2.config.n_positions
    text_after = list(range(3, 3 + 200))
    row = prompt(7, None, *[t % 120 + 3 for t in text_after])
    ids = torch.tensor([row])
    labels = ids.clone()
    video = clip()
    _, _, mask, _, embeds, new_labels = gpt2.prepare_inputs_labels_for_multimodal(
        ids, None, None, None, labels, [video]
    )
    assert embeds.shape[1] == limit == mask.sum()
    (features,) = gpt2.encode_videos([video])
    assert torch.equal(embeds[0, 1 : 1 + VIDEO_TOKENS], features)
    kept_text = limit - VIDEO_TOKENS - 1
    assert new_labels[0].tolist() == [7] + [IGNORE_INDEX] * VIDEO_TOKENS + row[2 : 2 + kept_text]
    assert gpt2.get_model().mm_truncated_sequences == 1
    with torch.no_grad():
        out = gpt2(input_ids=ids, labels=labels, images=[video])
    assert out.logits.shape[1] == limit and torch.isfinite(out.loss)


def test_visual_block_longer_than_positions_is_refused(tmp_path, tower_dir):
    gpt2 = llava_model("llava_gpt2", tmp_path, tower_dir)[1]
    gpt2.config.n_positions = 64  # fewer positions than one clip's 96 tokens
    with pytest.raises(ValueError, match="96 visual tokens do not fit"):
        gpt2(input_ids=torch.tensor([prompt(3, None, 4)]), images=[clip()])


def test_placeholder_count_must_match_visual_inputs(gpt2):
    with pytest.raises(ValueError, match="2 visual placeholders but 1 visual inputs"):
        gpt2(input_ids=torch.tensor([prompt(3, None, 4, None)]), images=[clip()])


def test_multi_frame_input_marked_image_is_refused(gpt2):
    with pytest.raises(ValueError, match="marked 'image'"):
        gpt2(input_ids=torch.tensor([prompt(3, None)]), images=[clip()], modalities=["image"])


def test_text_only_batch_passes_through_untouched(gpt2):
    ids = torch.tensor([[3, 4, 5]])
    out = gpt2.prepare_inputs_labels_for_multimodal(ids, None, None, None, ids, [])
    assert out[0] is ids and out[4] is None and out[5] is ids


def test_batched_video_tensor_is_accepted(gpt2):
    ids, mask = right_padded([prompt(3, None, 4), prompt(None, 5, 6, 7)])
    videos = torch.stack([clip(), clip()])  # (B, T, 3, S, S): one clip per sample
    with torch.no_grad():
        stacked = gpt2(input_ids=ids, attention_mask=mask, images=videos).logits
        listed = gpt2(input_ids=ids, attention_mask=mask, images=list(videos)).logits
    assert torch.equal(stacked, listed)


def test_fresh_visual_tokens_start_at_the_embedding_scale(gpt2):
    # zero-initialized position tables and a projector whose outputs match the LM's input embeddings:
    # visual tokens must not drown the positions the LM adds to them
    inner = gpt2.get_model()
    assert all(torch.count_nonzero(p) == 0 for p in inner.mm_pos_embed.parameters())
    with torch.no_grad():
        (tokens,) = gpt2.encode_videos([clip()])
    target = float(gpt2.get_input_embeddings().weight.std())
    assert 0.5 * target < float(tokens.std()) < 2 * target
