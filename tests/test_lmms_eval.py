"""lmms-eval 0.7.3's LLaVA model classes (`llava`, `llava_vid`, `llava_onevision`) on a checkpoint of ours,
through lmms-eval's real command line, in the environment `make lmms-env` builds (a second venv that sees
ours; see the Makefile), on the local tasks `python -m llava.eval.lmms_task` writes over demo clips.

Beyond "it runs": the captions and the losses lmms-eval reports are recomputed here with our own code on the
frames lmms-eval takes (its indices and its float16 pixels, reproduced below), and must be the same.
Nothing is downloaded: the hub is offline for every lmms-eval process.
"""

import ast
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from llava.data.templates import get_template
from llava.data.video import read_video_frames
from llava.demo.synthetic import COLOURS
from llava.eval import lmms_task
from llava.generation import generate_texts
from llava.mm_utils import process_images, process_video_frames
from llava.model.builder import load_pretrained_model

from train_helpers import ROOT

pytestmark = pytest.mark.slow

LMMS_PYTHON = ROOT / ".venv-lmms" / "bin" / "python"
NUM_FRAMES = 8  # the tiny checkpoint's mm_num_frames; the demo clips have 16
# What each class needs on a CPU, for a caption model of ours (see llava/eval/lmms_task.py).
MODEL_ARGS = {
    "llava_vid": f"conv_template=plain,device=cpu,device_map=auto,torch_dtype=float32,max_frames_num={NUM_FRAMES},force_sample=True",
    "llava_onevision": f"conv_template=plain,device=cpu,device_map=auto,max_frames_num={NUM_FRAMES}",
    "llava": "conv_template=plain,device=cpu,device_map=auto",
}
# llava_onevision's loglikelihood reads `self.metadata`, which lmms-eval 0.7.3 never sets
# (models/simple/llava_onevision.py:292, AttributeError): its command line runs the caption task only, and
# its loglikelihood is checked in-process below, with that attribute supplied.
TASKS = {
    "llava_vid": ["llava_demo_caption", "llava_demo_colour"],
    "llava_onevision": ["llava_demo_caption"],
    "llava": ["llava_demo_caption_image", "llava_demo_colour_image"],
}
# The same computation on the same inputs: lmms-eval's losses equal ours exactly here; the tolerance
# only allows for other summation orders.
LOSS_TOLERANCE = 1e-6
METRICS = {"caption": ("bleu4", "cider", "colour_accuracy"), "colour": ("acc", "caption_loss")}


def lmms_python() -> str:
    if not LMMS_PYTHON.exists():
        pytest.fail(f"lmms-eval's environment {LMMS_PYTHON.parent.parent} is missing: build it with `make lmms-env`")
    return str(LMMS_PYTHON)


def offline_env(hf_home) -> dict:
    return {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="module")
