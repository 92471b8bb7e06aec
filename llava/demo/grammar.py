"""The demo's Italian: a small table of word forms, the caption templates, and minimal pairs from both.

A clip's subject is one shape, or two of the same kind and colour. Its gender is the noun's (cerchio is
masculine, croce feminine) and its number is the count, so both are grounded in what the clip shows.
In a template, a word that agrees with the subject (article, colour adjective, participle, verb) is
written in brackets in its masculine singular form, `[un]`, `[si muove]`, and takes its form from FORMS;
`{shape}`, `{colour}` and `{direction}` are the clip's own words:

    "[un] {shape} {colour} [si muove] verso {direction}"
    -> "un cerchio rosso si muove verso destra", "due croci rosse si muovono verso destra"

Minimal pairs (BLiMP's JSONL form) come from the same templates: a caption, and the same caption with one
agreement feature of one word flipped ("una croce rosso"), or one word of the noun phrase moved to the
other side of the noun ("una rossa croce").
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..eval.colour_words import ColourWords

GENDERS = ("m", "f")
NUMBERS = ("sg", "pl")
COUNTS = {1: "sg", 2: "pl"}  # shapes in the clip -> grammatical number

# shape noun -> (gender, plural)
NOUNS = {
    "cerchio": ("m", "cerchi"),
    "quadrato": ("m", "quadrati"),
    "triangolo": ("m", "triangoli"),
    "croce": ("f", "croci"),
    "stella": ("f", "stelle"),
}


def _by_number(singular: str, plural: str) -> tuple[str, ...]:
    return (singular, singular, plural, plural)


# Words that agree with the subject: lemma -> (role, forms). Forms in the order masculine singular,
# feminine singular, masculine plural, feminine plural. The plural subjects are pairs, so the plural
# "article" is the numeral.
FORMS = {
    "un": ("article", ("un", "una", "due", "due")),
    "rosso": ("adjective", ("rosso", "rossa", "rossi", "rosse")),
    "verde": ("adjective", ("verde", "verde", "verdi", "verdi")),
    "blu": ("adjective", ("blu",) * 4),
    "giallo": ("adjective", ("giallo", "gialla", "gialli", "gialle")),
    "diretto": ("participle", ("diretto", "diretta", "diretti", "dirette")),
    "si muove": ("verb", _by_number("si muove", "si muovono")),
    "si sposta": ("verb", _by_number("si sposta", "si spostano")),
    "si vede": ("verb", _by_number("si vede", "si vedono")),
    "va": ("verb", _by_number("va", "vanno")),
    "c'è": ("existential", _by_number("c'è", "ci sono")),  # colloquially also "c'è due ...": not paired
}
COLOUR_WORDS = ("rosso", "verde", "blu", "giallo")
# direction -> the phrase after "verso"
DIRECTION_PHRASES = {"destra": "destra", "sinistra": "sinistra", "alto": "l'alto", "basso": "il basso"}
TEMPLATES = (
    "[un] {shape} {colour} [si muove] verso {direction}",
    "[c'è] [un] {shape} {colour} che [va] verso {direction}",
    "[si vede] [un] {shape} {colour} spostarsi verso {direction}",
    "verso {direction} [si sposta] [un] {shape} {colour}",
    "il video mostra [un] {shape} {colour} [diretto] verso {direction}",
)
_PIECE = re.compile(r"\[([^\]]+)\]|\{(\w+)\}|(\S+)")

# The word a caption uses for each attribute value, in every form: word -> value.
ATTRIBUTE_WORDS = {
    "colour": {form: colour for colour in COLOUR_WORDS for form in FORMS[colour][1]},
    "shape": {form: noun for noun, (_, plural) in NOUNS.items() for form in (noun, plural)},
    "direction": {direction: direction for direction in DIRECTION_PHRASES},  # "l'alto" is the words l' and alto
    "count": {"un": 1, "una": 1, "due": 2},  # the article's forms
}


def colour_words() -> ColourWords:
    """The colour words of the captions in every agreement, and the gender and number that choose among
    them: what the evaluation's colour tasks read (llava/eval/colour_words.py)."""
    return ColourWords(
        {c: {f"{g} {n}": FORMS[c][1][_form_index(g, n)] for n in NUMBERS for g in GENDERS} for c in COLOUR_WORDS},
        {noun: gender for noun, (gender, _) in NOUNS.items()},
        dict(COUNTS),
    )


@dataclass(frozen=True)
class Subject:
    """What a caption is about: `count` shapes of one kind and colour, moving one way."""

    shape: str
    colour: str
    direction: str
    count: int = 1

    @property
    def gender(self) -> str:
        return NOUNS[self.shape][0]

    @property
    def number(self) -> str:
        return COUNTS[self.count]

    def form(self, lemma: str) -> str:
        return form(lemma, self.shape, self.count)


