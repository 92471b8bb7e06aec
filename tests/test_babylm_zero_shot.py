"""`python -m llava.eval.babylm zero_shot` scores as the 2025 BabyLM pipeline defines it, checked against
values computed by hand from the model's log-probabilities (babylm_helpers.py), with a tokenizer that adds
no BOS (GPT-2's) and one that adds a BOS (Llama's): which tokens are scored, per-UID and per-field
averages, entity tracking's splits, Spearman's rho for wug, the temperature sweep, and the result files
where the pipeline writes them."""

import json
import subprocess
import sys

import numpy as np
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from llava.eval.babylm import causal_scoring, zero_shot

from babylm_helpers import (
    BLIMP,
    COMPS,
    ENTITY_TRACKING,
    EWOK,
    SUPPLEMENT,
    WUG_ADJ,
    completion_score,
    gpt2_folder,
    llama_folder,
    sentence_score,
    token_log_probs,
    write_task_folders,
)
from train_helpers import ROOT


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("babylm")
    models = {"gpt2": gpt2_folder(root / "models"), "llama": llama_folder(root / "models")}
    return root, models, write_task_folders(root / "data")


def loaded(path):
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def run(setup, model, task, folder, *extra, revision="chck_1M"):
    root, models, folders = setup
    out = root / "results"
    argv = ["--model_path_or_name", models[model], "--backend", "causal", "--task", task]
    argv += ["--data_path", str(folders[folder]), "--output_dir", str(out), "--save_predictions", *extra]
    if revision:
        argv += ["--revision_name", revision]
    zero_shot.main(argv)
    where = out / model / (revision or "main") / "zero_shot" / "causal" / task / folders[folder].name
    report = (where / "best_temperature_report.txt").read_text()
    return report, json.loads((where / "predictions.json").read_text())


def reported(report: str) -> dict[str, dict[str, float]]:
    """The report's sections: {'UID ACCURACY': {'agreement': 66.67, ...}, 'AVERAGE ACCURACY': {'': 58.33}}."""
    sections, current = {}, None
    for line in report.splitlines():
        if line.startswith("### "):
            current = sections.setdefault(line[4:], {})
        elif line.strip() and current is not None:
            name, _, value = line.rpartition(": ") if ": " in line else ("", "", line)
            current[name] = float(value)
    return sections


@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_blimp_scores_every_token_after_the_first_and_averages_per_uid(setup, model):
    lm, tokenizer = loaded(setup[1][model])
    right = {}
    for records in BLIMP.values():
        for r in records:
            good, bad = (sentence_score(lm, tokenizer, r[k]) for k in ("sentence_good", "sentence_bad"))
            right.setdefault(r["UID"], []).append(good >= bad)  # a tie goes to the first, the good sentence
    per_uid = {uid: 100 * sum(v) / len(v) for uid, v in right.items()}
    report, predictions = run(setup, model, "blimp", "blimp")
    sections = reported(report)
    assert sections["UID ACCURACY"] == pytest.approx({u: round(a, 2) for u, a in per_uid.items()}, abs=0.006)
    assert sections["AVERAGE ACCURACY"][""] == pytest.approx(sum(per_uid.values()) / len(per_uid), abs=0.006)
    # The field's name with a slash, as the pipeline standardizes it; per field, per linguistics term.
    assert set(sections["FIELD ACCURACY"]) == {"morphology", "syntax/semantics"}
    assert sections["FIELD ACCURACY"]["morphology"] == pytest.approx(round(per_uid["agreement"], 2))
    assert sections["LINGUISTICS_TERM ACCURACY"]["irregular_forms"] == pytest.approx(round(per_uid["participle"], 2))
    # predictions: the chosen sentence, numbered per UID in file order
    chosen = predictions["agreement"]["predictions"]
    assert [p["id"] for p in chosen] == ["agreement_0", "agreement_1", "agreement_2"]
    for p, r, ok in zip(chosen, BLIMP["agreement.jsonl"], right["agreement"]):
        assert p["pred"] == r["sentence_good" if ok else "sentence_bad"]