def task_dir(assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("tasks")
    assert lmms_task.main(["--data", assets["val"], "--video-folder", assets["video_folder"], "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def docs(task_dir):
    return [json.loads(line) for line in (task_dir / lmms_task.DOCS_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def ours(checkpoint):
    tokenizer, model, processor, _ = load_pretrained_model(checkpoint)
    return tokenizer, model, processor


@pytest.fixture(scope="module")
def runs(checkpoint, task_dir, tmp_path_factory):
    """Each class's command-line run, made once: {model: (stdout, results, {task: samples})}."""
    cache = {}

    def run(model):
        if model not in cache:
            cache[model] = run_cli(model, checkpoint, task_dir, tmp_path_factory.mktemp(model))
        return cache[model]

    return run


def run_cli(model, checkpoint, task_dir, work):
    command = [
        lmms_python(),
        "-m",
        "lmms_eval",
        "--model",
        model,
        "--model_args",
        f"pretrained={checkpoint},{MODEL_ARGS[model]}",
        "--tasks",
        ",".join(TASKS[model]),
        "--include_path",
        str(task_dir),
        "--output_path",
        str(work / "out"),
        "--batch_size",
        "1",
        "--log_samples",
    ]
    result = subprocess.run(
        command, cwd=work, env=offline_env(work / "hf"), capture_output=True, text=True, timeout=600
    )
    log = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, log
    # lmms-eval 0.7.3 exits 0 even when the evaluation fails; the results file is the evidence.
    results_files = list((work / "out").rglob("*_results.json"))
    assert len(results_files) == 1, log
    samples = {}
    for task in TASKS[model]:
        (path,) = (work / "out").rglob(f"*_samples_{task}.jsonl")
        samples[task] = sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda s: s["doc_id"])
    return result.stdout, json.loads(results_files[0].read_text()), samples


# ------------------------------------------------------------- what our own code says
def lmms_eval_clip(path) -> np.ndarray:
    """The frames lmms-eval's video classes decode (llava_vid with force_sample, llava_onevision): decord,
    at np.linspace(0, frames - 1, max_frames_num, dtype=int)."""
    from decord import VideoReader, cpu

    reader = VideoReader(path, ctx=cpu(0), num_threads=1)
    indices = np.linspace(0, len(reader) - 1, NUM_FRAMES, dtype=int).tolist()
    return reader.get_batch(indices).asnumpy()


def video_pixels(path, processor) -> torch.Tensor:
    # lmms-eval hands the model float16 pixels; the model computes in its own dtype (float32 here)
    return process_video_frames(lmms_eval_clip(path), processor).half()


def frame_pixels(doc, processor, config) -> torch.Tensor:
    """The image class's input: the task's frame, through LLaVA's process_images, in float16."""
    return process_images(lmms_task.doc_to_frame(doc), processor, config).half()


def our_caption(ours, pixels, stop_at_newline: bool) -> str:
    """Greedy caption by our generation routine. llava_vid and llava_onevision stop at the plain template's
    separator ("\\n") as well as at EOS."""
    tokenizer, model, _ = ours
    prompt = get_template("plain").prompt_ids([{"from": "human", "value": "<video>\n"}], tokenizer)
    text = generate_texts(model, tokenizer, [prompt], [pixels], max_new_tokens=lmms_task.MAX_NEW_TOKENS)[0]
    return text.split("\n")[0].strip() if stop_at_newline else text


def our_loss(ours, pixels, caption: str) -> float:
    """Mean loss per caption token given the visual input, from our template's training ids. lmms-eval
    scores the caption alone, so the EOS that ends it in training is left out."""
    tokenizer, model, _ = ours
    ids, labels = get_template("plain").tokenize(
        [{"from": "human", "value": "<video>\n"}, {"from": "gpt", "value": caption}], tokenizer
    )
    assert ids[-1] == tokenizer.eos_token_id
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids[:-1]]), labels=torch.tensor([labels[:-1]]), images=[pixels])
    return out.loss.item()


def generated(sample) -> str:
    """The caption lmms-eval logged for one document (a string; a one-element list in other versions)."""
    response = sample["filtered_resps"]
    return (response if isinstance(response, str) else response[0]).strip()


def reported_losses(sample) -> list[float]:
    """One loss per choice, as lmms-eval logged them (0.7.3 logs each `(loss, is_greedy)` as its str())."""
    answers = [ast.literal_eval(r) if isinstance(r, str) else r for r in sample["filtered_resps"]]
    return [float(answer[0]) for answer in answers]


# ------------------------------------------------------------------------------ tests
def test_environment_takes_our_packages_and_shadows_none_but_filelock():
    python = lmms_python()
    names = [
        "torch",
        "transformers",
        "av",
        "decord",
        "accelerate",
        "numpy",
        "PIL",
        "tokenizers",
        "huggingface_hub",
        "llava",
    ]
    code = f"import json, importlib; print(json.dumps({{n: importlib.import_module(n).__file__ for n in {names!r}}}))"
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ours_site = Path(torch.__file__).resolve().parents[1]
    for name, path in json.loads(result.stdout).items():
        expected = ROOT if name == "llava" else ours_site
        assert Path(path).resolve().is_relative_to(expected), (name, path)
    code = "import json, sysconfig, lmms_eval, importlib.metadata as m; print(json.dumps([sysconfig.get_paths()['purelib'], m.version('lmms_eval')]))"
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    site, version = json.loads(result.stdout)
    assert version == "0.7.3"
    installed = {
        p.name for p in Path(site).iterdir() if not p.name.endswith((".dist-info", ".pth")) and p.name != "__pycache__"
    }
    ours_installed = {p.name for p in ours_site.iterdir()}
    assert installed & ours_installed == {"filelock"}  # lmms-eval 0.7.3 needs filelock<4 (filelock._api)


def test_task_writer(assets, task_dir, docs, tmp_path):
    samples = json.loads(Path(assets["val"]).read_text())
    assert [d["id"] for d in docs] == [s["id"] for s in samples]
    for doc, sample in zip(docs, samples):
        assert Path(doc["video"]).is_file() and doc["caption"] == sample["conversations"][-1]["value"]
        assert doc["choices"][doc["answer"]] == doc["caption"] and len(set(doc["choices"])) == 4
        assert {lmms_task.named_colours(c, doc["colour_forms"]).pop() for c in doc["choices"]} == set(COLOURS)
    assert sorted(p.name for p in task_dir.glob("*.yaml")) == sorted(
        f"llava_demo_{kind}{suffix}.yaml" for kind in ("caption", "colour") for suffix in ("", "_image")
    )
    # without the demo's attributes there is no colour to ask about: the caption tasks only
    for sample in samples:
        del sample["attributes"]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(samples))
    assert lmms_task.write_tasks(plain, assets["video_folder"], tmp_path / "t", limit=2) == [
        "llava_demo_caption",
        "llava_demo_caption_image",
    ]
    # the colour words come from beside --data (where make_dataset writes them) or from --colour-words
    moved = tmp_path / "val.json"
    moved.write_text(Path(assets["val"]).read_text())
    assert lmms_task.write_tasks(moved, assets["video_folder"], tmp_path / "w", limit=2) == [
        "llava_demo_caption",
        "llava_demo_caption_image",
    ]
    given = lmms_task.write_tasks(
        moved, assets["video_folder"], tmp_path / "x", limit=2, colour_words=assets["colour_words"]
    )
    assert len(given) == 4
    with pytest.raises(FileNotFoundError) as error:
        lmms_task.write_tasks(plain, tmp_path, tmp_path / "u")
    names = ", ".join(s["video"] for s in samples)
    assert str(error.value) == f"--data names 4 videos that do not exist under --video-folder: {names} ({tmp_path})"