def form(lemma: str, shape: str, count: int = 1) -> str:
    """The form of an agreeing word for `count` shapes: form("rosso", "croce", 2) is "rosse"."""
    return FORMS[lemma][1][_form_index(NOUNS[shape][0], COUNTS[count])]


@dataclass(frozen=True)
class Slot:
    """One word place of a template: its role (noun, article, adjective, participle, verb; "" for a
    fixed word) and the lemma it takes its form from."""

    role: str
    lemma: str


def slots(template: str, subject: Subject) -> list[Slot]:
    out = []
    for agreeing, field, fixed in _PIECE.findall(template):
        if agreeing:
            out.append(Slot(FORMS[agreeing][0], agreeing))
        elif field == "shape":
            out.append(Slot("noun", subject.shape))
        elif field == "colour":
            out.append(Slot(FORMS[subject.colour][0], subject.colour))
        elif field == "direction":
            out.append(Slot("", DIRECTION_PHRASES[subject.direction]))
        else:
            out.append(Slot("", fixed))
    return out


def _form_index(gender: str, number: str) -> int:
    return GENDERS.index(gender) + 2 * NUMBERS.index(number)


def inflect(slot: Slot, gender: str, number: str) -> str:
    if slot.role == "noun":
        return slot.lemma if number == "sg" else NOUNS[slot.lemma][1]
    if slot.lemma in FORMS:
        return FORMS[slot.lemma][1][_form_index(gender, number)]
    return slot.lemma


def caption(subject: Subject, template: int) -> str:
    words = slots(TEMPLATES[template], subject)
    return " ".join(inflect(slot, subject.gender, subject.number) for slot in words)


# ------------------------------------------------------------------------------------- minimal pairs
# UID -> (group, role of the word changed, what changes: its gender, its number, or its place beside the noun)
PARADIGMS = {
    "article_noun_gender": ("gender agreement", "article", "gender"),
    "adjective_noun_gender": ("gender agreement", "adjective", "gender"),
    "adjective_noun_number": ("number agreement", "adjective", "number"),
    "verb_subject_number": ("number agreement", "verb", "number"),
    "article_position": ("word order", "article", "order"),
    "adjective_position": ("word order", "adjective", "order"),
}


def _other(values: tuple[str, str], value: str) -> str:
    return values[1 - values.index(value)]


def minimal_pair(subject: Subject, template: int, uid: str) -> tuple[str, str] | None:
    """(good, bad) for one caption and one paradigm; None where the caption offers no such pair (a
    singular subject has no plural article to flip, "blu" has one form, a template no verb)."""
    _, role, change = PARADIGMS[uid]
    words = slots(TEMPLATES[template], subject)
    good = [inflect(slot, subject.gender, subject.number) for slot in words]
    roles = [slot.role for slot in words]
    if role not in roles:
        return None
    i = roles.index(role)  # the first word of that role ([c'è] ... [va]: the first verb)
    bad = list(good)
    if change == "order":
        noun = roles.index("noun")
        if abs(i - noun) != 1:
            return None
        bad[i], bad[noun] = good[noun], good[i]
    elif change == "gender":
        bad[i] = inflect(words[i], _other(GENDERS, subject.gender), subject.number)
    else:
        bad[i] = inflect(words[i], subject.gender, _other(NUMBERS, subject.number))
    if bad == good:
        return None
    return " ".join(good), " ".join(bad)


def all_subjects() -> list[Subject]:
    return [
        Subject(shape, colour, direction, count)
        for colour in COLOUR_WORDS
        for shape in NOUNS
        for direction in DIRECTION_PHRASES
        for count in COUNTS
    ]


def minimal_pairs(per_paradigm: int = 50, seed: int = 0) -> list[dict]:
    """`per_paradigm` pairs of each paradigm (two per group, so the groups weigh the same), drawn without
    repetition from every caption the grammar writes; fewer where a paradigm has fewer."""
    rng = random.Random(seed)
    rows = []
    for uid, (group, _, _) in PARADIGMS.items():
        candidates = [
            pair
            for subject in all_subjects()
            for template in range(len(TEMPLATES))
            if (pair := minimal_pair(subject, template, uid)) is not None
        ]
        for good, bad in rng.sample(candidates, min(per_paradigm, len(candidates))):
            rows.append(
                {"sentence_good": good, "sentence_bad": bad, "group": group, "UID": uid, "pairID": str(len(rows))}
            )
    return rows


def write_minimal_pairs(path, per_paradigm: int = 50, seed: int = 0) -> str:
    """Writes minimal_pairs() as BLiMP-form JSONL (`sentence_good`, `sentence_bad`, `group`, `UID`,
    `pairID`); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row, ensure_ascii=False) for row in minimal_pairs(per_paradigm, seed)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)
