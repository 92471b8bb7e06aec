"""The fast/slow TokenPacker: regional attention, positions, token counts, grid validation."""

import pytest
import torch

from llava.modeling.token_packer import FastSlowTokenPacker, PatchTokens

DIM, GRID = 16, (8, 16, 16)


def packer():
    torch.manual_seed(0)
    return FastSlowTokenPacker(DIM, GRID, fast_grid=(8, 2, 4), slow_grid=(2, 4, 4), num_heads=4).eval()


def region_masks(track_grid):
    """Boolean (tokens, T, H, W) masks of each token's region, computed independently of the packer."""
    gt, gh, gw = track_grid
    rt, rh, rw = GRID[0] // gt, GRID[1] // gh, GRID[2] // gw
    masks = []
    for t in range(gt):
        for r in range(gh):
            for c in range(gw):
                m = torch.zeros(GRID, dtype=torch.bool)
                m[t * rt : (t + 1) * rt, r * rh : (r + 1) * rh, c * rw : (c + 1) * rw] = True
                masks.append(m)
    return torch.stack(masks)


def all_masks():
    return torch.cat([region_masks((8, 2, 4)), region_masks((2, 4, 4))])


def test_token_counts():
    p = packer()
    x = torch.randn(2, *GRID, DIM)
    assert p(x).shape == (2, 64 + 32, DIM)
    image = torch.randn(3, 1, 16, 16, DIM)  # one frame: each track's time axis clamps to 1
    assert p(image).shape == (3, 8 + 16, DIM)


@pytest.mark.parametrize("frames", [1, 2, 4, 8])
def test_token_counts_without_positions_agree_with_the_forward(frames):
    """`num_tokens` (the data set's per-sample question, answered without building positions) is what the
    forward returns and what positions index, for the packer and for LLaVA's every-patch default."""
    x = torch.randn(1, frames, 16, 16, DIM)
    for resampler in (packer(), PatchTokens(GRID)):
        count = resampler(x).shape[1]
        assert resampler.num_tokens(frames) == count == len(resampler.positions(frames))


@pytest.mark.slow
def test_each_token_depends_on_its_region_only():
    p = packer()
    x = torch.randn(1, *GRID, DIM, requires_grad=True)
    out = p(x)[0]
    for k, mask in enumerate(all_masks()):
        (grad,) = torch.autograd.grad(out[k].sum(), x, retain_graph=True)
        touched = grad[0].abs().sum(-1) > 0
        assert torch.equal(touched, mask), f"token {k} reads outside its region"


@pytest.mark.slow
@pytest.mark.parametrize("token", [0, 13, 63, 64, 80, 95])
def test_changing_patches_outside_a_region_leaves_the_token_unchanged(token):
    p = packer()
    mask = all_masks()[token]
    x = torch.randn(1, *GRID, DIM)
    outside = x.clone()
    outside[0][~mask] = torch.randn(int((~mask).sum()), DIM)
    inside = x.clone()
    inside[0][mask] = torch.randn(int(mask.sum()), DIM)
    with torch.no_grad():
        base, out_changed, in_changed = p(x)[0], p(outside)[0], p(inside)[0]
    assert torch.equal(base[token], out_changed[token])
    assert not torch.allclose(base[token], in_changed[token])
    others = [k for k in range(96) if k != token and not all_masks()[k][mask].any()]
    assert torch.equal(base[others], in_changed[others])


def test_query_is_region_mean_plus_attention():
    p = packer()
    x = torch.randn(1, *GRID, DIM)
    for track in (p.fast, p.slow):
        track.out_proj.weight.data.zero_()
        track.out_proj.bias.data.zero_()
    with torch.no_grad():
        out = p(x)[0]
    means = torch.stack([x[0][m].mean(0) for m in all_masks()])
    assert torch.allclose(out, means, atol=1e-6)


def textbook_track(track, x, masks):
    """The track as plain multi-head attention, one region at a time: projections on every patch."""
    heads, head_dim = track.num_heads, DIM // track.num_heads
    tokens = []
    for mask in masks:
        region = x[0][mask]  # (P, C)
        query = region.mean(0, keepdim=True)
        q = track.q_proj(track.norm_query(query)).view(1, heads, head_dim).transpose(0, 1)
        patches = track.norm_region(region)
        k = track.k_proj(patches).view(-1, heads, head_dim).transpose(0, 1)
        v = track.v_proj(patches).view(-1, heads, head_dim).transpose(0, 1)
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(1, DIM)
        tokens.append(query + track.out_proj(attended))
    return torch.cat(tokens)


@pytest.mark.slow
def test_tracks_compute_textbook_regional_attention_and_its_gradients():
    p = packer()
    with torch.no_grad():  # biases and norms away from their initial values, so every term counts
        for param in p.parameters():
            param.add_(0.3 * torch.randn_like(param))
    x = torch.randn(1, *GRID, DIM)
    out = p(x)[0]
    expected = torch.cat(
        [textbook_track(p.fast, x, region_masks((8, 2, 4))), textbook_track(p.slow, x, region_masks((2, 4, 4)))]
    )
    assert torch.allclose(out, expected, atol=1e-5)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), list(p.parameters()))
    expected_grads = torch.autograd.grad((expected * weights).sum(), list(p.parameters()))
    for (name, _), a, b in zip(p.named_parameters(), grads, expected_grads):
        assert torch.allclose(a, b, atol=1e-4), name


def test_positions_are_region_centres_in_half_units():
    pos = packer().positions(8)
    assert pos.shape == (96, 4)
    # fast token 0: frame 0, rows 0-7, columns 0-3; slow token 0: frames 0-3, rows 0-3, columns 0-3
    assert pos[0].tolist() == [0, 7, 3, 0]
    assert pos[64].tolist() == [3, 3, 3, 1]
    # the last fast token: frame 7, rows 8-15, columns 12-15
    assert pos[63].tolist() == [14, 23, 27, 0]
    for k, mask in enumerate(all_masks()):
        t, r, c = (torch.nonzero(mask.any(dim=d)) for d in ((1, 2), (0, 2), (0, 1)))
        assert pos[k, :3].tolist() == [int(a.min() + a.max()) for a in (t, r, c)]
    image = packer().positions(1)
    assert image.shape == (24, 4) and int(image[:, 0].max()) == 0


@pytest.mark.parametrize(
    "fast, slow, message",
    [
        ((8, 3, 4), (2, 4, 4), r"mm_fast_grid 8x3x4 .*rows in \(1, 2, 4, 8, 16\)"),
        ((8, 2, 4), (3, 4, 4), r"mm_slow_grid 3x4x4 .*frames in \(1, 2, 4, 8\)"),
        ((8, 2, 5), (2, 4, 4), r"columns in \(1, 2, 4, 8, 16\)"),
    ],
)
def test_invalid_grids_are_refused_with_valid_choices(fast, slow, message):
    with pytest.raises(ValueError, match=message):
        FastSlowTokenPacker(DIM, GRID, fast, slow, num_heads=4)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="mm_packer_num_heads=5"):
        FastSlowTokenPacker(DIM, GRID, (8, 2, 4), (2, 4, 4), num_heads=5)
