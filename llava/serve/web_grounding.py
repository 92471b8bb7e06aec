"""Where and when on the web page: a model's answer that holds a box, a span or moment-box pairs, drawn on
the frames the page shows, and its coordinate tokens written as numbers.

The answers are read by llava.data.grounding_answers, as the grounding scorer reads them, in both
writings (LLaVA-ST's bin tokens, `[<WIDTH-012><HEIGHT-034><WIDTH-056><HEIGHT-078>]`, and plain digits,
`[0.12,0.34,0.56,0.78]`):
- a box (the answer's first, as the scorer takes it) is outlined on every frame, or on the frames inside
  the answer's span where it also writes one;
- a span is a bar across the strip from its start to its end, and the frames inside it are highlighted;
- `moment: [box]` pairs (a tube) put each box on the frame nearest its moment.
A frame's moment is the centre of its segment of the clip, (i + 0.5) / frames: the frames are sampled at
those centres, and the model's visual tokens are placed there (docs/grounding.md). The strip's frames are
equal cells, so a bar at [start, end] of the strip's width is [start, end] of the clip.

Boxes are fractions of the frame as the data write them (of the original frame) and are drawn as fractions
of the picture shown: the tower's input, which for a clip that is not square is its centre crop
(docs/web_page.md has the caveat). No gradio here: the page (web_page.py) shows the HTML made here.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field

import numpy as np

from ..data.grounding_answers import parse_box, parse_span, parse_tube, token_value

# A run of bin tokens (spaces allowed between them, as the reader allows them).
_BIN = r"<(?:TEMP|HEIGHT|WIDTH)-(\d+)>"
_RUN = re.compile(rf"{_BIN}(?:\s*{_BIN})*")

CSS = """
.wg-strip { display: flex; gap: 0; }
.wg-cell { flex: 1 1 0; min-width: 0; padding: 0 2px; box-sizing: border-box; text-align: center; }
.wg-frame { position: relative; }
.wg-frame img { display: block; width: 100%; height: auto; }
.wg-in-span .wg-frame { outline: 3px solid #f59e0b; }
.wg-box { position: absolute; box-sizing: border-box; border: 2px solid #ef4444; pointer-events: none; }
.wg-label { position: absolute; left: 0; top: 0; background: #ef4444; color: #fff; font-size: 10px;
            line-height: 1.2; padding: 0 2px; white-space: nowrap; }
.wg-time { font-size: 11px; }
.wg-timeline { position: relative; height: 10px; margin: 4px 0; background: #e5e7eb; }
.wg-span { position: absolute; top: 0; height: 100%; background: #f59e0b; }
.wg-answer { margin: 4px 0; }
"""


def number(value: float) -> str:
    return f"{value:.2f}"


def readable(text: str) -> str:
    """`text` with each run of bin tokens written as its values: `[<WIDTH-012><HEIGHT-034>...]` ->
    `[0.12, 0.34, ...]`, `<TEMP-020>: [...]` -> `0.20: [...]`. Other text, digits included, is kept."""

    def values(match: re.Match) -> str:
        return ", ".join(number(token_value(k)) for k in re.findall(r"-(\d+)>", match.group(0)))

    return _RUN.sub(values, text)


def box_text(box: list[float]) -> str:
    return "[" + ", ".join(number(v) for v in box) + "]"


@dataclass
class Marks:
    """What to draw for one answer on a strip of `frames` frames: boxes per frame (box, label) and the
    span, [start, end] of the clip, or None."""

    frames: int
    boxes: list[list[tuple[list[float], str]]] = field(default_factory=list)
    span: list[float] | None = None

    def __bool__(self) -> bool:
        return self.span is not None or any(self.boxes)


def frame_moments(frames: int) -> list[float]:
    """Each frame's moment in the clip: the centre of its segment."""
    return [(i + 0.5) / frames for i in range(frames)]


def nearest_frame(moment: float, frames: int) -> int:
    moments = frame_moments(frames)
    return min(range(frames), key=lambda i: abs(moments[i] - moment))


def in_span(span: list[float] | None, frames: int) -> list[bool]:
    return [span is not None and span[0] <= m <= span[1] for m in frame_moments(frames)]


def marks(text: str, frames: int) -> Marks:
    """The boxes and the span `text` holds, placed on a strip of `frames` frames."""
    found = Marks(frames, [[] for _ in range(frames)], parse_span(text))
    tube = parse_tube(text)
    if tube:
        for moment, box in tube.items():
            if box is not None and 0.0 <= moment <= 1.0:
                found.boxes[nearest_frame(moment, frames)].append((box, f"{number(moment)}: {box_text(box)}"))
        return found
    box = parse_box(text)
    if box is not None:
        inside = in_span(found.span, frames)
        for i in range(frames):
            if found.span is None or inside[i] or frames == 1:
                found.boxes[i].append((box, box_text(box)))
    return found


def percent(value: float) -> str:
    return f"{100 * value:.3f}%"


def box_html(box: list[float], label: str) -> str:
    x1, y1, x2, y2 = box
    style = f"left:{percent(x1)};top:{percent(y1)};width:{percent(x2 - x1)};height:{percent(y2 - y1)}"
    return (
        f'<div class="wg-box" style="{style}" data-box="{html.escape(box_text(box))}">'
        f'<span class="wg-label">{html.escape(label)}</span></div>'
    )


def image_uri(image: np.ndarray) -> str:
    """An (H, W, 3) uint8 frame as a JPEG data URI (the page's HTML carries its own pictures)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def strip_html(found: Marks, images: list[np.ndarray], labels: list[str]) -> str:
    """The frames with their boxes, the frames inside the span highlighted, and the span's bar."""
    inside = in_span(found.span, found.frames)
    cells = []
    for i, (image, label) in enumerate(zip(images, labels)):
        boxes = "".join(box_html(box, text) for box, text in found.boxes[i])
        css_class = "wg-cell wg-in-span" if inside[i] else "wg-cell"
        cells.append(
            f'<div class="{css_class}" data-frame="{i}"><div class="wg-frame">'
            f'<img src="{image_uri(image)}" alt="{html.escape(label)}">{boxes}</div>'
            f'<div class="wg-time">{html.escape(label)}</div></div>'
        )
    timeline = ""
    if found.span is not None:
        start, end = found.span
        timeline = (
            f'<div class="wg-timeline" title="span {html.escape(box_text(found.span))} of the clip">'
            f'<div class="wg-span" style="left:{percent(start)};width:{percent(end - start)}"></div></div>'
        )
    return f'<div class="wg-strip">{"".join(cells)}</div>{timeline}'


def grounding_html(answer: str, images: list[np.ndarray], labels: list[str], blind: str = "") -> str:
    """The page's where-and-when panel for one checkpoint: its answer with the coordinates written as
    numbers (the raw answer in its title and under "as the model wrote it"), drawn on `images` (the strip's
    frames, with their `labels`). Empty where neither the answer nor the blind control holds a coordinate."""
    found = marks(answer, len(images)) if images else Marks(0)
    rewritten = [(name, text) for name, text in (("answer", answer), ("blind", blind)) if readable(text) != text]
    if not found and not rewritten:
        return ""
    parts = [
        f'<p class="wg-answer" title="{html.escape(answer)}">where and when: {html.escape(readable(answer))}</p>',
    ]
    if found:
        parts.append(strip_html(found, images, labels))
    if rewritten:
        raw = "".join(f"<p>{name}: <code>{html.escape(text)}</code></p>" for name, text in rewritten)
        parts.append(f'<details class="wg-raw"><summary>as the model wrote it</summary>{raw}</details>')
    return f'<div class="wg-panel">{"".join(parts)}</div>'
