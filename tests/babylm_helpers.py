"""Tiny causal LMs (one whose tokenizer adds no BOS, GPT-2's way, and one whose tokenizer adds a BOS,
Llama's way) and task folders in the 2025 BabyLM pipeline's formats, for the zero-shot scoring tests;
and scoring by hand: log-probabilities summed over chosen token positions, computed from the model's
logits without the scorer's code."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llava.demo.synthetic import save_gpt2, train_tokenizer

TEXTS = [
    "the cat sees the dog",
    "the dogs see the cats",
    "a girl walks to the park",
    "the boys walk to school",
    "she has eaten the apple",
    "they have seen a bird",
    "the ball is in the box",
    "the red ball rolls under the table",
    "John gave Mary the book",
    "the box contains the apple and the key",
    "a blick is wuggy and the wugginess is high",
    "he blicked yesterday and spling spled",
] * 4


def gpt2_folder(folder: Path) -> str:
    """A random GPT-2 with its byte-level BPE tokenizer (adds no BOS)."""
    tokenizer = train_tokenizer(folder / "tokenizer", TEXTS, vocab_size=300)
    return save_gpt2(folder / "gpt2", tokenizer, n_layer=2, n_embd=32, n_head=4, n_positions=128, dropout=0.0)


def llama_folder(folder: Path) -> str:
    """A random Llama whose fast tokenizer adds a BOS to every text (with offsets (0, 0))."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from llava.testing import tiny_language_config

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS, vocab_size=300, min_frequency=1, special_tokens=["<s>", "</s>"])
    bos = bpe.token_to_id("<s>")
    bpe.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    out = folder / "llama"
    tokenizer.save_pretrained(out)
    torch.manual_seed(1)
    config = tiny_language_config("llava_llama")  # the tests' tiny Llama, with this tokenizer's ids
    config.vocab_size, config.bos_token_id, config.eos_token_id = len(tokenizer), bos, bpe.token_to_id("</s>")
    LlamaForCausalLM(config).save_pretrained(out)
    return str(out)


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


BLIMP = {
    "agreement.jsonl": [
        {"sentence_good": "the cat sees the dog", "sentence_bad": "the cat see the dog", "field": "morphology",
         "UID": "agreement", "linguistics_term": "s-v_agreement"},
        {"sentence_good": "the dogs see the cats", "sentence_bad": "the dogs sees the cats", "field": "morphology",
         "UID": "agreement", "linguistics_term": "s-v_agreement"},
        {"sentence_good": "the boys walk to school", "sentence_bad": "the boys walks to school",
         "field": "morphology", "UID": "agreement", "linguistics_term": "s-v_agreement"},
    ],
    "island.jsonl": [
        {"sentence_good": "she has eaten the apple", "sentence_bad": "she has eat the apple",
         "field": "syntax_semantics", "UID": "participle", "linguistics_term": "irregular_forms"},
        {"sentence_good": "they have seen a bird", "sentence_bad": "they have saw a bird",
         "field": "syntax_semantics", "UID": "participle", "linguistics_term": "irregular_forms"},
    ],
}  # fmt: skip

SUPPLEMENT = {
    "turn_taking.jsonl": [
        {"sentence_good": "John gave Mary the book", "sentence_bad": "John gave the book Mary"},
        {"sentence_good": "the ball is in the box", "sentence_bad": "the ball is the in box"},
    ],
}

EWOK = [
    {"Domain": "spatial-relations", "ContextType": "literal", "ContextDiff": "swap", "TargetDiff": "antonym",
     "Context1": "the ball is in the box", "Context2": "the box is in the ball",
     "Target1": "the red ball rolls", "Target2": "the red ball walks"},
    {"Domain": "agent-properties", "ContextType": "literal", "ContextDiff": "negation", "TargetDiff": "swap",
     "Context1": "a girl walks to the park", "Context2": "a girl sees the park",
     "Target1": "she has seen a bird", "Target2": "she has eaten a bird"},
    {"Domain": "spatial-relations", "ContextType": "abstract", "ContextDiff": "swap", "TargetDiff": "antonym",
     "Context1": "the cat sees the dog", "Context2": "the dog sees the cat",
     "Target1": "the dogs see the cats", "Target2": "the cats see the dogs"},
]  # fmt: skip

ENTITY_TRACKING = {
    "regular.jsonl": [
        {"input_prefix": "the box contains the apple and the key. The box contains", "numops": 0,
         "options": [" the apple", " the dog", " the ball"]},
        {"input_prefix": "the box contains the key. The box contains", "numops": 1,
         "options": [" the key", " nothing", " the apple"]},
    ],
    "ambiref.jsonl": [
        {"input_prefix": "the box contains the ball. The box contains", "numops": 0,
         "options": [" the ball", " the cat", " the apple"]},
    ],
}  # fmt: skip

WUG_ADJ = [
    {"sentences": "a blick is wuggy\ta blick is wuggish", "ratio": 0.8},
    {"sentences": "the wugginess is high\tthe wuggity is high", "ratio": 0.3},
    {"sentences": "spling spled\tspling splinged", "ratio": 0.55},
    {"sentences": "he blicked yesterday\the blick yesterday", "ratio": 0.9},
]

COMPS = {
    "comps_base.jsonl": [
        {"prefix_acceptable": "a cat", "prefix_unacceptable": "a box", "property_phrase": "sees the dog"},
        {"prefix_acceptable": "the boys", "prefix_unacceptable": "the apple", "property_phrase": "walk to school"},
    ],
}


