"""The words a caption data set names its colours with, in every form: what the lmms-eval colour tasks
(lmms_task.py) read a caption's colour from and write their candidate captions with.

They come with the data, as a JSON file beside it (`colour_words.json`; the demo writes its own from
its Italian grammar), so that the evaluation knows the words without knowing the language:

    {"colours": {"rosso": {"m sg": "rosso", "f sg": "rossa", "m pl": "rossi", "f pl": "rosse"}, ...},
     "gender": {"cerchio": "m", "croce": "f", ...},
     "number": {"1": "sg", "2": "pl"}}

`colours` lists the colours (a sample's `attributes.colour` is one of these names, and the colour task
offers its candidates in this order) and each colour's word in every agreement; `gender` (of each shape
noun) and `number` (of each count) say which agreement describes a sample's `attributes.shape` and
`attributes.count`: "due croci" take "rosse". A colour's name is its word where a sample's shape or
count is not in the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

COLOUR_WORDS_FILE = "colour_words.json"


@dataclass(frozen=True)
class ColourWords:
    colours: dict[str, dict[str, str]]  # colour -> {"GENDER NUMBER": its word in that agreement}
    gender: dict[str, str]  # shape noun -> grammatical gender
    number: dict[int, str]  # count of shapes -> grammatical number

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.colours)

    def forms(self, colour: str) -> set[str]:
        return set(self.colours[colour].values())

    def colour_of(self) -> dict[str, str]:
        """Each word -> the colour it names ("rosse" -> "rosso")."""
        return {word: colour for colour, words in self.colours.items() for word in words.values()}

    def word(self, colour: str, shape: str | None, count: int | None) -> str:
        """The word for `colour` describing `count` shapes of kind `shape`; the colour's name where the
        file does not know the shape or the count."""
        if shape not in self.gender or count not in self.number:
            return colour
        return self.colours[colour].get(f"{self.gender[shape]} {self.number[count]}", colour)

    def save(self, path) -> str:
        data = {"colours": self.colours, "gender": self.gender, "number": {str(n): v for n, v in self.number.items()}}
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return str(path)


def read_colour_words(path) -> ColourWords:
    """The colour words of a JSON file in the form above; InputError naming the file where it is not."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        colours, gender, number = data["colours"], data.get("gender", {}), data.get("number", {})
        words = ColourWords(
            {str(c): {str(k): str(w) for k, w in agreements.items()} for c, agreements in colours.items()},
            {str(shape): str(g) for shape, g in gender.items()},
            {int(count): str(n) for count, n in number.items()},
        )
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--colour-words cannot be read: {e} ({path})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(
            f"--colour-words is not a colour-words file ({type(e).__name__}: {e}): expected "
            f'{{"colours": {{COLOUR: {{"GENDER NUMBER": WORD}}}}, "gender": {{...}}, "number": {{...}}}} ({path})'
        ) from None
    if not words.colours or not all(words.colours.values()):
        raise InputError(f"--colour-words names no colour, or a colour without words ({path})")
    return words
