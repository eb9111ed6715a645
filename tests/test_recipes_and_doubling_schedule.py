"""Recipe v2 and its schedule: the learning rate falls with the dictionary, half-rows SAEs are complete
runs (a cool-down branch), and a doubled run resumed from the shorter run's pre-decay state ends exactly
as a straight run of the doubled length."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from tests.builders import sae_config
from training.experiments.pipeline import PRESETS, latest_stable, sae_configs, sweep_train_config
from training.saes import load_sae
from training.saes.recipes import RECIPES, recipe_sae_config, scaled_lr
from training.sweeps.trainer import HALF_DIR, STABLE_DIR, TrainConfig, train_sweep

SPARSITY = {"relu": {"l1": 0.3}, "topk": {"k": 8}}
ROWS = 24_576  # 96 steps of 256 rows: the half run decays over its last 14 steps, the full over 28
BATCH = 256


def configs():
    """relu with resampling until the cool-down and top-k with aux-k and its k anneal: every schedule-driven path."""
    return [
        sae_config("relu", dict_size=64, l1=1.0, dead_after=512, resample=True, resample_stop="cooldown"),
        sae_config("topk", dict_size=64, k=2, dead_after=512, aux_k=8),
    ]


def train(samples: int, horizon: int, half: str) -> TrainConfig:
    return TrainConfig(
        samples=samples,
        batch_size=BATCH,
        horizon_samples=horizon,
        half=half,
        init_samples=2048,
        checkpoint_every=10,
        log_every=8,
    )


def same_weights(a: Path, b: Path) -> None:
    for config in configs():
        left, right = load_sae(a / config.name), load_sae(b / config.name)
        for name, p in left.params().items():
            assert torch.equal(p, right.params()[name]), (config.name, name)


@pytest.fixture(scope="module")
def first_round(small_toy, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rounds") / "rows_n"
    train_sweep(configs(), small_toy, train(ROWS, ROWS, "cooldown"), folder, progress=False)
    return folder


def test_the_learning_rate_rule_scales_with_the_inverse_square_root_of_the_size():
    assert scaled_lr(128, 3e-3, 256) == 3e-3  # never above the reference rate
    assert scaled_lr(256, 3e-3, 256) == 3e-3
    assert scaled_lr(1024, 3e-3, 256) == pytest.approx(1.5e-3)
    assert scaled_lr(4096, 3e-3, 256) == pytest.approx(7.5e-4)
    assert scaled_lr(4096, 3e-3, None) == 3e-3  # recipe v1: every size at one rate
    study = sae_configs(PRESETS["study"], 64)
    relu = {c.dict_size: c.lr for c in study if c.arch == "relu" and c.l1 == 0.3}
    assert relu[4096] / relu[2048] == pytest.approx(math.sqrt(2048 / 4096))
    assert relu[512] == relu[1024] == RECIPES["v3"].lr_ref == RECIPES["v2"].lr_ref


def test_recipe_v4_is_v3_with_top_k_rescue_at_a_capped_rate():
    for n in (128, 1024, 2048, 4096):
        v3 = {arch: recipe_sae_config(RECIPES["v3"], arch, 64, n, **key) for arch, key in SPARSITY.items()}
        v4 = {arch: recipe_sae_config(RECIPES["v4"], arch, 64, n, **key) for arch, key in SPARSITY.items()}
        assert v4["relu"].model_dump(exclude={"recipe"}) == v3["relu"].model_dump(exclude={"recipe"})
        assert v4["topk"].aux_rescue and not v3["topk"].aux_rescue
        assert v4["topk"].lr == pytest.approx(min(v3["topk"].lr, 3e-3 / math.sqrt(2)))
    assert recipe_sae_config(RECIPES["v4"], "topk", 64, 4096, k=8).lr == pytest.approx(1.5e-3)


def test_recipe_v5_is_v3_with_top_k_bias_rescue():
    for n in (128, 1024, 2048, 4096):
        v3 = {arch: recipe_sae_config(RECIPES["v3"], arch, 64, n, **key) for arch, key in SPARSITY.items()}
        v5 = {arch: recipe_sae_config(RECIPES["v5"], arch, 64, n, **key) for arch, key in SPARSITY.items()}
        assert v5["relu"].model_dump(exclude={"recipe"}) == v3["relu"].model_dump(exclude={"recipe"})
        changed = {"recipe", "aux_rescue_bias"}
        assert v5["topk"].model_dump(exclude=changed) == v3["topk"].model_dump(exclude=changed)
        assert v5["topk"].aux_rescue_bias and not v3["topk"].aux_rescue_bias


def test_recipe_v6_is_v5_with_relu_at_the_reference_rate_up_to_4096_latents():
    for n in (128, 1024, 2048, 4096, 8192):
        v5 = {arch: recipe_sae_config(RECIPES["v5"], arch, 64, n, **key) for arch, key in SPARSITY.items()}
        v6 = {arch: recipe_sae_config(RECIPES["v6"], arch, 64, n, **key) for arch, key in SPARSITY.items()}
        assert v6["topk"].model_dump(exclude={"recipe"}) == v5["topk"].model_dump(exclude={"recipe"})
        assert v6["relu"].model_dump(exclude={"recipe", "lr"}) == v5["relu"].model_dump(exclude={"recipe", "lr"})
        assert v6["relu"].lr == pytest.approx(3e-3 * min(1.0, math.sqrt(4096 / n)))
    assert recipe_sae_config(RECIPES["v5"], "relu", 64, 4096, l1=0.3).lr == pytest.approx(1.5e-3)
    assert recipe_sae_config(RECIPES["v6"], "topk", 64, 4096, k=8).lr == pytest.approx(1.5e-3)


def test_every_sae_saves_the_recipe_that_chose_its_settings(first_round):
    for config in configs():
        meta = json.loads((first_round / "saes" / config.name / "config.json").read_text())
        assert meta["config"]["recipe"] == config.recipe
        assert meta["config"]["lr"] == config.lr
    for config in sae_configs(PRESETS["study"], 64):
        assert config.recipe == "v5"
        assert config.lr == scaled_lr(config.dict_size, RECIPES["v5"].lr_ref, RECIPES["v5"].n_ref)
        if config.arch == "topk":
            assert config.aux_k == 32  # d_in / 2
            assert config.k_start == 1.0  # no k anneal
            assert config.aux_rescue_bias
        else:
            assert config.decoder_norm == "penalised" and not config.resample and config.l1_warmup == 0.05
    v3 = sae_configs(PRESETS["study"].model_copy(update={"recipe": "v3"}), 64)
    assert not any(c.aux_rescue_bias for c in v3) and {c.recipe for c in v3} == {"v3"}
    v2 = sae_configs(PRESETS["study"].model_copy(update={"recipe": "v2"}), 64)
    assert all(c.resample_stop == "cooldown" and c.decoder_norm == "unit" for c in v2 if c.arch == "relu")
    assert all(c.k_start == 2.0 for c in v2 if c.arch == "topk")
    v1 = sae_configs(PRESETS["study"].model_copy(update={"recipe": "v1"}), 64)
    assert {c.lr for c in v1} == {3e-3} and all(c.recipe == "v1" for c in v1)


def test_the_half_rows_saes_are_a_complete_run_of_half_the_rows(small_toy, first_round, tmp_path):
    straight = tmp_path / "half_straight"
    train_sweep(configs(), small_toy, train(ROWS // 2, ROWS, "none"), straight, progress=False)
    same_weights(first_round / HALF_DIR, straight / "saes")
    meta = json.loads((first_round / HALF_DIR / configs()[0].name / "config.json").read_text())
    assert meta["samples"] == ROWS // 2 and meta["cool_down_from_samples"] < ROWS // 2


def test_the_cool_down_branch_leaves_no_trace_in_the_main_run(small_toy, first_round, tmp_path):
    without = tmp_path / "no_branch"
    train_sweep(configs(), small_toy, train(ROWS, ROWS, "none"), without, progress=False)
    same_weights(first_round / "saes", without / "saes")
    assert not (without / HALF_DIR).exists()


def test_a_doubled_run_resumed_from_the_pre_decay_state_equals_a_straight_run(small_toy, first_round, tmp_path):
    stable = first_round / STABLE_DIR
    assert json.loads((stable / "state.json").read_text())["step"] == train(ROWS, ROWS, "none").decay_start
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    train_sweep(configs(), small_toy, train(2 * ROWS, ROWS, "none"), resumed, progress=False, resume_from=stable)
    train_sweep(configs(), small_toy, train(2 * ROWS, ROWS, "none"), straight, progress=False)
    same_weights(resumed / "saes", straight / "saes")
    log = [json.loads(line) for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (straight / "train_log.jsonl").read_text().splitlines()]
    assert [(x["index"], x["step"]) for x in log] == [(x["index"], x["step"]) for x in reference]


def test_two_doublings_resumed_in_turn_equal_a_straight_run_of_four_times_the_rows(small_toy, first_round, tmp_path):
    twice, four, straight = tmp_path / "twice", tmp_path / "four", tmp_path / "straight"
    train_sweep(
        configs(), small_toy, train(2 * ROWS, ROWS, "none"), twice, progress=False, resume_from=first_round / STABLE_DIR
    )
    assert (twice / STABLE_DIR / "state.json").exists()  # a resumed round keeps its own pre-decay state
    train_sweep(
        configs(), small_toy, train(4 * ROWS, ROWS, "none"), four, progress=False, resume_from=twice / STABLE_DIR
    )
    train_sweep(configs(), small_toy, train(4 * ROWS, ROWS, "none"), straight, progress=False)
    same_weights(four / "saes", straight / "saes")


def test_a_round_resumes_from_the_longest_earlier_round_that_kept_its_state(tmp_path):
    for rows in (1000, 2000):
        (tmp_path / f"saes_rows_{rows}" / STABLE_DIR).mkdir(parents=True)
    (tmp_path / "saes_rows_1000" / STABLE_DIR / "state.json").write_text("{}")
    assert latest_stable(tmp_path, 4000) == tmp_path / "saes_rows_1000" / STABLE_DIR  # 2000's state is missing
    (tmp_path / "saes_rows_2000" / STABLE_DIR / "state.json").write_text("{}")
    assert latest_stable(tmp_path, 4000) == tmp_path / "saes_rows_2000" / STABLE_DIR
    assert latest_stable(tmp_path, 1000) is None


def test_part_of_a_sweep_resumes_from_its_pre_decay_state(small_toy, first_round, tmp_path):
    relu = configs()[:1]
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    train_sweep(
        relu, small_toy, train(2 * ROWS, ROWS, "none"), resumed, progress=False, resume_from=first_round / STABLE_DIR
    )
    train_sweep(relu, small_toy, train(2 * ROWS, ROWS, "none"), straight, progress=False)
    left, right = load_sae(resumed / "saes" / relu[0].name), load_sae(straight / "saes" / relu[0].name)
    assert all(torch.equal(p, right.params()[name]) for name, p in left.params().items())


def drop_field(path: Path, keys: list[str], field: str) -> None:
    """Remove ``field`` from every SAE config under ``keys`` of a JSON file: as a run from before it was added."""
    data = json.loads(path.read_text())
    holder = data
    for key in keys:
        holder = holder[key]
    for sae in holder:
        del sae[field]
    path.write_text(json.dumps(data))


def test_a_run_written_before_a_config_field_was_added_still_resumes(small_toy, first_round, tmp_path):
    # The field's default keeps the old behaviour, so the old run is the same sweep.
    old = tmp_path / "old"
    shutil.copytree(first_round, old)
    drop_field(old / STABLE_DIR / "state.json", ["record", "saes"], "aux_straight_through")
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    train_sweep(
        configs(), small_toy, train(2 * ROWS, ROWS, "none"), resumed, progress=False, resume_from=old / STABLE_DIR
    )
    train_sweep(configs(), small_toy, train(2 * ROWS, ROWS, "none"), straight, progress=False)
    same_weights(resumed / "saes", straight / "saes")
    killed = tmp_path / "killed"
    train_sweep(configs(), small_toy, train(ROWS, ROWS, "none"), killed, progress=False, stop_after=40)
    drop_field(killed / "sweep.json", ["saes"], "aux_straight_through")
    train_sweep(configs(), small_toy, train(ROWS, ROWS, "none"), killed, progress=False)
    same_weights(killed / "saes", first_round / "saes")


def test_a_pre_decay_state_refuses_a_run_with_another_horizon(small_toy, first_round, tmp_path):
    with pytest.raises(ValueError, match="different sweep"):
        train_sweep(
            configs(),
            small_toy,
            train(2 * ROWS, 2 * ROWS, "none"),
            tmp_path / "other",
            progress=False,
            resume_from=first_round / STABLE_DIR,
        )


def test_a_run_killed_in_the_cool_down_branch_resumes_to_the_same_weights(small_toy, first_round, tmp_path):
    folder = tmp_path / "killed"
    branch_at = train(ROWS, ROWS, "cooldown").halved().decay_start
    train_sweep(configs(), small_toy, train(ROWS, ROWS, "cooldown"), folder, progress=False, stop_after=branch_at)
    assert not (folder / HALF_DIR).exists()
    train_sweep(configs(), small_toy, train(ROWS, ROWS, "cooldown"), folder, progress=False)
    same_weights(first_round / HALF_DIR, folder / HALF_DIR)
    same_weights(first_round / "saes", folder / "saes")


def test_the_study_doubles_by_resuming_and_only_its_first_round_branches():
    study = PRESETS["study"]
    first, second = sweep_train_config(study, study.sae_samples), sweep_train_config(study, 2 * study.sae_samples)
    assert first.half == "cooldown" and second.half == "none"
    assert first.horizon_steps == second.horizon_steps
    v1 = sweep_train_config(study.model_copy(update={"recipe": "v1"}), study.sae_samples)
    assert v1.half == "snapshot" and v1.horizon_samples is None
