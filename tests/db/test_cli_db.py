"""The database subcommands: index, labels export|import, db upgrade|backup; one-line errors with exit 1."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.cli.commands import main
from app.db.migrate import head_revision
from app.db.session import make_engine
from tests.db.builders import add_dictionaries, add_labels, build_run, label_rows, table_counts
from tests.db.test_labels_io import LABELS, SIZES
from training.features import index as feature_index


@pytest.fixture
def index_calls() -> list[tuple[Path, bool]]:
    """The (run folder, progress) of every call of the indexing step."""
    return []


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch, index_calls) -> Path:
    """A run folder whose indexing step writes the builder's artifacts (the real one needs a trained run)."""
    run = tmp_path / "run"
    run.mkdir()

    def fake_index_run(run_dir: Path, config=None, progress: bool = True, device="cpu") -> list[Path]:
        index_calls.append((Path(run_dir), progress))
        assert str(device) == "cpu"
        return [Path(run_dir) / "features" / index.meta.sae_name for index in build_run(Path(run_dir)).indexes]

    monkeypatch.setattr(feature_index, "index_run", fake_index_run)
    monkeypatch.delenv("MONOSEMANTIC_DATABASE_URL", raising=False)
    monkeypatch.delenv("MONOSEMANTIC_WORKDIR", raising=False)
    return run


def one_line_error(capsys, code: int, expected: str) -> None:
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "error:" in err and expected in err, err


def engine_of(workdir: Path):
    return make_engine(f"sqlite:///{workdir / 'monosemantic.db'}")


