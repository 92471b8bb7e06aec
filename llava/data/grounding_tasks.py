"""LLaVA-ST's grounding tasks as training samples: one annotation -> one sample, its coordinates written as
numbers in the text (form b of grounded_samples.py, which makes them placeholders and `variables` when
the sample is read).

| builder | task | the question gives | the answer gives |
| --- | --- | --- | --- |
| `rec` | referring expression comprehension | an expression | its box `[x1, y1, x2, y2]` |
| `reg` | referring expression generation | a box | the expression |
| `tvg` | temporal video grounding | a sentence | its span `{s, e}` |
| `tr` | temporal referring | a span | what happens in it |
| `stvg` | spatio-temporal video grounding | a sentence | its span, then `{t}: [box]` per frame |
| `svg` | spatial video grounding | a span and a sentence | `{t}: [box]` per frame |
| `elc` | event localization and captioning | a start `{t}` and the subject's box | `Ends in {e}, caption Object bounding box: {t}: [box], ...` |
| `dvc` | dense video captioning | nothing more | `{s, e}, caption.` per event |
| `dgc` | dense grounded captioning | nothing more | the caption, each phrase followed by its box |

The questions and answer layouts are LLaVA-ST's (its inference prompts, its demo's queries and the
layouts its answer parsers read); `elc` is LLaVA-ST's ELC (the end, the event and the subject's boxes from
a start and a region), `dvc` the plain list of spans and captions. Every value is a fraction in [0, 1] of
the width, the height or the clip's duration; numbers are written to 3 decimals, as LLaVA-ST writes them.

Prompts come from `PROMPTS[language][task]`, a list of phrasings (`variant` picks one, modulo its
length). English has every task; Italian has REC, TVG and STVG. A language is added as a row of PROMPTS
(and of ANSWERS for the tasks whose answers have words).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ..constants import DEFAULT_IMAGE_TOKEN, DEFAULT_VIDEO_TOKEN

_PER_FRAME = "Please give the spatial bounding box corresponding to each timestamp in the time period."
_WHERE_IN_VIDEO = "Please describe the location of the corresponding subject/object in this video."

PROMPTS: dict[str, dict[str, list[str]]] = {
    "en": {
        "rec": [
            "Where can I find {event} in this image?",
            "What part of this image contains {event}?",
            "Where does {event} appear in this image?",
            "Where is {event} situated within this image?",
        ],
        "reg": [
            "What object can be observed within the region {box} in the image?",
            "What is the primary object within the region {box}?",
        ],
        "tvg": [
            "Give you a textual query: '{event}'. When does the described content occur in the video? "
            "Please return the start and end timestamps."
        ],
        "tr": [
            "Describe what took place during the period {span} in the video.",
            "What was going on within the time frame of {span} in the video?",
        ],
        "stvg": [
            "At which time interval in the video can we see {event} occurring? "
            f"{_WHERE_IN_VIDEO} Please firstly give the timestamps, and then give the spatial bounding box "
            "corresponding to each timestamp in the time period."
        ],
        "svg": [
            f"Between {{span}}, {{event}} {_WHERE_IN_VIDEO} {_PER_FRAME}",
            "In the time range {span}, {event} Can you identify the position of the corresponding "
            f"subject/object within this video? {_PER_FRAME}",
        ],
        "elc": [
            "Starts in {start}, what happened about the subject/object within the specified region {box}? "
            "Where is the corresponding subject/object located? Please firstly give the end timestamp, then "
            "give the event associated with the object/subject, finally give the spatial bounding box "
            "corresponding to each timestamp in the time period."
        ],
        "dvc": [
            "Localize every event in the video and describe it. Please give the start and end timestamps of "
            "each event, followed by its description."
        ],
        "dgc": [
            "Please describe in detail the contents of the image. Please respond with interleaved bounding "
            "boxes for the corresponding parts of the answer.",
            "Can you provide a thorough description of this image? Please output with interleaved bounding "
            "boxes for the corresponding phrases.",
        ],
    },
    "it": {
        "rec": [
            "Dov'è {event} in questa immagine?",
            "In quale parte dell'immagine si trova {event}?",
            "Dove si vede {event} in questa immagine?",
        ],
        "tvg": [
            "Quando compare {event} nel video? Indica l'istante in cui inizia e quello in cui finisce.",
            "Ecco una descrizione: '{event}'. In quale momento del video accade? Indica l'inizio e la fine.",
        ],
        "stvg": [
            "In quale intervallo del video si vede {event}? Descrivi dove si trova il soggetto o l'oggetto "
            "corrispondente: indica prima l'inizio e la fine, poi il riquadro che lo contiene in ciascun "
            "istante dell'intervallo."
        ],
    },
}
# Answers that have words besides their coordinates.
ANSWERS: dict[str, dict[str, str]] = {
    "en": {"elc": "Ends in {end}, {caption} Object bounding box: {boxes}"},
}


# ------------------------------------------------------------------------------------- numbers
def number_text(value: float) -> str:
    """A coordinate to 3 decimals, without trailing zeros (`0.25`, `1`, `0`)."""
    return f"{round(float(value), 3):g}"


def box_text(box: Sequence[float]) -> str:
    """`[x1, y1, x2, y2]` (x across the width, y down the height)."""
    if len(box) != 4:
        raise ValueError(f"a box is four numbers x1, y1, x2, y2, not {list(box)}")
    return f"[{', '.join(number_text(v) for v in box)}]"


def span_text(span: Sequence[float]) -> str:
    """`{s, e}`."""
    if len(span) != 2:
        raise ValueError(f"a span is two numbers, its start and end, not {list(span)}")
    return f"{{{number_text(span[0])}, {number_text(span[1])}}}"


def time_text(time: float) -> str:
    """`{t}`: one point in time."""
    return f"{{{number_text(time)}}}"


def frame_boxes_text(boxes: Mapping[float, Sequence[float]] | Iterable[tuple[float, Sequence[float]]]) -> str:
    """`{t}: [box], {t}: [box], ...` in time order (LLaVA-ST's per-frame layout), from {time: box} or pairs."""
    pairs = sorted(boxes.items() if isinstance(boxes, Mapping) else boxes, key=lambda pair: pair[0])
    return ", ".join(f"{time_text(t)}: {box_text(box)}" for t, box in pairs)


# ------------------------------------------------------------------------------------- samples
def prompt(task: str, language: str = "en", variant: int = 0) -> str:
    """One phrasing of a task's question (`variant`, modulo the number of phrasings)."""
    phrasings = PROMPTS.get(language, {}).get(task)
    if not phrasings:
        having = sorted(lang for lang, tasks in PROMPTS.items() if task in tasks)
        raise ValueError(f"no {language!r} prompt for {task.upper()}; languages with one: {having}")
    return phrasings[variant % len(phrasings)]


def answer_layout(task: str, language: str) -> str:
    layouts = ANSWERS.get(language, {})
    if task not in layouts:
        raise ValueError(f"no {language!r} answer layout for {task.upper()}; add one to ANSWERS")
    return layouts[task]


def _event(text: str) -> str:
    """A sentence set inside a question: without its surrounding spaces and final full stop."""
    return text.strip().rstrip(".").strip()


def grounding_sample(sample_id: str, question: str, answer: str, *, image=None, video=None) -> dict:
    """LLaVA's sample of one question and its answer, the visual placeholder before the question."""
    if (image is None) == (video is None):
        raise ValueError(f"sample {sample_id!r}: give one of image or video")
    token, media = (
        (DEFAULT_IMAGE_TOKEN, {"image": image}) if image is not None else (DEFAULT_VIDEO_TOKEN, {"video": video})
    )
    turns = [{"from": "human", "value": f"{token}\n{question}"}, {"from": "gpt", "value": answer}]
    return {"id": str(sample_id), **media, "conversations": turns}


def rec(sample_id, expression: str, box, *, image=None, video=None, language="en", variant=0) -> dict:
    """REC: where is the expression? -> its box."""
    question = prompt("rec", language, variant).format(event=_event(expression))
    return grounding_sample(sample_id, question, box_text(box), image=image, video=video)


def reg(sample_id, box, expression: str, *, image=None, video=None, language="en", variant=0) -> dict:
    """REG: what is in this box? -> the expression."""
    question = prompt("reg", language, variant).format(box=box_text(box))
    return grounding_sample(sample_id, question, expression.strip(), image=image, video=video)


def tvg(sample_id, sentence: str, span, *, video, language="en", variant=0) -> dict:
    """TVG: when does the sentence happen? -> its span."""
    question = prompt("tvg", language, variant).format(event=_event(sentence))
    return grounding_sample(sample_id, question, span_text(span), video=video)


def tr(sample_id, span, description: str, *, video, language="en", variant=0) -> dict:
    """TR: what happens in this span? -> the description."""
    question = prompt("tr", language, variant).format(span=span_text(span))
    return grounding_sample(sample_id, question, description.strip(), video=video)


def stvg(sample_id, sentence: str, span, boxes, *, video, language="en", variant=0) -> dict:
    """STVG: when and where does the sentence happen? -> its span, then the subject's box per frame
    (`boxes`: {time: box} or (time, box) pairs, times within the span)."""
    question = prompt("stvg", language, variant).format(event=_event(sentence))
    return grounding_sample(sample_id, question, f"{span_text(span)}, {frame_boxes_text(boxes)}", video=video)


def svg(sample_id, span, sentence: str, boxes, *, video, language="en", variant=0) -> dict:
    """SVG: in this span, where is what the sentence names? -> its box per frame."""
    question = prompt("svg", language, variant).format(span=span_text(span), event=sentence.strip())
    return grounding_sample(sample_id, question, frame_boxes_text(boxes), video=video)


def elc(sample_id, span, region, caption: str, boxes, *, video, language="en", variant=0) -> dict:
    """ELC: from its start and the subject's box there (`region`), the event's end, what happens, and
    the subject's box per frame."""
    start, end = span
    question = prompt("elc", language, variant).format(start=time_text(start), box=box_text(region))
    answer = answer_layout("elc", language).format(
        end=time_text(end), caption=caption.strip(), boxes=frame_boxes_text(boxes)
    )
    return grounding_sample(sample_id, question, answer, video=video)


def dvc(sample_id, events: Iterable[tuple[Sequence[float], str]], *, video, language="en", variant=0) -> dict:
    """Dense video captioning: every event -> `{s, e}, caption.` per event, in time order."""
    ordered = sorted(events, key=lambda event: tuple(event[0]))
    answer = " ".join(f"{span_text(span)}, {_event(caption)}." for span, caption in ordered)
    return grounding_sample(sample_id, prompt("dvc", language, variant), answer, video=video)


def grounded_caption(pieces: Iterable[tuple[str, Sequence[float] | None]]) -> str:
    """A caption whose phrases are each followed by their box (None: a phrase without one)."""
    parts = []
    for text, box in pieces:
        parts.append(text.strip())
        if box is not None:
            parts.append(box_text(box))
    return " ".join(part for part in parts if part)


def dgc(sample_id, pieces, *, image=None, video=None, language="en", variant=0) -> dict:
    """DGC: describe the image -> the caption with its phrases' boxes (`pieces`: (phrase, box or None))."""
    answer = grounded_caption(pieces)
    return grounding_sample(sample_id, prompt("dgc", language, variant), answer, image=image, video=video)
