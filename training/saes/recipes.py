"""Training recipes: how a sweep picks each SAE's learning rate and dead-latent revival, and how it doubles.

``v1`` is the recipe of the first study record (``docs/results/study_v1/``): every size at learning rate
3e-3, relu resampling only in the first 40% of training, top-k's aux-k over 2k dead latents, half-rows
snapshots taken before the learning rate decays, and each doubled round trained from scratch. It stays
so that record can be rebuilt and compared.

``v2`` follows what the field does and what our study activations showed (docs/experiment.md): the
learning rate falls with the dictionary as ``lr_ref * sqrt(n_ref / n)`` (never above ``lr_ref``), the
rule of EleutherAI's sparsify and of dictionary_learning, from 3e-3 at 1024 latents (with n_ref 256 the
4096-latent relu dictionary was still far from converged after 3M rows: L0 60, 2,730 rare latents); relu
resampling goes on until the learning rate starts to decay, however long the run, instead of stopping at
a fixed fraction; top-k's aux-k draws on ``d_in / 2`` dead latents (OpenAI, sparsify). Its half-rows
SAEs are complete runs (a cool-down branch) and a doubled round resumes from the shorter run's pre-decay
state.

``v3`` keeps v2's learning rates, schedule and aux-k, and changes what the probes on the study's activations
(``docs/results/study_v3/recipe_probe_v3.json``, 3M rows) supported. relu follows Anthropic's April 2024
update: atoms free to change norm with the L1 term weighted by each atom's norm, atoms started at norm
0.1 in random directions with the encoder as their transpose, L1 warmed up over the first 5% of the
horizon, gradients clipped to norm 1, no resampling; at 2048 latents and l1 0.3 it reached a better
held-out objective at 3M rows (0.301) than v2 did at 12M (0.304), with 47 dead latents instead of 246.
top-k trains at its final k from the start: the k anneal of v1 and v2 left 999 of 2048 latents dead at
3M rows, without it 758, and the FVU improved too (0.026 against 0.028).

``v4`` is a candidate that failed its longer probe, not the default. It keeps v3's relu and
changes top-k, from probes at 3M rows (``docs/results/study/recipe_probe_topk_rescue*.json``): aux-k
rescues dead latents whose pre-activations are negative on every row (``aux_rescue``), and top-k's rate is
at most 2.1e-3, where v3 gives 3e-3 up to 1024 latents (with rescue, 3e-3 destabilised the 1024-latent
dictionary). Against v3 at 3M rows its held-out objective is 8% better at 2048 latents and 21% at 4096,
so 4096 ends better than 2048, the same at 128, 3% worse at 1024 and 8.5% worse at 512. Over 6M rows it is
not stable (``recipe_probe_topk_v4_6m.json``): the 4096-latent dictionary keeps improving, but the
2048-latent one loses accuracy in the second half and ends worse than at 3M rows: its decoder bias drifted
(norm 0.6 to 2.9) while a latent that fired on every row cancelled it.

``v5`` keeps v3's relu and rates and rescues top-k's stuck latents by raising only their encoder bias
(``aux_rescue_bias``): v4's full straight-through step turned a rescued latent's whole encoder row towards
the inputs' mean, which made dense latents and the drift above.

``v6`` is v5 with relu at 3e-3 up to 4096 latents (``arch_n_ref``): v5's 2.1e-3 and 1.5e-3 at 2048 and 4096
reach the same held-out objective over 12M rows but at a higher L0 for their FVU, while L0 is still falling.
Beside the dictionary-learning package's April trainer on the same rows, v5's relu at 4096 latents and l1
0.3 reconstructs worse at its L0 (FVU 1.26 times the peer's), the same SAEs at 3e-3 better (0.75-0.79), at
1.8-4.4 times v5's dead latents, still fewer than the peer's (``docs/results/study/peer_frontier.json``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field

from training.saes.base import SAEConfig


class Recipe(BaseModel):
    """One named way of training a sweep's SAEs."""

    name: str
    lr_ref: float = Field(..., gt=0, description="peak learning rate at n_ref latents and below")
    n_ref: int | None = Field(None, gt=0, description="size at which lr_ref applies; None: every size at lr_ref")
    resample_stop: Literal["fraction", "cooldown"] = Field(
        "fraction", description="relu: resampling stops at a fraction or at the cool-down"
    )
    resample_until: float = Field(0.4, ge=0, le=1, description="relu, with resample_stop 'fraction'")
    aux_k_per_dim: float | None = Field(None, gt=0, description="top-k: aux-k latents per input dimension")
    cooldown_half: bool = Field(False, description="half-rows SAEs are complete runs; doubled rounds resume")
    arch_fields: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="SAEConfig fields the recipe sets, per architecture"
    )
    arch_lr_max: dict[str, float] = Field(
        default_factory=dict, description="largest peak learning rate, per architecture (none: lr_ref)"
    )
    arch_n_ref: dict[str, int] = Field(
        default_factory=dict, description="n_ref per architecture, where it differs from n_ref"
    )


