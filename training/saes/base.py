"""The common base of every sparse autoencoder: parameters, config, encode/decode, save and load.

Training uses hand-written gradients (``compute_grads``) rather than autograd: the hot path then
makes exactly the matrix products a step needs and a handful of elementwise passes, and the sparse
architectures skip the dense decoder products altogether. Each architecture also gives
``reference_loss``, the same loss in plain differentiable torch, which the tests check the hand-written
gradients against.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, Field, model_validator
from safetensors.torch import save_file

from training.saes.init import geometric_median
from training.saes.sparse_codes import nonzero_codes

PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")


def sae_generator(seed: int, stream: int = 0, dict_size: int = 0) -> torch.Generator:
    """A generator for SAE randomness, decorrelated from data generators that share the same seed.

    The dictionary size is mixed in so that dictionaries of different sizes in one sweep start from
    independent atoms: with a shared stream the first atoms of every size would be the same, which
    inflates how similar neighbouring sizes look (MMCS with larger) wherever atoms barely move.
    """
    key = f"sae:{seed}:{stream}:{dict_size}".encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1)


# Per-architecture defaults, found on the study's toy data (see README): relu learns fastest from
# data-sample atoms with a small encoder, while tied and jumprelu do far better from random atoms. The
# top-k family starts from random atoms, with the aux-k loss and k annealed down from 2k over the first
# quarter of training, which lets rare features win a slot before k tightens (a longer or wider
# anneal, or a strong aux-k loss, hurts in heavy superposition).
ARCH_DEFAULTS: dict[str, dict] = {
    "relu": {"init": "data", "encoder_scale": 0.1, "resample": True, "dead_after": 200_000},
    "tied": {"init": "random", "encoder_scale": 1.0, "resample": True, "dead_after": 200_000},
    "jumprelu": {"init": "random", "encoder_scale": 1.0, "resample": False, "dead_after": 200_000},
    "topk": {"init": "random", "encoder_scale": 1.0, "resample": False, "dead_after": 50_000},
    "batchtopk": {"init": "random", "encoder_scale": 1.0, "resample": False, "dead_after": 50_000},
}


class SAEConfig(BaseModel):
    """What defines one sparse autoencoder and how it is trained; unset fields take the arch's defaults."""

    arch: str = Field("relu", description="architecture, a key of the registry")
    d_in: int = Field(..., gt=0, description="dimension of the input activations")
    dict_size: int = Field(..., gt=0, description="number of latents (dictionary atoms)")
    l1: float | None = Field(None, ge=0, description="sparsity coefficient: L1 for relu/tied, L0 for jumprelu")
    k: int | None = Field(None, gt=0, description="active latents per sample for topk/batchtopk")
    init: Literal["random", "orthogonal", "data"] | None = Field(
        None, description="decoder initialisation: Gaussian, orthogonal, or normalised data samples"
    )
    encoder_scale: float | None = Field(None, gt=0, description="encoder starts as this times the decoder")
    decoder_bias_init: Literal["zero", "mean", "geometric_median"] = Field(
        "geometric_median", description="starting point of the decoder bias"
    )
    lr: float = Field(3e-3, gt=0, description="peak Adam learning rate")
    seed: int = Field(0, description="seed of the initialisation and of resampling")
    dead_after: int | None = Field(None, gt=0, description="samples without firing after which a latent counts as dead")
    resample: bool | None = Field(None, description="resample dead latents towards badly explained inputs")
    resample_until: float = Field(0.6, ge=0, le=1, description="fraction of training after which no resampling")
    resample_stop: Literal["fraction", "cooldown"] = Field(
        "fraction",
        description="when resampling ends: after resample_until of the schedule's horizon, or where the learning "
        "rate starts to decay (so a run of any length keeps reviving latents until its cool-down)",
    )
    recipe: str = Field("v1", description="the training recipe (training.saes.recipes) that chose lr and revival")
    decoder_norm: Literal["unit", "penalised"] = Field(
        "unit",
        description="relu: 'unit' renormalises every atom after each step; 'penalised' leaves atoms free and weights "
        "each latent's L1 term by its atom's norm (Anthropic's April 2024 update), the same objective",
    )
    atom_norm_init: float = Field(1.0, gt=0, description="norm of every decoder atom at initialisation")
    l1_warmup: float = Field(
        0.0, ge=0, le=1, description="relu: the L1 coefficient rises linearly from 0 over this fraction of the horizon"
    )
    grad_clip: float | None = Field(None, gt=0, description="largest global norm of a step's gradient (None: no clip)")
    aux_k: int | None = Field(None, gt=0, description="topk family: dead latents per sample in aux-k (default 2k)")
    aux_coef: float = Field(1 / 32, ge=0, description="topk family: weight of the aux-k loss")
    aux_straight_through: bool = Field(
        False,
        description="topk family: aux-k trains only the dead latents (not the shared decoder bias) and passes its "
        "gradient straight through their ReLU, so a latent negative on every input is still pulled towards the "
        "residual (through the ReLU it gets no gradient and stays dead)",
    )
    aux_rescue: bool = Field(
        False,
        description="topk family: aux-k trains only the dead latents (not the shared decoder bias), and a dead latent "
        "negative on every row of the batch gets aux-k's gradient straight through its ReLU (elsewhere the ReLU's "
        "gradient applies): a rescue from where no gradient reaches, without pushing latents that can already fire",
    )
    aux_rescue_bias: bool = Field(
        False,
        description="topk family: as aux_rescue, but the straight-through gradient moves only a stuck latent's encoder "
        "bias (its threshold), not its encoder row: the latent rises until its own best rows fire, instead of Adam's "
        "sign-like steps turning its whole row towards the inputs' mean (a dense latent, and the decoder bias drifts)",
    )
    multi_topk: bool = Field(
        False,
        description="topk: add the reconstruction from each sample's 4k largest pre-activations, weighted 1/8 "
        "(multi-TopK, Gao et al. 2024), so latents just outside the top k keep learning",
    )
    k_start: float = Field(
        2.0, ge=1, description="topk family: training starts with k_start * k active latents, annealed to k"
    )
    k_anneal: float = Field(0.25, ge=0, le=1, description="topk family: fraction of training spent annealing k")
    jump_bandwidth: float = Field(0.05, gt=0, description="jumprelu: width of the straight-through kernel")
    jump_threshold: float = Field(0.1, gt=0, description="jumprelu: initial threshold of every latent")
    tag: str = Field("", description="suffix that tells apart SAEs of one sweep that share arch, size and sparsity")

    @model_validator(mode="after")
    def _fill_arch_defaults(self) -> SAEConfig:
        if self.decoder_norm == "penalised" and self.arch != "relu":
            raise ValueError(f"decoder_norm 'penalised' is for arch relu, not {self.arch}")
        for name, value in ARCH_DEFAULTS.get(self.arch, {}).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name, value in {
            "init": "random",
            "encoder_scale": 1.0,
            "dead_after": 200_000,
            "resample": False,
        }.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        return self

    @property
    def sparsity_key(self) -> str:
        return "k" if self.k is not None and self.l1 is None else "l1"

    @property
    def sparsity(self) -> float | int:
        return self.k if self.sparsity_key == "k" else self.l1  # type: ignore[return-value]

    @property
    def name(self) -> str:
        base = f"{self.arch}_n{self.dict_size}_{self.sparsity_key}{self.sparsity:g}"
        return f"{base}_{self.tag}" if self.tag else base


