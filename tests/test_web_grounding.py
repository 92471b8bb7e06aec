"""Where and when on the web page (llava.serve.web_grounding): an answer's coordinate tokens written as
numbers, its boxes, span and moment-box pairs placed on the strip's frames (on strings written by hand),
and, in headless Chromium, the page of a tiny checkpoint with coordinate tokens drawing them: each box's
outline measured against its frame's picture, the span's bar against the strip.

The browser test's checkpoint is real (tiny GPT-2 + tiny tower + coordinate tokens, saved and loaded as
the server loads it, its clip read by the page's own code); only its answer is given: an untrained tiny
model cannot be made to write a chosen box cheaply, so Captioner._caption returns ANSWER.
"""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from llava.model.builder import from_pretrained
from llava.modeling.coordinate_tokens import add_coordinate_tokens
from llava.serve.web_grounding import grounding_html, marks, nearest_frame, readable

from train_helpers import free_port
from web_helpers import save_tiny_checkpoint, start_browser, write_flat_clip

BOX = "[<WIDTH-012><HEIGHT-034><WIDTH-056><HEIGHT-078>]"
# A span over the first half, a box at 10/99 of the clip (frame 0 of 8) and one at 80/99 (frame 6).
ANSWER = (
    "a dog {<TEMP-000><TEMP-049>} at <TEMP-010>: " + BOX + " and <TEMP-080>: "
    "[<WIDTH-000><HEIGHT-000><WIDTH-099><HEIGHT-049>]"
)
WAIT_S = 120


def frames(count, size=8):
    return [np.full((size, size, 3), 30 * i, dtype=np.uint8) for i in range(count)]


def test_bin_tokens_are_written_as_numbers_and_other_text_is_kept():
    assert readable("at " + BOX + ".") == "at [0.12, 0.34, 0.57, 0.79]."
    assert readable("{<TEMP-010> <TEMP-050>}") == "{0.10, 0.51}"
    assert readable("<TEMP-099>: [x]") == "1.00: [x]"
    assert readable("plain [0.12,0.34,0.56,0.78] {0.1,0.5}") == "plain [0.12,0.34,0.56,0.78] {0.1,0.5}"


def test_a_frame_moment_is_the_centre_of_its_segment():
    assert [nearest_frame(m, 8) for m in (0.0, 0.124, 0.126, 0.51, 1.0)] == [0, 0, 1, 4, 7]


def test_a_box_goes_on_every_frame_or_on_the_frames_of_its_span():
    alone = marks("the dog " + BOX, 4)
    assert [len(b) for b in alone.boxes] == [1, 1, 1, 1] and alone.span is None
    assert alone.boxes[0][0][0] == pytest.approx([12 / 99, 34 / 99, 56 / 99, 78 / 99])
    assert alone.boxes[0][0][1] == "[0.12, 0.34, 0.57, 0.79]"
    # a span over the second half: moments 0.125, 0.375, 0.625, 0.875
    spanned = marks("{0.5,1.0} [0.1,0.2,0.5,0.6]", 4)
    assert spanned.span == [0.5, 1.0] and [len(b) for b in spanned.boxes] == [0, 0, 1, 1]
    assert spanned.boxes[2][0][0] == [0.1, 0.2, 0.5, 0.6]
    assert [len(b) for b in marks(BOX, 1).boxes] == [1]  # an image


def test_pairs_put_each_box_on_the_frame_nearest_its_moment():
    found = marks(ANSWER, 8)
    assert [len(b) for b in found.boxes] == [1, 0, 0, 0, 0, 0, 1, 0]
    assert found.boxes[0][0][1] == "0.10: [0.12, 0.34, 0.57, 0.79]"
    assert found.span == pytest.approx([0.0, 49 / 99])
    digits = marks("{0.9}: [0.1,0.2,0.3,0.4] {0.1}: [bad]", 4)
    assert [len(b) for b in digits.boxes] == [0, 0, 0, 1]  # a pair with no readable box draws nothing


def test_the_panel_places_boxes_and_the_span_by_their_fractions():
    page = grounding_html(ANSWER, frames(8), [f"{i} s" for i in range(8)], blind="nothing")
    assert page.count('class="wg-box"') == 2
    assert "left:12.121%;top:34.343%;width:44.444%;height:44.444%" in page
    assert 'class="wg-span" style="left:0.000%;width:49.495%"' in page
    assert page.count("wg-cell wg-in-span") == 4  # moments 0.0625 ... 0.4375 lie in [0, 0.495]
    assert "&lt;TEMP-010&gt;" in page and "as the model wrote it" in page  # the raw answer, escaped
    assert "blind:" not in page  # the control wrote no coordinate: nothing to show raw


