"""Top-k SAE: exactly k latents per sample, k annealing, and the aux-k loss for dead latents."""

from __future__ import annotations

import pytest
import torch

from tests.builders import sae_config
from training.saes import build_sae, topk
from training.saes.sparse_codes import SparseCodes
from training.sweeps.trainer import INIT_STEP, SweepRun


def positive_topk_sae(k: int = 4, **overrides):
    """A top-k SAE whose pre-activations are all positive (large encoder bias), so exactly k fire."""
    sae = build_sae(sae_config("topk", k=k, **overrides))
    sae.b_enc.fill_(10.0)
    return sae


def test_encode_keeps_exactly_the_k_largest_pre_activations():
    sae = positive_topk_sae(k=5)
    x = torch.randn(300, 16)
    pre = sae.pre_activations(x)
    c = sae.encode(x)
    assert ((c > 0).sum(dim=1) == 5).all()
    kept = c > 0
    assert torch.equal(c[kept], pre[kept])
    smallest_kept = torch.where(kept, pre, torch.inf).min(dim=1).values
    largest_dropped = torch.where(kept, -torch.inf, pre).max(dim=1).values
    assert (smallest_kept > largest_dropped).all()


def test_negative_pre_activations_do_not_fire():
    sae = build_sae(sae_config("topk", k=4))
    sae.b_enc.fill_(-10.0)
    assert sae.encode(torch.randn(50, 16)).abs().sum() == 0
    sae.b_enc[:2] = 10.0
    c = sae.encode(torch.randn(50, 16))
    assert ((c > 0).sum(dim=1) == 2).all()


def test_training_k_anneals_from_k_start_times_k_down_to_k():
    sae = positive_topk_sae(k=4, k_start=3.0, k_anneal=0.5)
    x = torch.randn(64, 16)
    schedule = {}
    for step in (0, 25, 50, 75, 99):
        sae.set_progress(step, 100)
        schedule[step] = sae.compute_grads(x, want_stats=True).l0
    assert schedule == {0: 12, 25: 8, 50: 4, 75: 4, 99: 4}
    assert ((sae.encode(x) > 0).sum(dim=1) == 4).all()


def test_training_k_never_exceeds_the_dictionary():
    sae = positive_topk_sae(k=10, k_start=4.0)
    sae.set_progress(0, 100)
    assert sae.training_k == 32
    assert sae.compute_grads(torch.randn(8, 16), want_stats=True).l0 == 32


def straight_through_relu(pre: torch.Tensor) -> torch.Tensor:
    """ReLU forwards, the identity backwards."""
    return pre + (torch.relu(pre) - pre).detach()


