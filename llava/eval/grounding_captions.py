"""ELC's caption metrics (event localisation and captioning) as LLaVA-ST computes them (github
appletea233/LLaVA-ST, inference/src/metrics.py, `eval_stvg(..., task="elc")`), with the scorers it uses:
pycocoevalcap's.

What LLaVA-ST computes, and so what this does:
- one predicted caption per item, paired with that item's reference caption by the item alone: no event
  matching across items, no threshold on the predicted time (the prediction is cut out of the answer by
  grounding_answers.elc_caption, LLaVA-ST's rule);
- every caption, predicted and reference, tokenized by pycocoevalcap's PTBTokenizer (Stanford CoreNLP's
  PTB tokenizer, a Java program: lowercased, punctuation tokens dropped);
- BLEU-1..4 (`Bleu`, corpus-level, the closest reference length for the brevity penalty), METEOR 1.5
  (`Meteor`, a Java program, its English settings: `-l en -norm`), ROUGE-L (`Rouge`, the mean over items
  of the LCS F-measure with beta 1.2) and CIDEr-D (`Cider`, idf over this set's references).

Values are as pycocoevalcap returns them: BLEU, METEOR and ROUGE-L in [0, 1], CIDEr in [0, 10] (papers
print them x100); LLaVA-ST's total_eval.json rounds them to 3 decimals, this does not. LLaVA-ST runs
`Bleu(1)` ... `Bleu(4)` and keeps each one's list; BLEU-k does not depend on the highest order computed,
so one `Bleu(4)` gives all four here (a test checks it).

The language is whatever the captions are in: the PTB tokenizer and METEOR's stemmer, synonyms and
paraphrases are English, as in LLaVA-ST; on Italian captions METEOR's matches are mostly exact ones.
llava.eval.metrics' BLEU-4 and CIDEr-D (captioning) score the same way as pycocoevalcap's on the same
words (a test checks it); their numbers differ from these by tokenization and scale.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

from ..errors import UserError

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
JAVA_PACKAGE = "default-jre-headless"


class MissingScorer(UserError):
    """pycocoevalcap, or the Java that runs its tokenizer and METEOR, is not installed."""


class ScorerFailed(UserError):
    """One of pycocoevalcap's Java programs ran and gave no answer."""


def require_java() -> str:
    """The path of `java`, or a MissingScorer naming it and what installs it."""
    java = shutil.which("java")
    if java is None:
        raise MissingScorer(
            "java not found on PATH: the ELC caption metrics run pycocoevalcap's PTB tokenizer and METEOR, "
            f"which are Java programs (Debian: apt-get install {JAVA_PACKAGE}; CI: .ci/setup_java.sh)"
        )
    return java


def require_scorers() -> None:
    """A MissingScorer naming what is missing where pycocoevalcap or java is."""
    _pycocoevalcap()
    require_java()


def _pycocoevalcap():
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError as e:
        raise MissingScorer(
            f"pycocoevalcap is not installed ({e}): the ELC caption metrics are its scorers (pip install 'llava[eval]')"
        ) from None
    return Bleu, Cider, Meteor, Rouge, PTBTokenizer


def _reference_lists(predictions: Sequence[str], references: Sequence) -> list[list[str]]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predicted captions but {len(references)} references")
    if not predictions:
        raise ValueError("nothing to score: no captions")
    lists = [[refs] if isinstance(refs, str) else list(refs) for refs in references]
    for i, refs in enumerate(lists):
        # A blank reference is a data bug that every metric would score as a real, empty caption.
        if not refs or any(not isinstance(r, str) or not r.strip() for r in refs):
            raise ValueError(f"references[{i}] is empty or blank: every item needs a reference caption")
    return lists


