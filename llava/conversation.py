"""LLaVA's conversations, as LLaVA and LLaVA-NeXT define them and their clients (lmms-eval's LLaVA classes,
LLaVA's scripts) import them: `Conversation`, `SeparatorStyle`, `conv_templates`, `default_conversation` and
the `conv_*` objects behind them.

    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], "<image>\\nWhat is shown?")
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()

Every name of `conv_templates` is also a training `--version`: llava/data/templates.py tokenizes a sample's
turns through these same `Conversation`s, so that the prompt a client builds here is, id for id, the start
of what the model was trained on (`Conversation.pieces` says which stretches of the text are answers).
"""

from __future__ import annotations

import dataclasses
from enum import Enum, auto
from typing import Any, NamedTuple

from .constants import PLACEHOLDER_PATTERN


class SeparatorStyle(Enum):
    """LLaVA's turn layouts (the members LLaVA-NeXT defines; `QWEN` has no layout there nor here)."""

    SINGLE = auto()
    TWO = auto()
    MPT = auto()
    PLAIN = auto()
    CHATML = auto()
    LLAMA_2 = auto()
    LLAMA_3 = auto()
    QWEN = auto()
    GEMMA = auto()


# The field whose text closes an assistant turn, per style: what generation stops at.
_ANSWER_END_FIELD = {
    SeparatorStyle.SINGLE: "sep",
    SeparatorStyle.TWO: "sep2",
    SeparatorStyle.MPT: "sep",
    SeparatorStyle.PLAIN: "sep2",
    SeparatorStyle.CHATML: "sep",
    SeparatorStyle.LLAMA_2: "sep2",
    SeparatorStyle.LLAMA_3: "sep",
    SeparatorStyle.GEMMA: "sep",
}


class Piece(NamedTuple):
    """A stretch of a rendered conversation; `answer_of` is the index of the message whose answer text (and
    closing) it is, or None for prompt text."""

    text: str
    answer_of: int | None


def _message_text(message) -> str | None:
    """LLaVA's messages are text, None (an open turn), or `(text, image, mode)` tuples: the text counts."""
    return message[0] if isinstance(message, tuple) else message


@dataclasses.dataclass
class Conversation:
    """LLaVA's conversation: `conv = conv_templates[name].copy()`, `conv.append_message(conv.roles[0], q)`,
    `conv.append_message(conv.roles[1], None)`, `conv.get_prompt()`.

    A message whose role is `roles[1]` is an answer; any other is a user turn. Unlike LLaVA, an empty
    string is an (empty) answer; only None leaves the turn open.
    """

    system: str
    roles: tuple[str, str]
    messages: list[list[Any]]
    offset: int
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    version: str = "Unknown"

    def append_message(self, role: str, message) -> None:
        self.messages.append([role, message])

    def copy(self) -> Conversation:
        return dataclasses.replace(self, messages=[[role, message] for role, message in self.messages])

    def dict(self) -> dict:
        return {
            "system": self.system,
            "roles": self.roles,
            "messages": [[role, _message_text(message)] for role, message in self.messages],
            "offset": self.offset,
            "sep": self.sep,
            "sep2": self.sep2,
        }

    def get_prompt(self) -> str:
        return "".join(piece.text for piece in self.pieces())

    @property
    def answer_end(self) -> str:
        """The text that closes an answer in this layout ("" where none does)."""
        if self.sep_style not in _ANSWER_END_FIELD:
            raise ValueError(
                f"conversation {self.version!r}: SeparatorStyle.{self.sep_style.name} has no layout; use CHATML"
            )
        return getattr(self, _ANSWER_END_FIELD[self.sep_style]) or ""

    def pieces(self) -> list[Piece]:
        """The rendered conversation as prompt text and answer text, in order (`get_prompt` joins them)."""
        end_of_answer = self.answer_end
        pieces = [Piece(self._header(), None)]
        for index, (role, message) in enumerate(self.messages):
            text = _message_text(message)
            is_answer = role == self.roles[1]
            opening, rest = self._turn(index == 0, is_answer, role, "" if text is None else text, end_of_answer)
            pieces.append(Piece(opening, None))
            if text is not None:
                pieces.append(Piece(rest, index if is_answer else None))
        return [piece for piece in pieces if piece.text]

    def _header(self) -> str:
        style = self.sep_style
        if style in (SeparatorStyle.SINGLE, SeparatorStyle.TWO, SeparatorStyle.MPT):
            return self.system + self.sep
        if style is SeparatorStyle.CHATML:
            return self.system + self.sep + "\n" if self.system else ""
        if style is SeparatorStyle.LLAMA_3:
            return f"<|start_header_id|>system<|end_header_id|>\n\n{self.system.strip()}{self.sep}"
        if style is SeparatorStyle.PLAIN:
            return self.system
        return ""  # GEMMA has no system turn; LLAMA_2 wraps the system text into the first user turn

    def _turn(self, first: bool, is_answer: bool, role: str, text: str, end_of_answer: str) -> tuple[str, str]:
        """`(opening, rest)` of one turn: the opening is all an open turn renders, `rest` its text and closing."""
        style = self.sep_style
        end = end_of_answer if is_answer else self.sep
        if style in (SeparatorStyle.SINGLE, SeparatorStyle.TWO):
            return f"{role}:", f" {text}{end}"
        if style in (SeparatorStyle.MPT, SeparatorStyle.GEMMA):
            return role, text + end
        if style is SeparatorStyle.CHATML:
            return f"{role}\n", f"{text}{end}\n"
        if style is SeparatorStyle.LLAMA_3:  # Llama-3's chat format, which trims every message
            return f"<|start_header_id|>{role}<|end_header_id|>\n\n", text.strip() + end
        if style is SeparatorStyle.LLAMA_2:
            if is_answer:
                return "", f" {text} {end}"
            system = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n" if first and self.system else ""
            return "", f"{'' if first else self.sep}[INST] {system}{text} [/INST]"
        if style is SeparatorStyle.PLAIN:  # a caption LM sees the visual block, not the question
            return "", text + end if is_answer else "".join(PLACEHOLDER_PATTERN.findall(text))
        raise ValueError(f"conversation {self.version!r}: SeparatorStyle.{style.name} has no layout; use CHATML")