@dataclass
class StepStats:
    """What one training step measured on its batch."""

    loss: float
    recon: float
    sparsity: float
    l0: float
    fvu: float


class SparseAutoencoder:
    """Parameters and shared behaviour of every architecture; subclasses define the nonlinearity."""

    arch: ClassVar[str]

    def __init__(self, config: SAEConfig) -> None:
        self.validate(config)
        self.config = config
        n, d = config.dict_size, config.d_in
        self.W_enc = torch.zeros(n, d)
        self.b_enc = torch.zeros(n)
        self.W_dec = torch.zeros(n, d)
        self.b_dec = torch.zeros(d)
        self.grads = {name: torch.zeros_like(p) for name, p in self.params().items()}
        self.samples_since_fired = torch.zeros(n, dtype=torch.long)
        self.cooldown_from: int | None = None  # step where the trainer's learning rate starts to decay
        self.random_init()

    @classmethod
    def validate(cls, config: SAEConfig) -> None:
        """Raise ValueError when the config lacks what this architecture needs."""
        if config.l1 is None:
            raise ValueError(f"arch {cls.arch} needs an l1 coefficient")

    def params(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def buffers(self) -> dict[str, torch.Tensor]:
        """Non-trained state that a checkpoint must keep."""
        return {"samples_since_fired": self.samples_since_fired}

    # --- initialisation -------------------------------------------------------------------------
    def random_init(self) -> None:
        gen = sae_generator(self.config.seed, 0, self.config.dict_size)
        n, d = self.config.dict_size, self.config.d_in
        if self.config.init == "orthogonal":
            q, _ = torch.linalg.qr(torch.randn(max(n, d), max(n, d), generator=gen))
            dec = q[:n, :d].clone()
        else:
            dec = torch.randn(n, d, generator=gen)
        self.W_dec.copy_(dec / dec.norm(dim=1, keepdim=True).clamp_min(1e-8) * self.config.atom_norm_init)
        self.W_enc.copy_(self.W_dec * self.config.encoder_scale)

    def initialise_from_data(self, sample: torch.Tensor) -> None:
        """Data-dependent initialisation from a sample of inputs (decoder atoms, decoder bias)."""
        cfg = self.config
        if cfg.decoder_bias_init == "geometric_median":
            self.b_dec.copy_(geometric_median(sample))
        elif cfg.decoder_bias_init == "mean":
            self.b_dec.copy_(sample.mean(dim=0))
        if cfg.init == "data":
            gen = sae_generator(cfg.seed, 1, cfg.dict_size)
            rows = torch.randint(0, sample.shape[0], (cfg.dict_size,), generator=gen)
            atoms = sample[rows] - self.b_dec
            norms = atoms.norm(dim=1, keepdim=True)
            fallback = torch.randn(cfg.dict_size, cfg.d_in, generator=gen)
            atoms = torch.where(norms > 1e-6, atoms, fallback)
            self.W_dec.copy_(atoms / atoms.norm(dim=1, keepdim=True) * cfg.atom_norm_init)
            self.W_enc.copy_(self.W_dec * cfg.encoder_scale)
        self.after_init(sample)

    def after_init(self, sample: torch.Tensor) -> None:
        """Hook for architectures that calibrate on data (e.g. thresholds)."""

    # --- the model --------------------------------------------------------------------------------
    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_enc, x - self.b_dec, self.W_enc.T)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations (batch x dict_size) as used at inference."""
        raise NotImplementedError

    def firing(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The nonzero codes of x as (row, latent, value), row-major with latents ascending.

        Streaming statistics only need these entries; architectures that select latents sparsely give them
        without building the dense code matrix.
        """
        codes = self.encode(x)
        flat = nonzero_codes(codes)
        rows = torch.div(flat, codes.shape[1], rounding_mode="floor")
        return rows, flat - rows * codes.shape[1], codes.reshape(-1).index_select(0, flat)

    def encode_pairs(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor | None:
        """The activation of latent ``latents[i]`` on input ``x[i]``, or None where latents compete (top-k).

        Architectures whose latents are independent at inference give it without the full encoder product,
        which makes reading a few activations of many latents cheap.
        """
        return None

    def pair_pre_activations(self, x: torch.Tensor, latents: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Pre-activation of latent ``latents[i]`` on ``x[i]`` with encoder rows ``weight``."""
        return torch.einsum("pd,pd->p", x - self.b_dec, weight[latents]) + self.b_enc[latents]

    def decode(self, c: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_dec, c, self.W_dec)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def reference_loss(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The training loss in plain differentiable torch (for tests of ``compute_grads``)."""
        raise NotImplementedError

    def sparsity_penalty(self, codes: torch.Tensor) -> torch.Tensor:
        """The sparsity term of the training objective on (batch x dict_size) codes, averaged over the batch.

        Zero for the top-k family, whose sparsity is a constraint (their aux-k loss only trains dead latents).
        """
        return torch.zeros((), device=codes.device)

    def compute_grads(self, x: torch.Tensor, want_stats: bool) -> StepStats | None:
        """Fill ``self.grads`` with the loss gradient on batch x; update firing counters."""
        raise NotImplementedError

    def set_progress(self, step: int, total_steps: int) -> None:
        """Tell the SAE how far training has come (for schedules of its own, e.g. k annealing)."""

    def after_step(self, x: torch.Tensor, step: int, total_steps: int) -> list[torch.Tensor]:
        """Maintenance after an optimiser step; returns latent indices whose optimiser state to reset."""
        return []

    # --- decoder geometry ---------------------------------------------------------------------------
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the part of each unit atom's gradient along the atom, which only changes its norm."""
        if self.config.decoder_norm == "penalised":
            return
        g, w = self.grads["W_dec"], self.W_dec
        g.sub_((g * w).sum(dim=1, keepdim=True) * w)

    def normalise_decoder(self) -> None:
        """Put every atom back on the unit sphere (not for penalised atoms, whose norm is trained)."""
        if self.config.decoder_norm == "penalised":
            return
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    def clip_grads(self) -> None:
        """Scale the step's gradients down to global norm ``grad_clip`` where they exceed it."""
        if self.config.grad_clip is None:
            return
        norm = torch.sqrt(sum(g.pow(2).sum() for g in self.grads.values())).item()
        if norm > self.config.grad_clip:
            for g in self.grads.values():
                g.mul_(self.config.grad_clip / norm)

    def unit_atom_params(self) -> dict[str, torch.Tensor]:
        """The parameters with every atom scaled to unit norm and its encoder row and bias scaled to match.

        ReLU codes scale with their encoder row, so latent i's code times atom i is unchanged, and so is a
        penalty of l1 * code * atom norm: the same function and objective with the unit atoms every analysis
        (cosines, MMCS, feature statistics) assumes. An atom of norm zero never contributed: its encoder row
        and bias become zero, so its code is zero too. A no-op for unit decoders.
        """
        params = {name: t.clone() for name, t in self.params().items()}
        if self.config.decoder_norm != "penalised":
            return params
        norms = params["W_dec"].norm(dim=1)
        params["W_dec"].div_(norms.clamp_min(torch.finfo(norms.dtype).tiny)[:, None])
        params["W_enc"].mul_(norms[:, None])
        params["b_enc"].mul_(norms)
        return params

    def dead_fraction(self) -> float:
        """Fraction of latents silent for the last ``dead_after`` training samples: dead to resampling and aux-k."""
        return (self.samples_since_fired >= self.config.dead_after).float().mean().item()

    def _track_firing(self, fired: torch.Tensor, batch_size: int) -> None:
        self.samples_since_fired.add_(batch_size).masked_fill_(fired, 0)

    @staticmethod
    def _stats(x: torch.Tensor, err_sq: float, sparsity: float, l0: float) -> StepStats:
        b = x.shape[0]
        total_var = (x - x.mean(dim=0)).pow(2).sum().item()
        recon = err_sq / b
        return StepStats(
            loss=recon + sparsity, recon=recon, sparsity=sparsity, l0=l0, fvu=err_sq / max(total_var, 1e-12)
        )

    def to(self, device: torch.device | str) -> SparseAutoencoder:
        """Move every tensor the SAE holds (parameters, gradients, buffers) to ``device``; returns self."""
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
            elif isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
                setattr(self, name, {k: v.to(device) for k, v in value.items()})
        return self

    # --- persistence -----------------------------------------------------------------------------
    def save(self, folder: Path, extra: dict | None = None) -> None:
        """Write ``sae.safetensors`` and ``config.json`` (plus any extra JSON) into folder."""
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            name: t.detach().cpu().contiguous()
            for name, t in {**self.unit_atom_params(), **self.inference_buffers()}.items()
        }
        save_file(tensors, str(folder / "sae.safetensors"))
        meta = {"config": self.config.model_dump(), **(extra or {})}
        (folder / "config.json").write_text(json.dumps(meta, indent=2))

    def inference_buffers(self) -> dict[str, torch.Tensor]:
        """Non-parameter tensors that inference needs (e.g. thresholds)."""
        return {}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, value in tensors.items():
            target = getattr(self, name, None)
            if not isinstance(target, torch.Tensor):
                continue
            if target.shape != value.shape:
                raise ValueError(f"tensor {name} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
            target.copy_(value)