@contextlib.contextmanager
def _stderr_caught():
    """Catches what child processes write to this process's stderr (file descriptor 2): the PTB tokenizer
    reports its speed there, a line per call. Yields the file it goes to."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield sink
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _text_of(sink) -> str:
    sink.seek(0)
    return sink.read().decode(errors="replace")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "nothing on stderr"


def ptb_tokenize(captions: dict) -> dict:
    """{item: [caption, ...]} -> the same, each caption as pycocoevalcap's PTBTokenizer writes it (tokens
    joined by spaces). Needs java."""
    require_java()
    PTBTokenizer = _pycocoevalcap()[4]
    # The tokenizer reads one caption per line, in order: a line break of any kind inside a caption would
    # shift every later caption onto the wrong item. Whitespace separates tokens anyway, so runs of it
    # become one space.
    given = {item: [{"caption": " ".join(c.split())} for c in texts] for item, texts in captions.items()}
    with _stderr_caught() as sink:
        try:
            tokenized = PTBTokenizer().tokenize(given)
        except PermissionError as e:
            # It writes its input to a file beside its jar, inside the installed package.
            raise ScorerFailed(
                f"pycocoevalcap's PTB tokenizer writes its input beside its jar, and cannot there ({e.filename})"
            ) from None
        chatter = _text_of(sink)
    counts = {item: len(texts) for item, texts in captions.items()}
    if {item: len(texts) for item, texts in tokenized.items()} != counts:
        raise ScorerFailed(f"pycocoevalcap's PTB tokenizer (java) gave no tokens: {_last_line(chatter)}")
    return tokenized


def _close_meteor(meteor) -> None:
    """Ends METEOR's Java process. Meteor's own __del__ takes a lock that a failed compute_score never
    gave back, and flushes a pipe that may be broken: at exit it would hang, or raise over the real error.
    This leaves nothing for it to wait on or to flush."""
    process = meteor.meteor_p
    process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        try:
            stream.close()
        except OSError:
            pass  # a broken pipe's unsent bytes: the process is gone already
    if meteor.lock.locked():
        meteor.lock.release()


def _meteor(Meteor, gts: dict, res: dict) -> float:
    meteor = Meteor()
    try:
        score, _ = meteor.compute_score(gts, res)
    except (ValueError, OSError):
        # The Java process ended (no memory for its 2 GB heap, a missing jar): a closed pipe, or an empty
        # line where a number was due. Its last words say why.
        meteor.meteor_p.kill()
        why = _last_line(meteor.meteor_p.stderr.read().decode(errors="replace"))
        raise ScorerFailed(f"METEOR (pycocoevalcap's meteor-1.5.jar, java) gave no score: {why}") from None
    finally:
        _close_meteor(meteor)
    return float(score)


def scores_of_tokenized(gts: dict, res: dict, meteor: bool = True) -> dict[str, float]:
    """pycocoevalcap's scores of captions already tokenized: `gts` {item: [reference, ...]}, `res`
    {item: [prediction]}, as its scorers take them. Without `meteor`, no java is needed."""
    Bleu, Cider, Meteor, Rouge, _ = _pycocoevalcap()
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"Bleu_{n}": float(value) for n, value in enumerate(bleu, 1)}
    if meteor:
        require_java()
        scores["METEOR"] = _meteor(Meteor, gts, res)
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores


def caption_scores(predictions: Sequence[str], references: Sequence) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of `predictions[i]` (one caption) against `references[i]`
    (a caption, or a list of them), as LLaVA-ST's ELC evaluation computes them (see the module's
    docstring). Needs java and pycocoevalcap; raises MissingScorer, naming what is missing, without."""
    reference_lists = _reference_lists(predictions, references)
    require_scorers()
    # One run of the tokenizer for both sides (a Java start costs seconds); it reads line by line, so each
    # caption's tokens are what a run of its own would give.
    given = {("reference", i): refs for i, refs in enumerate(reference_lists)}
    given |= {("prediction", i): [p if isinstance(p, str) else ""] for i, p in enumerate(predictions)}
    tokenized = ptb_tokenize(given)
    gts = {i: tokenized["reference", i] for i in range(len(predictions))}
    res = {i: tokenized["prediction", i] for i in range(len(predictions))}
    scores = scores_of_tokenized(gts, res)
    return {name: scores[name] for name in METRICS}