def test_an_answer_without_coordinates_has_no_panel():
    assert grounding_html("a dog runs", frames(2), ["0 s", "1 s"], blind="a cat") == ""
    assert grounding_html("a dog [0.5, 0.9]", frames(2), ["0 s", "1 s"]) == ""  # two numbers are no box
    # only the control wrote tokens: its raw text is shown, nothing is drawn
    page = grounding_html("a dog", frames(2), ["0 s", "1 s"], blind="<TEMP-001>")
    assert "wg-box" not in page and "blind: <code>&lt;TEMP-001&gt;</code>" in page


# ------------------------------------------------------------------------------------------ browser
@pytest.fixture(scope="module")
def coordinate_checkpoint(tmp_path_factory, tokenizer_dir, tower_dir):
    """A tiny GPT-2 checkpoint with a tower and coordinate tokens, saved with its tokenizer."""
    root = tmp_path_factory.mktemp("web-grounding")
    plain = save_tiny_checkpoint(root / "plain", tokenizer_dir, tower_dir, seed=0)
    model = from_pretrained("llava_gpt2", plain)
    tokenizer = AutoTokenizer.from_pretrained(plain)
    assert add_coordinate_tokens(model, tokenizer)
    model.save_pretrained(root / "grounded")
    tokenizer.save_pretrained(root / "grounded")
    return str(root / "grounded"), write_flat_clip(root / "clip.mp4", 20)


@pytest.mark.slow
def test_the_page_draws_boxes_and_the_span_where_the_fractions_say(coordinate_checkpoint):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from llava.serve.web_captions import Captioner, load_checkpoint
    from llava.serve.web_page import build_page, launch

    path, clip = coordinate_checkpoint
    checkpoint = load_checkpoint("grounded", path, device="cpu")
    assert checkpoint.model.config.mm_coordinate_bins == 100
    captioner = Captioner([checkpoint])
    captioner._caption = lambda *_: ANSWER  # the answer is given; frames and page are the real ones
    page = build_page(captioner)
    url = launch(page, "127.0.0.1", free_port())
    browser = start_browser()
    try:
        browser.get(url)
        wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.2)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
        browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(clip)
        wait.until(lambda d: "Uploading" not in d.find_element(By.ID, "upload").text and "clip.mp4" in d.page_source)
        browser.find_element(By.ID, "caption-button").click()
        boxes = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#grounding-0 .wg-box"))

        caption = browser.find_element(By.CSS_SELECTOR, "#caption-0 textarea").get_attribute("value")
        assert caption == readable(ANSWER) and "<TEMP" not in caption
        assert browser.find_element(By.CSS_SELECTOR, "#grounding-0 .wg-answer").get_attribute("title") == ANSWER
        assert len(boxes) == 2
        cells = browser.find_elements(By.CSS_SELECTOR, "#grounding-0 .wg-cell")
        assert len(cells) == 8
        assert ["wg-in-span" in c.get_attribute("class") for c in cells] == [True] * 4 + [False] * 4
        for index, box, fractions in ((0, boxes[0], (12, 34, 56, 78)), (6, boxes[1], (0, 0, 99, 49))):
            image = cells[index].find_element(By.TAG_NAME, "img").rect
            assert image["width"] > 20 and box.find_element(By.XPATH, "../..") == cells[index]
            x1, y1, x2, y2 = (k / 99 for k in fractions)
            drawn = box.rect
            assert drawn["x"] == pytest.approx(image["x"] + x1 * image["width"], abs=1.5)
            assert drawn["y"] == pytest.approx(image["y"] + y1 * image["height"], abs=1.5)
            assert drawn["width"] == pytest.approx((x2 - x1) * image["width"], abs=1.5)
            assert drawn["height"] == pytest.approx((y2 - y1) * image["height"], abs=1.5)
        timeline = browser.find_element(By.CSS_SELECTOR, "#grounding-0 .wg-timeline").rect
        bar = browser.find_element(By.CSS_SELECTOR, "#grounding-0 .wg-span").rect
        strip = browser.find_element(By.CSS_SELECTOR, "#grounding-0 .wg-strip").rect
        assert timeline["x"] == pytest.approx(strip["x"], abs=1) and timeline["width"] == pytest.approx(strip["width"])
        assert bar["x"] == pytest.approx(timeline["x"], abs=1)
        assert bar["width"] == pytest.approx(49 / 99 * timeline["width"], abs=1.5)
    finally:
        browser.quit()
        page.close()