@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_the_scored_tokens_are_all_after_the_first_the_tokenizer_returns(setup, model):
    """Each token is scored from the ones before it, so the first is never scored: GPT-2's tokenizer adds
    no BOS, so a sentence's first word goes unscored; Llama's adds one, so every word is scored. Sentences
    of several lengths in one right-padded batch."""
    lm, tokenizer = loaded(setup[1][model])
    sentences = ["the cat sees the dog", "a girl walks to the park", "the red ball rolls under the table"]
    items = [{"sentences": [s], "completions": [s]} for s in sentences]
    ((_, candidates),) = causal_scoring.candidate_batches(tokenizer, items, batch_size=8)
    scores = causal_scoring.score_candidates(lm, candidates, [1.0], "cpu")[1.0][:, 0]
    for sentence, score in zip(sentences, scores.tolist()):
        ids = tokenizer(sentence)["input_ids"]
        assert (ids[0] == tokenizer.bos_token_id) is (model == "llama")
        assert score == pytest.approx(sum(token_log_probs(lm, ids)), abs=1e-4)


def test_the_supplement_takes_its_uid_from_the_file_name(setup):
    lm, tokenizer = loaded(setup[1]["gpt2"])
    right = [sentence_score(lm, tokenizer, r["sentence_good"]) >= sentence_score(lm, tokenizer, r["sentence_bad"])
             for r in SUPPLEMENT["turn_taking.jsonl"]]  # fmt: skip
    report, _ = run(setup, "gpt2", "blimp", "supplement")
    sections = reported(report)
    assert sections["FIELD ACCURACY"] == {"supplement": pytest.approx(100 * sum(right) / len(right), abs=0.006)}
    assert list(sections["UID ACCURACY"]) == ["turn_taking"]


@pytest.mark.parametrize("full_sentence", [False, True])
def test_ewok_scores_the_target_after_its_context_or_the_whole_sentence(setup, full_sentence):
    lm, tokenizer = loaded(setup[1]["llama"])
    per_domain = {}
    for r in EWOK:
        s1, s2 = f"{r['Context1']} {r['Target1']}", f"{r['Context1']} {r['Target2']}"
        if full_sentence:
            scores = [sentence_score(lm, tokenizer, s) for s in (s1, s2)]
        else:
            scores = [completion_score(lm, tokenizer, r["Context1"], s) for s in (s1, s2)]
        per_domain.setdefault(r["Domain"], []).append(scores[0] >= scores[1])
    extra = ["--full_sentence_scores"] if full_sentence else []
    report, _ = run(setup, "llama", "ewok", "ewok", *extra)
    expected = {d: 100 * sum(v) / len(v) for d, v in per_domain.items()}
    sections = reported(report)
    assert sections["UID ACCURACY"] == pytest.approx({d: round(a, 2) for d, a in expected.items()}, abs=0.006)
    assert set(sections) >= {"CONTEXT_TYPE ACCURACY", "CONTEXT_CONTRAST ACCURACY", "TARGET_CONTRAST ACCURACY"}
    assert sections["AVERAGE ACCURACY"][""] == pytest.approx(sum(expected.values()) / len(expected), abs=0.006)


def test_entity_tracking_averages_its_splits_each_over_its_uids(setup):
    lm, tokenizer = loaded(setup[1]["gpt2"])
    per_uid = {}
    for name, records in ENTITY_TRACKING.items():
        for r in records:
            scores = [completion_score(lm, tokenizer, r["input_prefix"], r["input_prefix"] + o) for o in r["options"]]
            uid = f"{name.removesuffix('.jsonl')}_{r['numops']}_ops"
            per_uid.setdefault(uid, []).append(int(np.argmax(scores)) == 0)
    uid_acc = {u: 100 * sum(v) / len(v) for u, v in per_uid.items()}
    regular = (uid_acc["regular_0_ops"] + uid_acc["regular_1_ops"]) / 2
    ambiref = uid_acc["ambiref_0_ops"]
    report, _ = run(setup, "gpt2", "entity_tracking", "entity_tracking")
    uids = reported(report)["UID ACCURACY"]
    assert uids["regular"] == pytest.approx(regular, abs=0.006) and uids["ambiref"] == pytest.approx(ambiref, abs=0.006)
    assert "move_contents" not in uids  # a split without items is left out of the average
    assert reported(report)["AVERAGE ACCURACY"][""] == pytest.approx((regular + ambiref) / 2, abs=0.006)


