"""Export and import of labels as CSV or JSONL, one row per label, for backups and for sharing judgements.

Columns: ``dictionary`` (the dictionary's content hash), ``index``, ``labeller``, ``verdict``,
``description``, ``confidence`` (empty / null when not given), ``created_at`` (ISO 8601, UTC) and
``top_contexts_monosemantic`` (true / false, empty / null when not recorded; files without it import) and
``seconds_on_screen`` (how long the card was visible and ready; empty / null when not measured).
An export adds what the estimates need to be recomputed from the file alone (``POPULATION_COLUMNS``, empty /
null when the dictionary is not indexed here): the feature's ``evidence`` (alive, rare, dead), its ``group``
(the representative index of its group of near-duplicate alive latents: labels of one group count once),
and the dictionary's ``alive`` latents and ``distinct`` features; an import ignores them. An import holds
every row to the rules the API holds a new label to (``app.services.label_rules``: a known dictionary and
one of its features, the labeller name rules, the verdict and top-contexts rule, a time not in the
future), names the line of every row that breaks one and then writes nothing; otherwise it writes all rows
in one transaction, skipping those already stored exactly (importing an export twice adds nothing).

In CSV, a text cell that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return) is written with a leading ``'``, as is one that starts with ``'``; the import
removes that quote again, so a CSV export imports back exactly.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import VERDICTS, Dictionary, Feature, Label, utc_now
from app.services import label_rules
from app.services.schemas import MAX_SQL_INT, LabelDescription, LabellerName

FORMATS = ("csv", "jsonl")
COLUMNS = (
    "dictionary",
    "index",
    "labeller",
    "verdict",
    "description",
    "confidence",
    "created_at",
    "top_contexts_monosemantic",
    "seconds_on_screen",
)
OPTIONAL_COLUMNS = ("description", "confidence", "top_contexts_monosemantic", "seconds_on_screen")
# Written by an export, ignored by an import: they describe the exporting database's index, not the label.
POPULATION_COLUMNS = ("evidence", "group", "alive", "distinct")
LABELS = Label.__table__

LabelFormat = Literal["csv", "jsonl"]
# What makes a spreadsheet read a cell as a formula, and the quote that disarms it.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_QUOTE = "'"
TEXT_COLUMNS = ("labeller", "description")
MAX_LISTED_ERRORS = 20


class LabelRecord(BaseModel):
    """One label as exported and imported; validation mirrors what the API accepts."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    dictionary: str = Field(min_length=1, max_length=64, description="content hash of the dictionary")
    index: int = Field(ge=0, le=MAX_SQL_INT, description="feature index inside the dictionary")
    labeller: LabellerName
    verdict: str = Field(description=f"one of {', '.join(VERDICTS)}")
    description: LabelDescription = ""
    confidence: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    created_at: datetime = Field(default_factory=utc_now, description="UTC; naive values are taken as UTC")
    top_contexts_monosemantic: bool | None = Field(None, description="one concept covers the top contexts")
    seconds_on_screen: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="how long the card was visible and ready before the verdict"
    )
    _line: int | None = PrivateAttr(None)

    @property
    def line(self) -> int | None:
        """The line of the file the record was read from (None when it was not read from one)."""
        return self._line

    @field_validator("verdict")
    @classmethod
    def _known_verdict(cls, value: str) -> str:
        if value not in VERDICTS:
            raise ValueError(f"must be one of {', '.join(VERDICTS)}")
        return value

    @field_validator("created_at")
    @classmethod
    def _naive_utc(cls, value: datetime) -> datetime:
        # The database stores naive UTC: convert aware times, keep naive ones as they are.
        naive = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value
        problem = label_rules.created_at_problem(naive)
        if problem is not None:
            raise ValueError(problem)
        return naive

    @model_validator(mode="after")
    def _readings_agree(self) -> LabelRecord:
        problem = label_rules.readings_problem(self.verdict, self.top_contexts_monosemantic)
        if problem is not None:
            raise ValueError(problem)
        return self

    def key(self) -> tuple:
        """Every field: two labels with equal keys are the same label."""
        return (
            self.dictionary,
            self.index,
            self.labeller,
            self.verdict,
            self.description,
            self.confidence,
            self.created_at,
            self.top_contexts_monosemantic,
            self.seconds_on_screen,
        )


@dataclass
class ImportResult:
    """How many rows an import added and how many it skipped as already stored."""

    added: int
    skipped: int


def _session_engine(bind: Engine | sessionmaker[Session]) -> Engine:
    return bind if isinstance(bind, Engine) else bind.kw["bind"]


def read_labels(bind: Engine | sessionmaker[Session]) -> list[LabelRecord]:
    """Every stored label, oldest first."""
    with _session_engine(bind).connect() as conn:
        rows = conn.execute(select(LABELS).order_by(LABELS.c.created_at, LABELS.c.id)).all()
    return [
        LabelRecord.model_construct(
            dictionary=row.dictionary_hash,
            index=row.feature_index,
            labeller=row.labeller,
            verdict=row.verdict,
            description=row.description,
            confidence=row.confidence,
            created_at=row.created_at,
            top_contexts_monosemantic=row.top_contexts_monosemantic,
            seconds_on_screen=row.seconds_on_screen,
        )
        for row in rows
    ]


