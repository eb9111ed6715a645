"""``--device auto|cpu|cuda``: resolution, clean refusal without CUDA, and the choice reaching every stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from app.cli.commands import main
from tests.builders import sae_config
from tests.text_builders import SMALLEST_PIPELINE, brown_jsonl
from training.experiments import pipeline
from training.runtime.device import DeviceError, devices_record, resolve_device
from training.saes import build_sae
from training.sweeps.trainer import SweepRun


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_falls_back_to_the_cpu_and_cuda_without_one_is_refused(no_cuda):
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    with pytest.raises(DeviceError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--preset", "quick", "--no-serve"],
        ["toy", "--out", "OUT"],
        ["train-lm", "--workdir", "WORK"],
        ["train", "--workdir", "WORK"],
        ["index", "--workdir", "WORK"],
        ["serve", "--workdir", "WORK"],
        ["harvest", "--model", "MODEL", "--module", "m", "--workdir", "WORK"],
    ],
    ids=lambda a: a[0],
)
def test_every_computing_command_refuses_cuda_without_one_in_one_line(no_cuda, tmp_path, capsys, args):
    (tmp_path / "MODEL").mkdir()
    (tmp_path / "WORK").mkdir()
    args = [str(tmp_path / a) if a in ("OUT", "WORK", "MODEL") else a for a in args]
    if args[0] == "run":
        args += ["--workdir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--device", "cuda"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and "argument --device: no CUDA device is available" in err


def test_an_sae_and_its_optimiser_move_between_devices_unchanged():
    run = SweepRun(sae_config("jumprelu", dict_size=8, l1=0.1))
    before = {k: v.clone() for k, v in run.state().items()}
    run.to("cpu")
    assert all(torch.equal(before[k], v) for k, v in run.state().items())
    sae = build_sae(sae_config("batchtopk", dict_size=8, k=2)).to(torch.device("cpu"))
    assert sae.threshold.device.type == "cpu" and sae.grads["W_enc"].device.type == "cpu"


def test_the_device_reaches_every_stage_and_is_recorded(tmp_path, monkeypatch):
    device = torch.device("cpu")
    seen = {}

    def spy(name, original):
        def call(*args, **kwargs):
            seen[name] = kwargs.get("device", args[-1] if name in ("harvest", "feature_index") else None)
            return original(*args, **kwargs)

        return call

    monkeypatch.setattr(pipeline, "train_lm", spy("lm", pipeline.train_lm))
    monkeypatch.setattr(pipeline, "harvest_activations", spy("harvest", pipeline.harvest_activations))
    monkeypatch.setattr(pipeline, "train_sweep", spy("sae_sweep", pipeline.train_sweep))
    monkeypatch.setattr(pipeline, "index_run", spy("feature_index", pipeline.index_run))
    metrics = pipeline.run_pipeline(SMALLEST_PIPELINE, tmp_path / "run", brown_jsonl(tmp_path), False, device)
    assert seen == {"lm": device, "harvest": device, "sae_sweep": device, "feature_index": device}
    saved = json.loads((Path(tmp_path) / "run" / "metrics.json").read_text())
    assert saved["device"] == metrics["device"] == "cpu"
    assert saved["stage_devices"] == {s: "cpu" for s in ("lm", "harvest", "sae_sweep", "evaluation", "feature_index")}


def test_the_record_says_which_stages_ran_on_the_chosen_device():
    record = devices_record("cpu", ("sae_sweep",), stages=("sae_sweep", "evaluation"))
    assert record == {"device": "cpu", "stage_devices": {"sae_sweep": "cpu", "evaluation": "cpu"}}


def test_the_server_resolves_its_inspector_device_at_start(no_cuda, tmp_path):
    """A bad or unavailable device fails when the app is built, naming it, not at the first inspection."""
    from pydantic import ValidationError

    from app.settings import Settings
    from app.web.factory import create_app

    database = f"sqlite:///{tmp_path / 'test.db'}"
    app = create_app(Settings(workdir=tmp_path, database_url=database, device="auto"))
    assert app.state.inspector.device == torch.device("cpu")
    with pytest.raises(ValidationError, match="device"):
        Settings(workdir=tmp_path, database_url=database, device="tpu")
    with pytest.raises(DeviceError, match="no CUDA device"):
        create_app(Settings(workdir=tmp_path, database_url=database, device="cuda"))
