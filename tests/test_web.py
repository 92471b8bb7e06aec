"""The web page (`python -m llava.serve.web`) as its users meet it: the server runs as a real process on
two tiny checkpoints (side by side) and a small validation set; headless Chromium (Debian's package,
through selenium) uploads clips written here, asks for captions and reads the page; gradio_client plays
the other users (several at once, bad files, a sample of the set). Every caption on the page is checked
against the caption computed here with serve.cli's own functions, and every video-blind control against
the same checkpoint given frames of the processor's mean colour.

Where chromium, chromedriver or selenium is missing, the browser test skips, saying why and what installs
it (.ci/setup_browser.sh, the dev extra); in CI it fails instead (tests/tiers.py). A screenshot of the
page is left in test_artifacts/web.png (or $TEST_ARTIFACTS_DIR).
"""

from __future__ import annotations

import html
import json
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava.data.templates import get_template
from llava.demo.synthetic import make_dataset
from llava.generation import caption
from llava.mm_utils import process_video_frames
from llava.model.builder import load_pretrained_model
from llava.serve import cli, web

from entry_points import run_cli
from media_helpers import write_broken_inputs
from web_helpers import WebServer, artifacts_dir, save_tiny_checkpoint, start_browser, write_flat_clip

pytestmark = pytest.mark.slow

MAX_NEW = 8  # new tokens per caption: enough to tell captions apart, cheap on a CPU
MAX_UPLOAD_MB = 0.05
NAMES = ["checkpoint-words-1M", "checkpoint-words-10M"]
SAMPLE = 1  # the sample of the validation set the tests pick
WAIT_S = 120  # a guard against a page that never answers, not a measure


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tokenizer_dir, tower_dir) -> dict:
    """Two checkpoints of one run (its word milestones), a validation set of two clips, two clips of
    this test's own (dark and bright), an image, broken files and a file over the upload limit."""
    root = tmp_path_factory.mktemp("web")
    checkpoints = [
        save_tiny_checkpoint(root / "run" / name, tokenizer_dir, tower_dir, seed) for seed, name in enumerate(NAMES)
    ]
    data = make_dataset(root / "data", num_train=0, num_val=2)
    clips = {"dark": write_flat_clip(root / "dark.mp4", 20), "bright": write_flat_clip(root / "bright.mp4", 230)}
    image = root / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(image)
    broken = write_broken_inputs(root / "broken", clips["bright"])
    big = root / "big.mp4"
    big.write_bytes(Path(clips["bright"]).read_bytes() * int(MAX_UPLOAD_MB * 1e6 // 1000))
    assert big.stat().st_size > MAX_UPLOAD_MB * 1e6
    return {
        "checkpoints": checkpoints,
        "val": data["val"],
        "video_folder": data["video_folder"],
        "clips": clips,
        "image": str(image),
        "broken": broken,
        "big": str(big),
    }


def mean_colour_frames(pixels, processor):
    """The video-blind control's input as the spec says it: frames of the processor's mean colour, as
    many as the clip's, preprocessed by the processor."""
    frames, _, height, width = pixels.shape
    colour = np.array([int(255 * m) for m in processor.image_mean], dtype=np.uint8)
    return process_video_frames(np.broadcast_to(colour, (frames, height, width, 3)).copy(), processor)


@pytest.fixture(scope="module")
def expected(assets) -> dict:
    """What the page must show, computed here with serve.cli's functions: {source: {"captions": [...],
    "blind": [...]}} per checkpoint in order, for each clip, the image and sample SAMPLE of the set (with
    its reference)."""
    results = {}
    for path in assets["checkpoints"]:
        tokenizer, model, processor, _ = load_pretrained_model(path)
        template = get_template("plain")
        inputs = {
            name: cli.media_input(model, tokenizer, processor, template, clip, "video", 8)
            for name, clip in assets["clips"].items()
        }
        inputs["image"] = cli.media_input(model, tokenizer, processor, template, assets["image"], "image", 8)
        item = cli.CaptionSet(model, tokenizer, processor, assets["val"], video_folder=assets["video_folder"])[SAMPLE]
        inputs["sample"] = (item["prompt_ids"], item["pixels"])
        for source, (ids, pixels) in inputs.items():
            entry = results.setdefault(source, {"captions": [], "blind": [], "reference": None})
            for key, seen in (("captions", pixels), ("blind", mean_colour_frames(pixels, processor))):
                entry[key].append(caption(model, tokenizer, template, [ids], [seen], max_new_tokens=MAX_NEW)[0])
        results["sample"]["reference"] = item["reference"]
    assert (
        results["sample"]["reference"]
        == json.loads(Path(assets["val"]).read_text())[SAMPLE]["conversations"][-1]["value"]
    )
    # Without this, results mixed between the two clips' users could not be seen.
    assert results["dark"]["captions"] != results["bright"]["captions"], results
    return results


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(assets, tmp_path_factory):
    args = [arg for path in assets["checkpoints"] for arg in ("--model-path", path)]
    args += ["--data", assets["val"], "--video-folder", assets["video_folder"]]
    args += ["--max-upload-mb", MAX_UPLOAD_MB, "--max-new-tokens", MAX_NEW]
    running = WebServer(args, tmp_path_factory.mktemp("server") / "stderr.log").start()
    yield running
    running.stop()


def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False)


def ask(connection, upload=None, sample=None):
    """One request through the page's API: the status line, the strip and the texts by checkpoint."""
    from gradio_client import handle_file

    status, strip, reference, *texts = connection.predict(
        handle_file(upload) if upload else None, sample, 0.0, 1.0, MAX_NEW, 0, api_name="/caption"
    )
    return {
        "status": html.unescape(re.sub(r"<[^>]*>", "", status)),
        "strip": strip,
        "reference": reference,
        "captions": texts[: len(NAMES)],
        "blind": texts[len(NAMES) : 2 * len(NAMES)],
        "grounding": texts[2 * len(NAMES) :],
    }


def brightness(strip) -> float:
    return float(np.mean([np.asarray(Image.open(frame["image"]).convert("L")) for frame in strip]))


# ------------------------------------------------------------------------------------------ browser
def uploaded(box_text: str, name: str) -> bool:
    """The upload box shows the file `name` (split over lines), no longer "Uploading 1 file..."."""
    return "Uploading" not in box_text and name in "".join(box_text.split())


def upload_and_caption(driver, path: str) -> str:
    """Puts `path` in the upload box (clearing what was there), clicks Caption, and returns the status
    line once it names the file."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.2)
    for clear in driver.find_elements(By.CSS_SELECTOR, '#upload button[aria-label="Clear"]'):
        clear.click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
    driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(path)
    name = Path(path).name
    wait.until(lambda d: uploaded(d.find_element(By.ID, "upload").text, name))
    driver.find_element(By.ID, "caption-button").click()
    wait.until(lambda d: name in d.find_element(By.ID, "status").text)
    return driver.find_element(By.ID, "status").text


def pick_sample_and_caption(driver, label: str) -> str:
    """Picks the sample shown as `label` in the list (which clears the upload box), clicks Caption, and
    returns the status line once it names the sample."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.2)
    driver.find_element(By.CSS_SELECTOR, "#sample input").click()
    option = wait.until(
        lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "#sample li[role=option]") if o.text.strip() == label]
    )
    option[0].click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))  # the upload is cleared
    driver.find_element(By.ID, "caption-button").click()
    sample_id = label.split()[0]
    wait.until(lambda d: sample_id in d.find_element(By.ID, "status").text)
    return driver.find_element(By.ID, "status").text