def population_columns(bind: Engine | sessionmaker[Session], hashes: set[str]) -> dict[tuple[str, int], dict]:
    """{(dictionary hash, index): the ``POPULATION_COLUMNS`` of that feature} for the dictionaries indexed here."""
    if not hashes:
        return {}
    with _session_engine(bind).connect() as conn:
        rows = conn.execute(
            select(
                Dictionary.content_hash,
                Feature.index,
                Feature.evidence,
                Feature.alive,
                func.coalesce(Feature.group_index, Feature.index).label("group"),
            )
            .join(Feature, Feature.dictionary_id == Dictionary.id)
            .where(Dictionary.content_hash.in_(sorted(hashes)))
        ).all()
    alive: dict[str, int] = {}
    groups: dict[str, set[int]] = {}
    for row in rows:
        if row.alive:
            alive[row.content_hash] = alive.get(row.content_hash, 0) + 1
            groups.setdefault(row.content_hash, set()).add(row.group)
    return {
        (row.content_hash, row.index): {
            "evidence": row.evidence,
            "group": row.group if row.alive else None,
            "alive": alive.get(row.content_hash, 0),
            "distinct": len(groups.get(row.content_hash, ())),
        }
        for row in rows
    }


def _plain(record: LabelRecord) -> dict:
    """A record as JSON-ready values, created_at in ISO 8601 with its UTC offset."""
    return {
        "dictionary": record.dictionary,
        "index": record.index,
        "labeller": record.labeller,
        "verdict": record.verdict,
        "description": record.description,
        "confidence": record.confidence,
        "created_at": record.created_at.replace(tzinfo=UTC).isoformat(),
        "top_contexts_monosemantic": record.top_contexts_monosemantic,
        "seconds_on_screen": record.seconds_on_screen,
    }


def format_labels(
    records: Iterable[LabelRecord], fmt: LabelFormat, population: dict[tuple[str, int], dict] | None = None
) -> str:
    """Labels as the text of a CSV file (with a header) or of a JSONL file.

    With ``population`` (``population_columns``) every row also carries the ``POPULATION_COLUMNS``.
    """
    empty = dict.fromkeys(POPULATION_COLUMNS)

    def plain(record: LabelRecord) -> dict:
        row = _plain(record)
        if population is not None:
            row |= population.get((record.dictionary, record.index), empty)
        return row

    if fmt == "jsonl":
        return "".join(json.dumps(plain(record), ensure_ascii=False) + "\n" for record in records)
    if fmt != "csv":
        raise ValueError(f"unknown label format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out = io.StringIO()
    fields = COLUMNS + (POPULATION_COLUMNS if population is not None else ())
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    # With "\n" ending lines, the csv module leaves a lone "\r" unquoted, which a reader takes for a line end.
    quoting_writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writeheader()
    for record in records:
        row = plain(record)
        row |= {name: "" for name in POPULATION_COLUMNS if name in row and row[name] is None}
        for column in TEXT_COLUMNS:
            row[column] = _disarmed(row[column])
        row["confidence"] = "" if record.confidence is None else repr(record.confidence)
        top = record.top_contexts_monosemantic
        row["top_contexts_monosemantic"] = "" if top is None else str(top).lower()
        row["seconds_on_screen"] = "" if record.seconds_on_screen is None else repr(record.seconds_on_screen)
        carriage_return = any("\r" in row[column] for column in TEXT_COLUMNS)
        (quoting_writer if carriage_return else writer).writerow(row)
    return out.getvalue()


def _disarmed(text: str) -> str:
    """A CSV text cell a spreadsheet shows as text: a leading quote before a formula start or a quote."""
    return CSV_QUOTE + text if text.startswith((*FORMULA_STARTS, CSV_QUOTE)) else text


def _rearmed(text: str) -> str:
    """The text ``_disarmed`` was given: its added quote removed (other leading quotes are kept)."""
    if text.startswith(CSV_QUOTE) and text[1:].startswith((*FORMULA_STARTS, CSV_QUOTE)):
        return text[1:]
    return text


def parse_labels(text: str, fmt: LabelFormat, source: str = "labels") -> list[LabelRecord]:
    """Every row of a CSV or JSONL text, validated; a ValueError naming every bad line and its field."""
    if fmt == "jsonl":
        rows = _jsonl_rows(text, source)
    elif fmt == "csv":
        rows = _csv_rows(text, source)
    else:
        raise ValueError(f"unknown label format {fmt!r}: expected one of {', '.join(FORMATS)}")
    records, errors = [], []
    for line, row in rows:
        try:
            records.append(_record(row, source, line))
        except ValueError as exc:
            errors.append(str(exc))
    raise_if_any(errors)
    return records


def raise_if_any(errors: list[str]) -> None:
    """A ValueError listing the errors on one line (the first ``MAX_LISTED_ERRORS``), when there are any."""
    if not errors:
        return
    listed = "; ".join(errors[:MAX_LISTED_ERRORS])
    more = f"; and {len(errors) - MAX_LISTED_ERRORS} more rows" if len(errors) > MAX_LISTED_ERRORS else ""
    raise ValueError(f"{listed}{more}; nothing was imported: correct these rows and import the file again")


def _jsonl_rows(text: str, source: str) -> Iterable[tuple[int, dict]]:
    for line, content in enumerate(text.splitlines(), start=1):
        if not content.strip():
            continue
        try:
            row = json.loads(content)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source} line {line}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{source} line {line}: expected a JSON object with fields {', '.join(COLUMNS)}")
        yield line, row


