"""`python -m llava.eval.babylm reading`: surprisals and reading-time regressions as the 2025 BabyLM
pipeline's `reading/run.py` computes them, checked against values computed here by hand (probabilities from
the model's logits, least squares with numpy), for a tokenizer without a BOS (GPT-2's) and one with."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from llava.errors import InputError
from llava.eval.babylm import progress, reading
from llava.eval.babylm.__main__ import main

from babylm_helpers import gpt2_folder, llama_folder, write_reading


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("reading")
    data = write_reading(root / "reading_data.csv")
    return {"root": root, "data": data, "gpt2": gpt2_folder(root), "llama": llama_folder(root)}


def run(setup, model, out):
    argv = ["reading", "--model_path_or_name", setup[model], "--backend", "causal"]
    main(argv + ["--data_path", str(setup["data"]), "--output_dir", str(out)])
    return out / model / "main" / "zero_shot" / "causal" / "reading"


def probability_by_hand(model, tokenizer, context: str, word: str) -> float:
    """p(word | context): the context's tokens, then each of the word's tokens (tokenized alone, no
    special tokens) from the softmax after everything before it; the context re-read as text each time."""
    pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
    p = 1.0
    for n, piece in enumerate(pieces):
        ids = torch.tensor([tokenizer(context)["input_ids"]])
        with torch.no_grad():
            last = model(input_ids=ids).logits[0, -1].double()
        token = piece if n == 0 else tokenizer(tokenizer.decode(piece), add_special_tokens=False)["input_ids"][0]
        p *= float(torch.softmax(last, -1)[token])
        context += tokenizer.decode(piece)
    return p


@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_surprisal_is_minus_log_p_of_every_token_of_the_word_after_the_context(setup, model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = run(setup, model, tmp_path)
    lm = AutoModelForCausalLM.from_pretrained(setup[model]).eval()
    tokenizer = AutoTokenizer.from_pretrained(setup[model])
    assert len(tokenizer(" wugginess", add_special_tokens=False)["input_ids"]) > 1
    frame = pd.read_csv(setup["data"], dtype={"item": str})
    lines = [json.loads(line) for line in (folder / "prediction.jsonl").read_text().splitlines()]
    assert len(lines) == len(frame)
    for (_, row), line in zip(frame.iterrows(), lines):
        expected = -math.log(probability_by_hand(lm, tokenizer, row["item"], row["word"]))
        assert line["Logprob"] == pytest.approx(expected, rel=1e-4)
        if isinstance(row["prev_item"], str):
            previous = -math.log(probability_by_hand(lm, tokenizer, row["prev_item"], row["prev_word"]))
            assert line["Prev_Logprob"] == pytest.approx(previous, rel=1e-4)
        else:
            assert math.isnan(line["Prev_Logprob"])
    collated = json.loads((folder / "predictions.json").read_text())["reading"]["predictions"]
    assert [p["pred"] for p in collated] == [line["Logprob"] for line in lines]


def r_squared(frame, measure, predictors, with_surprisal: bool) -> float:
    """Least squares with an intercept, the predictors and their pairwise products (and `pred`)."""
    columns = [measure, *predictors] + (["pred"] if with_surprisal else [])
    rows = frame[columns].dropna()
    x = [np.ones(len(rows))] + [rows[p].to_numpy() for p in predictors]
    x += [rows[a].to_numpy() * rows[b].to_numpy() for a, b in itertools.combinations(predictors, 2)]
    if with_surprisal:
        x.append(rows["pred"].to_numpy())
    x = np.stack(x, axis=1)
    y = rows[measure].to_numpy()
    residual = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
    return 1 - (residual @ residual) / ((y - y.mean()) @ (y - y.mean()))


def test_the_scores_are_the_share_of_unexplained_variance_the_surprisal_explains(setup, tmp_path):
    folder = run(setup, "gpt2", tmp_path)
    frame = pd.read_csv(setup["data"], dtype={"item": str})
    lines = [json.loads(line) for line in (folder / "prediction.jsonl").read_text().splitlines()]
    frame["pred"] = [line["Logprob"] for line in lines]
    frame["prev_pred"] = [line["Prev_Logprob"] for line in lines]

    def share(measure, predictors):
        base, full = r_squared(frame, measure, predictors, False), r_squared(frame, measure, predictors, True)
        return 100 * (full - base) / (1 - base), full - base

    baseline = ("Subtlex_log10", "length", "context_length")
    eye = [share(m, baseline)[0] for m in ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound")]
    spill = share("self_paced_reading_time", baseline + ("prev_length", "prev_pred"))[0]
    report = (folder / "report.txt").read_text()
    assert report == f"EYE TRACKING SCORE: {sum(eye) / 4:.2f}\nSELF-PACED READING SCORE: {spill:.2f}\n"
    fits = [json.loads(line) for line in (folder / "predictive_power.jsonl").read_text().splitlines()]
    assert [f["Predicted variable"] for f in fits] == list(reading.MEASURES)
    for f in fits:
        assert f["Change in R2 from baseline"] == pytest.approx(share(f["Predicted variable"], baseline)[1], abs=1e-9)
    correlations = dict(line.split("\t") for line in (folder / "correlations.txt").read_text().splitlines())
    assert float(correlations["N400"]) == pytest.approx(frame["pred"].corr(frame["N400"]), abs=6e-5)
    assert not list(folder.glob(".*progress*"))  # finished: no progress file left


def test_a_stopped_run_goes_on_from_its_progress_file(setup, tmp_path):
    """What a stopped run left (two rows, then a line cut short) is used, not recomputed; the rest is."""
    first = run(setup, "gpt2", tmp_path / "first")
    expected = [json.loads(line) for line in (first / "prediction.jsonl").read_text().splitlines()]
    out = tmp_path / "second" / "gpt2" / "main" / "zero_shot" / "causal" / "reading"
    left = progress.Progress(out, "reading", [setup["data"], setup["gpt2"]])
    left.add(0, [123.0, float("nan")])  # a value no model gives: it shows the row was read back
    left.add(1, [expected[1]["Logprob"], expected[1]["Prev_Logprob"]])
    left._file.write("[2, [1.0")  # the stop came while this line was being written
    left._file.close()
    run(setup, "gpt2", tmp_path / "second")
    got = [json.loads(line) for line in (out / "prediction.jsonl").read_text().splitlines()]
    assert got[0]["Logprob"] == 123.0
    assert [g["Logprob"] for g in got[1:]] == [e["Logprob"] for e in expected[1:]]
    assert not left.path.exists()


def test_a_progress_file_of_other_inputs_is_not_used(setup, tmp_path):
    out = tmp_path / "gpt2" / "main" / "zero_shot" / "causal" / "reading"
    other = progress.Progress(out, "reading", [setup["data"], setup["llama"]])  # another model
    other.add(0, [123.0, float("nan")])
    folder = run(setup, "gpt2", tmp_path)
    assert json.loads((folder / "prediction.jsonl").read_text().splitlines()[0])["Logprob"] != 123.0


def test_a_file_that_is_not_the_reading_data_is_one_line_naming_it(setup, tmp_path):
    bad = tmp_path / "reading_data.csv"
    pd.DataFrame({"item": ["a"], "word": ["b"]}).to_csv(bad, index=False)
    with pytest.raises(InputError, match=f"{bad}: not the reading data's format .*no column prev_item"):
        main(["reading", "--model_path_or_name", setup["gpt2"], "--backend", "causal", "--data_path", str(bad)])


@pytest.mark.filterwarnings("ignore:The design matrix is rank-deficient")  # what so few rows give
def test_too_few_rows_for_the_regression_is_one_line(setup, tmp_path):
    few = write_reading(tmp_path / "few.csv", rows=12)
    argv = ["reading", "--model_path_or_name", setup["gpt2"], "--backend", "causal", "--data_path", str(few)]
    with pytest.raises(InputError, match="the baseline predictors fit its .* rows exactly .* many more rows than its"):
        main(argv + ["--output_dir", str(tmp_path)])
