"""Generated answers read back as boxes, spans and tubes (llava.data.grounding_answers, ELC captions
included), on strings written by hand in both writings: LLaVA-ST's coordinate tokens and plain digits. Badly written answers (a missing
bracket, three numbers, a token of the wrong axis, an end before its start, a value past 1) give None,
never an exception; ELC's caption is cut out of the answer as LLaVA-ST cuts it."""

import pytest

from llava.data.grounding_answers import elc_caption, parse_box, parse_span, parse_tube, token_value
from llava.modeling.coordinates import BINS, bin_token


def box_tokens(*bins):
    return "[" + "".join(bin_token(axis, k) for axis, k in zip(("WIDTH", "HEIGHT", "WIDTH", "HEIGHT"), bins)) + "]"


def test_a_bin_token_stands_for_its_bin_over_the_last_bin():
    assert BINS == 100
    assert token_value("000") == 0.0 and token_value("099") == 1.0
    assert token_value(33) == pytest.approx(1 / 3)


def test_a_box_of_tokens_is_width_height_width_height():
    assert box_tokens(12, 34, 56, 78) == "[<WIDTH-012><HEIGHT-034><WIDTH-056><HEIGHT-078>]"
    box = parse_box("The dog is at " + box_tokens(12, 34, 56, 78) + ".")
    assert box == pytest.approx([12 / 99, 34 / 99, 56 / 99, 78 / 99])
    # spaces between the tokens, as LLaVA-ST allows them
    assert parse_box("[ <WIDTH-000> <HEIGHT-000>\n<WIDTH-099> <HEIGHT-099> ]") == [0.0, 0.0, 1.0, 1.0]


def test_a_box_of_digits():
    assert parse_box("[0.12,0.34,0.56,0.78]") == [0.12, 0.34, 0.56, 0.78]
    assert parse_box("it is here: [0.1, 0.2 , 0.3,0.4] and not there") == [0.1, 0.2, 0.3, 0.4]
    assert parse_box("[0,0,1,1]") == [0.0, 0.0, 1.0, 1.0]


def test_the_first_box_written_is_the_answer():
    assert parse_box("[0.1,0.1,0.2,0.2] or [0.5,0.5,0.6,0.6]") == [0.1, 0.1, 0.2, 0.2]
    tokens_first = box_tokens(0, 0, 99, 99) + " [0.5,0.5,0.6,0.6]"
    assert parse_box(tokens_first) == [0.0, 0.0, 1.0, 1.0]
    assert parse_box("[0.5,0.5,0.6,0.6] " + box_tokens(0, 0, 99, 99)) == [0.5, 0.5, 0.6, 0.6]


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "no box here",
        "[0.1,0.2,0.3,0.4",  # missing bracket
        "0.1,0.2,0.3,0.4]",
        "[0.1,0.2,0.3]",  # three numbers
        "[0.1,0.2,0.3,0.4,0.5]",
        "[<WIDTH-012><HEIGHT-034><WIDTH-056>]",
        "[<WIDTH-012><WIDTH-034><WIDTH-056><HEIGHT-078>]",  # a width where a height belongs
        "[<HEIGHT-012><WIDTH-034><HEIGHT-056><WIDTH-078>]",  # the axes swapped
        "[<TEMP-012><HEIGHT-034><WIDTH-056><HEIGHT-078>]",
        "[<WIDTH-012>,<HEIGHT-034>,<WIDTH-056>,<HEIGHT-078>]",  # commas between tokens: not LLaVA-ST's writing
        "[<WIDTH-012><HEIGHT-034>0.5,0.7]",  # the two writings mixed
        "[0.6,0.2,0.3,0.4]",  # x2 before x1
        "[<WIDTH-012><HEIGHT-078><WIDTH-056><HEIGHT-034>]",  # y2 before y1
        "[12,34,56,78]",  # pixels, not fractions
        "[<WIDTH-012><HEIGHT-034><WIDTH-150><HEIGHT-078>]",  # no bin 150: past 1
        "[-0.1,0.2,0.3,0.4]",
        "[0.1e0,0.2,0.3,0.4]",
    ],
)
def test_a_badly_written_box_is_none(answer):
    assert parse_box(answer) is None


@pytest.mark.parametrize("answer", [None, 3, ["[0.1,0.2,0.3,0.4]"]])
def test_what_is_not_text_is_none(answer):
    assert parse_box(answer) is None and parse_span(answer) is None and parse_tube(answer) is None
    assert elc_caption(answer) == ""


def test_spans_in_both_writings():
    assert parse_span("{<TEMP-010><TEMP-050>}") == pytest.approx([10 / 99, 50 / 99])
    assert parse_span("From {<TEMP-000> <TEMP-099>} it runs") == [0.0, 1.0]
    assert parse_span("During {0.1,0.5}.") == [0.1, 0.5]
    assert parse_span("{ 0.25 , 0.75 }") == [0.25, 0.75]
    assert parse_span("{0.3,0.3}") == [0.3, 0.3]  # a moment: a span of no length, still a span


