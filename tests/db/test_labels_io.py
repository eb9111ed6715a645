"""Label export and import: CSV and JSONL round trips, duplicates skipped, malformed files write nothing."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from app.db.migrate import upgrade_to_head
from app.db.session import make_engine
from app.services.labels_io import (
    COLUMNS,
    LabelRecord,
    export_labels_file,
    format_labels,
    import_labels,
    import_labels_file,
    parse_labels,
    read_labels,
)
from tests.db.builders import add_dictionaries, add_labels, label_rows

HASH = "f" * 64
# The dictionaries LABELS and the rows below are of; an import refuses labels of dictionaries not indexed.
SIZES = {HASH: 8, "0" * 64: 8, "abc": 8}

LABELS = [
    {
        "dictionary_hash": HASH,
        "feature_index": 0,
        "labeller": "ada",
        "verdict": "monosemantic",
        "description": 'commas, "quotes" and a\nsecond line; café',
        "confidence": 0.8,
        "created_at": datetime(2024, 3, 1, 10, 0, 0, 123456),
        "seconds_on_screen": 4.25,
    },
    {
        "dictionary_hash": HASH,
        "feature_index": 0,
        "labeller": "bob",
        "verdict": "polysemantic",
        "description": "",
        "confidence": None,
        "created_at": datetime(2024, 3, 1, 11, 0),
        "seconds_on_screen": None,
    },
    {
        "dictionary_hash": "0" * 64,
        "feature_index": 7,
        "labeller": "ada",
        "verdict": "uninterpretable",
        "description": "noise",
        "confidence": 1 / 3,
        "created_at": datetime(2024, 3, 2, 8, 30),
        "seconds_on_screen": None,
    },
]


@pytest.fixture
def other_engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def content(engine) -> list[tuple]:
    """Stored labels without their row ids."""
    return sorted(row[1:] for row in label_rows(engine))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_imported_into_another_database_gives_the_same_labels(engine, other_engine, tmp_path, fmt):
    add_dictionaries(other_engine, SIZES)
    add_labels(engine, LABELS)
    path = tmp_path / f"labels.{fmt}"
    assert export_labels_file(engine, path, fmt) == 3
    result = import_labels_file(other_engine, path, fmt)
    assert (result.added, result.skipped) == (3, 0)
    assert content(other_engine) == content(engine)
    assert len(content(engine)) == 3


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_importing_the_same_export_twice_adds_nothing(engine, tmp_path, fmt):
    add_dictionaries(engine, SIZES)
    add_labels(engine, LABELS)
    path = tmp_path / f"labels.{fmt}"
    export_labels_file(engine, path, fmt)
    result = import_labels_file(engine, path, fmt)
    assert (result.added, result.skipped) == (0, 3)
    assert len(label_rows(engine)) == 3


def test_the_export_has_one_row_per_label_with_the_documented_fields(engine):
    add_labels(engine, LABELS)
    lines = format_labels(read_labels(engine), "jsonl").splitlines()
    first = json.loads(lines[0])
    assert list(first) == list(COLUMNS)
    assert first["dictionary"] == HASH and first["index"] == 0 and first["confidence"] == 0.8
    assert first["created_at"] == "2024-03-01T10:00:00.123456+00:00"
    assert first["seconds_on_screen"] == 4.25
    assert json.loads(lines[1])["confidence"] is None and json.loads(lines[1])["seconds_on_screen"] is None
    csv_text = format_labels(read_labels(engine), "csv")
    assert csv_text.splitlines()[0] == ",".join(COLUMNS)


def test_a_changed_row_is_not_a_duplicate(engine):
    add_dictionaries(engine, SIZES)
    add_labels(engine, LABELS[:1])
    record = read_labels(engine)[0]
    changed = LabelRecord.model_validate(record.model_dump() | {"verdict": "polysemantic"})
    result = import_labels(engine, [record, changed, changed])
    assert (result.added, result.skipped) == (1, 2)
    assert len(label_rows(engine)) == 2


def test_times_with_an_offset_are_stored_in_utc_and_missing_fields_take_defaults(engine):
    text = (
        '{"dictionary": "abc", "index": 2, "labeller": "cy", "verdict": "monosemantic",'
        ' "created_at": "2024-06-01T12:00:00+02:00"}\n\n'
    )
    add_dictionaries(engine, SIZES)
    import_labels(engine, parse_labels(text, "jsonl"))
    (row,) = label_rows(engine)
    assert row[1:] == ("abc", 2, "cy", "monosemantic", "", None, datetime(2024, 6, 1, 10, 0), None, None)


GOOD_JSONL = '{"dictionary": "abc", "index": 1, "labeller": "ada", "verdict": "monosemantic"}'


@pytest.mark.parametrize(
    ("bad_line", "fmt", "expected"),
    [
        ('{"dictionary": "abc", "index": 1, "labeller": "ada", "verdict": "mono"}', "jsonl", "line 3: verdict"),
        (GOOD_JSONL.replace('"index": 1', '"index": -1'), "jsonl", "line 3: index"),
        (GOOD_JSONL.replace('"ada"', '"' + "x" * 65 + '"'), "jsonl", "line 3: labeller"),
        (GOOD_JSONL.replace('"ada"', '""'), "jsonl", "line 3: labeller"),
        (GOOD_JSONL[:-1] + ', "confidence": 1.5}', "jsonl", "line 3: confidence"),
        (GOOD_JSONL[:-1] + ', "description": "' + "d" * 2001 + '"}', "jsonl", "line 3: description"),
        (GOOD_JSONL.replace('"index": 1', '"index": "one"'), "jsonl", "line 3: index"),
        (GOOD_JSONL.replace(', "verdict": "monosemantic"', ""), "jsonl", "line 3: verdict"),
        ("{not json", "jsonl", "line 3: not valid JSON"),
        ("[1, 2]", "jsonl", "line 3: expected a JSON object"),
        ("abc,1,ada,monosemantic,,2,2024-01-01T00:00:00", "csv", "line 3: confidence"),
        ("abc,x,ada,monosemantic,,,", "csv", "line 3: index"),
        ("abc,1,ada,monosemantic,,,yesterday", "csv", "line 3: created_at"),
        ("abc,1,ada,monosemantic,,,,,,extra", "csv", "line 3: more values"),
        ("abc,1,ada,monosemantic,,,,,-2", "csv", "line 3: seconds_on_screen"),
    ],
)
def test_a_malformed_row_names_its_line_and_field_and_nothing_is_written(engine, tmp_path, bad_line, fmt, expected):
    add_dictionaries(engine, SIZES)
    add_labels(engine, LABELS[:1])
    if fmt == "csv":
        good = "abc,1,ada,monosemantic,fine,0.5,2024-01-01T00:00:00"
        text = ",".join(COLUMNS) + "\n" + good + "\n" + bad_line + "\n" + good.replace(",1,", ",2,") + "\n"
    else:
        text = GOOD_JSONL + "\n" + GOOD_JSONL.replace('"index": 1', '"index": 2') + "\n" + bad_line + "\n"
    path = tmp_path / f"bad.{fmt}"
    path.write_text(text)
    before = label_rows(engine)
    with pytest.raises(ValueError, match=expected) as caught:
        import_labels_file(engine, path, fmt)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert label_rows(engine) == before


def test_a_csv_header_without_required_columns_is_refused(engine):
    with pytest.raises(ValueError, match="line 1: header lacks index"):
        parse_labels("dictionary,labeller,verdict\nabc,ada,monosemantic\n", "csv")


def test_csv_line_numbers_count_physical_lines_of_multi_line_descriptions():
    text = ",".join(COLUMNS) + '\nabc,1,ada,monosemantic,"two\nlines",,\nabc,1,ada,nope,,,\n'
    with pytest.raises(
        ValueError, match="labels line 4: verdict: must be one of monosemantic, polysemantic, uninterpretable"
    ):
        parse_labels(text, "csv")
