"""LAPE's coordinate arithmetic (llava.modeling.coordinates) against hand computations: the two nearest
bins and their weights, the interpolated embedding, the two-hot target (its loss, over words and bins together, is tested with the model), a value's round trip
within half a bin, and reparam's gradients."""

import pytest
import torch

from llava.modeling import coordinates as c


def test_token_names_follow_llava_st():
    assert c.input_placeholder("TEMP") == "<TEMP-INPUT>" and c.output_placeholder("WIDTH") == "<WIDTH-OUTPUT>"
    assert c.bin_token("HEIGHT", 42) == "<HEIGHT-042>" and c.bin_tokens("TEMP")[-1] == "<TEMP-099>"


def test_a_value_lies_between_its_two_nearest_bins():
    lower, upper, weight = c.neighbours(torch.tensor([0.0, 0.5, 1.0, 0.25, 1.5, -0.2]), bins=5)
    assert lower.tolist() == [0, 2, 4, 1, 4, 0] and upper.tolist() == [0, 2, 4, 1, 4, 0]
    lower, upper, weight = c.neighbours(torch.tensor([0.3]), bins=5)  # 0.3 * 4 = 1.2: bins 1 and 2
    assert (lower.item(), upper.item()) == (1, 2) and weight.item() == pytest.approx(0.2)


def test_the_embedding_is_the_two_bins_mixed():
    table = torch.arange(15, dtype=torch.float32).reshape(5, 3)
    mixed = c.interpolate(torch.tensor([0.3]), table)
    torch.testing.assert_close(mixed[0], 0.8 * table[1] + 0.2 * table[2])


def test_the_two_hot_target_shares_the_value_between_its_two_bins():
    target = c.two_hot(torch.tensor([0.3, 1.0]), bins=5)
    torch.testing.assert_close(target, torch.tensor([[0.0, 0.8, 0.2, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]]))


def test_a_value_comes_back_within_half_a_bin():
    values = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    table = torch.eye(c.BINS)  # each bin's embedding its own axis: the mix shows both weights
    embedded = c.interpolate(values, table)
    torch.testing.assert_close(embedded, c.two_hot(values))
    written = c.decode(torch.log(c.two_hot(values) + 1e-9))  # the bin the model would write, read back
    assert (written - values).abs().max().item() <= 0.5 / (c.BINS - 1) + 1e-6
    assert c.decode(torch.tensor([0, 99])).tolist() == [0.0, 1.0]


def test_reparam_keeps_the_forward_value_and_shares_gradients_with_neighbours():
    weight = torch.randn(4, 2, requires_grad=True)
    matrix = c.smoothing_matrix(4)
    assert matrix[0].tolist() == [1.0, 0.5, 0.25, 0.125]
    out = c.reparam(weight, matrix)
    torch.testing.assert_close(out, weight.detach())
    grad = torch.zeros(4, 2)
    grad[2] = torch.tensor([1.0, -1.0])  # a gradient on bin 2 only
    out.backward(grad)
    # d out / d weight = I + matrix^T: bin 2 gets 1 + 1, bins 1 and 3 one half, bin 0 a quarter
    torch.testing.assert_close(weight.grad[:, 0], torch.tensor([0.25, 0.5, 2.0, 0.5]))
