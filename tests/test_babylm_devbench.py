"""`python -m llava.eval.babylm devbench`: DevBench as the 2025 BabyLM pipeline scores a BabyLM model,
checked against values computed here by hand from a tiny llava checkpoint's logits and hidden states
(caption losses with the picture before the text, picture features, accuracy, the fitted KL, RSA), and the
tower's layer choice kept when the language model has recorded its hidden states."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import spearmanr

from llava.constants import IMAGE_TOKEN_INDEX
from llava.errors import InputError, UsageError
from llava.eval.babylm import devbench, devbench_stats, progress
from llava.eval.babylm.__main__ import main
from llava.mm_utils import process_images
from llava.model.builder import load_pretrained_model

from babylm_helpers import gpt2_folder, write_devbench
from model_helpers import llava_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tower_dir):
    root = tmp_path_factory.mktemp("devbench")
    checkpoint = llava_checkpoint("llava_gpt2", root / "model", gpt2_folder(root / "gpt2"), tower_dir)
    data = write_devbench(root / "data")
    out = root / "results"
    main(["devbench", "--model", str(checkpoint), "--data_path", str(data), "--output_dir", str(out)])
    tokenizer, model, processor, _ = load_pretrained_model(str(checkpoint), device="cpu")
    folder = out / "llava" / "main" / "zero_shot" / "devbench"
    return {"checkpoint": checkpoint, "data": data, "folder": folder, "loaded": (tokenizer, model.eval(), processor)}


def pictures(data, task):
    manifest = pd.read_csv(data / "assets" / task / "manifest.csv")
    columns = [c for c in manifest.columns if c.startswith("image")]
    return manifest, [
        [Image.open(data / "assets" / task / row[c]).convert("RGB") for c in columns] for _, row in manifest.iterrows()
    ]


@torch.no_grad()
def caption_loss_by_hand(tokenizer, model, processor, image, text) -> float:
    """Mean over the caption's tokens of -log p(token | the picture's tokens and the tokens before it)."""
    ids = tokenizer(f"The caption for this image is: {text}.")["input_ids"]
    pixels = process_images([image], processor, model.config)
    logits = model(input_ids=torch.tensor([[IMAGE_TOKEN_INDEX] + ids]), images=[pixels[0]]).logits[0]
    first = logits.shape[0] - len(ids)  # the caption's first position, after the visual tokens
    log_probs = F.log_softmax(logits.double(), -1)
    return float(-np.mean([log_probs[first + j - 1, ids[j]].item() for j in range(len(ids))]))


def test_picture_choice_scores_are_minus_the_caption_loss_after_each_picture(setup):
    tokenizer, model, processor = setup["loaded"]
    for task in devbench.CHOICE_TASKS:
        manifest, trials = pictures(setup["data"], task)
        sims = np.load(setup["folder"] / f"{task}.npy")
        assert sims.shape == (len(trials), 4, 1) and sims.dtype == np.float64
        for t, images in enumerate(trials):
            for i, image in enumerate(images):
                expected = -caption_loss_by_hand(tokenizer, model, processor, image, manifest["text1"][t])
                assert sims[t, i, 0] == pytest.approx(expected, abs=1e-5)


def kl_at(beta, sims, human) -> float:
    """Mean over trials of KL(human || softmax(beta * scores)), probabilities clipped to [1e-10, 1]."""
    scores = sims[:, :, 0]
    model = np.exp(beta * (scores - scores.max()))
    model /= model.sum(axis=1, keepdims=True)
    values = []
    for _, row in human.iterrows():
        p = np.clip(row[["image1", "image2", "image3", "image4"]].to_numpy(float), 1e-10, 1)
        q = np.clip(model[int(row["trial"]) - 1], 1e-10, 1)
        values.append(float(np.sum(p * np.log(p / q))))
    return float(np.mean(values))


def test_accuracy_and_the_fitted_kl_against_children(setup):
    folder, data = setup["folder"], setup["data"]
    sims = np.load(folder / "lex-viz_vocab.npy")
    accuracy = float(np.mean([s[0, 0] > max(s[1:, 0]) for s in sims]))
    table = pd.read_csv(folder / "lex-vv_scores.csv", index_col=0)
    human = pd.read_csv(data / "evals" / "lex-viz_vocab" / "human.csv")
    assert table["age_bin"].tolist() == [4, 25] and table["accuracy"].tolist() == [accuracy] * 2
    grid = np.linspace(0.025, 40, 2000)
    for _, row in table.iterrows():
        rows = human[human["age_bin"] == row["age_bin"]]
        assert row["kl"] == pytest.approx(kl_at(row["beta"], sims, rows), abs=1e-12)  # the KL at its beta
        assert row["kl"] <= min(kl_at(b, sims, rows) for b in grid) + 1e-3  # and beta (nearly) its minimum
    trog = pd.read_csv(folder / "gram-trog_models.csv", index_col=0)
    assert len(trog) == 1 and trog["model"][0] == "llava"
    text = (folder / "results.txt").read_text()
    assert text.startswith(f"Visual Vocabulary Accuracy: {pd.Series([accuracy] * 2, name='accuracy')}\nTROG Accuracy:")


@torch.no_grad()
def test_things_features_are_mean_last_hidden_states_and_rsa_is_spearman_of_the_lower_triangles(setup):
    tokenizer, model, processor = setup["loaded"]
    folder, data = setup["folder"], setup["data"]
    _, trials = pictures(data, "sem-things")
    features = np.load(folder / "sem-things.npy")
    assert features.shape == (len(trials), model.config.hidden_size) and len(trials) > devbench.THINGS_BATCH
    ids = torch.tensor([[IMAGE_TOKEN_INDEX] + tokenizer(" ")["input_ids"]])
    for n in (0, len(trials) - 1):  # one in the first batch of 16, one in the last
        pixels = process_images(trials[n], processor, model.config)
        hidden = model(input_ids=ids, images=[pixels[0]], output_hidden_states=True).hidden_states[-1][0]
        np.testing.assert_allclose(features[n], hidden.mean(0).numpy(), atol=1e-5)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = np.load(folder / "sem-things_pairwise_sims.npy")
    np.testing.assert_allclose(similarity, unit @ unit.T, atol=1e-6)
    from scipy.io import loadmat

    human = loadmat(str(data / "evals" / "sem-things" / "spose_similarity.mat"))["spose_sim"]
    below = np.tril_indices(len(trials), k=-1)
    rho = spearmanr(human[below], similarity[below])[0]
    assert float(pd.read_csv(folder / "sem-things_scores.csv")["rsa"][0]) == pytest.approx(rho, abs=1e-12)
    assert (folder / "results.txt").read_text().endswith(f"Things Spearman Correlation: {rho}")


@torch.no_grad()
def test_the_towers_layer_is_the_same_after_the_language_model_recorded_its_hidden_states(setup):
    """Transformers 5 hooks the layers it records; the language model's hooks reach the tower's layers too,
    a second time, after the tower's own: the tower's chosen layer must not move."""
    _, model, processor, _ = load_pretrained_model(str(setup["checkpoint"]), device="cpu")  # hooked nowhere yet
    tower = model.get_vision_tower()
    pixels = process_images([Image.new("RGB", (40, 30), (200, 30, 90))], processor, model.config)
    before = tower(pixels)
    reference = tower.vision_tower(pixels, output_hidden_states=True).hidden_states[tower.select_layer]
    torch.testing.assert_close(before, reference[:, 1:].reshape(before.shape))
    ids = torch.tensor([[IMAGE_TOKEN_INDEX, 5, 6]])
    model(input_ids=ids, images=[pixels[0]], output_hidden_states=True)
    torch.testing.assert_close(tower(pixels), before, rtol=0, atol=0)


def test_a_stopped_run_goes_on_from_its_progress(setup, tmp_path):
    args = devbench.build_parser().parse_args(
        ["--model", str(setup["checkpoint"]), "--data_path", str(setup["data"]), "--output_dir", str(tmp_path)]
    )
    left = progress.Progress(devbench.output_path(args), "devbench", [args.data_path, args.model, args.model_type])
    left.add("gram-trog/0", [[5.0], [1.0], [1.0], [1.0]])  # trial 0: picture 1 far ahead (no model's scores)
    left.add("gram-trog/1", [[1.0], [5.0], [1.0], [1.0]])  # trial 1: picture 2 ahead
    _, model, _ = setup["loaded"]
    devbench.score(args, model, processor_of(setup), quiet=True, device="cpu")
    folder = devbench.output_path(args)
    assert np.load(folder / "gram-trog.npy")[:, :, 0].tolist() == [[5.0, 1.0, 1.0, 1.0], [1.0, 5.0, 1.0, 1.0]]
    assert pd.read_csv(folder / "gram-trog_models.csv")["accuracy"][0] == 0.5
    np.testing.assert_array_equal(np.load(folder / "lex-viz_vocab.npy"), np.load(setup["folder"] / "lex-viz_vocab.npy"))
    assert not left.path.exists()


def processor_of(setup):
    from llava.eval.babylm.zero_shot import for_scoring

    tokenizer, model, _ = setup["loaded"]
    return for_scoring(model, tokenizer, True)[1]


def test_bad_inputs_are_one_line_each(setup, tmp_path):
    base = ["devbench", "--model", str(setup["checkpoint"]), "--output_dir", str(tmp_path)]
    with pytest.raises(UsageError, match="--model_type clip: this project's models are scored as BabyLM models"):
        main(base + ["--data_path", str(setup["data"]), "--model_type", "clip"])
    with pytest.raises(InputError, match="evals/lex-viz_vocab/human.csv: missing"):
        main(base + ["--data_path", str(tmp_path / "nowhere")])
    broken = write_devbench(tmp_path / "data", things=3)
    (broken / "assets" / "gram-trog" / "images" / "red ball3.png").unlink()
    with pytest.raises(InputError, match=r"gram-trog/manifest.csv row 2: picture .*red ball3.png is missing"):
        main(base + ["--data_path", str(broken)])
    (broken / "assets" / "gram-trog" / "images" / "red ball3.png").write_bytes(b"not a picture")  # found when scored
    with pytest.raises(InputError, match=r"gram-trog/manifest.csv row 2: picture .*red ball3.png cannot be read"):
        main(base + ["--data_path", str(broken)])


def test_stats_keep_the_pipelines_table_shapes():
    sims = np.array([[[3.0], [1.0], [2.0], [0.0]], [[0.0], [1.0], [2.0], [3.0]]])
    table = devbench_stats.choice_table(sims)
    assert table["trial"].tolist() == [1, 2] and table["correct"].tolist() == [True, False]
    assert json.dumps(list(table.columns)) == json.dumps(["image1", "image2", "image3", "image4", "trial", "correct"])