def _csv_rows(text: str, source: str) -> Iterable[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [name for name in COLUMNS if name not in header and name not in OPTIONAL_COLUMNS]
    if missing:
        raise ValueError(f"{source} line 1: header lacks {', '.join(missing)}: expected {','.join(COLUMNS)}")
    end_of_previous = reader.line_num
    for row in reader:
        line, end_of_previous = end_of_previous + 1, reader.line_num
        if None in row:
            raise ValueError(f"{source} line {line}: more values than the {len(header)} header columns")
        # CSV has no null: an empty confidence or created_at means "not given".
        values = {key: value for key, value in row.items() if not (value == "" and key != "description")}
        for column in TEXT_COLUMNS:
            if isinstance(values.get(column), str):
                values[column] = _rearmed(values[column])
        yield line, values


def _record(row: dict, source: str, line: int) -> LabelRecord:
    try:
        record = LabelRecord.model_validate(row)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a rule across fields: its message starts with the field it blames
            raise ValueError(f"{source} line {line}: {message}") from None
        field = ".".join(str(part) for part in error["loc"])
        got = f" (got {_shown(error['input'])})" if error["type"] != "missing" else ""
        raise ValueError(f"{source} line {line}: {field}: {message}{got}") from None
    record._line = line
    return record


def _shown(value: object) -> str:
    """A bad value as the error repeats it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:60]}... ({len(text):,} characters)"


def import_labels(
    bind: Engine | sessionmaker[Session], records: list[LabelRecord], source: str = "labels"
) -> ImportResult:
    """Store the records in one transaction, skipping those already stored exactly (or repeated).

    Every record must name an indexed dictionary and one of its features; otherwise a ValueError names each
    record that does not (by its line when it was read from a file) and nothing is stored.
    """
    engine = _session_engine(bind)
    hashes = sorted({record.dictionary for record in records})
    with engine.begin() as conn:
        sizes = dict(
            conn.execute(
                select(Dictionary.content_hash, Dictionary.dict_size).where(Dictionary.content_hash.in_(hashes))
            ).all()
        )
        errors = []
        for position, record in enumerate(records, start=1):
            problem = label_rules.feature_problem(record.dictionary, record.index, sizes)
            if problem is not None:
                where = f"line {record.line}" if record.line is not None else f"row {position}"
                errors.append(f"{source} {where}: {problem[0]}: {problem[1]}")
        raise_if_any(errors)
        stored = conn.execute(select(LABELS).where(LABELS.c.dictionary_hash.in_(hashes))).all() if hashes else []
        seen = {
            (
                r.dictionary_hash,
                r.feature_index,
                r.labeller,
                r.verdict,
                r.description,
                r.confidence,
                r.created_at,
                r.top_contexts_monosemantic,
                r.seconds_on_screen,
            )
            for r in stored
        }
        fresh = []
        for record in records:
            if record.key() not in seen:
                seen.add(record.key())
                fresh.append(record)
        if fresh:
            conn.execute(
                insert(LABELS),
                [
                    {
                        "dictionary_hash": r.dictionary,
                        "feature_index": r.index,
                        "labeller": r.labeller,
                        "verdict": r.verdict,
                        "description": r.description,
                        "confidence": r.confidence,
                        "created_at": r.created_at,
                        "top_contexts_monosemantic": r.top_contexts_monosemantic,
                        "seconds_on_screen": r.seconds_on_screen,
                    }
                    for r in fresh
                ],
            )
    return ImportResult(added=len(fresh), skipped=len(records) - len(fresh))


def format_of(path: Path, fmt: str | None = None) -> LabelFormat:
    """The label format named, or the one a file's suffix implies (.csv, .jsonl or .ndjson)."""
    chosen = fmt or {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(path.suffix.lower())
    if chosen not in FORMATS:
        raise ValueError(f"cannot tell the format of {path}: pass --format csv or --format jsonl")
    return chosen


def export_labels_file(bind: Engine | sessionmaker[Session], path: Path, fmt: LabelFormat) -> int:
    """Write every label to path in fmt, with the population columns; the number of labels written."""
    records = read_labels(bind)
    population = population_columns(bind, {record.dictionary for record in records})
    Path(path).write_text(format_labels(records, fmt, population), encoding="utf-8")
    return len(records)


def import_labels_file(bind: Engine | sessionmaker[Session], path: Path, fmt: LabelFormat) -> ImportResult:
    """Validate every row of a CSV or JSONL file, then store them all in one transaction (or none)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    return import_labels(bind, parse_labels(text, fmt, source=str(path)), source=str(path))
