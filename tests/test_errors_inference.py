"""Inference entry points (serve.cli, eval.captions, eval.export_lm, eval.run_llava, eval.lmms_task) fail in
one line, `error: WHAT (WHERE)`, with a non-zero status: each case runs the real command line and checks
the exact line and status. Most checks fire before a model is loaded. The command's `cli` runs in this
process (`in_process`: the same code from the arguments to the error line, without the 4-5 s of a new
interpreter); each entry point keeps a case through `python -m` in a subprocess (`run`), and so do the
cases that need one: the hub's variables, read when huggingface_hub is imported, and the warnings, whose
once-only memory lives in the process.

Also: the transformers warnings that our own use used to trigger (a stock checkpoint loaded into its llava
family; batch generation's attention mask) are gone from the real log output, while other warnings, and
the same warnings outside our use, still show.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from llava.data.samples import load_samples
from llava.eval import captions, export_lm, lmms_task
from llava.model.model_folder import check_model_folder
from llava.serve import cli as serve

from entry_points import run_cli_with_process_output
from train_helpers import ROOT

SUPPORTED = "supported: gemma, gpt2, llama, mistral, mixtral, mpt, qwen2, or their llava_* types"
TYPE_WARNING = "You are using a model of type"
MASK_WARNING = "We strongly recommend passing in an `attention_mask`"


def run(module, *args, env=None, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def in_process(module, *args):
    """`python -m module args`, run by the module's `cli` in this process."""
    return run_cli_with_process_output(module.cli, list(args))


def run_python(code, *args, env=None):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_alone(result, message, status=1):
    """The process printed exactly one line, `error: message`, and exited with `status`."""
    assert (result.returncode, result.stderr) == (status, f"error: {message}\n"), result.stderr[-3000:]


def assert_last(result, message, status=1):
    """After loading a model (whose progress bars go to stderr): the last line, and no traceback."""
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"error: {message}"


def write_config(folder, text) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(text)
    return folder


@pytest.fixture
def clip(assets):
    return f"{assets['video_folder']}/val_00000.mp4"


# ------------------------------------------------------------------------------ the model folder
def test_missing_model_folder(tmp_path, clip):
    assert_alone(
        in_process(serve, "--model-path", tmp_path / "nope", "--video", clip),
        f"--model-path folder does not exist ({tmp_path / 'nope'})",
    )


@pytest.mark.slow
def test_missing_model_folder_that_could_be_a_hub_id_asks_no_hub_when_offline(tmp_path, clip):
    """Before: 42 lines ending in a hub message, after half a minute of retries."""
    result = run(
        "llava.serve.cli",
        "--model-path",
        "no-such-model",
        "--video",
        clip,
        cwd=tmp_path,
        env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"},
    )
    assert_alone(
        result,
        "--model-path folder does not exist (no-such-model), and no hub model of that name is in the "
        f"Hugging Face cache ({tmp_path / 'hf' / 'hub'}) or can be downloaded (HF_HUB_OFFLINE is set)",
    )


