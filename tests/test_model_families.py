"""Every family: text-only parity with stock transformers, a trainable video path, generation, caching."""

import pytest
import torch

from llava.model.builder import causal_lm_class
from llava.modeling.llava_arch import LlavaMetaForCausalLM
from llava.testing import tiny_vision_args

from model_helpers import FAMILIES, clip, left_padded, llava_model, prompt, right_padded, upstream_checkpoint


@pytest.mark.parametrize("family", FAMILIES)
def test_text_only_logits_equal_upstream(family, tmp_path, tower_dir):
    upstream = upstream_checkpoint(family, tmp_path)
    model = causal_lm_class(family).from_pretrained(tmp_path).eval()
    assert isinstance(model, type(upstream)) and isinstance(model, LlavaMetaForCausalLM)
    ids, mask = right_padded([list(range(3, 15)), list(range(20, 27))])
    valid = mask.bool()
    with torch.no_grad():
        expected = upstream(input_ids=ids, attention_mask=mask).logits
        before = model(input_ids=ids, attention_mask=mask).logits
        model.get_model().initialize_vision_modules(tiny_vision_args(tower_dir))
        after = model(input_ids=ids, attention_mask=mask).logits
    assert (before - expected)[valid].abs().max() <= 1e-5
    assert (after - expected)[valid].abs().max() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_video_batch_trains_adapter_not_tower(family, tmp_path, tower_dir):
    _, model = llava_model(family, tmp_path, tower_dir)
    model.train()
    ids, mask = right_padded([prompt(5, None, 7, 8, 9, 10), prompt(11, 12, 13)])
    out = model(
        input_ids=ids, attention_mask=mask, labels=ids.clamp(min=0).masked_fill(mask == 0, -100), images=[clip()]
    )
    assert torch.isfinite(out.loss)
    out.loss.backward()
    inner = model.get_model()

    def grads(module):
        return [p.grad for p in module.parameters()]

    for part in (inner.mm_projector, inner.vision_resampler, inner.mm_pos_embed):
        assert all(g is not None and g.abs().sum() > 0 for g in grads(part)), part
    assert all(g is None for g in grads(inner.vision_tower))
    assert all(not p.requires_grad for p in inner.vision_tower.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_with_video_returns_tokens(family, tmp_path, tower_dir):
    _, model = llava_model(family, tmp_path, tower_dir)
    ids = torch.tensor([prompt(5, None, 7)])
    out = model.generate(ids, images=[clip()], max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, 4)
    assert out.dtype == torch.long and int(out.min()) >= 0 and int(out.max()) < model.config.vocab_size


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_cached_decode_equals_uncached_forward(family, tmp_path, tower_dir):
    _, model = llava_model(family, tmp_path, tower_dir)
    video, steps = clip(), 5
    ids = torch.tensor([prompt(5, None, 7, 8)])
    out = model.generate(
        ids,
        images=[video],
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        return_dict_in_generate=True,
        output_logits=True,
        use_cache=True,
    )
    cached = torch.stack(out.logits, dim=1)  # (1, steps, vocab)
    full_ids = torch.cat([ids, out.sequences[:, :-1]], dim=1)
    with torch.no_grad():
        uncached = model(input_ids=full_ids, images=[video], use_cache=False).logits[:, -steps:]
    assert (cached - uncached).abs().max() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batch_generates_as_each_alone(family, tmp_path, tower_dir):
    _, model = llava_model(family, tmp_path, tower_dir)
    rows = [prompt(5, None, 7, 8, 9, 10, 11), prompt(12, None, 13)]
    videos = [clip(), clip()]
    ids, mask = left_padded(rows)
    together = model.generate(
        ids, attention_mask=mask, images=videos, max_new_tokens=4, min_new_tokens=4, do_sample=False
    )
    for row, video, got in zip(rows, videos, together):
        alone = model.generate(torch.tensor([row]), images=[video], max_new_tokens=4, min_new_tokens=4, do_sample=False)
        assert got.tolist() == alone[0].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_sdpa_by_default_eager_on_request_same_logits(family, tmp_path, tower_dir):
    from llava.model.builder import from_pretrained

    upstream_checkpoint(family, tmp_path)
    default, eager = from_pretrained(family, str(tmp_path)), from_pretrained(family, str(tmp_path), "eager")
    # transformers implements MPT's attention only eagerly; every other family gets SDPA.
    assert default.config._attn_implementation == ("eager" if family == "llava_mpt" else "sdpa")
    assert eager.config._attn_implementation == "eager"
    for model in (default, eager):
        torch.manual_seed(0)
        model.get_model().initialize_vision_modules(tiny_vision_args(tower_dir))
        model.eval()
    assert default.get_vision_tower().config._attn_implementation == "sdpa"
    ids, mask = right_padded([prompt(5, None, 6, 7, 8), prompt(9, None, 10)])
    clips = [clip(), clip()]
    with torch.no_grad():
        a = default(input_ids=ids, attention_mask=mask, images=clips).logits
        b = eager(input_ids=ids, attention_mask=mask, images=clips).logits
    valid = torch.zeros(a.shape[:2], dtype=torch.bool)
    valid[0, : 4 + 96], valid[1, : 2 + 96] = True, True
    assert (a - b)[valid].abs().max() <= 1e-4