# ------------------------------------------------------------------ LLaVA's conv_templates
# Layouts and texts as LLaVA / LLaVA-NeXT define them, except `plain` (ours: the answer ends with the
# tokenizer's EOS, which the plain template adds; `sep` is LLaVA's "\n", which is not rendered and stays
# only for clients that read `conv.sep` as a stop keyword; its roles are named, where LLaVA's are empty,
# because a message's role is what says it is an answer) and `llava_llama_3` (Llama-3's format written
# out, without `<|begin_of_text|>`: the tokenizer adds that BOS itself, as it does for every template).
_VICUNA_V0_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
_VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_MMTAG_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant is able to understand the visual content that the user provides, and assist the user with "
    "a variety of tasks using natural language."
    "The visual content will be provided with the following format: <Image>visual content</Image>."
)
_LLAVA_SYSTEM = (
    "You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language."
)
_LLAMA_2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being "
    "safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or "
    "illegal content. Please ensure that your responses are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
    "something not correct. If you don't know the answer to a question, please don't share false information."
)
# vicuna_v0 starts with one example exchange (rendered in every prompt; `offset` = 2 hides it from chat UIs).
_VICUNA_V0_EXAMPLE = [
    ["Human", "What are the key differences between renewable and non-renewable energy sources?"],
    [
        "Assistant",
        "Renewable energy sources are those that can be replenished naturally in a relatively "
        "short amount of time, such as solar, wind, hydro, geothermal, and biomass. "
        "Non-renewable energy sources, on the other hand, are finite and will eventually be "
        "depleted, such as coal, oil, and natural gas. Here are some key differences between "
        "renewable and non-renewable energy sources:\n"
        "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable "
        "energy sources are finite and will eventually run out.\n"
        "2. Environmental impact: Renewable energy sources have a much lower environmental impact "
        "than non-renewable sources, which can lead to air and water pollution, greenhouse gas emissions, "
        "and other negative effects.\n"
        "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically "
        "have lower operational costs than non-renewable sources.\n"
        "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote "
        "locations than non-renewable sources.\n"
        "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different "
        "situations and needs, while non-renewable sources are more rigid and inflexible.\n"
        "6. Sustainability: Renewable energy sources are more sustainable over the long term, while "
        "non-renewable sources are not, and their depletion can lead to economic and social instability.\n",
    ],
]


def _single(system: str, version: str = "Unknown", messages=None, offset: int = 0) -> Conversation:
    return Conversation(
        system, ("Human", "Assistant"), messages or [], offset, SeparatorStyle.SINGLE, "###", None, version
    )


def _two(system: str, version: str) -> Conversation:
    return Conversation(system, ("USER", "ASSISTANT"), [], 0, SeparatorStyle.TWO, " ", "</s>", version)


def _llama_2(system: str, version: str = "llama_v2", sep: str = "<s>") -> Conversation:
    return Conversation(system, ("USER", "ASSISTANT"), [], 0, SeparatorStyle.LLAMA_2, sep, "</s>", version)