def write_task_folders(root: Path) -> dict[str, Path]:
    """One data folder per task, named as the pipeline's fast set names them."""
    folders = {
        "blimp": root / "blimp_fast",
        "supplement": root / "supplement_fast",
        "ewok": root / "ewok_fast",
        "entity_tracking": root / "entity_tracking_fast",
        "wug_adj": root / "wug_adj_nominalization",
        "comps": root / "comps",
    }
    for name, records in BLIMP.items():
        write_jsonl(folders["blimp"] / name, records)
    for name, records in SUPPLEMENT.items():
        write_jsonl(folders["supplement"] / name, records)
    write_jsonl(folders["ewok"] / "ewok.jsonl", EWOK)
    for name, records in ENTITY_TRACKING.items():
        write_jsonl(folders["entity_tracking"] / name, records)
    write_jsonl(folders["wug_adj"] / "wug_adj.jsonl", WUG_ADJ)
    for name, records in COMPS.items():
        write_jsonl(folders["comps"] / name, records)
    return folders


@torch.no_grad()
def token_log_probs(model, ids: list[int], temperature: float = 1.0) -> list[float]:
    """log p(ids[i] | ids[:i]) for i >= 1, from one forward over the whole sequence."""
    logits = model(input_ids=torch.tensor([ids])).logits[0] / temperature
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return [float(log_probs[i - 1, ids[i]]) for i in range(1, len(ids))]


def sentence_score(model, tokenizer, sentence: str, temperature: float = 1.0) -> float:
    """Every token after the first the tokenizer returns (the whole sentence, minus a first word where no
    BOS is added)."""
    return sum(token_log_probs(model, tokenizer(sentence)["input_ids"], temperature))


def completion_score(model, tokenizer, prefix: str, sentence: str, temperature: float = 1.0) -> float:
    """The tokens of `sentence` after those of `prefix` alone (the two must tokenize alike up to there)."""
    head, ids = tokenizer(prefix)["input_ids"], tokenizer(sentence)["input_ids"]
    assert ids[: len(head)] == head, (prefix, sentence)
    return sum(token_log_probs(model, ids, temperature)[len(head) - 1 :])


def write_devbench(root: Path, things: int = 20) -> Path:
    """DevBench's data in the pipeline's layout (assets/<task>/manifest.csv and its pictures, evals/...):
    three vocabulary trials with two age bins of human choices, two TROG trials, `things` THINGS pictures
    (more than one batch of 16) with a symmetric human similarity matrix."""
    import numpy as np
    import pandas as pd
    from PIL import Image
    from scipy.io import savemat

    rng = np.random.default_rng(0)

    def picture(path: Path) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24 + len(path.name), 30, 3), dtype=np.uint8)).save(path)
        return str(path.relative_to(path.parent.parent))

    def human(trials: int, **extra) -> pd.DataFrame:
        shares = rng.dirichlet(np.ones(4), size=trials)
        table = pd.DataFrame(shares, columns=["image1", "image2", "image3", "image4"])
        table.insert(0, "trial", np.arange(trials) + 1)
        for key, value in extra.items():
            table.insert(0, key, value)
        return table

    for task, words in (("lex-viz_vocab", ["ball", "cat", "box"]), ("gram-trog", ["red ball", "the cat sees"])):
        folder = root / "assets" / task
        rows = [{f"image{k}": picture(folder / "images" / f"{word}{k}.png") for k in range(1, 5)} for word in words]
        pd.DataFrame([row | {"text1": word} for row, word in zip(rows, words)]).to_csv(
            folder / "manifest.csv", index=False
        )
        (root / "evals" / task).mkdir(parents=True, exist_ok=True)
    ages = pd.concat([human(3, age_bin=age) for age in (4, 25)])
    ages.to_csv(root / "evals" / "lex-viz_vocab" / "human.csv", index=False)
    human(2).to_csv(root / "evals" / "gram-trog" / "human.csv", index=False)
    folder = root / "assets" / "sem-things"
    names = [f"thing{n}" for n in range(things)]
    rows = [{"text1": name, "image1": picture(folder / "object_images" / f"{name}.jpg")} for name in names]
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    similarity = rng.random((things, things))
    (root / "evals" / "sem-things").mkdir(parents=True, exist_ok=True)
    savemat(root / "evals" / "sem-things" / "spose_similarity.mat", {"spose_sim": (similarity + similarity.T) / 2})
    return root


def write_reading(path: Path, rows: int = 40) -> Path:
    """Reading data in the pipeline's CSV form: contexts and the next word (one of several tokens), a
    previous context on most rows, random reading measures (some missing) and baseline predictors."""
    import numpy as np
    import pandas as pd

    from llava.eval.babylm.reading import MEASURES

    contexts = ["the cat sees", "the dogs see the", "a girl walks to the", "the boys walk to", "she has eaten the"]
    words = ["the", " cats", "park", " school", " wugginess"]  # " wugginess" is several tokens
    rng = np.random.default_rng(0)
    table = []
    for i in range(rows):
        row = {"item": contexts[i % 5], "word": words[(i * 2) % 5]}
        row |= {"prev_item": None if i % 6 == 0 else contexts[(i + 1) % 5], "prev_word": words[(i + 3) % 5]}
        for measure in MEASURES:
            row[measure] = float(rng.normal(200, 30)) if rng.random() > 0.1 else None
        row |= {"Subtlex_log10": float(rng.normal(3, 1)), "length": int(rng.integers(2, 12))}
        row |= {"context_length": int(rng.integers(3, 20)), "prev_length": int(rng.integers(2, 12))}
        table.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(table).to_csv(path, index=False)
    return path