def _ranks(values):
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def test_wug_reports_spearmans_rho_of_the_first_candidates_share_against_human_ratios(setup):
    lm, tokenizer = loaded(setup[1]["gpt2"])
    shares = []
    for r in WUG_ADJ:
        a, b = (sentence_score(lm, tokenizer, s) for s in r["sentences"].split("\t"))
        shares.append(1 / (1 + np.exp(b - a)))  # softmax over the two scores: the first one's share
    x, y = _ranks(shares), _ranks([r["ratio"] for r in WUG_ADJ])
    rho = float(np.corrcoef(x, y)[0, 1])
    report, predictions = run(setup, "gpt2", "wug_adj", "wug_adj")
    assert "### UID SPEARMAN'S RHO" in report and "### AVERAGE SPEARMAN'S RHO" in report
    assert reported(report)["AVERAGE SPEARMAN'S RHO"][""] == pytest.approx(rho, abs=0.006)
    probs = [p["prob"] for p in predictions["wug_adj"]["predictions"]]
    assert probs == pytest.approx(shares, abs=1e-5)


def test_the_best_temperature_is_the_first_with_the_highest_average(setup):
    lm, tokenizer = loaded(setup[1]["llama"])
    temperatures = [0.5, 1.0, 1.5, 2.0]
    averages = []
    for t in temperatures:
        per_uid = {}
        for records in BLIMP.values():
            for r in records:
                good, bad = (sentence_score(lm, tokenizer, r[k], t) for k in ("sentence_good", "sentence_bad"))
                per_uid.setdefault(r["UID"], []).append(good >= bad)
        averages.append(sum(100 * sum(v) / len(v) for v in per_uid.values()) / len(per_uid))
    best = temperatures[int(np.argmax(averages))]
    report, _ = run(setup, "llama", "blimp", "blimp", "--min_temperature", "0.5", "--max_temperature", "2.0",
                    "--temperature_interval", "0.5", "--batch_size", "2")  # fmt: skip
    assert report.startswith(f"TEMPERATURE: {best:.2f}\n")
    assert reported(report)["AVERAGE ACCURACY"][""] == pytest.approx(max(averages), abs=0.006)


def test_comps_predictions_are_whole_sentences(setup):
    lm, tokenizer = loaded(setup[1]["gpt2"])
    report, predictions = run(setup, "gpt2", "comps", "comps", revision=None)  # no revision: 'main'
    for p, r in zip(predictions["base"]["predictions"], COMPS["comps_base.jsonl"]):
        good, bad = (f"{r[k]} {r['property_phrase']}" for k in ("prefix_acceptable", "prefix_unacceptable"))
        scores = [
            completion_score(lm, tokenizer, r[k], s)
            for k, s in (("prefix_acceptable", good), ("prefix_unacceptable", bad))
        ]
        assert p["pred"] == (good if scores[0] >= scores[1] else bad)
    assert list(reported(report)["UID ACCURACY"]) == ["base"]


def test_a_record_in_another_format_is_one_line_naming_its_file_and_line(setup, tmp_path):
    root, models, _ = setup
    data = tmp_path / "blimp_fast"
    data.mkdir()
    (data / "bad.jsonl").write_text(
        json.dumps(BLIMP["agreement.jsonl"][0]) + "\n" + json.dumps({"sentence": "x"}) + "\n"
    )
    command = [sys.executable, "-m", "llava.eval.babylm", "zero_shot", "--model_path_or_name", models["gpt2"]]
    command += ["--backend", "causal", "--task", "blimp", "--data_path", str(data), "--output_dir", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{data / 'bad.jsonl'}, line 2" in lines[0] and "sentence_good" in lines[0], lines


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--backend", "mlm", "--task", "blimp"], "--backend mlm"),
        (["--backend", "causal", "--task", "blimp", "--images_path", "pictures"], "--images_path"),
        (["--backend", "causal", "--task", "vqa", "--images_path", "pictures", "--batch_size", "4"], "--batch_size 4"),
        (["--backend", "causal", "--task", "vqa", "--image_template", "before"], "--image_template before"),
    ],
)
def test_what_is_not_scored_here_is_refused_in_one_line(setup, flags, said, tmp_path):
    from entry_points import run_cli

    root, models, folders = setup
    argv = ["--model_path_or_name", models["gpt2"], "--data_path", str(folders["blimp"]), *flags]
    from llava.errors import entry_point

    ended = run_cli(lambda: entry_point(zero_shot.main)(argv), [])
    assert ended.returncode == 2 and said in ended.stderr and len(ended.stderr.strip().splitlines()) == 1


