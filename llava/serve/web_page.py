"""The gradio page of `python -m llava.serve.web`: its layout and its one model event. What it shows is
computed by web_captions.Captioner; this module only lays it out.

The caption event runs in gradio's queue with a concurrency limit of 1 (one request at a time goes to
the models; the others wait their turn, each answered on its own connection). Its API name is
`caption`, so a gradio_client can ask for captions too:
`Client(url).predict(handle_file(path), None, 0.0, 1.0, 64, 0, api_name="/caption")` returns the status,
the strip, the reference, then per checkpoint its caption, then its control, then its where-and-when
panel (web_grounding.py: the HTML of the boxes and spans its caption holds, drawn on the frames).
"""

from __future__ import annotations

import html
import logging

import gradio as gr

from ..errors import one_line
from .web_captions import BLIND_LABEL, Captioner, Decoding
from .web_grounding import CSS as GROUNDING_CSS
from .web_grounding import grounding_html, readable

logger = logging.getLogger("llava.serve.web")

INTRO = """# What the model sees and says
Upload a clip or an image{data}, then **Caption**. The strip shows the frames the model samples, as its
vision tower is given them (the frames and preprocessing of training). Each checkpoint's caption is
beside its **video-blind control**: the same checkpoint given blank frames (the processor's mean colour,
as many as the clip's) in place of the clip, i.e. what it says without seeing anything."""

# Text stays in the page's own fonts: gradio's default theme asks Google Fonts for its typefaces, which a
# cluster node may not reach.
THEME = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = (
    """
#status .error { color: #b91c1c; font-weight: 600; }
"""
    + GROUNDING_CSS
)


def status_html(text: str, error: bool = False) -> str:
    css_class = "error" if error else "summary"
    return f'<p class="{css_class}">{html.escape(text)}</p>'


def build_page(captioner: Captioner, data_name: str | None = None, decoding: Decoding | None = None) -> gr.Blocks:
    """The page for `captioner`'s checkpoints; `data_name`: the --data file the sample list comes from;
    `decoding`: the controls' starting values (default: greedy, 64 new tokens)."""
    decoding = decoding or Decoding()
    names = captioner.names
    choices = captioner.sample_choices()
    with gr.Blocks(
        title="llava: what the model sees and says",
        analytics_enabled=False,
        # Uploads and the strip's images are files in gradio's temporary folder: every 10 minutes, those
        # older than an hour go.
        delete_cache=(600, 3600),
    ) as page:
        gr.Markdown(INTRO.format(data=f", or pick a sample of {data_name}" if data_name else ""))
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                upload = gr.File(label="Upload a clip or an image", type="filepath", elem_id="upload")
                sample = gr.Dropdown(
                    choices=choices,
                    value=None,
                    label=f"or pick a sample of {data_name}" if data_name else "samples",
                    visible=bool(choices),
                    elem_id="sample",
                )
                with gr.Accordion("Decoding", open=False):
                    temperature = gr.Slider(
                        0.0, 2.0, value=decoding.temperature, step=0.05, label="temperature (0: greedy)"
                    )
                    top_p = gr.Slider(0.05, 1.0, value=decoding.top_p, step=0.05, label="top-p")
                    max_new_tokens = gr.Slider(1, 256, value=decoding.max_new_tokens, step=1, label="max new tokens")
                    seed = gr.Number(value=decoding.seed, precision=0, label="seed (for sampling)")
                run = gr.Button("Caption", variant="primary", elem_id="caption-button")
            with gr.Column(scale=3):
                status = gr.HTML(status_html("Upload a clip or an image, then Caption."), elem_id="status")
                frames = gr.Gallery(
                    label="Frames the model sees, in order, at their time in the clip (its vision tower's input)",
                    columns=8,
                    height=200,
                    object_fit="contain",
                    allow_preview=False,
                    elem_id="frames",
                )
                reference = gr.Textbox(
                    label="reference caption (the sample's last answer)",
                    interactive=False,
                    visible=bool(choices),
                    elem_id="reference",
                )
                captions, blinds, groundings = [], [], []
                with gr.Row(equal_height=True):
                    for i, name in enumerate(names):
                        with gr.Column(min_width=240):
                            gr.Markdown(f"### {html.escape(name)}")
                            captions.append(
                                gr.Textbox(label=f"{name}: caption", interactive=False, elem_id=f"caption-{i}")
                            )
                            blinds.append(
                                gr.Textbox(label=f"{name}: {BLIND_LABEL}", interactive=False, elem_id=f"blind-{i}")
                            )
                            # Boxes and spans the caption holds, drawn on the frames (empty where it holds none).
                            groundings.append(gr.HTML("", elem_id=f"grounding-{i}"))

        def describe(upload_path, sample_index, temperature, top_p, max_new_tokens, seed):
            """Runs in the queue: the outputs of one request (status, strip, reference, captions, controls,
            where-and-when panels). Captions and controls show coordinate tokens as numbers."""
            empty = [[], ""] + [""] * (3 * len(names))
            try:
                decoding = Decoding(int(max_new_tokens), float(temperature), float(top_p), int(seed or 0))
                if upload_path:
                    described = captioner.upload(upload_path, decoding)
                elif sample_index is not None:
                    described = captioner.sample(int(sample_index), decoding)
                else:
                    return [status_html("error: upload a clip or an image first, or pick a sample", True), *empty]
            except Exception as e:  # noqa: BLE001 - one line on the page for the user; the server goes on
                message = one_line(e)
                if message is None:  # a bug: its traceback goes to the server's log
                    logger.exception("captioning failed")
                    message = f"captioning failed ({type(e).__name__}); the server's log has the details"
                return [status_html(f"error: {message}", True), *empty]
            strip = [(frame.image, frame.label) for frame in described.frames]
            images, labels = [f.image for f in described.frames], [f.label for f in described.frames]
            return [
                status_html(described.summary()),
                strip,
                described.reference or "",
                *[readable(c.caption) for c in described.captions],
                *[readable(c.blind) for c in described.captions],
                *[grounding_html(c.caption, images, labels, c.blind) for c in described.captions],
            ]

        run.click(
            describe,
            [upload, sample, temperature, top_p, max_new_tokens, seed],
            [status, frames, reference, *captions, *blinds, *groundings],
            api_name="caption",
            concurrency_limit=1,
            concurrency_id="models",
        )
        # One source at a time: a new upload clears the picked sample, a picked sample clears the upload.
        upload.upload(lambda: None, None, sample, queue=False, api_visibility="private")
        sample.input(lambda: None, None, upload, queue=False, api_visibility="private")
    page.queue(default_concurrency_limit=1)
    return page


def launch(page: gr.Blocks, host: str, port: int) -> str:
    """Starts serving `page` without blocking; returns its address.

    gradio's own upload limit (max_file_size) is left unset: its refusal is a pop-up of its own words
    before the file leaves the browser; --max-upload-mb is checked by Captioner.upload instead, whose
    refusal is one line on the page like every other bad upload."""
    page.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        share=False,
        inbrowser=False,
        show_error=False,
        ssr_mode=False,
        theme=THEME,
        css=CSS,
    )
    return page.local_url or f"http://{host}:{port}/"