def page_texts(driver, kind: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [
        driver.find_element(By.CSS_SELECTOR, f"#{kind}-{i} textarea").get_attribute("value") for i in range(len(NAMES))
    ]


def strip_labels(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [img.get_attribute("alt") for img in driver.find_elements(By.CSS_SELECTOR, "#frames img")]


def test_the_page_in_a_browser(browser, server, assets, expected):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url)
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(lambda d: d.find_elements(By.ID, "caption-button"))
    page = browser.find_element(By.TAG_NAME, "body").text
    assert all(name in page for name in NAMES)
    assert page.count("video-blind control (blank frames)") == len(NAMES)

    status = upload_and_caption(browser, assets["clips"]["dark"])
    assert status == "8 frames of dark.mp4, captioned by 2 checkpoints."
    # The clip has 12 frames at 8 per second: the centres of 8 equal segments are frames 0, 2, 3, 5, 6, 8, 9, 11.
    assert strip_labels(browser) == [f"{i / 8:.2f} s" for i in (0, 2, 3, 5, 6, 8, 9, 11)]
    assert page_texts(browser, "caption") == expected["dark"]["captions"]
    assert page_texts(browser, "blind") == expected["dark"]["blind"]

    status = upload_and_caption(browser, str(assets["broken"]["text.mp4"]))
    assert status.startswith("error: the upload cannot be read: opening/demuxing failed (InvalidDataError: ")
    assert status.endswith(" (text.mp4)") and "\n" not in status and "/tmp" not in status
    assert strip_labels(browser) == [] and page_texts(browser, "caption") == ["", ""]

    status = upload_and_caption(browser, assets["clips"]["bright"])  # the server goes on serving
    assert status == "8 frames of bright.mp4, captioned by 2 checkpoints."
    assert len(strip_labels(browser)) == 8
    assert page_texts(browser, "caption") == expected["bright"]["captions"]
    assert page_texts(browser, "blind") == expected["bright"]["blind"]

    status = pick_sample_and_caption(browser, "val_00001 (val_00001.mp4)")
    assert status == "8 frames of sample val_00001 (val_00001.mp4), captioned by 2 checkpoints."
    assert (
        browser.find_element(By.CSS_SELECTOR, "#reference textarea").get_attribute("value")
        == (expected["sample"]["reference"])
    )
    assert page_texts(browser, "caption") == expected["sample"]["captions"]
    assert page_texts(browser, "blind") == expected["sample"]["blind"]
    assert len(strip_labels(browser)) == 8

    screenshot = artifacts_dir() / "web.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(screenshot) as image:
        assert image.format == "PNG" and image.width >= 800 and image.height >= 600


# ------------------------------------------------------------------------------------------ clients
def test_two_users_at_once_get_their_own_results(server, assets, expected):
    users = [client(server), client(server)]
    clips = ["dark", "bright"]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda user, name: ask(user, assets["clips"][name]), users, clips))
    for name, answer in zip(clips, answers):
        assert answer["status"] == f"8 frames of {name}.mp4, captioned by 2 checkpoints."
        assert answer["captions"] == expected[name]["captions"]
        assert answer["blind"] == expected[name]["blind"]
        assert len(answer["strip"]) == 8
    dark, bright = (brightness(answer["strip"]) for answer in answers)
    assert dark < 100 < 150 < bright  # each user sees the frames of their own clip


