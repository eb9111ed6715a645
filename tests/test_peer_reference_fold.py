"""scripts/peer_reference.py folds the dictionary-learning package's SAEs into ours exactly.

The package is not needed: its SAEs are random weights in our orientation, read through the script's formulas
of its forward (which the script's train half checks against the package itself).
"""

from __future__ import annotations

import pytest
import torch

from tests.builders import load_script
from training.sweeps.convergence import heldout_point

peer = load_script("peer_reference")


def _weights(n: int, d: int, atom_norms: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n, d, generator=gen)
    return {
        "W_enc": torch.randn(n, d, generator=gen) * 0.4,
        "b_enc": torch.randn(n, generator=gen) * 0.2 - 0.1,
        "W_dec": atoms / atoms.norm(dim=1, keepdim=True) * atom_norms[:, None],
        "b_dec": torch.randn(d, generator=gen) * 0.1,
    }


def _rows(d: int, seed: int = 1) -> torch.Tensor:
    """Rows of unit mean squared norm, as ScaledSource serves them."""
    return torch.randn(512, d, generator=torch.Generator().manual_seed(seed)) / d**0.5


def test_april_fold_keeps_reconstruction_and_objective() -> None:
    n, d, l1 = 48, 16, 0.2
    norms = torch.linspace(0.05, 3.0, n)
    weights, x = _weights(n, d, norms), _rows(d)
    sae = peer.fold_april(weights, l1)
    assert sae.config.arch == "relu" and sae.config.l1 == l1
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(n), atol=1e-6)
    theirs = peer.peer_codes("april", weights, x)
    assert (theirs > 0).float().mean() > 0.2  # the check means something only if many latents fire
    assert torch.allclose(sae.encode(x), theirs * norms, atol=1e-5)
    assert (sae.reconstruct(x) - peer.peer_reconstruct("april", weights, x)).abs().max() <= 1e-5
    objective = peer.peer_objective(weights, x, l1)
    assert abs(heldout_point(sae, x)["objective"] - objective) <= 1e-5
    assert abs(sae.reference_loss(sae.params(), x).item() - objective) <= 1e-5  # our training loss


def test_april_fold_of_a_zero_atom_gives_a_silent_latent() -> None:
    n, d = 8, 6
    norms = torch.ones(n)
    norms[3] = 0.0
    weights, x = _weights(n, d, norms), _rows(d)
    weights["b_enc"][3] = 5.0  # fires on every row in the package's SAE, contributing nothing
    sae = peer.fold_april(weights, 0.1)
    assert torch.isfinite(sae.W_enc).all() and torch.isfinite(sae.W_dec).all()
    assert (sae.encode(x)[:, 3] == 0).all()
    assert (sae.reconstruct(x) - peer.peer_reconstruct("april", weights, x)).abs().max() <= 1e-5


def test_topk_fold_gives_the_same_codes_and_reconstruction() -> None:
    n, d, k = 64, 16, 8
    weights, x = _weights(n, d, torch.ones(n)), _rows(d)
    weights["b_enc"].fill_(-0.5)  # about k of n pre-activations positive: some rows have fewer than k
    theirs = peer.peer_codes("topk", weights, x, k)
    positive = (theirs > 0).sum(dim=1)
    assert (positive < k).any() and (positive == k).any()
    sae = peer.fold_topk(weights, k)
    assert sae.config.arch == "topk" and sae.config.k == k
    assert torch.equal(sae.encode(x), theirs)
    assert (sae.reconstruct(x) - peer.peer_reconstruct("topk", weights, x, k)).abs().max() <= 1e-5


def test_fold_check_refuses_a_fold_that_is_off() -> None:
    n, d = 32, 12
    weights, x = _weights(n, d, torch.linspace(0.5, 2.0, n)), _rows(d)
    meta = {
        "name": "relu_n32_l10.3",
        "kind": "april",
        "trainer_args": {"l1_penalty": 0.3},
        "package": "p",
        "version": "0",
    }
    sae = peer.fold(meta, weights)
    check = peer.fold_check(meta, weights, sae, x)
    assert check["max_abs_reconstruction_difference"] <= 1e-5 and check["objective_difference"] <= 1e-5
    sae.W_dec.mul_(1.01)
    with pytest.raises(ValueError, match="fold of relu_n32_l10.3"):
        peer.fold_check(meta, weights, sae, x)


def _numbers(l0: float, fvu: float, dead: int) -> dict:
    return {"l0": l0, "fvu": fvu, "dead": dead}


def _pair(ours_name: str, peer_name: str, ours: dict, peer_numbers: dict) -> dict:
    ratio = peer_numbers["l0"] / ours["l0"]
    return {
        "ours_name": ours_name,
        "peer_name": peer_name,
        "ours": ours,
        "peer": peer_numbers,
        "l0_ratio": ratio,
        "matched": abs(ratio - 1) <= peer.L0_MATCH,
    }


def test_the_verdict_takes_the_matched_pair_nearest_in_l0_and_needs_dead_and_fvu_no_worse():
    ours = _numbers(10.0, 0.09, 40)
    pairs = [
        _pair("relu_n2048_l10.3", "relu_n2048_l10.1", ours, _numbers(30.0, 0.03, 400)),  # not matched
        _pair("relu_n2048_l10.3", "relu_n2048_l10.3", ours, _numbers(11.5, 0.10, 460)),  # matched, nearer
        _pair("relu_n2048_l10.3", "relu_n2048_l10.2", ours, _numbers(8.2, 0.08, 30)),  # matched, farther
        _pair("topk_n4096_k8", "topk_n4096_k8", _numbers(8.0, 0.03, 3000), _numbers(8.0, 0.04, 2400)),
        _pair("relu_n4096_l10.3", "relu_n4096_l10.3", _numbers(20.0, 0.09, 50), _numbers(14.0, 0.095, 1200)),
    ]
    verdicts = {v["ours_name"]: v for v in peer._verdicts(pairs)}
    assert verdicts["relu_n2048_l10.3"]["peer_name"] == "relu_n2048_l10.3"
    assert verdicts["relu_n2048_l10.3"]["verdict"] == "no worse"
    assert verdicts["topk_n4096_k8"]["verdict"] == "worse"
    assert verdicts["topk_n4096_k8"]["dead"] == {"ours": 3000, "peer": 2400, "no_worse": False}
    assert verdicts["topk_n4096_k8"]["fvu"]["no_worse"] is True
    assert verdicts["relu_n4096_l10.3"]["verdict"] == "no matched pair"
    assert verdicts["relu_n4096_l10.3"]["nearest_l0_ratio"] == pytest.approx(0.7)


def test_the_frontier_interpolates_the_peers_fvu_at_our_l0_in_log_log() -> None:
    points = [(16.0, 0.05), (4.0, 0.2), (64.0, 0.01)]  # unsorted on purpose
    assert peer.interpolate_fvu(points, 8.0) == pytest.approx(0.1)  # halfway in log L0: geometric mean
    assert peer.interpolate_fvu(points, 32.0) == pytest.approx((0.05 * 0.01) ** 0.5)
    assert peer.interpolate_fvu(points, 16.0) == pytest.approx(0.05)
    assert peer.interpolate_fvu(points, 4.0) == pytest.approx(0.2)
    assert peer.interpolate_fvu(points, 3.9) is None  # outside the peer's range: no extrapolation
    assert peer.interpolate_fvu(points, 65.0) is None
    assert peer.interpolate_fvu([(9.0, 0.07)], 9.0) == pytest.approx(0.07)
    assert peer.interpolate_fvu([], 9.0) is None