@pytest.mark.parametrize("model", ["llava_vid", "llava_onevision", "llava"])
def test_cli_runs_the_tasks_and_prints_scores(runs, model):
    stdout, results, samples = runs(model)
    for task in TASKS[model]:
        kind = "caption" if "caption" in task else "colour"
        for metric in METRICS[kind]:
            value = results["results"][task][f"{metric},none"]
            assert isinstance(value, float) and math.isfinite(value), (task, metric, value)
            assert f"|{metric}" in stdout.replace(" ", "")  # the printed table
        assert len(samples[task]) == 4
    assert results["configs"][TASKS[model][0]]["output_type"] == "generate_until"


def test_llava_vid_captions_are_our_captions(runs, docs, ours):
    _, results, samples = runs("llava_vid")
    captions = [generated(s) for s in samples["llava_demo_caption"]]
    assert any(captions)  # something was written, so the comparison means something
    for doc, caption in zip(docs, captions):
        assert caption == our_caption(ours, video_pixels(doc["video"], ours[2]), stop_at_newline=True)
    # and the scores are our metrics over those captions
    from llava.eval.metrics import bleu4, cider

    references = [[doc["caption"]] for doc in docs]
    assert results["results"]["llava_demo_caption"]["bleu4,none"] == pytest.approx(bleu4(captions, references))
    assert results["results"]["llava_demo_caption"]["cider,none"] == pytest.approx(cider(captions, references))