@pytest.mark.slow
def test_a_hub_id_in_the_cache_is_a_model_folder(tmp_path, assets):
    snapshot = tmp_path / "hf" / "hub" / "models--tiny-gpt2" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(Path(assets["gpt2"], "config.json").read_text())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    code = (
        "import sys; from llava.model.model_folder import check_model_folder as c; print(c(sys.argv[1])['model_type'])"
    )
    result = run_python(code, "tiny-gpt2", env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert (result.returncode, result.stdout) == (0, "gpt2\n"), result.stderr[-3000:]


def test_plain_language_model_is_not_a_llava_checkpoint(assets, clip):
    assert_alone(
        in_process(serve, "--model-path", assets["gpt2"], "--video", clip),
        f"--model-path is a plain gpt2 model with no vision tower, not a llava checkpoint, so it cannot caption "
        f"images or videos ({assets['gpt2']})",
    )


def test_unknown_model_type(tmp_path, clip):
    folder = write_config(tmp_path / "bert", '{"model_type": "bert"}')
    assert_alone(
        in_process(serve, "--model-path", folder, "--video", clip),
        f"--model-path config.json has model_type 'bert', which no family here loads; {SUPPORTED} "
        f"({folder / 'config.json'})",
    )


def test_truncated_config(tmp_path, clip):
    folder = write_config(tmp_path / "cut", '{\n  "model_type": "llava_gpt2",\n  "n_embd": 64,\n')
    assert_alone(
        in_process(serve, "--model-path", folder, "--video", clip),
        "--model-path config.json is cut short or not valid JSON: expecting property name enclosed in double "
        f"quotes ({folder / 'config.json'}:4:1)",
    )


@pytest.mark.parametrize(
    "case",
    [
        "no config",
        "checkpoints inside",
        "empty",
        "invalid",
        "list",
        "no model_type",
        "no weights",
        "adapter only",
        "a file",
    ],
)
def test_what_is_not_a_model_folder(tmp_path, case):
    """Each check of the model folder, in-process: the same function serves every entry point and training."""
    folder = tmp_path / "model"
    config = folder / "config.json"
    expected = {
        "no config": f"--model-path folder has no config.json, so it is not a model folder ({folder})",
        "checkpoints inside": f"--model-path folder has no config.json, so it is not a model folder; model folders inside "
        f"it: checkpoint-10, checkpoint-20 ({folder})",
        "empty": f"--model-path config.json is empty ({config})",
        "invalid": f"--model-path config.json is not valid JSON: expecting ',' delimiter ({config}:2:3)",
        "list": f"--model-path config.json holds a JSON list, not an object of settings ({config})",
        "no model_type": f"--model-path config.json names no model_type, so its model family is unknown; {SUPPORTED} ({config})",
        "no weights": f"--model-path folder has a config.json but no model weights (model.safetensors or pytorch_model.bin): "
        f"was it copied completely? ({folder})",
        "adapter only": f"--model-path folder holds an adapter (mm_projector.bin) but no model weights: load it with the "
        f"language model it was trained on (--model-base) ({folder})",
        "a file": f"--model-path is a file, not a model folder ({folder})",
    }[case]
    if case == "a file":
        folder.write_text("")
    else:
        folder.mkdir()
    if case == "checkpoints inside":
        for step in (10, 20):
            write_config(folder / f"checkpoint-{step}", '{"model_type": "llava_gpt2"}')
    text = {
        "empty": " \n",
        "invalid": '{"model_type": "gpt2"\n  "n_layer": 2}',
        "list": "[]",
        "no model_type": '{"n_layer": 2}',
        "no weights": '{"model_type": "gpt2"}',
    }.get(case)
    if text is not None:
        config.write_text(text)
    if case == "adapter only":
        (folder / "mm_projector.bin").write_bytes(b"")
    with pytest.raises(ValueError) as error:  # InputError is a ValueError
        check_model_folder(str(folder))
    assert str(error.value) == expected


@pytest.mark.slow
def test_debug_switch_shows_the_traceback(tmp_path, clip):
    """Through `python -m llava.serve.cli`, in a subprocess: the module's __main__ wiring."""
    result = run("llava.serve.cli", "--model-path", tmp_path / "nope", "--video", clip, env={"LLAVA_DEBUG": "1"})
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"llava.model.model_folder.MissingModelFile: --model-path folder does not exist ({tmp_path / 'nope'})"
    )


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_a_gpu_on_a_machine_without_one(checkpoint, clip):
    assert_last(
        in_process(serve, "--model-path", checkpoint, "--video", clip, "--device", "cuda"),
        "device_map/device 'cuda' asks for a CUDA GPU, but torch sees none on this machine; pass device_map='auto' "
        "(or 'cpu') to load on the CPU",
        status=2,
    )


# ------------------------------------------------------------------------------------- media
@pytest.mark.slow
def test_missing_video_and_image(checkpoint, tmp_path):
    assert_alone(
        in_process(serve, "--model-path", checkpoint, "--video", tmp_path / "clip.mp4"),
        f"--video file does not exist ({tmp_path / 'clip.mp4'})",
    )
    assert_alone(
        in_process(serve, "--model-path", checkpoint, "--image", tmp_path),
        f"--image is a folder, not a file ({tmp_path})",
    )


@pytest.mark.slow
def test_unreadable_video_and_image(checkpoint, tmp_path):
    empty, text = tmp_path / "empty.mp4", tmp_path / "photo.png"
    empty.write_bytes(b"")
    text.write_text("not an image\n")
    assert_last(
        in_process(serve, "--model-path", checkpoint, "--video", empty),
        f"--video cannot be read: file is empty (0 bytes) ({empty})",
    )
    assert_last(
        in_process(serve, "--model-path", checkpoint, "--image", text),
        f"--image cannot be read: UnidentifiedImageError: cannot identify image file '{text}' ({text})",
    )