# relu as Anthropic's April 2024 update trains it (v3 and v4).
APRIL_RELU: dict[str, Any] = {
    "decoder_norm": "penalised",
    "init": "random",
    "atom_norm_init": 0.1,
    "encoder_scale": 1.0,
    "l1_warmup": 0.05,
    "grad_clip": 1.0,
    "resample": False,
}

RECIPES: dict[str, Recipe] = {
    "v1": Recipe(name="v1", lr_ref=3e-3),
    "v2": Recipe(
        name="v2",
        lr_ref=3e-3,
        n_ref=1024,
        resample_stop="cooldown",
        aux_k_per_dim=0.5,
        cooldown_half=True,
    ),
    "v3": Recipe(
        name="v3",
        lr_ref=3e-3,
        n_ref=1024,
        aux_k_per_dim=0.5,
        cooldown_half=True,
        arch_fields={
            "relu": APRIL_RELU,
            "topk": {"k_start": 1.0},
        },
    ),
}
RECIPES["v4"] = RECIPES["v3"].model_copy(
    update={
        "name": "v4",
        "arch_fields": {**RECIPES["v3"].arch_fields, "topk": {"k_start": 1.0, "aux_rescue": True}},
        "arch_lr_max": {"topk": 3e-3 * math.sqrt(1 / 2)},
    }
)

RECIPES["v5"] = RECIPES["v3"].model_copy(
    update={
        "name": "v5",
        "arch_fields": {**RECIPES["v3"].arch_fields, "topk": {"k_start": 1.0, "aux_rescue_bias": True}},
    }
)

RECIPES["v6"] = RECIPES["v5"].model_copy(update={"name": "v6", "arch_n_ref": {"relu": 4096}})


def scaled_lr(dict_size: int, lr_ref: float, n_ref: int | None) -> float:
    """The peak learning rate of a dictionary of ``dict_size`` latents: lr_ref * sqrt(n_ref / n), at most lr_ref.

    Larger dictionaries take smaller steps: each latent fires more rarely, so Adam's normalised updates
    are noisier per useful signal, and at 3e-3 our 2048- and 4096-latent dictionaries lost most latents.
    """
    if n_ref is None or dict_size <= n_ref:
        return lr_ref
    return lr_ref * math.sqrt(n_ref / dict_size)


def recipe_sae_config(recipe: Recipe, arch: str, d_in: int, dict_size: int, **sparsity) -> SAEConfig:
    """The SAEConfig that ``recipe`` gives an SAE of this architecture, size and sparsity (``l1=`` or ``k=``)."""
    n_ref = recipe.arch_n_ref.get(arch, recipe.n_ref)
    lr = min(scaled_lr(dict_size, recipe.lr_ref, n_ref), recipe.arch_lr_max.get(arch, recipe.lr_ref))
    fields: dict = {"lr": lr, "recipe": recipe.name}
    if arch == "relu":
        fields.update(resample_stop=recipe.resample_stop, resample_until=recipe.resample_until)
    if arch in ("topk", "batchtopk") and recipe.aux_k_per_dim is not None:
        fields["aux_k"] = max(1, round(recipe.aux_k_per_dim * d_in))
    fields.update(recipe.arch_fields.get(arch, {}))
    return SAEConfig(arch=arch, d_in=d_in, dict_size=dict_size, **sparsity, **fields)