def test_an_unknown_command_is_one_line():
    from llava.errors import entry_point
    from llava.eval.babylm.__main__ import main

    from entry_points import run_cli

    ended = run_cli(lambda: entry_point(main)(["zero-shot"]), [])
    assert ended.returncode == 2 and "unknown command 'zero-shot'" in ended.stderr
    assert "export" in ended.stderr and "zero_shot" in ended.stderr


@pytest.mark.parametrize(
    "task, folder, prefix_of",
    [
        ("ewok", "ewok", lambda item, i: item["prefixes"][0]),  # Context1 before each target
        ("entity_tracking", "entity_tracking", lambda item, i: item["prefixes"][i]),
        ("comps", "comps", lambda item, i: item["prefixes"][i]),
    ],
)
@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_each_candidate_scores_its_completion_alone(setup, task, folder, prefix_of, model):
    """The score of every candidate, not only the ranking: the tokens after the context (EWoK's first
    context, the entity-tracking prefix, the COMPS prefix), by hand."""
    from llava.eval.babylm.tasks import read_task

    lm, tokenizer = loaded(setup[1][model])
    items = read_task(setup[2][folder], task)
    ((_, candidates),) = causal_scoring.candidate_batches(tokenizer, items, batch_size=len(items))
    scores = causal_scoring.score_candidates(lm, candidates, [1.0], "cpu")[1.0]
    for item, row in zip(items, scores.tolist()):
        for i, (sentence, got) in enumerate(zip(item["sentences"], row)):
            assert got == pytest.approx(completion_score(lm, tokenizer, prefix_of(item, i), sentence), abs=1e-4)


def test_a_stopped_evaluation_goes_on_from_its_progress_file(setup, tmp_path):
    """Batches a stopped run finished are read back from its progress file, not scored again; the
    rest are scored; the file goes once the results are written."""
    from llava.eval.babylm import progress

    root, models, folders = setup
    argv = ["--model_path_or_name", models["gpt2"], "--backend", "causal", "--task", "blimp"]
    argv += ["--data_path", str(folders["blimp"]), "--batch_size", "2", "--save_predictions"]

    def picked(out_dir):
        args = zero_shot.build_parser().parse_args(argv + ["--output_dir", str(out_dir)])
        zero_shot.main(argv + ["--output_dir", str(out_dir)])
        predictions = json.loads((zero_shot.output_path(args) / "predictions.json").read_text())
        return [p["pred"] for uid in predictions.values() for p in uid["predictions"]]

    fresh = picked(tmp_path / "fresh")
    args = zero_shot.build_parser().parse_args(argv + ["--output_dir", str(tmp_path / "resumed")])
    items = zero_shot.read_items(args)
    left = progress.Progress(zero_shot.output_path(args), "scores", zero_shot.progress_inputs(args, items))
    # Batch 0 (one temperature, two items, two candidates): scores no model gave, each item's other
    # candidate ahead of the one the model picked.
    other = [1 if fresh[i] == items[i]["completions"][0] else 0 for i in (0, 1)]
    left.add(0, [[[-9.0, -1.0] if o == 1 else [-1.0, -9.0] for o in other]])
    resumed = picked(tmp_path / "resumed")
    assert resumed[:2] == [items[i]["completions"][other[i]] for i in (0, 1)] != fresh[:2]
    assert resumed[2:] == fresh[2:]
    assert not left.path.exists()
