"""Captioning with a trained checkpoint: the one place where prompts meet `generate` and ids become text.

Every command that captions goes through here: `python -m llava.serve.cli` (a clip, an image or a set),
`llava.eval.captions` (greedy captions of an evaluation set), LLaVA's `llava.eval.run_llava`, the
demo's evaluation. A prompt is the ids training saw before the answer (the template's `prompt_ids`, with
IMAGE_TOKEN_INDEX placeholders); prompts are left-padded into one batch, their visual inputs passed in
placeholder order; decoding is greedy when the temperature is 0, and the text is cut at the template's
end-of-answer strings.
"""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from .constants import DEFAULT_IMAGE_TOKEN, DEFAULT_VIDEO_TOKEN

# End-of-turn tokens of the chat templates; generation stops at any of them that the vocabulary has.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus the end-of-turn tokens the tokenizer knows (a chat template ends answers with them)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab and vocab[t] not in ids]
    return ids


def cut_at_stop(text: str, stop_strings) -> str:
    """The text before the first stop string (the template's end-of-answer text), stripped."""
    for stop in stop_strings:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text.strip()


def single_turn_prompt(template, tokenizer, text: str, modality: str | None, prepare=None) -> list[int]:
    """Generation ids of one human turn: the visual placeholder of `modality` ('video', 'image' or None
    for none), then `text` on the next line, under `template` (a data.templates.Template). `prepare`, where
    given, rewrites the turns first (a checkpoint's prompt options, data.prompts.with_prompt_options)."""
    token = {"video": DEFAULT_VIDEO_TOKEN, "image": DEFAULT_IMAGE_TOKEN}.get(modality, "")
    turns = [{"from": "user", "value": f"{token}\n{text}" if token else text}]
    return template.prompt_ids(prepare(turns) if prepare else turns, tokenizer)


def _visual_inputs(entry) -> list[torch.Tensor]:
    if entry is None:
        return []
    return list(entry) if isinstance(entry, (list, tuple)) else [entry]


@torch.no_grad()
def generate_texts(
    model,
    tokenizer,
    prompts: list[list[int]],
    images: list,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float | None = 1.0,
    num_beams: int = 1,
    stop_strings=(),
) -> list[str]:
    """One batch: `prompts[i]` (ids with IMAGE_TOKEN_INDEX placeholders) with `images[i]` (a (T, 3, S, S)
    clip, a (3, S, S) or (1, 3, S, S) image, a list of them in placeholder order, or None for a text-only
    prompt) -> the generated texts.

    Greedy decoding when `temperature` is 0; otherwise sampling with `temperature` and `top_p`. An empty
    prompt starts from BOS (or EOS where there is none). Generation stops at EOS, at the end-of-turn
    tokens the vocabulary has, and at `stop_strings` (a template's end-of-answer text, such as `</s>` or
    `###`, which a tokenizer may spell with several tokens); the text is cut before a stop string.
    """
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} visual entries")
    # A text-only prompt under the plain template is empty (the human text is dropped): start it the way a
    # document starts, from BOS (GPT-2: its end-of-text token).
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prompts = [list(p) if len(p) else [start] for p in prompts]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    visual = [x.to(device) for entry in images for x in _visual_inputs(entry)]
    modalities = ["video" if x.ndim == 4 and x.shape[0] > 1 else "image" for x in visual]
    decoding = (
        {"do_sample": True, "temperature": float(temperature), "top_p": top_p}
        if temperature > 0
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )
    stops = [s for s in stop_strings if s]
    if stops:
        decoding.update(stop_strings=stops, tokenizer=tokenizer)
    # images= is always passed (None for text-only prompts): generate then returns only the new tokens.
    out = model.generate(
        ids,
        attention_mask=mask,
        images=visual or None,
        modalities=modalities or None,
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        pad_token_id=pad,
        eos_token_id=stop_token_ids(tokenizer),
        **decoding,
    )
    # A stop string that is a special token (`<|im_end|>`, a Llama `</s>`) ended generation as a stop id and
    # is skipped in decoding; one spelled with ordinary tokens (`###`, `</s>` for GPT-2) is cut here.
    return [cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), stops) for row in out]


def caption(
    model,
    tokenizer,
    template,
    prompts: list[list[int]],
    images: list,
    batch_size: int | None = None,
    progress: bool = False,
    **decoding,
) -> list[str]:
    """generate_texts over `prompts` and `images` in batches of `batch_size` (all in one where None),
    stopping at `template`'s end-of-answer strings; `decoding`: generate_texts' max_new_tokens,
    temperature, top_p, num_beams."""
    size = batch_size or max(len(prompts), 1)
    texts = []
    for start in tqdm(range(0, len(prompts), size), desc="captions", disable=not progress, file=sys.stderr):
        texts += generate_texts(
            model,
            tokenizer,
            prompts[start : start + size],
            images[start : start + size],
            stop_strings=template.stop_strings,
            **decoding,
        )
    return texts
