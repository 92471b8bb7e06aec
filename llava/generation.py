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


def _left_padded_values(values: list, width: int) -> torch.Tensor | None:
    """The prompts' coordinate placeholder values (one float tensor per prompt, or None for a prompt without
    placeholders) left-padded with NaN to `width`, as the prompts are; None where no prompt has any."""
    if not any(v is not None for v in values):
        return None
    batch = torch.full((len(values), width), float("nan"))
    for row, v in enumerate(values):
        if v is not None and len(v):
            batch[row, width - len(v) :] = torch.as_tensor(v, dtype=torch.float32)
    return batch


def _answer_ids(row: torch.Tensor, ends: set[int]) -> list[int]:
    """A generated row up to its first end id (EOS, end of turn, padding): what decoding keeps when special
    tokens stay in the text."""
    ids = row.tolist()
    cut = next((k for k, token in enumerate(ids) if token in ends), len(ids))
    return ids[:cut]


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
    coordinate_values: list | None = None,
    keep_special_tokens: bool = False,
) -> list[str]:
    """One batch: `prompts[i]` (ids with IMAGE_TOKEN_INDEX placeholders) with `images[i]` (a (T, 3, S, S)
    clip, a (3, S, S) or (1, 3, S, S) image, a list of them in placeholder order, or None for a text-only
    prompt) -> the generated texts.

    Greedy decoding when `temperature` is 0; otherwise sampling with `temperature` and `top_p`. An empty
    prompt starts from BOS (or EOS where there is none). Generation stops at EOS, at the end-of-turn
    tokens the vocabulary has, and at `stop_strings` (a template's end-of-answer text, such as `</s>` or
    `###`, which a tokenizer may spell with several tokens); the text is cut before a stop string.

    `coordinate_values`: per prompt, the values of its coordinate placeholders (a float tensor as long as
    the prompt, NaN elsewhere; None for a prompt without any), as dataset items carry them.
    `keep_special_tokens`: the text keeps special tokens (a grounding model's bin tokens, `<WIDTH-012>`),
    cut at the first EOS, end-of-turn or padding token instead of skipping them.
    """
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} visual entries")
    # A text-only prompt under the plain template is empty (the human text is dropped): start it the way a
    # document starts, from BOS (GPT-2: its end-of-text token).
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    values = coordinate_values or [None] * len(prompts)
    values = [v if len(p) else None for p, v in zip(prompts, values)]
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
    values = _left_padded_values(values, width)
    if values is not None:
        decoding["coordinate_values"] = values.to(device)
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
    if keep_special_tokens:
        ends = {pad, *stop_token_ids(tokenizer)}
        texts = [tokenizer.decode(_answer_ids(row, ends), skip_special_tokens=False) for row in out]
    else:
        texts = [tokenizer.decode(row, skip_special_tokens=True) for row in out]
    return [cut_at_stop(text, stops) for text in texts]


def caption(
    model,
    tokenizer,
    template,
    prompts: list[list[int]],
    images: list,
    batch_size: int | None = None,
    progress: bool = False,
    coordinate_values: list | None = None,
    **decoding,
) -> list[str]:
    """generate_texts over `prompts` and `images` in batches of `batch_size` (all in one where None),
    stopping at `template`'s end-of-answer strings; `decoding`: generate_texts' max_new_tokens,
    temperature, top_p, num_beams, keep_special_tokens. `coordinate_values`: per prompt, its placeholders'
    values (generate_texts), or None where no prompt has any."""
    size = batch_size or max(len(prompts), 1)
    values = coordinate_values or [None] * len(prompts)
    texts = []
    for start in tqdm(range(0, len(prompts), size), desc="captions", disable=not progress, file=sys.stderr):
        texts += generate_texts(
            model,
            tokenizer,
            prompts[start : start + size],
            images[start : start + size],
            stop_strings=template.stop_strings,
            coordinate_values=values[start : start + size],
            **decoding,
        )
    return texts
