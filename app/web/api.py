"""The JSON REST API under ``/api`` (paths and fields as in DESIGN.md; OpenAPI at ``/docs``).

Errors are ``{"detail": ...}`` with a 4xx status (each route declares its own in the OpenAPI document);
validation errors are a 422 naming the field, with what it echoes made safe (``app.web.api_errors``), and
JSON bodies are held to strict JSON within a size limit (``app.web.json_body``). Writes (labels, label
import) and contrast searches need ``Authorization: Bearer <token>`` when the server has a write token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path as FilePath
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from sqlalchemy import Engine, func, select
from starlette.concurrency import run_in_threadpool

from app.db.models import Dictionary
from app.services import feature_reads, labels_io, queries
from app.services.contrast import ContrastInputError, ContrastUnavailable, run_contrast
from app.services.contrast_worker import ContrastBusy, ContrastTimedOut
from app.services.inspector import ActivationInspector, InspectorUnavailable
from app.services.schemas import (
    MAX_SQL_INT,
    ActivationsIn,
    ActivationsOut,
    AgreementOut,
    ContrastIn,
    ContrastOut,
    ConvergenceOut,
    DictionaryOut,
    EstimateOut,
    EvidenceFilter,
    FeatureCountOut,
    FeatureDetail,
    FeaturePage,
    FeatureSort,
    Health,
    LabelIn,
    LabellerName,
    LabelOut,
    LabelsImportOut,
    SortOrder,
)
from app.settings import Settings
from app.web.api_errors import errors
from app.web.deps import (
    DECIMAL,
    DictionaryId,
    FeatureIndexParam,
    SessionDep,
    T,
    get_inspector,
    get_settings,
    short_read,
)
from app.web.evidence_cache import DETAIL_JSON_CACHE_BYTES, DetailKey, EvidenceCache, FeatureDetailJSON
from app.web.json_body import StrictJSONRoute, read_limited_body
from app.web.security import require_write_token

MAX_PAGE = 200
LABEL_MEDIA_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson"}

router = APIRouter(prefix="/api", tags=["api"], route_class=StrictJSONRoute)


def dictionary_or_404(dictionary_id: DictionaryId, session: SessionDep) -> Dictionary:
    """The dictionary with this id, or a 404 that says where to find the ids."""
    dictionary = queries.get_dictionary(session, dictionary_id)
    if dictionary is None:
        raise _dictionary_not_found(dictionary_id)
    return dictionary


def _dictionary_not_found(dictionary_id: int) -> HTTPException:
    return HTTPException(status_code=404, detail=f"no dictionary {dictionary_id}: see /api/dictionaries")


DictionaryDep = Annotated[Dictionary, Depends(dictionary_or_404)]


def _feature_not_found(dictionary: Dictionary, index: int) -> HTTPException:
    return HTTPException(
        status_code=404,
        detail=f"dictionary {dictionary.id} has no feature {index}: indices run from 0 to {dictionary.dict_size - 1}",
    )


@cache
def package_version() -> str:
    """The installed monosemantic package's version ("unknown" when run from a bare checkout).

    Read once per process: the lookup scans the installed distributions, which costs more than the
    health check's query.
    """
    try:
        return version("monosemantic")
    except PackageNotFoundError:
        return "unknown"


_DICTIONARY_COUNT = select(func.count()).select_from(Dictionary)


@router.get("/health", response_model=Health)
async def health(request: Request) -> Health:
    """Whether the server and its database answer, with the package version and how many dictionaries it serves."""
    # The query runs as the feature views' cached reads do (short_read), so bench/bench_server.py can use
    # this endpoint as the reference for the per-request cost of the server itself.
    count = await short_read(request, _dictionary_count, request.app.state.engine)
    return Health(version=package_version(), dictionaries=count)


def _dictionary_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(_DICTIONARY_COUNT) or 0


@router.get("/dictionaries", response_model=list[DictionaryOut])
def dictionaries(session: SessionDep) -> list[DictionaryOut]:
    """Every indexed dictionary with its size, architecture, sparsity setting and summary metrics."""
    return queries.list_dictionaries(session)


@router.get("/dictionaries/{dictionary_id}/features", response_model=FeaturePage, responses=errors(404))
def features(
    dictionary: DictionaryDep,
    session: SessionDep,
    sort: FeatureSort = "index",
    order: SortOrder = "asc",
    q: Annotated[str | None, Query(max_length=200, description="substring of the top tokens' text")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE), DECIMAL] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_SQL_INT), DECIMAL] = 0,
    evidence: Annotated[
        EvidenceFilter, Query(description="alive (enough evidence), rare, dead, or all (the default)")
    ] = "all",
) -> FeaturePage:
    """A page of features; ``sort=label_status`` puts unlabelled first (asc) or labelled first (desc)."""
    return queries.feature_page(session, dictionary, sort, order, q or None, limit, offset, evidence)


_CACHE_LOCK = threading.Lock()


def detail_json_cache(request: Request) -> EvidenceCache[DetailKey, FeatureDetailJSON]:
    """The app's cache of features' JSON detail (less neighbours' ids and labels), made on first use."""
    state = request.app.state
    with _CACHE_LOCK:
        if not hasattr(state, "detail_json_cache"):
            state.detail_json_cache = EvidenceCache(DETAIL_JSON_CACHE_BYTES)
        return state.detail_json_cache


@router.get("/dictionaries/{dictionary_id}/features/{index}", response_model=FeatureDetail, responses=errors(404))
async def feature(request: Request, dictionary_id: DictionaryId, index: FeatureIndexParam) -> Response:
    """Everything known about one feature: contexts, quantile samples, histogram, tokens, logits, labels."""
    # All but the labels and the neighbours' dictionary ids change only on a re-index, so that part is
    # serialized once per indexed_at and kept; the body is byte for byte what FastAPI made of the model.
    # With it cached, the fresh parts are two small reads (app.services.feature_reads, run by short_read).
    response = await short_read(request, _cached_feature, request, dictionary_id, index)
    if response is None:
        return await run_in_threadpool(_uncached_feature, request, dictionary_id, index)
    return response


def _cached_feature(request: Request, dictionary_id: int, index: int) -> Response | None:
    """The feature's JSON when its cacheable part is cached (None when not), or a 404 for a missing dictionary."""
    cache = detail_json_cache(request)
    view = feature_reads.cached_view(
        request.app.state.engine,
        dictionary_id,
        index,
        lambda head: cache.get(DetailKey(head.id, head.content_hash, head.indexed_at, index)),
    )
    if view is None:
        raise _dictionary_not_found(dictionary_id)
    if view.entry is None:
        return None
    return Response(view.entry.body(view.neighbours, view.labels), media_type="application/json")


def _uncached_feature(request: Request, dictionary_id: int, index: int) -> Response:
    """The feature's JSON built from the database, its cacheable part cached on the way."""
    with request.app.state.sessionmaker() as session:
        dictionary = dictionary_or_404(dictionary_id, session)
        detail = queries.feature_detail(session, dictionary, index)
        if detail is None:
            raise _feature_not_found(dictionary, index)
        cached = FeatureDetailJSON.of(detail)
        key = DetailKey(dictionary.id, dictionary.content_hash, dictionary.indexed_at, index)
        detail_json_cache(request).put(key, cached)
        return Response(cached.body(detail.neighbours, detail.labels), media_type="application/json")


@router.post(
    "/dictionaries/{dictionary_id}/features/{index}/labels",
    response_model=LabelOut,
    status_code=201,
    dependencies=[Depends(require_write_token)],
    responses=errors(400, 401, 404, 413),
)
async def add_label(
    request: Request, dictionary_id: DictionaryId, index: FeatureIndexParam, label: LabelIn
) -> LabelOut:
    """Store a label of this feature; labelling again adds a row, and the newest row per labeller counts."""
    # The body is validated on the event loop; the reads and the write take one trip to the thread pool
    # (dependencies for the dictionary and the session would take three).
    return await run_in_threadpool(_store_label, request, dictionary_id, index, label)


def _store_label(request: Request, dictionary_id: int, index: int, label: LabelIn) -> LabelOut:
    with request.app.state.sessionmaker() as session:
        dictionary = dictionary_or_404(dictionary_id, session)
        if queries.get_feature(session, dictionary, index) is None:
            raise _feature_not_found(dictionary, index)
        return queries.add_label(session, dictionary, index, label)


@router.get("/dictionaries/{dictionary_id}/next-feature", response_model=FeatureDetail, responses=errors(404))
def next_feature(
    dictionary: DictionaryDep,
    session: SessionDep,
    request: Request,
    labeller: Annotated[LabellerName, Query(description="who is labelling")],
) -> FeatureDetail:
    """A uniformly random alive (enough-evidence) feature this labeller has not labelled yet (404 when none is left).

    Dead and rare features (see ``min_firings`` and ``min_contribution`` in /api/dictionaries) are never served.
    """
    detail = queries.next_unlabelled_feature(session, dictionary, labeller, request.app.state.rng)
    if detail is None:
        raise HTTPException(
            status_code=404,
            detail=f"{labeller} has labelled every alive feature of dictionary {dictionary.id}: nothing is left",
        )
    return detail


@router.get("/dictionaries/{dictionary_id}/estimate", response_model=EstimateOut, responses=errors(404))
def estimate(
    dictionary: DictionaryDep,
    session: SessionDep,
    by: Annotated[
        list[Literal["density", "persistence"]] | None,
        Query(description="density: also per density quartile; persistence: persistent vs not; repeatable"),
    ] = None,
    persistence_threshold: Annotated[
        float, Query(ge=0, le=1, description="mmcs_with_larger at or above which a feature counts as persistent")
    ] = queries.PERSISTENCE_THRESHOLD,
) -> EstimateOut:
    """Labellable features = alive x monosemantic fraction (Wilson 95%), with labeller agreement.

    ``alive`` counts the features with enough evidence and ``population`` says so in words; labels of rare
    or dead features are kept but counted apart (``labelled_not_alive``), and ``too_little_evidence``
    verdicts leave the denominator. ``readings`` gives the estimate and kappa under both readings of
    "monosemantic": one concept in the top contexts, and one concept across the activation range (the
    verdict, also the top-level numbers).

    ``?by=density`` adds ``quartiles``: the same numbers per quartile of the alive features' densities
    (1 rarest to 4 densest). ``?by=persistence`` adds ``persistence``: the monosemantic fraction (Wilson
    95%) of alive features whose best decoder cosine with the next larger dictionary of the sweep
    (``mmcs_with_larger``) is at least ``persistence_threshold`` (default 0.9) against those below it,
    their difference with Newcombe's hybrid score 95% interval, Fisher's exact p-value, and ``significant``
    (the interval excludes zero and p < 0.05: both, since with few labels they can disagree). Features with
    no larger dictionary are left out and counted in ``no_larger``; a group without labels gives nulls.
    Pass ``by`` twice (``?by=density&by=persistence``) for both; without ``by`` both are null.
    """
    wanted = set(by or ())
    return queries.dictionary_estimate(
        session,
        dictionary,
        by_density="density" in wanted,
        by_persistence="persistence" in wanted,
        persistence_threshold=persistence_threshold,
    )


@router.get("/dictionaries/{dictionary_id}/agreement", response_model=AgreementOut, responses=errors(404))
def dictionary_agreement(dictionary: DictionaryDep, session: SessionDep) -> AgreementOut:
    """Cohen's (two labellers) or Fleiss' (three or more) kappa over this dictionary's shared features."""
    return queries.dictionary_estimate(session, dictionary).agreement


@router.get("/agreement", response_model=AgreementOut)
def agreement(session: SessionDep) -> AgreementOut:
    """Labeller agreement pooled over every dictionary's features (dead ones included)."""
    return queries.agreement_out(queries.latest_verdicts(session), queries.seconds_on_screen(session))


def _from_run_metrics(read: Callable[[FilePath], T | None], workdir: FilePath, missing: str) -> T:
    """What ``read`` finds in the run's metrics.json: 404 with ``missing`` when absent, 500 when malformed."""
    try:
        result = read(workdir)
    except ValueError as exc:
        raise HTTPException(status_code=500, detail=str(exc)) from exc
    if result is None:
        raise HTTPException(status_code=404, detail=missing)
    return result


@router.get("/feature-count", response_model=FeatureCountOut, responses=errors(404, 500))
def feature_count(settings: Annotated[Settings, Depends(get_settings)]) -> FeatureCountOut:
    """The MMCS-with-larger curve and the estimated number of features, from the run's metrics.json."""
    return _from_run_metrics(
        queries.feature_count,
        settings.workdir,
        f"no {queries.METRICS_FILE} in {settings.workdir}: build the run with `monosemantic run`",
    )


@router.get("/convergence", response_model=ConvergenceOut, responses=errors(404, 500))
def convergence(settings: Annotated[Settings, Depends(get_settings)]) -> ConvergenceOut:
    """Which SAEs had stopped improving before their learning rate decayed, from the run's metrics.json."""
    return _from_run_metrics(
        queries.training_convergence,
        settings.workdir,
        f"no convergence record in {settings.workdir}/{queries.METRICS_FILE}: "
        "build the run with `monosemantic run` or `monosemantic train`",
    )


def _contrast_error(exc: ContrastInputError) -> HTTPException:
    return HTTPException(
        status_code=422, detail=[{"loc": ["body", exc.field], "msg": exc.message, "type": "value_error"}]
    )


CONTRAST_RETRY_AFTER_S = 5


@router.post(
    "/contrast",
    response_model=ContrastOut,
    dependencies=[Depends(require_write_token)],
    responses=errors(400, 401, 409, 413, 503),
)
def contrast_search(request: Request, body: ContrastIn, session: SessionDep) -> ContrastOut:
    """Which layers and SAE features separate two sets of token positions of the server's run.

    Each set is a regex over the run's training text with its target token in ``[[...]]`` (or examples with
    the target marked). Probes and feature choices are fitted on half the positions; every AUC is on the
    other half. Writes nothing; takes seconds to a minute on a full run, in a worker process, one search at
    a time per server (503 with Retry-After while another runs). A pattern that repeats a repeat (``(a+)+``)
    is refused before it runs; one that does not finish matching the text within
    ``MONOSEMANTIC_CONTRAST_MATCH_TIMEOUT_S`` (default 10 s) is a 422 naming it, and a search past
    ``MONOSEMANTIC_CONTRAST_TIMEOUT_S`` (default 300 s) a 503. Needs the write token when the server has one.
    """
    settings = get_settings(request)
    try:
        return run_contrast(session, settings.workdir, body, request.app.state.contrast_worker)
    except ContrastInputError as exc:
        raise _contrast_error(exc) from exc
    except ContrastUnavailable as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    except ContrastBusy as exc:
        raise HTTPException(
            status_code=503, detail=str(exc), headers={"Retry-After": str(CONTRAST_RETRY_AFTER_S)}
        ) from exc
    except ContrastTimedOut as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc


@router.post("/activations", response_model=ActivationsOut, responses=errors(400, 404, 409, 413))
def activations(
    body: ActivationsIn,
    session: SessionDep,
    settings: Annotated[Settings, Depends(get_settings)],
    inspector: Annotated[ActivationInspector, Depends(get_inspector)],
) -> ActivationsOut:
    """The strongest features on every token of a text, run live through the dictionary's LM and SAE.

    A POST only because the text can be long; it writes nothing, so it needs no write token.
    """
    if len(body.text) > settings.inspector_max_chars:
        raise HTTPException(
            status_code=422,
            detail=[
                {
                    "loc": ["body", "text"],
                    "msg": f"text has {len(body.text)} characters; the inspector takes at most "
                    f"{settings.inspector_max_chars}",
                    "type": "string_too_long",
                }
            ],
        )
    dictionary = dictionary_or_404(body.dictionary_id, session)
    if body.feature is not None and body.feature >= dictionary.dict_size:
        raise HTTPException(
            status_code=422,
            detail=[
                {
                    "loc": ["body", "feature"],
                    "msg": f"dictionary {dictionary.id} has features 0 to {dictionary.dict_size - 1}",
                    "type": "less_than",
                }
            ],
        )
    try:
        return inspector.inspect(dictionary, body.text, body.feature)
    except InspectorUnavailable as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc


@router.get(
    "/labels/export",
    response_class=Response,
    responses={200: {"content": {media: {"schema": {"type": "string"}} for media in LABEL_MEDIA_TYPES.values()}}},
)
def export_labels(
    request: Request, format: Annotated[labels_io.LabelFormat, Query(description="csv or jsonl")] = "jsonl"
) -> Response:
    """Every label, one row each: dictionary (content hash), index, labeller, verdict, description, confidence,
    created_at, top_contexts_monosemantic, seconds_on_screen; then what recomputes the estimates: the
    feature's evidence and group (its group of near-duplicates), and the dictionary's alive and distinct counts."""
    records = labels_io.read_labels(request.app.state.sessionmaker)
    population = labels_io.population_columns(request.app.state.sessionmaker, {r.dictionary for r in records})
    text = labels_io.format_labels(records, format, population)
    return Response(
        text,
        media_type=LABEL_MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="labels.{format}"'},
    )


@router.post(
    "/labels/import",
    response_model=LabelsImportOut,
    dependencies=[Depends(require_write_token)],
    responses=errors(400, 401, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {media: {"schema": {"type": "string"}} for media in LABEL_MEDIA_TYPES.values()},
        }
    },
)
async def import_labels(
    request: Request,
    format: Annotated[
        labels_io.LabelFormat | None, Query(description="csv or jsonl; default from Content-Type")
    ] = None,
) -> LabelsImportOut:
    """Import labels in the export's format: every row is validated first, then all are written in one
    transaction; a malformed row is a 400 naming its line and field, and nothing is written. A body past
    the server's limit (``MONOSEMANTIC_LABELS_IMPORT_MAX_BYTES``, default 20 MiB) is a 413."""
    fmt = format or _format_of_content_type(request.headers.get("content-type", ""))
    if fmt is None:
        raise HTTPException(
            status_code=422,
            detail=[
                {
                    "loc": ["query", "format"],
                    "msg": "pass ?format=csv or ?format=jsonl, or a Content-Type of text/csv or application/x-ndjson",
                    "type": "missing",
                }
            ],
        )
    body = await read_limited_body(request, get_settings(request).labels_import_max_bytes, "labels_import_max_bytes")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        detail = f"the body is not UTF-8 text: {exc.reason} at byte {exc.start}"
        raise HTTPException(status_code=400, detail=detail) from None
    try:
        records = await run_in_threadpool(labels_io.parse_labels, text, fmt, "body")
        result = await run_in_threadpool(labels_io.import_labels, request.app.state.sessionmaker, records, "body")
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return LabelsImportOut(imported=result.added, skipped=result.skipped)


def _format_of_content_type(content_type: str) -> labels_io.LabelFormat | None:
    media = content_type.split(";")[0].strip().lower()
    if media == "text/csv":
        return "csv"
    if media in ("application/x-ndjson", "application/jsonl", "application/json-lines"):
        return "jsonl"
    return None
