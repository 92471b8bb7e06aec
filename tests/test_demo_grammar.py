"""The demo's Italian grammar: agreeing captions, the words the evaluation reads back, the clips that
ground gender and number, and the minimal pairs drawn from the same grammar."""

import json
from collections import Counter
from pathlib import Path

import numpy as np

from llava.demo import grammar
from llava.demo.run import ATTRIBUTES, attribute_words
from llava.demo.synthetic import COLOURS, ClipSpec, all_specs, caption_corpus, render_frames
from llava.eval import lmms_task
from llava.eval.colour_words import read_colour_words


def test_captions_agree_with_the_subject_in_gender_and_number():
    assert ClipSpec("rosso", "cerchio", "destra").caption(0) == "un cerchio rosso si muove verso destra"
    assert ClipSpec("rosso", "croce", "destra").caption(0) == "una croce rossa si muove verso destra"
    assert ClipSpec("rosso", "cerchio", "alto", 2).caption(0) == "due cerchi rossi si muovono verso l'alto"
    assert ClipSpec("giallo", "stella", "basso", 2).caption(1) == "ci sono due stelle gialle che vanno verso il basso"
    assert ClipSpec("verde", "croce", "sinistra", 2).caption(2) == "si vedono due croci verdi spostarsi verso sinistra"
    assert ClipSpec("blu", "stella", "destra", 2).caption(3) == "verso destra si spostano due stelle blu"
    assert ClipSpec("verde", "stella", "alto").caption(4) == "il video mostra una stella verde diretta verso l'alto"
    assert ClipSpec("rosso", "quadrato", "alto", 2).caption(4) == (
        "il video mostra due quadrati rossi diretti verso l'alto"
    )
    # gender and number both vary over the clips
    specs = all_specs()
    assert {grammar.NOUNS[s.shape][0] for s in specs} == {"m", "f"} and {s.count for s in specs} == {1, 2}
    assert len(set(caption_corpus())) == len(specs) * len(grammar.TEMPLATES)


def test_the_evaluation_reads_every_attribute_back_from_every_caption():
    for spec in all_specs():
        for template in range(len(grammar.TEMPLATES)):
            assert attribute_words(spec.caption(template)) == spec.attributes(), spec.caption(template)
    assert attribute_words("un quadrato") == {"colour": None, "shape": "quadrato", "direction": None, "count": 1}
    assert ATTRIBUTES["count"] == (1, 2) and ATTRIBUTES["colour"] == tuple(COLOURS)


def test_the_colour_words_the_demo_writes_read_every_caption_back(tmp_path):
    # what the lmms-eval colour tasks read captions with, written by the demo beside its data
    words = read_colour_words(grammar.colour_words().save(tmp_path / "colour_words.json"))
    assert words.names == tuple(COLOURS)
    for spec in all_specs():
        for template in range(len(grammar.TEMPLATES)):
            caption = spec.caption(template)
            assert lmms_task.named_colours(caption, words.colour_of()) == {spec.colour}, caption
            assert words.word(spec.colour, spec.shape, spec.count) in caption.split(), caption
    assert words.word("rosso", "croce", 2) == "rosse" and words.word("rosso", None, 1) == "rosso"


def colour_runs(frame: np.ndarray, colour: str, axis: int) -> int:
    """Separate runs of rows (axis 1) or columns (axis 0) that hold the colour."""
    present = (np.abs(frame.astype(int) - COLOURS[colour]).sum(-1) == 0).any(axis=axis)
    return int(present[0]) + int(np.sum(present[1:] & ~present[:-1]))


def test_two_shapes_are_drawn_side_by_side_across_the_motion():
    for direction, across in (("destra", 1), ("alto", 0)):  # rows beside a rightward path, columns beside an upward
        for shape in grammar.NOUNS:
            one = render_frames(ClipSpec("rosso", shape, direction, 1), 4, 64, seed=3)
            two = render_frames(ClipSpec("rosso", shape, direction, 2), 4, 64, seed=3)
            assert [colour_runs(f, "rosso", across) for f in one] == [1] * 4, (shape, direction)
            assert [colour_runs(f, "rosso", across) for f in two] == [2] * 4, (shape, direction)