@pytest.mark.parametrize(
    "answer",
    [
        "{0.1,0.5",  # missing brace
        "{0.1}",
        "{0.1,0.2,0.3}",
        "{0.5,0.1}",  # start after end
        "{<TEMP-050><TEMP-010>}",
        "{<TEMP-010><WIDTH-050>}",  # a width in a span
        "{<HEIGHT-010><HEIGHT-050>}",
        "{<TEMP-010>}",
        "{0.5,1.5}",
        "[0.1,0.5]",  # a span is written in braces
    ],
)
def test_a_badly_written_span_is_none(answer):
    assert parse_span(answer) is None


def test_a_tube_pairs_moments_with_boxes():
    answer = (
        "During the span of {<TEMP-010><TEMP-030>}, <TEMP-010>: "
        + box_tokens(0, 0, 50, 50)
        + ", <TEMP-020>: "
        + box_tokens(10, 10, 60, 60)
        + ", <TEMP-030>:"
        + box_tokens(20, 20, 70, 70)
    )
    tube = parse_tube(answer)
    assert list(tube) == pytest.approx([10 / 99, 20 / 99, 30 / 99])
    assert tube[20 / 99] == pytest.approx([10 / 99, 10 / 99, 60 / 99, 60 / 99])
    # the span of the same answer is its first {...}, untouched by the pairs
    assert parse_span(answer) == pytest.approx([10 / 99, 30 / 99])


def test_a_tube_in_digits_moments_in_braces_or_bare():
    tube = parse_tube("{0.1, 0.3}, {0.1}: [0.0, 0.0, 0.5, 0.5], { 0.2 } : [0.1,0.1,0.6,0.6], 0.3: [0, 0, 1, 1]")
    assert tube == {0.1: [0.0, 0.0, 0.5, 0.5], 0.2: [0.1, 0.1, 0.6, 0.6], 0.3: [0.0, 0.0, 1.0, 1.0]}


def test_answers_read_back_what_the_training_samples_write():
    # The digit writing of llava.data.grounding_tasks (the control condition's answers, and the text the
    # token condition's placeholders replace).
    from llava.data.grounding_tasks import box_text, frame_boxes_text, span_text

    boxes = {0.5: [0.25, 0.5, 0.75, 1.0], 0.125: [0.0, 0.1, 0.2, 0.3]}
    assert parse_box("It is " + box_text(boxes[0.5])) == boxes[0.5]
    assert parse_span(span_text([0.125, 0.5]) + ", " + frame_boxes_text(boxes)) == [0.125, 0.5]
    assert parse_tube(span_text([0.125, 0.5]) + ", " + frame_boxes_text(boxes)) == boxes


def test_a_badly_written_box_in_a_tube_keeps_its_moment():
    # The moment was claimed: grounding_metrics counts it as a miss and keeps it in the union of frames.
    tube = parse_tube(
        "<TEMP-010>: [<WIDTH-000><HEIGHT-000><WIDTH-050>], <TEMP-020>: [<HEIGHT-000><HEIGHT-000><WIDTH-050>"
        "<HEIGHT-050>], <TEMP-030>: [0.5,0.5,0.1,0.1], <TEMP-040>: " + box_tokens(0, 0, 50, 50)
    )
    assert list(tube) == pytest.approx([10 / 99, 20 / 99, 30 / 99, 40 / 99])
    assert [tube[k] is None for k in tube] == [True, True, True, False]


def test_a_moment_written_twice_keeps_its_last_box_and_a_moment_past_the_end_is_kept():
    tube = parse_tube("0.5: [0.0,0.0,0.1,0.1], 0.5: [0.2,0.2,0.3,0.3], 1.5: [0.0,0.0,1.0,1.0]")
    assert tube == {0.5: [0.2, 0.2, 0.3, 0.3], 1.5: [0.0, 0.0, 1.0, 1.0]}


@pytest.mark.parametrize(
    "answer",
    ["", "{<TEMP-010><TEMP-030>}", "[0.1,0.2,0.3,0.4]", "<TEMP-010> [0.1,0.2,0.3,0.4]", "<WIDTH-010>: [0,0,1,1]"],
)
def test_an_answer_without_a_pair_has_no_tube(answer):
    assert parse_tube(answer) is None


def test_the_elc_caption_is_cut_as_llava_st_cuts_it():
    # before the first full stop, after the last comma there
    assert elc_caption("Ends in <TEMP-050>, a man rides a horse. Object bounding box: <TEMP-010>: [...]") == (
        " a man rides a horse"
    )
    assert elc_caption("a man rides a horse") == "a man rides a horse"
    assert elc_caption("Ends in <TEMP-050>, a man, smiling, rides. Then") == " rides"
    assert elc_caption(". a man") == ""
    # a decimal point is no full stop: the digit writing keeps its caption
    assert elc_caption("Ends in 0.50, a man rides a horse. Object bounding box: 0.1: [0,0,1,1]") == (
        " a man rides a horse"
    )
    assert elc_caption("Ends at the end. 0.5") == "Ends at the end"
    assert elc_caption("Ends in {0.5}, a man rides a horse. Object bounding box: {0.1}: [0, 0, 1, 1]") == (
        " a man rides a horse"
    )
