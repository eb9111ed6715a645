"""The feature index against brute force on small data: top-k, quantile samples, windows, logit effects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.builders import sae_config
from training.features.index import (
    CorpusTokens,
    FeatureIndex,
    FeatureIndexConfig,
    FeatureIndexMeta,
    Neighbour,
    compute_feature_index,
    load_feature_index,
    logit_effects,
    save_feature_index,
)
from training.features.stream import window_positions
from training.saes import build_sae

N_ROWS, D, F, VOCAB, N_TAGS = 3000, 8, 16, 50, 5
CONFIG = FeatureIndexConfig(n_top=6, before=4, after=2, n_quantiles=4, per_quantile=3, hist_bins=8, chunk_tokens=256)


@pytest.fixture(scope="module")
def case():
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(N_ROWS, D, generator=gen).numpy()
    sae = build_sae(sae_config("relu", d_in=D, dict_size=F))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(F, D, generator=gen))
        sae.b_enc.fill_(-1.5)
    ids = torch.randint(0, VOCAB, (N_ROWS,), generator=gen).numpy().astype(np.uint16)
    tags = torch.randint(0, N_TAGS, (N_ROWS,), generator=gen).numpy().astype(np.uint16)
    corpus = CorpusTokens(ids=ids, document_offsets=np.array([0, 700, 1500, 3000]), tags=tags, n_tags=N_TAGS)
    direct = (
        torch.randn(6, D, generator=gen),
        torch.rand(6, generator=gen) + 0.5,
        torch.randn(VOCAB, 6, generator=gen),
    )
    other = torch.randn(F // 2, D, generator=gen)
    neighbours = {"smaller": Neighbour("small", "abc", other), "larger": None}
    arrays = compute_feature_index(sae, rows, 2.0, corpus, VOCAB, CONFIG, direct, neighbours, progress=False)
    codes = sae.encode(torch.from_numpy(rows) * 2.0).detach().numpy()
    return sae, rows, corpus, direct, other, arrays, codes


def test_density_mean_max_and_histogram_match_the_full_code_matrix(case):
    *_, arrays, codes = case
    fired = codes > 0
    assert fired.any(axis=0).sum() > F // 2, "the test SAE should have mostly live features"
    np.testing.assert_allclose(arrays["density"], fired.mean(0), rtol=1e-6)
    np.testing.assert_array_equal(arrays["fire_count"], fired.sum(0))
    np.testing.assert_allclose(arrays["max_activation"], codes.max(0), rtol=1e-6)
    mean = np.where(fired.any(0), codes.sum(0) / np.maximum(fired.sum(0), 1), 0)
    np.testing.assert_allclose(arrays["mean_activation"], mean, rtol=1e-5)
    for f in range(F):
        values = codes[fired[:, f], f]
        if len(values):
            expected, _ = np.histogram(values, bins=CONFIG.hist_bins, range=(0, codes[:, f].max()))
            assert abs(arrays["histogram"][f] - expected).sum() <= 2  # bin edges: (lo, hi] against [lo, hi)
            assert arrays["histogram"][f].sum() == len(values)


def test_max_contribution_is_max_activation_times_decoder_norm_in_the_rows_units(case):
    sae, *_, arrays, codes = case
    norms = sae.W_dec.detach().norm(dim=1).numpy()
    # The rows were multiplied by 2.0 before encoding: the contribution is in the rows' own units.
    np.testing.assert_allclose(arrays["max_contribution"], codes.max(0) * norms / 2.0, rtol=1e-5)


def test_top_activations_equal_brute_force(case):
    *_, arrays, codes = case
    for f in range(F):
        expected = np.sort(codes[:, f])[::-1][: CONFIG.n_top]
        expected = expected[expected > 0]
        got = arrays["top_values"][f][: len(expected)]
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        positions = arrays["top_positions"][f][: len(expected)]
        np.testing.assert_allclose(codes[positions, f], expected, rtol=1e-6)
        assert (arrays["top_positions"][f][len(expected) :] == -1).all()


def test_quantile_samples_fall_in_their_intervals_and_fill_them_when_possible(case):
    *_, arrays, codes = case
    q = CONFIG.n_quantiles
    for f in range(F):
        top = codes[:, f].max()
        if top <= 0:
            assert (arrays["quantile_positions"][f] == -1).all()
            continue
        for i in range(q):
            lo, hi = top * i / q, top * (i + 1) / q
            in_interval = ((codes[:, f] > lo) & (codes[:, f] <= hi * (1 + 1e-6))).sum()
            positions = arrays["quantile_positions"][f, i]
            taken = positions[positions >= 0]
            assert len(taken) == min(CONFIG.per_quantile, in_interval)
            assert len(set(taken.tolist())) == len(taken)
            values = codes[taken, f]
            assert (values > lo * (1 - 1e-5)).all() and (values <= hi * (1 + 1e-5)).all()
            np.testing.assert_allclose(arrays["quantile_values"][f, i][: len(taken)], values, rtol=1e-6)


def test_windows_hold_the_tokens_and_activations_around_each_sample_within_its_document(case):
    _, _, corpus, *_, arrays, codes = case
    for f in range(F):
        for r, center in enumerate(arrays["top_positions"][f]):
            ids, acts = arrays["top_window_ids"][f, r], arrays["top_window_acts"][f, r]
            if center < 0:
                assert (ids == -1).all()
                continue
            doc = np.searchsorted(corpus.document_offsets, center, side="right") - 1
            lo, hi = corpus.document_offsets[doc], corpus.document_offsets[doc + 1]
            for j, pos in enumerate(range(center - CONFIG.before, center + CONFIG.after + 1)):
                if lo <= pos < hi:
                    assert ids[j] == corpus.ids[pos]
                    assert acts[j] == pytest.approx(codes[pos, f], rel=2e-3, abs=1e-3)
                else:
                    assert ids[j] == -1 and acts[j] == 0


def test_window_positions_stop_at_document_boundaries():
    positions, valid = window_positions(np.array([1, 5, -1]), 2, 1, np.array([0, 4, 10]))
    assert positions.tolist() == [[-1, 0, 1, 2], [-1, 4, 5, 6], [-1, -1, -1, -1]]
    assert valid.sum() == 6


def test_top_tokens_and_pos_tags_count_firing_tokens(case):
    _, _, corpus, *_, arrays, codes = case
    for f in range(F):
        fired = codes[:, f] > 0
        counts = np.bincount(corpus.ids[fired], minlength=VOCAB)
        mass = np.bincount(corpus.ids[fired], weights=codes[fired, f], minlength=VOCAB)
        best = arrays["top_token_ids"][f][0]
        if fired.any():
            assert mass[best] == pytest.approx(mass.max(), rel=1e-5)
            assert counts[best] == arrays["top_token_counts"][f][0]
            mean = codes[fired & (corpus.ids == best), f].mean()
            assert arrays["top_token_mean"][f][0] == pytest.approx(mean, rel=1e-5)
        np.testing.assert_array_equal(arrays["pos_counts"][f], np.bincount(corpus.tags[fired], minlength=N_TAGS))


def test_logit_effects_match_a_direct_matrix_product(case):
    sae, _, _, (mlp_out, gain, unembed), *_ = case
    arrays = case[5]
    residual = sae.W_dec.double() @ mlp_out.double().T
    residual = (residual - residual.mean(1, keepdim=True)) * gain.double()
    logits = (residual @ unembed.double().T).numpy()
    for f in range(F):
        order = np.argsort(logits[f])
        assert arrays["promoted_ids"][f].tolist() == order[::-1][:10].tolist()
        assert arrays["suppressed_ids"][f].tolist() == order[:10].tolist()
        np.testing.assert_allclose(arrays["promoted_values"][f], logits[f][order[::-1][:10]], rtol=1e-5)
    ids, *_ = logit_effects(sae.W_dec[:1], mlp_out, gain, unembed, 3)
    assert ids.shape == (1, 3)


def test_neighbours_are_the_atoms_with_highest_cosine(case):
    sae, *_, other, arrays, _ = case
    dec = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    cos = (dec @ (other / other.norm(dim=1, keepdim=True)).T).numpy()
    np.testing.assert_array_equal(arrays["neighbour_smaller_ids"][:, 0], cos.argmax(1))
    np.testing.assert_allclose(arrays["neighbour_smaller_cos"][:, 0], cos.max(1), rtol=1e-5)
    assert "neighbour_larger_ids" not in arrays and np.isnan(arrays["mmcs_with_larger"]).all()


def test_chunk_size_does_not_change_the_deterministic_statistics(case):
    sae, rows, corpus, direct, other, arrays, _ = case
    again = compute_feature_index(
        sae, rows, 2.0, corpus, VOCAB, CONFIG.model_copy(update={"chunk_tokens": 1000}), direct, None, progress=False
    )
    for name in ("density", "max_activation", "histogram", "top_values", "top_window_ids", "top_token_counts"):
        np.testing.assert_allclose(again[name], arrays[name], rtol=1e-6)


def test_saved_index_round_trips_and_a_truncated_file_is_a_clear_error(case, tmp_path):
    arrays = case[5]
    meta = FeatureIndexMeta(
        sae_name="relu_n16_l10.05", sae_dir="saes/saes/x", weights_hash="h", arch="relu", dict_size=F,
        sparsity_key="l1", sparsity_value=0.05, layer=2, site="mlp_post", model="tinylm", n_tokens=N_ROWS,
        activations={}, config=CONFIG.model_dump(),
    )  # fmt: skip
    save_feature_index(FeatureIndex(meta, arrays), tmp_path / "x")
    loaded = load_feature_index(tmp_path / "x")
    assert loaded.meta == meta
    np.testing.assert_array_equal(loaded.arrays["top_window_acts"], arrays["top_window_acts"])
    data = (tmp_path / "x" / "feature_index.safetensors").read_bytes()
    (tmp_path / "x" / "feature_index.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        load_feature_index(tmp_path / "x")


def test_top_k_windows_come_from_a_full_encoding_and_match_it(case):
    _, rows, corpus, *_ = case
    sae = build_sae(sae_config("topk", d_in=D, dict_size=F, k=3))
    arrays = compute_feature_index(sae, rows, 2.0, corpus, VOCAB, CONFIG, progress=False)
    codes = sae.encode(torch.from_numpy(rows) * 2.0).numpy()
    assert (codes > 0).sum(1).max() <= 3
    for f in range(F):
        for r, center in enumerate(arrays["top_positions"][f]):
            if center >= 0:
                assert arrays["top_window_acts"][f, r, CONFIG.before] == pytest.approx(codes[center, f], rel=2e-3)
                np.testing.assert_allclose(arrays["top_values"][f, r], codes[center, f], rtol=1e-6)


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_replaying_the_first_pass_gives_the_index_that_encoding_again_gives(case, arch):
    sae, rows, corpus, direct, *_ = case
    if arch == "topk":
        sae = build_sae(sae_config("topk", d_in=D, dict_size=F, k=3))
    replayed = compute_feature_index(sae, rows, 2.0, corpus, VOCAB, CONFIG, direct, progress=False)
    for cap in (0, 500):  # no cache, and a cap the first pass overruns
        encoded = compute_feature_index(
            sae, rows, 2.0, corpus, VOCAB, CONFIG.model_copy(update={"cache_entries": cap}), direct, progress=False
        )
        assert encoded.keys() == replayed.keys()
        for name in replayed:
            np.testing.assert_allclose(encoded[name], replayed[name], rtol=1e-3, err_msg=name)
        np.testing.assert_array_equal(encoded["quantile_positions"], replayed["quantile_positions"])


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk"])
def test_firing_entries_are_the_nonzero_codes_in_row_major_order(case, arch):
    rows = torch.from_numpy(case[1][:500]) * 2.0
    extra = {} if arch == "relu" else {"k": 3}
    sae = build_sae(sae_config(arch, d_in=D, dict_size=F, **extra))
    codes = sae.encode(rows)
    r, f, v = sae.firing(rows)
    expected_r, expected_f = (codes > 0).nonzero(as_tuple=True)
    assert len(r) > 0
    torch.testing.assert_close(r, expected_r)
    torch.testing.assert_close(f, expected_f)
    torch.testing.assert_close(v, codes[expected_r, expected_f])


def test_top_tokens_are_ranked_by_activation_mass_not_count():
    import torch

    from training.features.index import _top_tokens

    counts = torch.tensor([[100, 3, 0, 10]])
    sums = torch.tensor([[5.0, 6.0, 0.0, 2.0]], dtype=torch.float64)  # token 0: frequent but weak
    by_mass = _top_tokens(counts, sums, 3)
    assert by_mass["top_token_ids"].tolist() == [[1, 0, 3]]
    assert by_mass["top_token_counts"].tolist() == [[3, 100, 10]]
    assert by_mass["top_token_mean"][0].tolist() == pytest.approx([2.0, 0.05, 0.2])
    assert _top_tokens(counts, sums, 3, "count")["top_token_ids"].tolist() == [[0, 3, 1]]
    assert _top_tokens(counts, sums, 4)["top_token_ids"].tolist()[0][-1] == -1  # never fired: padded


def test_each_atom_lists_its_nearest_other_atoms_of_the_same_dictionary():
    import torch

    from training.features.index import nearest_other_atoms

    decoder = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [-1.0, 0.0]])
    ids, cos = nearest_other_atoms(decoder, 2)
    assert ids[0].tolist() == [1, 2] and ids[3].tolist() == [2, 1]
    assert cos[0][0] == pytest.approx(0.99 / (0.99**2 + 0.14**2) ** 0.5, rel=1e-5)
    assert all(i not in row for i, row in enumerate(ids.tolist()))