@pytest.mark.slow
def test_run_llava_on_a_plain_language_model(assets, clip):
    """run_llava's one case, through `python -m` in a subprocess."""
    assert_alone(
        run("llava.eval.run_llava", "--model-path", assets["gpt2"], "--image-file", clip, "--query", "?"),
        f"--model-path is a plain gpt2 model with no vision tower, not a llava checkpoint, so it cannot look at "
        f"--image-file ({assets['gpt2']})",
    )


# ---------------------------------------------------------------------------------------- data
@pytest.mark.slow
def test_captions_data_problems(checkpoint, assets, tmp_path):
    missing = tmp_path / "val.json"  # through `python -m` in a subprocess; the others in this process
    assert_alone(
        run("llava.eval.captions", "--model-path", checkpoint, "--data", missing),
        f"--data file does not exist ({missing})",
    )
    # a file cut short: the training data checks' own line (llava.train.data), before the model is loaded
    text = Path(assets["val"]).read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError) as error:
        load_samples(str(cut))
    assert str(cut) in str(error.value)
    assert_alone(in_process(captions, "--model-path", checkpoint, "--data", cut), str(error.value))
    # a sample without an answer has nothing to score against
    unanswered = tmp_path / "unanswered.json"
    samples = [
        {
            "id": f"s{i}",
            "conversations": [{"from": "human", "value": "ciao"}]
            + ([{"from": "gpt", "value": "ciao"}] if i == 1 else []),
        }
        for i in range(8)
    ]
    unanswered.write_text(json.dumps(samples))
    assert_alone(
        in_process(captions, "--model-path", assets["gpt2"], "--data", unanswered),
        f"--data: 7 samples have no reference answer to score: 's0', 's2', 's3', 's4', 's5' and 2 more ({unanswered})",
    )


def test_serve_data_with_clips_needs_a_llava_checkpoint(assets, tmp_path):
    assert_alone(
        in_process(
            serve,
            "--model-path",
            assets["gpt2"],
            "--data",
            assets["val"],
            "--video-folder",
            assets["video_folder"],
            "--out",
            tmp_path / "out.jsonl",
        ),
        f"--model-path is a plain gpt2 model with no vision tower, not a llava checkpoint, so it cannot caption "
        f"the clips and images of --data ({assets['gpt2']})",
    )
    assert_alone(
        in_process(
            serve,
            "--model-path",
            assets["gpt2"],
            "--data",
            assets["val"],
            "--video-folder",
            tmp_path / "videos",
            "--out",
            tmp_path / "out.jsonl",
        ),
        f"--video-folder folder does not exist ({tmp_path / 'videos'})",
    )


@pytest.mark.slow
def test_lmms_task_inputs(assets, tmp_path):
    """The first through `python -m` in a subprocess, the second in this process."""
    assert_alone(
        run("llava.eval.lmms_task", "--data", assets["val"], "--video-folder", tmp_path, "--out", tmp_path / "t"),
        f"--data names 4 videos that do not exist under --video-folder: val_00000.mp4, val_00001.mp4, "
        f"val_00002.mp4, val_00003.mp4 ({tmp_path})",
    )
    assert_alone(
        in_process(
            lmms_task,
            "--data",
            assets["val"],
            "--video-folder",
            assets["video_folder"],
            "--out",
            tmp_path / "t",
            "--name",
            "demo-1",
        ),
        "--name 'demo-1': a task name prefix has letters, digits and underscores only",
        status=2,
    )


# -------------------------------------------------------------------------------------- outputs
@pytest.mark.slow
def test_outputs_on_a_read_only_disk(checkpoint, assets, disks):
    read_only = disks.mount("read-only", read_only=True)
    # export_lm through `python -m` in a subprocess; the others in this process
    assert_alone(
        run("llava.eval.export_lm", "--model-path", assets["gpt2"], "--out", read_only / "lm"),
        f"read-only file system: --out {read_only / 'lm'} cannot be written ({read_only})",
    )
    assert_alone(
        in_process(
            captions,
            "--model-path",
            checkpoint,
            "--data",
            assets["val"],
            "--video-folder",
            assets["video_folder"],
            "--out",
            read_only / "result.json",
        ),
        f"read-only file system: the folder of --out {read_only} cannot be written ({read_only})",
    )
    assert_alone(
        in_process(serve, "--model-path", checkpoint, "--data", assets["val"], "--out", assets["video_folder"]),
        f"--out is a folder; it names the file to write ({assets['video_folder']})",
    )