def test_the_five_shapes_are_five_different_masks():
    frames = {shape: render_frames(ClipSpec("blu", shape, "destra"), 1, 64, seed=0)[0] for shape in grammar.NOUNS}
    masks = {shape: (np.abs(f.astype(int) - COLOURS["blu"]).sum(-1) == 0).tobytes() for shape, f in frames.items()}
    assert len(set(masks.values())) == 5


def differing_words(good: str, bad: str) -> list[tuple[str, str]]:
    return [(g, b) for g, b in zip(good.split(), bad.split()) if g != b]


def test_minimal_pairs_change_one_feature_or_the_order_of_two_words(tmp_path):
    path = grammar.write_minimal_pairs(tmp_path / "pairs" / "demo.jsonl", per_paradigm=40, seed=1)
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    assert Counter(r["group"] for r in rows) == {"gender agreement": 80, "number agreement": 80, "word order": 80}
    assert Counter(r["UID"] for r in rows) == {uid: 40 for uid in grammar.PARADIGMS}
    assert len({r["pairID"] for r in rows}) == len(rows) == len({(r["sentence_good"], r["UID"]) for r in rows})
    captions = set(caption_corpus())
    # each word of an agreeing word's forms -> that word's lemma ("muovono" -> "si muove")
    lemma_of = {w: lemma for lemma, (_, forms) in grammar.FORMS.items() for form in forms for w in form.split()}
    for row in rows:
        good, bad = row["sentence_good"], row["sentence_bad"]
        assert good in captions and bad not in captions, row
        assert len(good.split()) == len(bad.split()), row
        changed = differing_words(good, bad)
        if row["group"] == "word order":
            assert sorted(good.split()) == sorted(bad.split()) and len(changed) == 2, row
            (a, b), (c, d) = changed
            assert (a, b) == (d, c) and good.split().index(a) + 1 == good.split().index(c), row
        else:
            # one word, now in another form of the same lemma, and of the role the paradigm names
            assert len(changed) == 1, row
            (g, b), role = changed[0], grammar.PARADIGMS[row["UID"]][1]
            assert lemma_of[g] == lemma_of[b] and grammar.FORMS[lemma_of[g]][0] == role, row
    # the same seed writes the same pairs
    assert grammar.minimal_pairs(40, seed=1) == rows


def test_the_demos_babylm_tasks_read_as_the_pipeline_reads_them(tmp_path):
    """Each folder is in its task's format (read by llava.eval.babylm's reader, which follows the
    pipeline's), the image tasks' rows name pictures of the dataset beside them, and the right answer is
    the one that matches the picture's subject."""
    import datasets

    from llava.demo.babylm_data import write_babylm_tasks
    from llava.eval.babylm.tasks import read_task

    specs = write_babylm_tasks(tmp_path, items=6)
    for task, spec in specs.items():
        name, _, paths = spec.partition("=")
        parts = paths.split(",")
        images = datasets.load_dataset(parts[1], split=parts[2]) if len(parts) == 3 else None
        items = read_task(Path(parts[0]), name, images=images)
        assert name == task and items, spec
        if task == "blimp":  # the supplement's form: one UID per paradigm file
            assert {i["UID"] for i in items} == set(grammar.PARADIGMS)
        if task == "vqa":
            assert all(len(i["sentences"]) == 8 and i["image"].load().size == (64, 64) for i in items)
            assert all(i["completions"][0].strip() not in [c.strip() for c in i["completions"][1:]] for i in items)
        if task == "winoground":
            assert all(i["sentences"][0] != i["sentences"][1] for i in items)