def aux_k_reference_loss(sae, params: dict[str, torch.Tensor], x: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """Main loss plus aux-k: the top dead latents reconstruct the (fixed) residual, normalised by its energy.

    With ``aux_straight_through`` the aux codes' ReLU passes its gradient straight through, with ``aux_rescue``
    only for dead latents negative on every row of the batch, and with ``aux_rescue_bias`` for those latents only
    into their encoder bias; with any of them, the aux term sees the decoder bias as a constant."""
    cfg = sae.config
    main = sae.reference_loss(params, x)
    pre = (x - params["b_dec"]) @ params["W_enc"].T + params["b_enc"]
    codes = sae.select(pre.detach(), training=True)
    mask = torch.zeros_like(pre, dtype=torch.bool)
    mask[codes.rows, codes.cols] = True
    residual = (x - (torch.relu(pre) * mask) @ params["W_dec"] - params["b_dec"]).detach()
    dead_idx = dead.nonzero().squeeze(1)
    k_aux = min(cfg.aux_k, dead_idx.numel())
    _, local = pre.detach()[:, dead_idx].topk(k_aux, dim=1)
    aux_mask = torch.zeros_like(mask)
    aux_mask.scatter_(1, dead_idx[local], True)
    aux_codes = torch.relu(pre)
    if cfg.aux_straight_through or cfg.aux_rescue or cfg.aux_rescue_bias:
        aux_pre = (x - params["b_dec"].detach()) @ params["W_enc"].T + params["b_enc"]
        through = torch.zeros(pre.shape[1], dtype=torch.bool)
        stuck = (pre.detach()[:, dead_idx] <= 0).all(dim=0)
        through[dead_idx if cfg.aux_straight_through else dead_idx[stuck]] = True
        if cfg.aux_rescue_bias:
            lifted = torch.relu(aux_pre) + (params["b_enc"] - params["b_enc"].detach())
        else:
            lifted = straight_through_relu(aux_pre)
        aux_codes = torch.where(through, lifted, torch.relu(aux_pre))
    aux_recon = (aux_codes * aux_mask) @ params["W_dec"]
    return main + cfg.aux_coef * (aux_recon - residual).pow(2).sum() / residual.pow(2).sum()


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
@pytest.mark.parametrize("aux_k", [3, 64], ids=["aux_k-3", "aux_k-all-dead"])
@pytest.mark.parametrize(
    "mode",
    [{}, {"aux_straight_through": True}, {"aux_rescue": True}, {"aux_rescue_bias": True}],
    ids=["relu", "straight-through", "rescue", "rescue-bias"],
)
@pytest.mark.parametrize("dense", [True, False], ids=["dense-aux", "sparse-aux"])
def test_aux_k_gradients_match_autograd(arch, aux_k, mode, dense, small_toy, monkeypatch):
    monkeypatch.setattr(topk, "AUX_DENSE_FACTOR", 16 if dense else 0)
    sae = build_sae(sae_config(arch, k=4, aux_k=aux_k, aux_coef=0.5, dead_after=1000, k_start=1.0, **mode))
    sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    dead = torch.zeros(32, dtype=torch.bool)
    dead[::3] = True
    sae.b_enc[::6] -= 5.0  # half the dead latents negative on every input: only a straight-through ReLU moves them
    sae.samples_since_fired[dead] = 1000
    x = small_toy.batch(0, 128)
    params = {name: p.detach().clone().requires_grad_(True) for name, p in sae.params().items()}
    aux_k_reference_loss(sae, params, x, dead).backward()
    without_aux = {name: p.detach().clone().requires_grad_(True) for name, p in sae.params().items()}
    sae.reference_loss(without_aux, x).backward()
    stats = sae.compute_grads(x, want_stats=True)
    assert stats.sparsity > 0
    for name, param in params.items():
        torch.testing.assert_close(sae.grads[name], param.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert not torch.allclose(params["W_enc"].grad, without_aux["W_enc"].grad)


@pytest.mark.parametrize(
    ("aux_coef", "mode"),
    [
        (0.0, {}),
        (0.5, {}),
        (0.5, {"aux_straight_through": True}),
        (0.5, {"aux_rescue": True}),
        (0.5, {"aux_rescue_bias": True}),
    ],
    ids=["alone", "with-aux-k", "with-straight-through-aux-k", "with-rescue", "with-rescue-bias"],
)
def test_multi_topk_gradients_match_autograd(aux_coef, mode, small_toy):
    config = sae_config("topk", k=4, aux_k=3, aux_coef=aux_coef, dead_after=1000, k_start=1.0, multi_topk=True)
    sae = build_sae(config.model_copy(update=mode))
    sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    sae.b_enc[::6] -= 5.0
    dead = torch.zeros(32, dtype=torch.bool)
    dead[::3] = True
    sae.samples_since_fired[dead] = 1000
    x = small_toy.batch(0, 128)
    params = {name: p.detach().clone().requires_grad_(True) for name, p in sae.params().items()}
    aux_k_reference_loss(sae, params, x, dead).backward()
    single = {name: p.detach().clone().requires_grad_(True) for name, p in sae.params().items()}
    sae.config = sae.config.model_copy(update={"multi_topk": False})
    aux_k_reference_loss(sae, single, x, dead).backward()
    sae.config = sae.config.model_copy(update={"multi_topk": True})
    sae.compute_grads(x, want_stats=False)
    for name, param in params.items():
        torch.testing.assert_close(sae.grads[name], param.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert not torch.allclose(params["W_dec"].grad, single["W_dec"].grad)


@pytest.mark.parametrize(
    "pair",
    [
        ("aux_rescue", "aux_straight_through"),
        ("aux_rescue", "aux_rescue_bias"),
        ("aux_rescue_bias", "aux_straight_through"),
    ],
)
def test_revivals_are_alternatives(pair):
    with pytest.raises(ValueError, match="are alternatives"):
        build_sae(sae_config("topk", k=4, **dict.fromkeys(pair, True)))


def test_multi_topk_is_for_topk_only():
    with pytest.raises(ValueError, match="multi_topk"):
        build_sae(sae_config("batchtopk", k=4, multi_topk=True))


def latents_firing_after_training(
    small_toy, aux_coef: float, below_every_input: bool = False, steps: int = 120, **fields
) -> torch.Tensor:
    """Which of 8 latents pushed below firing fire on held-out data after ``steps`` steps.

    Their encoder bias drops by 1, or, ``below_every_input``, to just under zero on every input."""
    run = SweepRun(sae_config("topk", k=4, dead_after=512, k_start=1.0, aux_coef=aux_coef, **fields))
    run.sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    held_out = small_toy.evaluation_set(4096)
    if below_every_input:
        run.sae.b_enc[:8] -= run.sae.pre_activations(held_out)[:, :8].max(dim=0).values + 0.2
        assert (run.sae.pre_activations(held_out)[:, :8] < 0).all()
    else:
        run.sae.b_enc[:8] -= 1.0
    for step in range(steps):
        run.step(small_toy.batch(step, 256), step, steps, 3e-3, want_stats=False)
    return (run.sae.encode(held_out) > 0).any(dim=0)[:8]


def test_aux_k_revives_dead_latents(small_toy):
    # One of the eight may stay dead with aux-k too: its atom can lie where live latents always win.
    assert latents_firing_after_training(small_toy, aux_coef=1.0).sum() >= 7
    assert latents_firing_after_training(small_toy, aux_coef=0.0).sum() <= 4


def test_aux_k_straight_through_revives_latents_negative_on_every_input(small_toy):
    # A ReLU'd aux-k gives a latent with no positive pre-activation no gradient (one may come back as the
    # decoder bias moves); straight through, aux-k pulls them up.
    setting = {"aux_coef": 1.0, "below_every_input": True, "steps": 300}
    stuck = latents_firing_after_training(small_toy, **setting)
    revived = latents_firing_after_training(small_toy, **setting, aux_straight_through=True)
    rescued = latents_firing_after_training(small_toy, **setting, aux_rescue=True)
    assert stuck.sum() <= 1
    assert revived.sum() >= 7
    assert rescued.sum() >= 7


def test_aux_rescue_bias_raises_stuck_latents_whose_atoms_fit_the_residual(small_toy):
    # Raising only the bias needs aux-k to choose: over the rows where a stuck latent is among the dead
    # latents' best, its atom fits the residual and its threshold goes up. Choosing every dead latent on
    # every row (aux_k of 8, the default 2k) averages that signal away.
    setting = {"aux_coef": 1.0, "below_every_input": True, "steps": 300, "aux_k": 4}
    assert latents_firing_after_training(small_toy, **setting).sum() <= 1
    assert latents_firing_after_training(small_toy, **setting, aux_rescue_bias=True).sum() >= 7


def test_sparse_codes_from_topk_group_by_sample():
    vals = torch.tensor([[3.0, 1.0], [2.0, 0.0]])
    idx = torch.tensor([[4, 0], [1, 2]])
    codes = SparseCodes.from_topk(vals, idx)
    assert codes.rows.tolist() == [0, 0, 1, 1]
    assert codes.offsets.tolist() == [0, 2]
    dense = codes.dense(2, 5)
    assert dense.tolist() == [[1.0, 0, 0, 0, 3.0], [0, 2.0, 0, 0, 0]]