def test_export_on_a_full_disk(assets, disks):
    full = disks.mount("full", "64k")
    result = in_process(export_lm, "--model-path", assets["gpt2"], "--out", full / "lm")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    where = re.escape(str(full / "lm"))
    pattern = rf"error: no space left on the device saving the exported model \({where}: needs about [0-9.]+ KB, [0-9.]+ (KB|bytes) free\)"
    assert re.fullmatch(pattern, result.stderr.splitlines()[-1]), result.stderr.splitlines()[-1]


# ------------------------------------------------------------------------------------- warnings
@pytest.mark.slow
def test_stock_checkpoints_load_into_their_family_without_the_type_warning(assets, tmp_path):
    """All seven families through our loader: no warning. transformers' own config loader still warns about
    the same pair, and our loader still warns about a foreign type that the path rule sends to GPT-2."""
    code = """
        import sys
        from pathlib import Path
        sys.path.insert(0, "tests")
        from model_helpers import FAMILIES, upstream_checkpoint
        from llava.model.builder import causal_lm_class, from_pretrained

        folder = Path(sys.argv[1])
        for family in FAMILIES:
            upstream_checkpoint(family, folder / family)
            print("== ours", family, file=sys.stderr, flush=True)
            from_pretrained(family, str(folder / family))
        print("== transformers", file=sys.stderr, flush=True)
        causal_lm_class("llava_gpt2").config_class.from_pretrained(str(folder / "llava_gpt2"))
        print("== foreign", file=sys.stderr, flush=True)
        neo = folder / "bambi-neo"
        neo.mkdir()
        (neo / "config.json").write_text('{"model_type": "gpt_neo"}')
        try:
            from_pretrained("llava_gpt2", str(neo))
        except OSError:
            pass  # no weights: only the config matters here
        print("== end", file=sys.stderr, flush=True)
    """
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ours, rest = result.stderr.split("== transformers")
    direct, foreign = rest.split("== foreign")
    assert ours.count("== ours") == 7 and TYPE_WARNING not in ours
    assert direct.count(TYPE_WARNING) == 1 and "`gpt2` to instantiate a model of type `llava_gpt2`" in direct
    assert foreign.count(TYPE_WARNING) == 1 and "`gpt_neo` to instantiate a model of type `llava_gpt2`" in foreign
    # the real entry point that loads a stock GPT-2: export_lm
    exported = run("llava.eval.export_lm", "--model-path", assets["gpt2"], "--out", tmp_path / "export")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert TYPE_WARNING not in exported.stderr and (tmp_path / "export" / "model.safetensors").is_file()


BATCH_WITH_AN_EARLY_END = """
    import sys
    import torch
    from llava.model.builder import load_pretrained_model
    from llava.generation import generate_texts

    tokenizer, model, _, _ = load_pretrained_model(sys.argv[1])
    prompts = [[5, 6], [7, 6]]  # equal lengths: an all-ones mask, which transformers drops
    with torch.no_grad():
        last = model(input_ids=torch.tensor(prompts), output_hidden_states=True).hidden_states[-1][:, -1]
        # EOS (= the pad token) is the first prompt's next token and cannot be the second's: the first row
        # ends at once and is fed pad tokens while the second goes on
        direction = last[0] - last[1]
        model.get_output_embeddings().weight[tokenizer.eos_token_id] = 50 * direction / direction.norm()
    if sys.argv[2] == "generate_texts":
        # 300 new tokens do not fit the 256 positions: our own warning, which must still show
        generate_texts(model, tokenizer, prompts, [None, None], max_new_tokens=300)
    else:
        model.generate(torch.tensor(prompts), attention_mask=torch.ones(2, 2, dtype=torch.long), max_new_tokens=3,
                       do_sample=False, pad_token_id=tokenizer.pad_token_id)
"""


@pytest.mark.slow
def test_batch_generation_has_no_attention_mask_warning(checkpoint):
    """generate_texts (serve.cli, eval.captions, the demo's evaluation) passes the mask; the same batch through
    the language model's own generate shows the warning, so the case is really reached."""
    ours = run_python(BATCH_WITH_AN_EARLY_END, checkpoint, "generate_texts")
    assert ours.returncode == 0, ours.stderr[-3000:]
    assert MASK_WARNING not in ours.stderr
    assert "max_new_tokens=300 does not fit the language model's 256 positions" in ours.stderr
    plain = run_python(BATCH_WITH_AN_EARLY_END, checkpoint, "generate")
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert MASK_WARNING in plain.stderr
