"""Sparse codes: exact batch-wide top-k and the decoder products of a sparse code."""

from __future__ import annotations

import pytest
import torch

from training.saes import sparse_codes
from training.saes.sparse_codes import SparseCodes, nonzero_codes


@pytest.mark.parametrize(
    ("shape", "count"),
    [((64, 32), 100), ((512, 512), 2048), ((1024, 256), 1), ((300, 700), 50_000), ((8, 4), 32), ((8, 4), 40)],
    ids=["small", "strided", "one", "many", "all", "more-than-all"],
)
def test_batch_top_is_the_exact_top_count(shape, count):
    pre = torch.randn(shape)
    vals, flat = sparse_codes.batch_top(pre, count)
    expected = pre.reshape(-1).topk(min(count, pre.numel())).values
    assert torch.equal(vals.sort(descending=True).values, expected)
    assert torch.equal(pre.reshape(-1)[flat], vals)
    assert flat.unique().numel() == flat.numel()


def test_batch_top_falls_back_when_the_subsample_guess_is_too_high():
    """A sample that happens to hold all the large values would set the guess too high."""
    pre = torch.randn(512, 512)
    pre.view(-1)[::4] += 100.0
    vals, _ = sparse_codes.batch_top(pre, 70_000)
    assert torch.equal(vals.sort(descending=True).values, pre.reshape(-1).topk(70_000).values)


def test_from_flat_handles_samples_without_latents_and_decodes_like_dense():
    batch, width = 5, 7
    flat = torch.tensor([3 * width + 2, 0 * width + 6, 3 * width + 0, 0 * width + 1])
    vals = torch.tensor([1.5, -2.0, 0.5, 3.0])
    codes = SparseCodes.from_flat(flat, vals, batch, width)
    dense = codes.dense(batch, width)
    expected = torch.zeros(batch, width)
    expected[3, 2], expected[0, 6], expected[3, 0], expected[0, 1] = 1.5, -2.0, 0.5, 3.0
    assert torch.equal(dense, expected)
    W_dec = torch.randn(width, 4)
    bias = torch.randn(4)
    torch.testing.assert_close(sparse_codes.decode(codes, W_dec, bias), dense @ W_dec + bias)
    torch.testing.assert_close(sparse_codes.decode(codes, W_dec, None)[1], torch.zeros(4))


def test_accumulate_grads_matches_autograd_of_a_sparse_decode():
    batch, width, d = 6, 10, 4
    vals, idx = torch.rand(batch, 3), torch.stack([torch.randperm(width)[:3] for _ in range(batch)])
    vals[0, 0] = 0.0
    codes = SparseCodes.from_topk(vals, idx)
    W_enc, W_dec, b_enc = torch.randn(width, d), torch.randn(width, d), torch.randn(width)
    xc, g_out = torch.randn(batch, d), torch.randn(batch, d)
    grads = {"W_enc": torch.zeros(width, d), "W_dec": torch.zeros(width, d), "b_enc": torch.zeros(width)}
    sparse_codes.accumulate_grads(grads, codes, W_dec, xc, g_out)

    leaves = {
        name: t.clone().requires_grad_(True) for name, t in {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc}.items()
    }
    pre = xc @ leaves["W_enc"].T + leaves["b_enc"]
    mask = torch.zeros(batch, width)
    mask[codes.rows, codes.cols] = (codes.vals > 0).float()
    shift = (codes.dense(batch, width) - pre.detach()) * mask
    out = (pre * mask + shift) @ leaves["W_dec"]
    (out * g_out).sum().backward()
    for name, leaf in leaves.items():
        torch.testing.assert_close(grads[name], leaf.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_from_dense_keeps_exactly_the_nonzero_entries_in_sample_order():
    c = torch.relu(torch.randn(6, 9))
    c[2] = 0.0
    codes = SparseCodes.from_dense(c)
    assert torch.equal(codes.dense(6, 9), c)
    assert torch.equal(codes.rows, codes.rows.sort().values)
    assert codes.offsets.tolist() == [int((c[:i] > 0).sum()) for i in range(6)]


@pytest.mark.parametrize("batch", [8, 64, 512])
def test_nonzero_codes_match_nonzero_at_every_density(batch):
    gen = torch.Generator().manual_seed(batch)
    for shift in (0.0, 1.5, 3.0, 10.0):
        c = (torch.randn(batch, sparse_codes.NONZERO_MIN_WIDTH, generator=gen) - shift).relu_()
        c[1] = 0.0
        flat = nonzero_codes(c)
        assert torch.equal(flat, c.reshape(-1).nonzero().squeeze(1))


@pytest.mark.parametrize(("width", "k"), [(256, 8), (2048, 8), (4096, 8), (4096, 32), (4096, 64)])
def test_row_topk_finds_each_rows_k_largest_entries(width, k):
    gen = torch.Generator().manual_seed(width + k)
    pre = torch.randn(64, width, generator=gen)
    pre[3, :: width // sparse_codes.TOPK_GROUP] += 10.0  # one row's winners all in one prefilter group
    vals, cols = sparse_codes.row_topk(pre, k)
    expected_vals, expected_cols = pre.topk(k, dim=1)
    assert torch.equal(vals.sort(dim=1).values, expected_vals.sort(dim=1).values)
    assert torch.equal(cols.sort(dim=1).values, expected_cols.sort(dim=1).values)
    assert torch.equal(pre.gather(1, cols), vals)
