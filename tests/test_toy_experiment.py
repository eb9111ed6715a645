"""The toy experiment's config: defaults and the SAE configs of its sweep."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from training.data.toy import ToyConfig
from training.experiments.toy_experiment import DEFAULT_K, DEFAULT_L1, ToyExperimentConfig, default_dict_sizes


def test_defaults_follow_the_number_of_features() -> None:
    config = ToyExperimentConfig(toy=ToyConfig(n_features=100))
    assert config.dict_sizes == [50, 100, 200, 400]
    assert config.l1 == list(DEFAULT_L1) and config.k is None
    assert default_dict_sizes(1) == [1, 2, 4]


def test_one_sae_per_size_and_sparsity() -> None:
    relu = ToyExperimentConfig(toy=ToyConfig(dim=8, n_features=16), dict_sizes=[16, 8], l1=[0.1, 0.01])
    assert [(c.dict_size, c.l1) for c in relu.sae_configs()] == [(8, 0.01), (16, 0.01), (8, 0.1), (16, 0.1)]
    topk = ToyExperimentConfig(toy=ToyConfig(dim=8, n_features=16), dict_sizes=[8, 16], arch="topk")
    assert [(c.dict_size, c.k) for c in topk.sae_configs()] == [(8, DEFAULT_K), (16, DEFAULT_K)]


@pytest.mark.parametrize(
    "fields",
    [
        {"arch": "nope"},
        {"arch": "topk", "k": 100, "dict_sizes": [8, 16]},
        {"arch": "topk", "l1": [0.1]},
        {"arch": "relu", "k": 3},
        {"l1": [-1.0]},
        {"dict_sizes": [0, 8]},
        {"dict_sizes": [8, 8]},
    ],
)
def test_invalid_configs_are_rejected(fields: dict) -> None:
    with pytest.raises(ValidationError):
        ToyExperimentConfig(toy=ToyConfig(dim=8, n_features=16), **fields)