def test_index_loads_every_dictionary_into_the_workdir_database_and_prints_a_line_each(workdir, index_calls, capsys):
    assert main(["index", "--workdir", str(workdir), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert index_calls == [(workdir, False)]
    assert out[0].startswith("relu_n16_l10.1") and "16 features" in out[0] and "rows/s" in out[0]
    assert out[1].startswith("relu_n8_l10.1") and "6 alive" in out[1] and "2 dead" in out[1]
    assert out[2].startswith("2 dictionaries in sqlite:///")
    engine = engine_of(workdir)
    assert table_counts(engine)["features"] == 24
    add_labels(engine, LABELS)
    labels = label_rows(engine)

    assert main(["index", "--workdir", str(workdir), "--no-progress"]) == 0
    assert all(line.endswith("unchanged") for line in capsys.readouterr().out.splitlines()[:2])
    assert label_rows(engine) == labels
    engine.dispose()


def test_index_takes_the_database_from_the_environment(workdir, tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MONOSEMANTIC_DATABASE_URL", url)
    assert main(["index", "--workdir", str(workdir), "--no-progress"]) == 0
    assert (tmp_path / "elsewhere.db").exists() and not (workdir / "monosemantic.db").exists()


def test_index_of_a_missing_workdir_is_a_one_line_error(workdir, tmp_path, capsys):
    code = main(["index", "--workdir", str(tmp_path / "nope"), "--no-progress"])
    one_line_error(capsys, code, "does not exist")


def test_index_of_a_run_without_saes_is_a_one_line_error(workdir, monkeypatch, capsys):
    def no_saes(run_dir, config=None, progress=True, device="cpu"):
        raise FileNotFoundError(
            f"{run_dir} holds no trained SAEs (saes/saes/*/sae.safetensors): run the pipeline first"
        )

    monkeypatch.setattr(feature_index, "index_run", no_saes)
    code = main(["index", "--workdir", str(workdir), "--no-progress"])
    one_line_error(capsys, code, "holds no trained SAEs")


def test_a_database_url_that_cannot_be_opened_is_a_one_line_error(workdir, capsys):
    code = main(["index", "--workdir", str(workdir), "--no-progress", "--db", "nonsense://"])
    one_line_error(capsys, code, "nonsense")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_labels_export_then_import_into_a_fresh_database(workdir, tmp_path, capsys, fmt):
    main(["index", "--workdir", str(workdir), "--no-progress"])
    engine = engine_of(workdir)
    add_labels(engine, LABELS)
    out = tmp_path / f"labels.{fmt}"
    assert main(["labels", "export", "--out", str(out), "--workdir", str(workdir)]) == 0
    assert f"exported 3 labels to {out} ({fmt})" in capsys.readouterr().out

    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    one_line_error(capsys, main(["labels", "import", str(out), "--db", fresh]), "`monosemantic index`")
    copy = make_engine(fresh)
    add_dictionaries(copy, SIZES)
    assert main(["labels", "import", str(out), "--db", fresh]) == 0
    assert "imported 3 labels" in capsys.readouterr().out
    assert main(["labels", "import", str(out), "--db", fresh]) == 0
    assert "imported 0 labels" in (printed := capsys.readouterr().out) and "3 already stored" in printed
    assert [row[1:] for row in label_rows(copy)] == [row[1:] for row in label_rows(engine)]
    copy.dispose()
    engine.dispose()


def test_labels_export_format_flag_overrides_the_suffix(workdir, tmp_path, capsys):
    main(["index", "--workdir", str(workdir), "--no-progress"])
    out = tmp_path / "labels.txt"
    assert main(["labels", "export", "--out", str(out), "--format", "jsonl", "--workdir", str(workdir)]) == 0
    assert out.read_text() == ""  # no labels yet: an empty JSONL file
    assert main(["labels", "export", "--out", str(out), "--workdir", str(workdir)]) == 0
    assert out.read_text().startswith("dictionary,index,labeller")  # unknown suffix: CSV


def test_a_malformed_import_prints_the_line_and_field_and_writes_nothing(workdir, tmp_path, capsys):
    main(["index", "--workdir", str(workdir), "--no-progress"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"dictionary": "abc", "index": 1, "labeller": "ada", "verdict": "monosemantic"}\n'
        '{"dictionary": "abc", "index": 2, "labeller": "ada", "verdict": "monosemantic", "confidence": 7}\n'
    )
    capsys.readouterr()
    code = main(["labels", "import", str(bad), "--workdir", str(workdir)])
    one_line_error(capsys, code, "bad.jsonl line 2: confidence")
    engine = engine_of(workdir)
    assert label_rows(engine) == []
    engine.dispose()


def test_labels_import_of_a_missing_file_or_unknown_format_is_a_one_line_error(workdir, tmp_path, capsys):
    code = main(["labels", "import", str(tmp_path / "none.csv"), "--workdir", str(workdir)])
    one_line_error(capsys, code, "no file")
    odd = tmp_path / "labels.txt"
    odd.write_text("x")
    code = main(["labels", "import", str(odd), "--workdir", str(workdir)])
    one_line_error(capsys, code, "--format csv or --format jsonl")


def test_labels_export_without_a_database_is_a_one_line_error(workdir, tmp_path, capsys):
    code = main(["labels", "export", "--out", str(tmp_path / "x.csv"), "--workdir", str(workdir)])
    one_line_error(capsys, code, "no database at")
    assert not (workdir / "monosemantic.db").exists()


def test_db_upgrade_then_backup(workdir, tmp_path, capsys):
    assert main(["db", "upgrade", "--workdir", str(workdir)]) == 0
    assert f"is at revision {head_revision()} (head)" in capsys.readouterr().out
    engine = engine_of(workdir)
    add_labels(engine, LABELS)
    out = tmp_path / "backup.db"
    assert main(["db", "backup", "--out", str(out), "--workdir", str(workdir)]) == 0
    printed = capsys.readouterr().out
    assert "integrity ok" in printed and "labels 3" in printed
    with sqlite3.connect(out) as conn:
        assert conn.execute("SELECT count(*) FROM labels").fetchone() == (3,)
    engine.dispose()


def test_db_backup_of_postgresql_points_to_pg_dump(tmp_path, capsys):
    code = main(["db", "backup", "--out", str(tmp_path / "b.db"), "--db", "postgresql://u:secret@host/db"])
    one_line_error(capsys, code, "pg_dump")


def test_missing_subcommand_actions_are_usage_errors(capsys):
    for argv in (["labels"], ["db"], ["labels", "export"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1
