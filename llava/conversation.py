"""Prompt templates: how a LLaVA conversation becomes `input_ids` and `labels`.

A conversation is LLaVA's list of turns, `[{"from": "human" | "gpt" | "system", "value": str}, ...]`
("user"/"assistant" are accepted too). The `<video>` / `<image>` placeholders in human turns become one
`IMAGE_TOKEN_INDEX` each; the model splices the visual block in there. Labels are `IGNORE_INDEX`
everywhere except on what the model must learn to write.

Templates, chosen with `--version`:

- `plain`: for caption language models such as GPT-2. The sequence is the visual block, then the answer,
  then EOS: `[BOS] <placeholders> answer EOS`. Human text other than the placeholders is dropped (as
  LLaVA's plain template does); loss on the answer and its EOS only. BOS only where the tokenizer adds
  one by default. A text-only sample is just `answer EOS`, i.e. plain language modelling.
- `chat`: for chat models. Uses the tokenizer's own `chat_template` (`apply_chat_template`); a tokenizer
  without one falls back to `chatml` (with a warning).
- `chatml`: the built-in fallback, always: `<|im_start|>{role}\\n{content}{end_of_turn}\\n` per turn and
  `<|im_start|>assistant\\n` as the generation prompt. `end_of_turn` is `<|im_end|>` where the tokenizer
  has it as a token (Qwen), else the tokenizer's EOS, so that generation stops at a token it knows.

Chat labels. The whole conversation is rendered once and tokenized once, with character offsets, so the
ids are exactly what the tokenizer makes of the rendered text. Each answer's character span starts where
the conversation before it, rendered with the generation prompt, ends, and stops where the conversation
up to and including it ends (trailing whitespace excluded): the answer and the template's end-of-turn
token (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, EOS). Tokens overlapping a span carry labels. For a
template whose prefixes do not render as prefixes of the whole, the span is found by searching the
answer text and extended over a special token that directly follows it.
"""

from __future__ import annotations

import logging

from jinja2.exceptions import TemplateError

from .constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from .mm_utils import bos_prefix, count_placeholders, tokenize_with_placeholders