def test_an_image_and_a_sample_of_the_set(server, assets, expected):
    user = client(server)
    answer = ask(user, upload=None, sample=SAMPLE)
    assert answer["status"] == "8 frames of sample val_00001 (val_00001.mp4), captioned by 2 checkpoints."
    assert answer["reference"] == expected["sample"]["reference"]
    assert answer["captions"] == expected["sample"]["captions"]
    assert answer["blind"] == expected["sample"]["blind"]

    answer = ask(user, upload=assets["image"])
    assert answer["status"] == "the image of photo.png, captioned by 2 checkpoints."
    assert [frame["caption"] for frame in answer["strip"]] == ["image"]
    assert answer["captions"] == expected["image"]["captions"]
    assert answer["blind"] == expected["image"]["blind"]
    assert answer["reference"] == ""


def test_bad_uploads_get_one_line_each_and_the_server_goes_on(server, assets, expected):
    user = client(server)
    broken = assets["broken"]
    reasons = {
        "zero.mp4": "file is empty (0 bytes)",
        "truncated.mp4": "no video stream in the container",  # its index, at the end, is cut off
        "audio.mp4": "no video stream in the container",
        "big.mp4": None,
    }
    for name in reasons:
        answer = ask(user, broken[name] if name in broken else assets["big"])
        status = answer["status"]
        assert status.startswith("error: ") and status.endswith(f"({name})"), status
        assert answer["strip"] == [] and answer["captions"] == ["", ""] and answer["blind"] == ["", ""]
        if name == "big.mp4":
            size = Path(assets["big"]).stat().st_size / 1e3
            assert status == (
                f"error: the upload is {size:.1f} KB, more than this server takes (--max-upload-mb 0.05) (big.mp4)"
            )
        else:
            assert status.startswith(f"error: the upload cannot be read: {reasons[name]}"), status
    assert ask(user, upload=None)["status"] == "error: upload a clip or an image first, or pick a sample"
    assert ask(user, assets["clips"]["dark"])["captions"] == expected["dark"]["captions"]


def test_sigterm_stops_the_server_cleanly(server):
    assert server.stop() == 0
    output = server.output()
    assert "stopping the server" in output and "Traceback" not in output, output[-3000:]
    web.check_port("127.0.0.1", server.port)  # the port is free again


# ------------------------------------------------------------------------------------- command line
def test_wrong_command_lines_fail_in_one_line_before_a_model_loads(assets, tmp_path):
    checkpoint = assets["checkpoints"][0]
    missing = tmp_path / "nowhere"
    ended = run_cli(web.cli, ["--model-path", checkpoint, "--model-path", missing])
    assert (ended.returncode, ended.stdout) == (1, "")
    assert ended.stderr.startswith("error: --model-path ") and ended.stderr.endswith(f"({missing})\n")
    assert ended.stderr.count("\n") == 1

    ended = run_cli(web.cli, ["--model-path", checkpoint, "--data", assets["val"]])
    assert (ended.returncode, ended.stderr) == (
        2,
        f"error: --data has clips: give the folder they are in (--video-folder DIR) ({assets['val']}) "
        "(python -m llava.serve.web --help lists the flags)\n",
    )

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ended = run_cli(web.cli, ["--model-path", checkpoint, "--port", port])
    assert (ended.returncode, ended.stderr) == (
        1,
        f"error: --port {port} is in use on 127.0.0.1: another server listens there; choose another --port\n",
    )