def _mpt(
    system: str, user: str = "<|im_start|>user\n", assistant: str = "<|im_start|>assistant\n", sep: str = "<|im_end|>"
) -> Conversation:
    return Conversation(system, (user, assistant), [], 0, SeparatorStyle.MPT, sep, None, "mpt")


def _qwen(system: str) -> Conversation:
    roles = ("<|im_start|>user", "<|im_start|>assistant")
    return Conversation(
        f"<|im_start|>system\n{system}", roles, [], 0, SeparatorStyle.CHATML, "<|im_end|>", None, "qwen"
    )


conv_vicuna_v0 = _single(_VICUNA_V0_SYSTEM, messages=_VICUNA_V0_EXAMPLE, offset=2)
conv_vicuna_v1 = _two(_VICUNA_V1_SYSTEM, "v1")
conv_llava_v0 = _single(_VICUNA_V0_SYSTEM)
conv_llava_v0_mmtag = _single(_MMTAG_SYSTEM, "v0_mmtag")
conv_llava_v1 = _two(_VICUNA_V0_SYSTEM, "v1")
conv_llava_v1_mmtag = _two(_MMTAG_SYSTEM, "v1_mmtag")
conv_llama_2 = _llama_2(_LLAMA_2_SYSTEM)
conv_llava_llama_2 = _llama_2(_LLAVA_SYSTEM)
conv_llava_llama_2_simple = _llama_2("Answer the questions about the visual content that the user provides.")
conv_llava_llama_2_mmtag = _llama_2(
    "Answer the questions about the visual content that the user provides."
    "The visual content will be provided with the following format: <Image>visual content</Image>.",
    "llama_v2_mmtag",
)
conv_mistral_instruct = _llama_2("", sep="")
conv_llava_llama_3 = Conversation(
    _LLAVA_SYSTEM, ("user", "assistant"), [], 0, SeparatorStyle.LLAMA_3, "<|eot_id|>", None, "llama_v3"
)
conv_mpt = _mpt(
    "<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. "
    "The assistant gives helpful and honest answers."
)
conv_mistral_orca = _mpt(
    "<|im_start|>system\nYou are MistralOrca, a large language model trained by Alignment Lab AI. "
    "Write out your reasoning step-by-step to be sure you get the right answers!"
)
conv_mistral_zephyr = _mpt("<|system|>\nYou are a helpful AI assistant.", "<|user|>\n", "<|assistant|>\n", "</s>")
conv_mistral_direct = _mpt("<|im_start|>system\nAnswer the questions.")
conv_chatml_direct = _mpt("<|im_start|>system\nAnswer the questions.")
conv_qwen = _qwen("You are a helpful assistant.")
conv_qwen_2_5 = _qwen("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
conv_gemma_instruct = Conversation(
    "",
    ("<start_of_turn>user\n", "<start_of_turn>model\n"),
    [],
    0,
    SeparatorStyle.GEMMA,
    "<end_of_turn>\n",
    None,
    "gemma",
)
conv_llava_plain = Conversation("", ("USER", "ASSISTANT"), [], 0, SeparatorStyle.PLAIN, "\n", None, "plain")

default_conversation = conv_vicuna_v0
conv_templates: dict[str, Conversation] = {
    "default": conv_vicuna_v0,
    "v0": conv_vicuna_v0,
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "llama_2": conv_llama_2,
    "mistral_instruct": conv_mistral_instruct,
    "mistral_orca": conv_mistral_orca,
    "mistral_zephyr": conv_mistral_zephyr,
    "mistral_direct": conv_mistral_direct,
    "plain": conv_llava_plain,
    "v0_plain": conv_llava_plain,
    "chatml_direct": conv_chatml_direct,
    "llava_v0": conv_llava_v0,
    "llava_v0_mmtag": conv_llava_v0_mmtag,
    "llava_v1": conv_llava_v1,
    "llava_v1_mmtag": conv_llava_v1_mmtag,
    "llava_llama_2": conv_llava_llama_2,
    "llava_llama_3": conv_llava_llama_3,
    "llava_llama_2_simple": conv_llava_llama_2_simple,
    "llava_llama_2_mmtag": conv_llava_llama_2_mmtag,
    "llava_mistral_instruct": conv_mistral_instruct,
    "mpt": conv_mpt,
    "qwen_1_5": conv_qwen,
    "qwen_2": conv_qwen,
    "qwen_2_5": conv_qwen_2_5,
    "gemma_instruct": conv_gemma_instruct,
}