def test_llava_vid_loglikelihoods_are_our_losses(runs, docs, ours):
    _, results, samples = runs("llava_vid")
    colour = samples["llava_demo_colour"]
    for doc, sample in zip(docs[:2], colour[:2]):
        pixels = video_pixels(doc["video"], ours[2])
        reported = reported_losses(sample)
        assert reported == pytest.approx([our_loss(ours, pixels, c) for c in doc["choices"]], abs=LOSS_TOLERANCE)
        # the check can fail: other frames of the same clip (our reader's own indices, the centres of 8
        # segments) change the loss by more than the tolerance (about 2e-5 on this tiny model)
        other = process_video_frames(read_video_frames(doc["video"], NUM_FRAMES), ours[2]).half()
        assert abs(our_loss(ours, other, doc["choices"][0]) - reported[0]) > LOSS_TOLERANCE
    chosen = [int(np.argmin(reported_losses(s))) for s in colour]
    assert results["results"]["llava_demo_colour"]["acc,none"] == pytest.approx(
        np.mean([c == d["answer"] for c, d in zip(chosen, docs)])
    )


def test_llava_onevision_captions_are_our_captions(runs, docs, ours):
    _, _, samples = runs("llava_onevision")
    for doc, sample in zip(docs, samples["llava_demo_caption"]):
        assert generated(sample) == our_caption(ours, video_pixels(doc["video"], ours[2]), stop_at_newline=True)


def test_llava_image_class_answers_with_our_model(runs, docs, ours):
    _, _, samples = runs("llava")
    tokenizer, model, processor = ours
    for doc, caption, choice in zip(docs[:2], samples["llava_demo_caption_image"], samples["llava_demo_colour_image"]):
        pixels = frame_pixels(doc, processor, model.config)
        assert generated(caption) == our_caption(ours, pixels, stop_at_newline=False).strip()
        assert reported_losses(choice) == pytest.approx(
            [our_loss(ours, pixels, c) for c in doc["choices"]], abs=LOSS_TOLERANCE
        )


ONEVISION_LOGLIKELIHOOD = """
import json, sys
from lmms_eval.evaluator import simple_evaluate
from lmms_eval.models.simple.llava_onevision import Llava_OneVision
from lmms_eval.tasks import TaskManager

checkpoint, task_dir, model_args = sys.argv[1:]
lm = Llava_OneVision.create_from_arg_string(f"pretrained={checkpoint},{model_args}", {"batch_size": 1})
lm.metadata = {}  # what lmms-eval 0.7.3 forgets to set (llava_onevision.py:292)
out = simple_evaluate(model=lm, tasks=["llava_demo_colour"], batch_size=1, log_samples=True,
                      task_manager=TaskManager(include_path=task_dir))
samples = sorted(out["samples"]["llava_demo_colour"], key=lambda s: s["doc_id"])
print("RESULT " + json.dumps({"acc": out["results"]["llava_demo_colour"]["acc,none"],
                              "resps": [s["filtered_resps"] for s in samples]}))
"""


def test_llava_onevision_loglikelihoods_are_our_losses(checkpoint, task_dir, docs, ours, tmp_path):
    result = subprocess.run(
        [lmms_python(), "-c", ONEVISION_LOGLIKELIHOOD, checkpoint, str(task_dir), MODEL_ARGS["llava_onevision"]],
        cwd=tmp_path,
        env=offline_env(tmp_path / "hf"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    answer = json.loads(line[len("RESULT ") :])
    assert 0.0 <= answer["acc"] <= 1.0
    doc = docs[0]
    reported = reported_losses({"filtered_resps": answer["resps"][0]})
    assert reported == pytest.approx(
        [our_loss(ours, video_pixels(doc["video"], ours[2]), c) for c in doc["choices"]], abs=LOSS_TOLERANCE
    )
