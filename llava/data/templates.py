"""Training's prompt templates: how a LLaVA conversation becomes `input_ids` and `labels` (labels on the
answers only), and how a prompt becomes the ids that generation continues. LLaVA's own `Conversation` and
`conv_templates`, which these templates render through, are llava/conversation.py.

A conversation is LLaVA's list of turns, `[{"from": "human" | "gpt" | "system", "value": str}, ...]`
("user"/"assistant" are accepted too). The `<video>` / `<image>` placeholders become one
`IMAGE_TOKEN_INDEX` each; the model splices the visual block in there. Labels are `IGNORE_INDEX`
everywhere except on what the model must learn to write.

Templates, chosen with `--version`:

- Every name of LLaVA's `conv_templates` (`vicuna_v1`, `llava_v1`, `qwen_1_5`, `chatml_direct`,
  `mistral_instruct`, `gemma_instruct`, ...). The sample's turns are appended to that `Conversation`,
  exactly as a LLaVA client appends its question, and the text is its `get_prompt()`, tokenized as
  `tokenizer_image_token` does (BOS where the tokenizer adds one by default, then the text between
  placeholders). So the prompt a client builds with `conv_templates[NAME]` is, id for id, the start of what
  `--version NAME` trains on. Labels cover each answer and the marker that ends it (`</s>`, `###`,
  `<|im_end|>`, `<end_of_turn>`, ...), which is also the template's `stop_strings`.
- `plain` (and LLaVA's alias `v0_plain`): for caption language models such as GPT-2. The sequence is the
  visual block, then the answer, then EOS: `[BOS] <placeholders> answer EOS`. Human text other than the
  placeholders is dropped (as LLaVA's plain training does); loss on the answer and its EOS only. BOS only
  where the tokenizer adds one by default. A text-only sample is just `answer EOS`, i.e. plain language
  modelling. `conv_templates["plain"]` renders the same: a client's `"<image>\\nQ"` becomes `"<image>"`.
- `chat`: for chat models. Uses the tokenizer's own `chat_template` (`apply_chat_template`); a tokenizer
  without one falls back to `chatml` (with a warning).
- `chatml`: the built-in fallback, always: `<|im_start|>{role}\\n{content}{end_of_turn}\\n` per turn and
  `<|im_start|>assistant\\n` as the generation prompt. `end_of_turn` is `<|im_end|>` where the tokenizer
  has it as a token (Qwen), else the tokenizer's EOS, so that generation stops at a token it knows.

Labels of `conv_templates` names. Each turn renders as an opening (all an open turn, `None`, renders:
`"ASSISTANT:"`, `"<|im_start|>assistant\\n"`) followed by its text and closing, so a prompt is always a
text prefix of the conversation it starts; an answer's labels are the tokens over its text and closing
(trailing whitespace excluded: the newline after `<|im_end|>` is layout).

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

from ..constants import (
    DEFAULT_IM_END_TOKEN,
    DEFAULT_IM_START_TOKEN,
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
    PLACEHOLDER_PATTERN,
)
from ..conversation import Conversation, Piece, SeparatorStyle, conv_templates
from ..mm_utils import bos_prefix, tokenize_with_placeholders, tokenizer_image_token

logger = logging.getLogger(__name__)

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def with_start_end_tokens(turns: list[dict]) -> list[dict]:
    """Each placeholder of the human turns as `<im_start><image><im_end>` (LLaVA's --mm_use_im_start_end):
    how a checkpoint trained with it reads its visual block, in training and at inference."""

    def wrap(match) -> str:
        return f"{DEFAULT_IM_START_TOKEN}{match.group(0)}{DEFAULT_IM_END_TOKEN}"

    return [
        {**t, "value": PLACEHOLDER_PATTERN.sub(wrap, t["value"])} if ROLES.get(t["from"]) == "user" else t
        for t in turns
    ]


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


def last_answer(conversations: list[dict]) -> str | None:
    """The text of a conversation's last answer (gpt/assistant turn): a sample's reference caption; None
    where it has none. Turns are read as they come (unvalidated files too): others are passed over."""
    answers = [
        turn.get("value", turn.get("content"))
        for turn in conversations
        if ROLES.get(turn.get("from", turn.get("role"))) == "assistant"
    ]
    return answers[-1] if answers else None


def _without_final_answer(messages: list[dict]) -> list[dict]:
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


# ------------------------------------------------------------------------------------ templates
class Template:
    """Turns conversations into training ids/labels, and prompts into generation ids."""

    name: str

    @property
    def stop_strings(self) -> list[str]:
        """Text that ends an answer: generation stops at it and strips it from the answer. Empty where an
        answer ends with a token that generation already stops at (EOS)."""
        return []

    def tokenize(self, conversations: list[dict], tokenizer) -> tuple[list[int], list[int]]:
        """`(input_ids, labels)` for training; labels only on the answers (and their end markers)."""
        raise NotImplementedError

    def keeps_text_of(self, role: str) -> bool:
        """Whether `tokenize` writes the text of a `role` turn ('user', 'assistant', 'system')."""
        return True

    def prompt_ids(self, conversations: list[dict], tokenizer) -> list[int]:
        """Ids for generation: the conversation without its final answer (if it has one), ready for the
        model to write the next answer. Identical to the start of `tokenize`'s ids for the same turns."""
        raise NotImplementedError


class ConversationTemplate(Template):
    """Training through one of LLaVA's `Conversation`s: the sample's turns are appended to a copy of it, as
    a client appends its question, and the text is its `get_prompt()`."""

    def __init__(self, name: str, conversation: Conversation):
        self.name = name
        self.conversation = conversation
        self._warned = False

    @property
    def stop_strings(self) -> list[str]:
        end = self.conversation.answer_end.strip()
        return [end] if end else []

    def build(self, conversations: list[dict], generation_prompt: bool = False) -> tuple[Conversation, int]:
        """The `Conversation` holding these turns, and the index of the first of them (a template may start
        with example turns of its own, which are never labelled). With `generation_prompt`, a final answer
        is dropped and the answer turn left open, as a client leaves it."""
        conv = self.conversation.copy()
        first = len(conv.messages)
        messages = to_messages(conversations)
        if generation_prompt:
            messages = _without_final_answer(messages)
        for message in messages:
            conv.append_message(self._role(message["role"], conv), message["content"])
        if generation_prompt:
            conv.append_message(conv.roles[1], None)
        return conv, first

    def render(self, conversations: list[dict], generation_prompt: bool = False) -> str:
        """The text of these turns under this template (what `tokenize` or `prompt_ids` tokenizes)."""
        return self.build(conversations, generation_prompt)[0].get_prompt()

    def _role(self, role: str, conv: Conversation) -> str:
        if role == "system":
            raise ValueError(
                f"--version {self.name} has its own system prompt; a conversation with a system turn needs "
                "--version chat or chatml"
            )
        return conv.roles[0] if role == "user" else conv.roles[1]

    def tokenize(self, conversations, tokenizer):
        conv, first = self.build(conversations)
        return self._encode(conv.pieces(), first, tokenizer)

    def prompt_ids(self, conversations, tokenizer):
        return tokenizer_image_token(self.render(conversations, generation_prompt=True), tokenizer)

    def _encode(self, pieces: list[Piece], first: int, tokenizer) -> tuple[list[int], list[int]]:
        text, spans = "", []
        for piece in pieces:
            if piece.answer_of is not None and piece.answer_of >= first:
                spans.append((len(text), len(text) + len(piece.text.rstrip())))
            text += piece.text
        ids, offsets = tokenize_with_placeholders(text, tokenizer, offsets=True)
        bos = bos_prefix(tokenizer)
        labels = [IGNORE_INDEX] * len(bos) + [
            token if token != IMAGE_TOKEN_INDEX and any(a < end and b > start for start, end in spans) else IGNORE_INDEX
            for token, (a, b) in zip(ids, offsets)
        ]
        ids = bos + ids
        self._check_prompts(text, spans, ids, tokenizer)
        return ids, labels

    def _check_prompts(self, text: str, spans, ids: list[int], tokenizer) -> None:
        """Warns (once) where the text before an answer, tokenized alone as a client tokenizes its prompt, is
        not the start of the training ids: a tokenizer that merges across the prompt's end (a `\\n\\n`
        token before a `\\n` + answer, say) would make generation prompts differ from training."""
        if self._warned:
            return
        for number, (start, _) in enumerate(spans):
            prompt = tokenizer_image_token(text[:start], tokenizer)
            if ids[: len(prompt)] != prompt:
                self._warned = True
                logger.warning(
                    "--version %s: the tokenizer splits the prompt before answer %d differently alone than inside "
                    "the training text (last prompt ids %s, training ids %s); generation prompts will not match "
                    "training exactly",
                    self.name,
                    number,
                    prompt[-3:],
                    ids[max(len(prompt) - 3, 0) : len(prompt)],
                )
                return


class PlainTemplate(ConversationTemplate):
    """`plain`: rendered by its `Conversation` (placeholders of human turns, then the answer), but each
    answer is tokenized on its own and closed with the EOS id. Tokenizing the joined text instead would
    change these ids: a sentencepiece-style tokenizer marks a word start differently after a special token
    than at the start of a text (a second answer after EOS), and the EOS has no text a template that does
    not know the tokenizer could render."""

    def _role(self, role, conv):
        return conv.roles[1] if role == "assistant" else conv.roles[0]  # system text is dropped like human text

    def keeps_text_of(self, role):
        return role == "assistant"  # of the other turns, only their visual placeholders

    def prompt_ids(self, conversations, tokenizer):
        conv, first = self.build(conversations, generation_prompt=True)
        return self._encode(conv.pieces(), first, tokenizer)[0]

    def _encode(self, pieces, first, tokenizer):
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the plain template ends every answer with EOS, but the tokenizer has no EOS token")
        ids = bos_prefix(tokenizer)
        labels = [IGNORE_INDEX] * len(ids)
        for piece in pieces:
            if piece.answer_of is None:  # the visual placeholders of human turns
                part = tokenize_with_placeholders(piece.text, tokenizer)
                ids += part
                labels += [IGNORE_INDEX] * len(part)
            else:
                answer = tokenizer(piece.text, add_special_tokens=False).input_ids + [eos]
                ids += answer
                labels += answer if piece.answer_of >= first else [IGNORE_INDEX] * len(answer)
        return ids, labels


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
    specials = sorted(
        set(tokenizer.all_special_tokens) | {t.content for t in tokenizer.added_tokens_decoder.values()}, key=len
    )
    for token in reversed(specials):  # longest first
        if token and text.startswith(token, end):
            return end + len(token)
    return end


# ------------------------------------------------------------------------------ --version names
def _conversation_template(name: str, conversation: Conversation) -> ConversationTemplate:
    kind = PlainTemplate if conversation.sep_style is SeparatorStyle.PLAIN else ConversationTemplate
    return kind(name, conversation)


TEMPLATES: dict[str, Template] = {
    **{name: _conversation_template(name, conversation) for name, conversation in conv_templates.items()},
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


def trained_version(config) -> str:
    """The template a checkpoint was trained with (`conv_template` in its config, recorded by training),
    `plain` for checkpoints that predate the record: the default prompt format at inference."""
    return getattr(config, "conv_template", None) or "plain"