logger = logging.getLogger(__name__)

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}{{ end_of_turn }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def to_messages(conversations: list[dict]) -> list[dict]:
    """LLaVA turns (`from`/`value`) -> chat messages (`role`/`content`); unknown roles are an error."""
    messages = []
    for turn in conversations:
        speaker = turn.get("from", turn.get("role"))
        if speaker not in ROLES:
            raise ValueError(f"unknown speaker {speaker!r} in a conversation turn; expected one of {sorted(ROLES)}")
        content = turn.get("value", turn.get("content"))
        if not isinstance(content, str):
            raise ValueError(f"a {speaker!r} turn has no text value")
        messages.append({"role": ROLES[speaker], "content": content})
    return messages


def _without_final_answer(messages: list[dict]) -> list[dict]:
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


class Template:
    """Turns conversations into training ids/labels, and prompts into generation ids."""

    name: str

    def tokenize(self, conversations: list[dict], tokenizer) -> tuple[list[int], list[int]]:
        """`(input_ids, labels)` for training; labels only on the answers (and their end markers)."""
        raise NotImplementedError

    def prompt_ids(self, conversations: list[dict], tokenizer) -> list[int]:
        """Ids for generation: the conversation without its final answer (if it has one), ready for the
        model to write the next answer. Identical to the start of `tokenize`'s ids for the same turns."""
        raise NotImplementedError


class PlainTemplate(Template):
    name = "plain"

    def _ids(self, messages, tokenizer) -> tuple[list[int], list[int]]:
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the plain template ends every answer with EOS, but the tokenizer has no EOS token")
        ids = bos_prefix(tokenizer)
        labels = [IGNORE_INDEX] * len(ids)
        for message in messages:
            if message["role"] == "assistant":
                answer = tokenizer(message["content"], add_special_tokens=False).input_ids + [eos]
                ids += answer
                labels += answer
            else:  # human and system text is dropped; only the visual placeholders stay
                n = count_placeholders(message["content"])
                ids += [IMAGE_TOKEN_INDEX] * n
                labels += [IGNORE_INDEX] * n
        return ids, labels

    def tokenize(self, conversations, tokenizer):
        return self._ids(to_messages(conversations), tokenizer)

    def prompt_ids(self, conversations, tokenizer):
        return self._ids(_without_final_answer(to_messages(conversations)), tokenizer)[0]


class ChatTemplate(Template):
    def __init__(self, name: str, use_tokenizer_template: bool):
        self.name = name
        self.use_tokenizer_template = use_tokenizer_template
        self._warned = False

    def _renderer(self, tokenizer):
        """A function `(messages, add_generation_prompt) -> str` for this tokenizer."""
        if self.use_tokenizer_template and getattr(tokenizer, "chat_template", None):
            template, extra = None, {}
        else:
            if self.use_tokenizer_template and not self._warned:
                logger.warning("the tokenizer has no chat_template; --version %s uses the built-in chatml", self.name)
                self._warned = True
            template, extra = CHATML_TEMPLATE, {"end_of_turn": _chatml_end_of_turn(tokenizer)}

        def render(messages, add_generation_prompt=False):
            return tokenizer.apply_chat_template(
                messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
            )

        return render

    def tokenize(self, conversations, tokenizer):
        messages = to_messages(conversations)
        render = self._renderer(tokenizer)
        text = render(messages)
        spans = _answer_spans(messages, text, render, tokenizer)
        ids, offsets = tokenize_with_placeholders(text, tokenizer, offsets=True)
        labels = [
            token if token != IMAGE_TOKEN_INDEX and any(a < end and b > start for start, end in spans) else IGNORE_INDEX
            for token, (a, b) in zip(ids, offsets)
        ]
        return ids, labels

    def prompt_ids(self, conversations, tokenizer):
        render = self._renderer(tokenizer)
        text = render(_without_final_answer(to_messages(conversations)), add_generation_prompt=True)
        return tokenize_with_placeholders(text, tokenizer)


def _chatml_end_of_turn(tokenizer) -> str:
    if "<|im_end|>" in tokenizer.get_vocab():
        return "<|im_end|>"
    if tokenizer.eos_token is None:
        raise ValueError("the chatml template needs an end-of-turn token: the tokenizer has neither <|im_end|> nor EOS")
    return tokenizer.eos_token


def _rendered_prefix_length(render, messages, add_generation_prompt, text) -> int | None:
    """Length of `messages` rendered alone, if that rendering is a prefix of the whole `text`."""
    if not messages:
        return None
    try:
        prefix = render(messages, add_generation_prompt)
    except (TemplateError, ValueError):  # templates may refuse partial conversations (raise_exception)
        return None
    return len(prefix) if text.startswith(prefix) else None


def _answer_spans(messages, text, render, tokenizer) -> list[tuple[int, int]]:
    """Character spans of each assistant answer and its end-of-turn marker in the rendered `text`."""
    spans = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        content = message["content"].strip()
        start = _rendered_prefix_length(render, messages[:i], True, text)
        if start is None or start < cursor:
            start = text.find(content, cursor)
            if start < 0:
                raise ValueError(f"cannot find answer {i} in the rendered conversation: {content[:60]!r}")
        end = _rendered_prefix_length(render, messages[: i + 1], False, text)
        if end is not None:
            end = start + len(text[start:end].rstrip())  # the newline after an end-of-turn token is layout
        if end is None or end <= start:
            end = _end_after_content(text, start, content, tokenizer)
        spans.append((start, end))
        cursor = end
    return spans


def _end_after_content(text: str, start: int, content: str, tokenizer) -> int:
    """End of `content` found from `start`, extended over an end-of-turn special token right after it."""
    found = text.find(content, start)
    end = (found if found >= 0 else start) + len(content)
    specials = sorted(set(tokenizer.all_special_tokens) | {t.content for t in tokenizer.added_tokens_decoder.values()}, key=len)
    for token in reversed(specials):  # longest first
        if token and text.startswith(token, end):
            return end + len(token)
    return end


TEMPLATES: dict[str, Template] = {
    "plain": PlainTemplate(),
    "chat": ChatTemplate("chat", use_tokenizer_template=True),
    "chatml": ChatTemplate("chatml", use_tokenizer_template=False),
}


def get_template(version: str | Template) -> Template:
    """The template named by `--version` (a Template passes through)."""
    if isinstance(version, Template):
        return version
    try:
        return TEMPLATES[version]
    except KeyError:
        raise ValueError(f"unknown --version {version!r}; choose one of {sorted(TEMPLATES)}") from None
