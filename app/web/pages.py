"""The HTML pages: overview, feature browser, feature page, labelling, estimates and the live inspector.

Each page is one Jinja2 template; an htmx request (``HX-Request`` header) gets only the block it swaps,
rendered from the same template, so a fragment and its full page never drift apart. Every POST checks the
CSRF token (``app.web.csrf``), and label writes the write token when the server has one (``app.web.security``);
the labeller's name lives in a cookie.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import parse_qs, quote, unquote, urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.db.models import VERDICTS, Dictionary
from app.services import feature_reads, queries
from app.services.contrast import ContrastInputError, ContrastUnavailable, missing_for_search, run_contrast
from app.services.contrast_worker import ContrastBusy, ContrastTimedOut
from app.services.feature_reads import DictionaryHead
from app.services.inspector import ActivationInspector, InspectorUnavailable
from app.services.schemas import (
    LIKELY_DUPLICATE_COSINE,
    MAX_DESCRIPTION_CHARS,
    MAX_SQL_INT,
    ActivationsOut,
    ContrastIn,
    FeatureDetail,
    LabelIn,
    LabelOut,
    Neighbour,
    SortOrder,
)
from app.settings import Settings
from app.web.brown_tags import describe_tag
from app.web.card_evidence import (
    CARD_SAMPLES_PER_BAND,
    CARD_TOP_CONTEXTS,
    bands,
    distinct_groups,
    distinct_passages,
    one_line,
)
from app.web.contrast_view import contrast_rows, contrast_takeaway, marked_target
from app.web.csrf import csrf_token, set_csrf_cookie, verify_csrf
from app.web.deps import DictionaryId, FeatureIndexParam, SessionDep, get_inspector, get_settings, short_read
from app.web.evidence_cache import CachedFeaturePage, EvidenceCache, EvidenceKey, FeatureEvidence, FeaturePageKey
from app.web.page_data import (
    FIGURES_DIR,
    UndoAction,
    breakdown_dictionary,
    convergence_figure,
    dictionary_breakdown,
    estimates_view,
    feature_count_figures,
    figure_file,
    labelled_before,
    labeller_progress,
    next_feature_for,
    parse_skipped,
    queue_rng,
    toy_vs_lm_figure,
    toy_workdir,
    undo_label,
    with_skip,
)
from app.web.page_shell import render_shell, slot
from app.web.security import (
    WRITE_FIELD,
    page_writes_unlocked,
    require_page_write,
    unlock_page_writes,
    write_token_correct,
)
from app.web.svg_charts import histogram_chart
from app.web.token_display import context_strip_html, format_number, shade, token_html
from training.analysis.doubling import TOLERANCES

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
LABELLER_COOKIE = "monosemantic_labeller"
CARD_READY_SECONDS = 0.25  # a card takes a verdict once visible this long (READY_MS in static/label.js)
LABELLER_COOKIE_AGE_S = 365 * 24 * 3600
PAGE_SIZE = 50
MAX_FORM_BYTES = 64 * 1024
MAX_QUERY_CHARS = 200
DEFAULT_ORDERS: dict[str, str] = {"index": "asc", "density": "desc", "max_activation": "desc", "label_status": "desc"}
COLUMNS = [
    ("index", "Feature", True),
    ("density", "Density", True),
    ("max_activation", "Max act.", True),
    (None, "Top tokens", False),
    ("label_status", "Label", False),
    (None, "MMCS larger", True),
]

router = APIRouter(include_in_schema=False)
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _count(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _environment() -> Environment:
    """Templates with autoescaping on for every file, and the display helpers as globals."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # templates ship with the package: no stat of every template file per render
    )
    env.globals.update(
        token_html=token_html,
        context_strip_html=context_strip_html,
        shade=shade,
        fmt=format_number,
        pct=_percent,
        count=_count,
        duplicate_cosine=LIKELY_DUPLICATE_COSINE,
        one_line=one_line,
        marked_target=marked_target,
        describe_tag=describe_tag,
        card_top_contexts=CARD_TOP_CONTEXTS,
        card_samples_per_band=CARD_SAMPLES_PER_BAND,
    )
    # Macros as a global, so a block rendered on its own (an htmx fragment) can use them too.
    env.globals["m"] = env.get_template("_macros.html").module
    return env


ENV = _environment()


def wants_fragment(request: Request) -> bool:
    """Whether htmx asked for a fragment (a history restore asks for the whole page)."""
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-History-Restore-Request") != "true"


def render(
    request: Request, name: str, context: dict[str, Any], block: str | None = None, status_code: int = 200
) -> HTMLResponse:
    """The template as a full page, or only ``block`` of it when htmx asked for a fragment."""
    template = ENV.get_template(name)
    values = {"request": request, "csrf_token": csrf_token(request), **context}
    if block is not None and wants_fragment(request):
        html = "".join(template.blocks[block](template.new_context(values)))
    else:
        html = template.render(values)
    return html_response(request, html, status_code)


def html_response(request: Request, html: str | bytes, status_code: int = 200) -> HTMLResponse:
    """A rendered page with the headers every page gets (and the CSRF cookie when the browser lacks it)."""
    response = HTMLResponse(html, status_code=status_code)
    response.headers["Vary"] = "HX-Request"
    response.headers["Cache-Control"] = "no-store"
    set_csrf_cookie(request, response)
    return response


def not_found(request: Request, message: str) -> HTMLResponse:
    """A 404 page that says what was not found and where to look."""
    return render(request, "error.html", {"title": "Not found", "message": message}, status_code=404)


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body of a page POST (first value per field); 413 past ``MAX_FORM_BYTES``."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(status_code=413, detail=f"form body is larger than {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(status_code=400, detail=f"form body is not urlencoded UTF-8: {exc}") from exc
    return {key: values[0] for key, values in fields.items()}


async def checked_form(request: Request) -> dict[str, str]:
    """The POST's form fields after the CSRF check (403 on a missing or wrong token)."""
    form = await read_form(request)
    verify_csrf(request, form)
    return form


def _dictionary(session: Session, dictionary_id: int) -> Dictionary | None:
    return queries.get_dictionary(session, dictionary_id)


def _missing_dictionary(request: Request, dictionary_id: int) -> HTMLResponse:
    return not_found(request, f"There is no dictionary {dictionary_id}. The overview lists every indexed one.")


# --- overview and figures ----------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    """Every dictionary with its metrics, and the feature-count curve (LM and, when present, toy)."""
    dictionaries = queries.list_dictionaries(session)
    try:
        feature_count = queries.feature_count(settings.workdir)
        convergence = queries.training_convergence(settings.workdir)
        devices = queries.run_devices(settings.workdir)
        toy_vs_lm = queries.run_toy_vs_lm(settings.workdir)
    except ValueError:
        feature_count = convergence = devices = toy_vs_lm = None
    sites = sorted(
        {f"{d.model} layer {d.layer} {d.site}" if d.layer is not None else f"{d.model} {d.site}" for d in dictionaries}
    )
    figures = feature_count_figures(settings)
    context = {
        "nav": "overview",
        "dictionaries": dictionaries,
        "feature_count": feature_count,
        "figures": figures,
        "convergence": convergence,
        "convergence_figure": convergence_figure(settings),
        "toy_vs_lm_figure": toy_vs_lm_figure(settings),
        "toy_vs_lm": toy_vs_lm,
        "suggest_toy": bool(figures) and not any(f.url.startswith("/figures/toy/") for f in figures),
        "workdir": str(settings.workdir),
        "model_summary": ", ".join(sites) or "a model's activations",
        "devices": devices,
        "doubling": TOLERANCES,
    }
    return render(request, "overview.html", context)


def _figure_response(folder: Path, name: str) -> FileResponse:
    path = figure_file(folder, name)
    if path is None:
        raise HTTPException(status_code=404, detail=f"no figure {name!r}")
    return FileResponse(path)


@router.get("/figures/{name}")
def run_figure(name: str, settings: SettingsDep) -> FileResponse:
    """A figure of the run (only files directly inside ``<workdir>/figures``)."""
    return _figure_response(Path(settings.workdir) / FIGURES_DIR, name)


@router.get("/figures/toy/{name}")
def toy_figure(name: str, settings: SettingsDep) -> FileResponse:
    """A figure of the toy experiment shown beside the run's (only files directly inside its ``figures``)."""
    return _figure_response(toy_workdir(settings) / FIGURES_DIR, name)


# --- feature browser and feature page ------------------------------------------------------------------------


@router.get("/dictionaries/{dictionary_id}", response_class=HTMLResponse)
def feature_browser(
    request: Request,
    dictionary_id: DictionaryId,
    session: SessionDep,
    sort: str = "index",
    order: str | None = None,
    q: Annotated[str, Query(max_length=MAX_QUERY_CHARS)] = "",
    offset: Annotated[int, Query(ge=0, le=MAX_SQL_INT)] = 0,
    evidence: Literal["alive", "all"] = "alive",
) -> HTMLResponse:
    """A dictionary's features, sortable and filterable by top token; htmx swaps only the table.

    Dead and rare features are hidden unless ``evidence=all``. A sort or order the table does not have is
    an error page that names the ones it has (the API answers the same mistake with its JSON 422).
    """
    dictionary = _dictionary(session, dictionary_id)
    if dictionary is None:
        return _missing_dictionary(request, dictionary_id)
    if sort not in DEFAULT_ORDERS or order not in (None, *get_args(SortOrder)):
        wrong = f"sort={sort}" if sort not in DEFAULT_ORDERS else f"order={order}"
        message = (
            f"The feature table cannot be sorted by {wrong}: sort by {', '.join(DEFAULT_ORDERS)}, "
            f"in order {' or '.join(get_args(SortOrder))}."
        )
        return render(request, "error.html", {"title": "Bad sort", "message": message}, status_code=422)
    order = order or DEFAULT_ORDERS[sort]
    q = q.strip()
    page = queries.feature_page(
        session, dictionary, sort=sort, order=order, q=q or None, limit=PAGE_SIZE, offset=offset, evidence=evidence
    )

    def table_url(**changes: Any) -> str:
        params = {"sort": sort, "order": order, "q": q, "offset": offset, "evidence": evidence, **changes}
        defaults = {"sort": "index", "order": DEFAULT_ORDERS[params["sort"]], "q": "", "offset": 0, "evidence": "alive"}
        kept = {k: v for k, v in params.items() if v != defaults[k]}
        return f"/dictionaries/{dictionary.id}" + (f"?{urlencode(kept)}" if kept else "")

    context = {
        "nav": "overview",
        "dictionary": dictionary,
        "page": page,
        "sort": sort,
        "order": order,
        "q": q,
        "evidence": evidence,
        "columns": COLUMNS,
        "default_orders": DEFAULT_ORDERS,
        "table_url": table_url,
        "prev_offset": max(0, offset - PAGE_SIZE),
        "next_offset": offset + PAGE_SIZE,
    }
    response = render(request, "browser.html", context, block="feature_table")
    # The address bar shows the canonical URL of what is on screen, so reload and back give the same table.
    response.headers["HX-Push-Url"] = table_url()
    return response


@router.get("/dictionaries/{dictionary_id}/goto", response_class=HTMLResponse)
def go_to_feature(request: Request, dictionary_id: DictionaryId, session: SessionDep, index: str = "") -> Response:
    """The browser's "go to feature #" box: a redirect to that feature's page, or an error page."""
    dictionary = _dictionary(session, dictionary_id)
    if dictionary is None:
        return _missing_dictionary(request, dictionary_id)
    if not index.strip().isdecimal() or int(index) >= dictionary.dict_size:
        return not_found(
            request,
            f"{dictionary.name} has no feature {index.strip()!r}: they run from 0 to {dictionary.dict_size - 1}.",
        )
    return RedirectResponse(f"/dictionaries/{dictionary.id}/features/{int(index)}", status_code=303)


_CACHE_LOCK = threading.Lock()


def evidence_cache(request: Request) -> EvidenceCache:
    """The app's cache of rendered evidence, made on first use."""
    state = request.app.state
    with _CACHE_LOCK:
        if not hasattr(state, "evidence_cache"):
            state.evidence_cache = EvidenceCache()
        return state.evidence_cache


def _evidence_key(dictionary: Dictionary | DictionaryHead, index: int, compact: bool) -> EvidenceKey:
    return EvidenceKey(dictionary.content_hash, dictionary.indexed_at, index, compact)


def render_evidence(detail: FeatureDetail, compact: bool) -> FeatureEvidence:
    """The parts of a feature's evidence that only a re-index changes, as HTML (``_evidence_parts.html``)."""
    parts = ENV.get_template("_evidence_parts.html").module
    chart = histogram_chart(detail.histogram.counts, detail.histogram.edges, width=300, height=120)
    top = distinct_passages(detail.top_contexts)
    return FeatureEvidence(
        index=detail.index,
        alive=detail.alive,
        main_html=Markup(parts.card_main(detail, top, bands(detail.quantile_samples, top)))
        if compact
        else Markup(parts.main(detail, top, distinct_groups(detail.quantile_samples, top))),
        side_html=Markup(parts.side(detail, chart)),
        neighbours=detail.neighbours,
        evidence=getattr(detail, "evidence", "alive"),
        inspect_text="".join(detail.top_contexts[0].tokens) if detail.top_contexts else "",
        duplicate_group=detail.duplicate_group,
    )


def cached_evidence(request: Request, dictionary: Dictionary, detail: FeatureDetail, compact: bool) -> FeatureEvidence:
    """The feature's rendered evidence from the cache, rendered and stored on a miss."""
    cache = evidence_cache(request)
    key = _evidence_key(dictionary, detail.index, compact)
    evidence = cache.get(key)
    if evidence is None:
        evidence = render_evidence(detail, compact)
        cache.put(key, evidence)
    return evidence


@router.get("/dictionaries/{dictionary_id}/features/{index}", response_class=HTMLResponse)
async def feature_page(request: Request, dictionary_id: DictionaryId, index: FeatureIndexParam) -> HTMLResponse:
    """Everything about one feature: contexts, quantile samples, histogram, tokens, logits, neighbours, labels.

    The page is cached with holes for its CSRF token, neighbour links and labels (``app.web.page_shell``) until
    its dictionary is indexed again. A cached view reads only the dictionary's identity, the labels and the
    neighbours' dictionary ids (``app.services.feature_reads``), inline on the event loop on SQLite (``short_read``).
    A miss renders and caches the page in the thread pool.
    """
    response = await short_read(request, _cached_feature_page, request, dictionary_id, index)
    if response is None:
        return await run_in_threadpool(_uncached_feature_page, request, dictionary_id, index)
    return response


def _cached_feature_page(request: Request, dictionary_id: int, index: int) -> HTMLResponse | None:
    """The feature page when it is cached (None when not), or the 404 page of a missing dictionary."""
    cache = evidence_cache(request)
    view = feature_reads.cached_view(
        request.app.state.engine, dictionary_id, index, lambda head: cache.get(_page_key(head, index))
    )
    if view is None:
        return _missing_dictionary(request, dictionary_id)
    if view.entry is None:
        return None
    return _feature_response(request, view.entry, view.neighbours, view.labels)


def _page_key(dictionary: Dictionary | DictionaryHead, index: int) -> FeaturePageKey:
    evidence = _evidence_key(dictionary, index, compact=False)
    return FeaturePageKey(dictionary.id, dictionary.name, dictionary.dict_size, evidence)


def _uncached_feature_page(request: Request, dictionary_id: int, index: int) -> HTMLResponse:
    """The feature page built from the database, cached (with its holes) on the way."""
    with request.app.state.sessionmaker() as session:
        dictionary = _dictionary(session, dictionary_id)
        if dictionary is None:
            return _missing_dictionary(request, dictionary_id)
        detail = queries.feature_detail(session, dictionary, index)
        if detail is None:
            return not_found(
                request, f"{dictionary.name} has no feature {index}: indices run from 0 to {dictionary.dict_size - 1}."
            )
        context = {
            "nav": "overview",
            "dictionary": dictionary,
            "compact": False,
            "feature": render_evidence(detail, compact=False),
            "csrf_token": slot("csrf_token"),
            "neighbours_html": slot("neighbours"),
            "labels_html": slot("labels"),
        }
        page = CachedFeaturePage(render_shell(ENV.get_template("feature.html"), context), detail.neighbours)
        evidence_cache(request).put(_page_key(dictionary, index), page)
        return _feature_response(request, page, detail.neighbours, detail.labels)


def _feature_response(
    request: Request, page: CachedFeaturePage, neighbours: list[Neighbour], labels: list[LabelOut]
) -> HTMLResponse:
    """The cached page with this view's CSRF token, neighbour links and labels in its holes."""
    macros = ENV.globals["m"]
    values = {
        "csrf_token": str(escape(csrf_token(request))),
        "neighbours": str(macros.neighbours_table(neighbours)),
        "labels": str(macros.labels_list(labels)),
    }
    return html_response(request, page.shell.fill(values))


# --- labelling --------------------------------------------------------------------------------------------


def current_labeller(request: Request) -> str | None:
    """The labeller name stored in this browser's cookie, if any."""
    raw = request.cookies.get(LABELLER_COOKIE)
    if not raw:
        return None
    name = unquote(raw).strip()
    return name[:64] or None


def _labelling(
    request: Request,
    session: Session,
    dictionary: Dictionary,
    labeller: str | None,
    feature: FeatureDetail | None = None,
    flash: str | None = None,
    skipped: list[int] | None = None,
    undo: UndoAction | None = None,
    restore: LabelOut | None = None,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    """The labelling page (or its ``labelling`` block) for this labeller: the given feature or the queue's next.

    ``skipped`` are this tab's skips (they wait at the back of the queue), ``undo`` the one action its Undo
    button names, ``restore`` a label whose description, confidence and top-contexts reading the card starts
    with (the one just undone, or the one a deep link's new verdict would replace).
    A browser that still needs the server's write token gets the name form, which asks for it too.
    """
    needs_token = not page_writes_unlocked(request)
    if needs_token and labeller is not None:
        extra.setdefault("labeller_input", labeller)
        labeller = None
    skipped = skipped or []
    context: dict[str, Any] = {
        "nav": "overview",
        "dictionary": dictionary,
        "labeller": labeller,
        "flash": flash,
        "max_description": MAX_DESCRIPTION_CHARS,
        "compact": True,
        "needs_token": needs_token,
        "chosen_feature": None,
        "skipped": skipped,
        "skipped_field": ",".join(str(i) for i in skipped),
        "undo": undo,
        "restore": restore,
        "existing": None,
        **extra,
    }
    if labeller is not None:
        context["progress"] = labeller_progress(session, dictionary, labeller)
        if feature is None:
            rng = queue_rng(dictionary, labeller, context["progress"].labelled)
            feature = next_feature_for(session, dictionary, labeller, rng, skipped)
        if feature is not None:
            context["feature"] = cached_evidence(request, dictionary, feature, compact=True)
            context["evidence_only"] = feature.evidence != "alive"
    return render(request, "label.html", context, block="labelling", status_code=status_code)


@router.get("/dictionaries/{dictionary_id}/label", response_class=HTMLResponse)
def label_page(
    request: Request,
    dictionary_id: DictionaryId,
    session: SessionDep,
    skip: Annotated[int | None, Query(ge=0, le=MAX_SQL_INT)] = None,
    skipped: Annotated[str | None, Query(max_length=4000, description="this tab's skips, oldest first")] = None,
    change: bool = False,
    feature: Annotated[int | None, Query(ge=0, le=MAX_SQL_INT)] = None,
) -> HTMLResponse:
    """The queue's next alive feature this labeller has not labelled, with its evidence; first asks for a name.

    With ``feature=N`` the card shows feature N first (chosen from its page), with the labeller's verdict on it
    when there is one; the random queue follows. ``skip=N`` moves N to the back of this tab's queue.
    """
    dictionary = _dictionary(session, dictionary_id)
    if dictionary is None:
        return _missing_dictionary(request, dictionary_id)
    chosen = None
    if feature is not None:
        chosen = queries.feature_detail(session, dictionary, feature)
        if chosen is None:
            return not_found(
                request,
                f"{dictionary.name} has no feature {feature}: features run from 0 to {dictionary.dict_size - 1}.",
            )
    labeller = current_labeller(request)
    if change:
        return _labelling(request, session, dictionary, None, labeller_input=labeller)
    queue = parse_skipped(skipped)
    undo, flash = None, None
    if skip is not None:
        queue = with_skip(queue, skip)
        undo = UndoAction(kind="skip", feature_index=skip)
        flash = f"Skipped feature #{skip}: it waits at the back of your queue in this tab."
    existing = labelled_before(session, dictionary, labeller, chosen.index) if labeller and chosen else None
    if existing is not None:
        undo = UndoAction(kind="label", feature_index=existing.feature_index, label_id=existing.id)
    return _labelling(
        request,
        session,
        dictionary,
        labeller,
        feature=chosen,
        flash=flash,
        skipped=queue,
        undo=undo,
        restore=existing,
        existing=existing,
        chosen_feature=feature,
    )


@router.post("/dictionaries/{dictionary_id}/label/labeller", response_class=HTMLResponse)
async def choose_labeller(request: Request, dictionary_id: DictionaryId, session: SessionDep) -> Response:
    """Store the labeller's name in a cookie and go to the labelling page.

    When the server has a write token and this browser has not given it yet, the form carries it too: the
    right token also sets the page-write cookie (an HMAC of the token), a wrong one is a 403 and sets nothing.
    """
    form = await checked_form(request)
    dictionary = _dictionary(session, dictionary_id)
    if dictionary is None:
        return _missing_dictionary(request, dictionary_id)
    name = " ".join(form.get("labeller", "").split())
    if not name or len(name) > 64 or not name.isprintable():
        return _labelling(
            request,
            session,
            dictionary,
            None,
            labeller_input=name,
            error="A name needs 1 to 64 printable characters.",
            status_code=422,
        )
    unlock = not page_writes_unlocked(request)
    if unlock and not write_token_correct(request, form.get(WRITE_FIELD, "")):
        return _labelling(
            request,
            session,
            dictionary,
            None,
            labeller_input=name,
            error="Wrong write token: ask whoever runs this server for it.",
            status_code=403,
        )
    chosen = form.get("feature", "")
    then = f"?feature={int(chosen)}" if chosen.isdecimal() and int(chosen) < dictionary.dict_size else ""
    response = RedirectResponse(f"/dictionaries/{dictionary.id}/label{then}", status_code=303)
    response.set_cookie(
        LABELLER_COOKIE, quote(name, safe=""), max_age=LABELLER_COOKIE_AGE_S, httponly=True, samesite="lax", path="/"
    )
    if unlock:
        unlock_page_writes(request, response)
    return response


def _labeller_or_400(request: Request) -> str:
    labeller = current_labeller(request)
    if labeller is None:
        raise HTTPException(status_code=400, detail="no labeller name in this browser: pick one on the labelling page")
    return labeller


def _int_field(form: dict[str, str], name: str) -> int:
    try:
        value = int(form.get(name, ""))
    except ValueError:
        raise HTTPException(
            status_code=422, detail=f"{name}: expected a feature index, got {form.get(name)!r}"
        ) from None
    if not 0 <= value <= MAX_SQL_INT:
        raise HTTPException(status_code=422, detail=f"{name}: must be from 0 to {MAX_SQL_INT}, got {value}")
    return value


@router.post("/dictionaries/{dictionary_id}/label", response_class=HTMLResponse)
async def submit_label(request: Request, dictionary_id: DictionaryId, session: SessionDep) -> Response:
    """Store the labeller's verdict on a feature, then show the next feature (htmx) or redirect to it.

    A card for a feature the labeller already labelled says so and sends ``relabel``: its verdict supersedes
    the earlier one. Without it a second submit of the same card stores nothing.
    """
    form = await checked_form(request)
    require_page_write(request)
    labeller = _labeller_or_400(request)
    dictionary = _dictionary(session, dictionary_id)
    if dictionary is None:
        raise HTTPException(status_code=404, detail=f"no dictionary {dictionary_id}")
    index = _int_field(form, "feature_index")
    feature = queries.get_feature(session, dictionary, index)
    if feature is None:
        raise HTTPException(status_code=404, detail=f"feature_index: dictionary {dictionary.id} has no feature {index}")
    if form.get("verdict") not in VERDICTS:
        raise HTTPException(status_code=422, detail=f"verdict: expected one of {', '.join(VERDICTS)}")
    if feature.evidence != "alive" and form["verdict"] != "too_little_evidence":
        raise HTTPException(
            status_code=422,
            detail=f"verdict: feature #{index} is {feature.evidence}: too_little_evidence is the only verdict it takes",
        )
    label = _card_label(form, labeller)
    if label.seconds_on_screen is not None and label.seconds_on_screen < CARD_READY_SECONDS:
        # static/label.js never sends one this short; a card judged faster was not seen.
        raise HTTPException(
            status_code=409,
            detail=f"seconds_on_screen: the card was on screen {label.seconds_on_screen:g} s, less than the "
            f"{CARD_READY_SECONDS:g} s before it takes a verdict, so nothing was stored: look at it, then judge again",
        )
    skipped = parse_skipped(form.get("skipped"))
    earlier = labelled_before(session, dictionary, labeller, index)
    if earlier is not None and form.get("relabel") != "1":
        # A second submit of the same card (double click, resent form, reload after a POST) stores nothing, and
        # the queue is drawn from the labeller's progress, so it shows the same next feature as the first did.
        flash = (
            f"Feature #{index} was already labelled by you ({_verdict_words(earlier.verdict)}), so this second "
            f"submission was not stored. Undo (u) takes that label of #{index} back."
        )
        if not wants_fragment(request):
            return RedirectResponse(f"/dictionaries/{dictionary.id}/label", status_code=303)
        undo = UndoAction(kind="label", feature_index=index, label_id=earlier.id, verdict=earlier.verdict)
        page = _labelling(request, session, dictionary, labeller, flash=flash, skipped=skipped, undo=undo)
        return _queue_url(page, dictionary)
    saved = queries.add_label(session, dictionary, index, label)
    if not wants_fragment(request):
        return RedirectResponse(f"/dictionaries/{dictionary.id}/label", status_code=303)
    replaced = f", replacing {_verdict_words(earlier.verdict)}" if earlier is not None else ""
    flash = f"Saved feature #{saved.feature_index} as {_verdict_words(saved.verdict)}{replaced}."
    undo = UndoAction(kind="label", feature_index=index, label_id=saved.id, verdict=saved.verdict)
    page = _labelling(request, session, dictionary, labeller, flash=flash, skipped=skipped, undo=undo)
    return _queue_url(page, dictionary)


def _queue_url(response: HTMLResponse, dictionary: Dictionary) -> HTMLResponse:
    """After a label, the address bar shows the random queue (not ``?feature=N``), so a reload goes on from it."""
    response.headers["HX-Push-Url"] = f"/dictionaries/{dictionary.id}/label"
    return response


def _verdict_words(verdict: str) -> str:
    return verdict.replace("_", " ")


CONFIDENCE_CHOICES = {"": None, "0.5": 0.5, "0.75": 0.75, "1": 1.0}


def _card_label(form: dict[str, str], labeller: str) -> LabelIn:
    """The label a card's form gives: verdict, description, confidence, the top-contexts reading and how long
    the card was on screen (measured by ``static/label.js``)."""
    raw_confidence = form.get("confidence", "").strip()
    if raw_confidence not in CONFIDENCE_CHOICES:
        raise HTTPException(
            status_code=422, detail=f"confidence: expected one of 0.5, 0.75, 1 or empty, got {raw_confidence!r}"
        )
    verdict = form["verdict"]
    top: bool | None = None
    if verdict in ("polysemantic", "uninterpretable"):
        top = form.get("top_contexts") == "1"
    elif verdict == "monosemantic":
        top = True
    raw_seconds = form.get("seconds_on_screen", "").strip()
    try:
        return LabelIn(
            labeller=labeller,
            verdict=verdict,
            description=form.get("description", "").strip(),
            confidence=CONFIDENCE_CHOICES[raw_confidence],
            top_contexts_monosemantic=top,
            seconds_on_screen=raw_seconds or None,
        )
    except ValidationError as exc:
        field = ".".join(str(part) for part in exc.errors()[0]["loc"])
        raise HTTPException(status_code=422, detail=f"{field}: {exc.errors()[0]['msg']}") from None


@router.post("/dictionaries/{dictionary_id}/label/undo", response_class=HTMLResponse)
async def undo_label_action(request: Request, dictionary_id: DictionaryId, session: SessionDep) -> Response:
    """Take back exactly the action the card's Undo names (``undo_kind`` and ``undo_target``), then show its feature.

    A label is deleted by its id (only this labeller's) and its card comes back with that label's
    description, confidence and top-contexts reading; a skip brings the skipped feature back to the front.
    """
    form = await checked_form(request)
    require_page_write(request)
    labeller = _labeller_or_400(request)
    dictionary = _dictionary(session, dictionary_id)
    if dictionary is None:
        raise HTTPException(status_code=404, detail=f"no dictionary {dictionary_id}")
    kind = form.get("undo_kind", "")
    target = _int_field(form, "undo_target") if kind in ("label", "skip") else None
    skipped = parse_skipped(form.get("skipped"))
    if kind == "label" and target is not None:
        undone = undo_label(session, dictionary, labeller, target)
        if not wants_fragment(request):
            return RedirectResponse(f"/dictionaries/{dictionary.id}/label", status_code=303)
        if undone is None:
            flash = "Nothing undone: that label is no longer stored (undone already, perhaps in another tab)."
            return _labelling(request, session, dictionary, labeller, flash=flash, skipped=skipped)
        feature = queries.feature_detail(session, dictionary, undone.feature_index)
        flash = f"Undid your label of feature #{undone.feature_index} ({_verdict_words(undone.verdict)})."
        # An earlier label of the same feature counts again: the card shows it, and a new verdict supersedes it.
        earlier = labelled_before(session, dictionary, labeller, undone.feature_index)
        return _labelling(
            request,
            session,
            dictionary,
            labeller,
            feature=feature,
            flash=flash,
            skipped=skipped,
            restore=undone,
            existing=earlier,
        )
    if not wants_fragment(request):
        return RedirectResponse(f"/dictionaries/{dictionary.id}/label", status_code=303)
    if kind == "skip" and target is not None:
        feature = queries.feature_detail(session, dictionary, target)
        if feature is not None:
            rest = [i for i in skipped if i != target]
            flash = f"Undid the skip of feature #{target}: here it is again."
            return _labelling(request, session, dictionary, labeller, feature=feature, flash=flash, skipped=rest)
    return _labelling(request, session, dictionary, labeller, flash="Nothing to undo in this tab.", skipped=skipped)


# --- estimates and the inspector -------------------------------------------------------------------------


@router.get("/estimates", response_class=HTMLResponse)
def estimates(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    dictionary: Annotated[
        int | None, Query(ge=1, le=MAX_SQL_INT, description="whose density and persistence breakdown")
    ] = None,
) -> HTMLResponse:
    """Labellable-feature estimates per dictionary and across sizes, labeller counts and agreement, and for one
    dictionary (default the most-labelled) the fraction per density quartile and persistent vs not.

    Choosing another dictionary with htmx swaps only the ``breakdown`` block.
    """
    dictionaries = queries.list_dictionaries(session)
    selected = breakdown_dictionary(dictionaries, dictionary)
    if dictionary is not None and selected is None:
        return _missing_dictionary(request, dictionary)
    context: dict[str, Any] = {
        "nav": "estimates",
        "dictionaries": dictionaries,
        "breakdown": dictionary_breakdown(session, selected) if selected is not None else None,
    }
    if not wants_fragment(request):
        view = estimates_view(session)
        try:
            run_count = queries.feature_count(settings.workdir)
        except ValueError:  # an unreadable metrics.json: the overview says so, this page shows no count
            run_count = None
        context.update(
            feature_count=run_count.feature_count_estimate if run_count is not None else None,
            rows=view.rows,
            labelled_rows=view.labelled_rows,
            unlabelled_rows=view.unlabelled_rows,
            estimate_chart=view.estimate_chart,
            fraction_chart=view.fraction_chart,
            agreement=view.agreement,
        )
    return render(request, "estimates.html", context, block="breakdown")


def _inspect_context(session: Session, settings: Settings, **values: Any) -> dict[str, Any]:
    dictionaries = queries.list_dictionaries(session)
    return {
        "nav": "inspect",
        "dictionaries": dictionaries,
        "max_chars": settings.inspector_max_chars,
        "selected_id": values.pop("selected_id", None) or (dictionaries[0].id if dictionaries else None),
        "text": "",
        "feature": None,
        "result": None,
        "error": None,
        "feature_names": {},
        **values,
    }


@router.get("/contrast", response_class=HTMLResponse)
def contrast_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    a: Annotated[str, Query(max_length=500)] = "",
    b: Annotated[str, Query(max_length=500)] = "",
    max_positions: Annotated[int, Query(ge=20, le=20_000)] = 2000,
) -> HTMLResponse:
    """The contrastive search's form, and its result when both patterns are given (the URL is shareable).

    The search runs in the server's contrast worker (see ``app.services.contrast_worker``); with a write
    token set, only a browser that has entered it (on the labelling page) may run one, as through the API.
    """
    values: dict[str, Any] = {"nav": "contrast", "a": a, "b": b, "max_positions": max_positions}
    status = 200
    if a and b and not page_writes_unlocked(request):
        values["error"], status = (
            "This server runs searches only for those who have its write token: enter it once on a labelling "
            "page (ask whoever runs the server for it), then search again.",
            403,
        )
    elif not (a and b):
        if missing_for_search(settings.workdir) is None:
            request.app.state.contrast_worker.prepare()  # the visitor is about to search
    else:
        body = ContrastIn(a=a, b=b, max_positions=max_positions)
        try:
            result = run_contrast(session, settings.workdir, body, request.app.state.contrast_worker)
        except ContrastInputError as exc:
            values["error"], status = f"Set {exc.field}: {exc.message}", 422
        except ContrastUnavailable as exc:
            values["error"], status = str(exc), 409
        except (ContrastBusy, ContrastTimedOut) as exc:
            values["error"], status = f"{exc}.", 503
        else:
            by_layer: dict[int, dict[str, Any]] = {}
            for probe in result.probes:
                by_layer.setdefault(probe.layer, {})[probe.site] = probe
            values |= {
                "result": result,
                "probes_by_layer": sorted(by_layer.items()),
                "rows": contrast_rows(result, queries.list_dictionaries(session)),
                "takeaway": contrast_takeaway(result),
            }
    return render(request, "contrast.html", values, block="contrast_result", status_code=status)


@router.get("/inspect", response_class=HTMLResponse)
def inspect_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    inspector: Annotated[ActivationInspector, Depends(get_inspector)],
    dictionary: Annotated[int | None, Query(ge=1, le=MAX_SQL_INT)] = None,
    text: Annotated[str, Query(max_length=20_000)] = "",
    feature: Annotated[str, Query(max_length=20)] = "",
) -> HTMLResponse:
    """The live inspector's form; with ``text`` in the URL it also shows the result, so a view can be shared."""
    if not text:
        return render(request, "inspect.html", _inspect_context(session, settings, selected_id=dictionary))
    return _inspection(request, session, settings, inspector, dictionary or 0, text, feature.strip(), block=None)


def _strongest(result: ActivationsOut) -> tuple[float, float]:
    """The largest top-feature activation and the largest chosen-feature activation (for shading)."""
    top = max((t.top_features[0].activation for t in result.tokens if t.top_features), default=0.0)
    chosen = max((t.feature_activation or 0.0 for t in result.tokens), default=0.0)
    return top, chosen


@router.post("/inspect", response_class=HTMLResponse)
async def inspect_text(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    inspector: Annotated[ActivationInspector, Depends(get_inspector)],
) -> HTMLResponse:
    """Run a text through a dictionary (the code behind ``POST /api/activations``) and show the tokens."""
    form = await checked_form(request)
    try:
        dictionary_id = int(form.get("dictionary_id", ""))
    except ValueError:
        dictionary_id = 0
    text, feature_text = form.get("text", ""), form.get("feature", "").strip()
    return _inspection(request, session, settings, inspector, dictionary_id, text, feature_text, "inspect_result")


def _inspection(
    request: Request,
    session: Session,
    settings: Settings,
    inspector: ActivationInspector,
    dictionary_id: int,
    text: str,
    feature_text: str,
    block: str | None,
) -> HTMLResponse:
    """The inspector run on a text (for its form post or a shared URL), as a page or its result block."""
    values: dict[str, Any] = {"text": text, "feature": feature_text or None, "selected_id": dictionary_id}
    # An id past what SQL stores would overflow the driver: no dictionary can have it.
    dictionary = _dictionary(session, dictionary_id) if 1 <= dictionary_id <= MAX_SQL_INT else None
    error, status, feature = _inspect_input_error(dictionary, dictionary_id, text, feature_text, settings)
    if error is None and dictionary is not None:
        try:
            result = inspector.inspect(dictionary, text, feature)
        except InspectorUnavailable as exc:
            error, status = str(exc), 409
        else:
            strongest, feature_max = _strongest(result)
            shown = {f.index for t in result.tokens for f in t.top_features[:3]} | {feature} - {None}
            values.update(
                result=result,
                strongest=strongest,
                feature_max=feature_max,
                feature_names=queries.feature_names(session, dictionary, shown),
            )
    values["error"] = error
    if error is None and dictionary is not None:
        values["share_url"] = "/inspect?" + urlencode(
            {"dictionary": dictionary.id, "text": text, **({"feature": feature_text} if feature_text else {})}
        )
    response = render(
        request, "inspect.html", _inspect_context(session, settings, **values), block=block, status_code=status
    )
    if "share_url" in values:
        response.headers["HX-Push-Url"] = values["share_url"]
    return response


def _inspect_input_error(
    dictionary: Dictionary | None, dictionary_id: int, text: str, feature_text: str, settings: Settings
) -> tuple[str | None, int, int | None]:
    """(message, status, feature) for the inspector's form: the first problem with it, or (None, 200, feature)."""
    if dictionary is None:
        return f"dictionary_id: there is no dictionary {dictionary_id}.", 422, None
    if not text.strip():
        return "text: type some text to inspect.", 422, None
    if len(text) > settings.inspector_max_chars:
        return f"text: {len(text)} characters; the inspector takes at most {settings.inspector_max_chars}.", 422, None
    if not feature_text:
        return None, 200, None
    # isdecimal, not isdigit: int() refuses digits such as "²" that isdigit accepts.
    if not feature_text.isdecimal() or int(feature_text) >= dictionary.dict_size:
        return f"feature: expected an index from 0 to {dictionary.dict_size - 1}.", 422, None
    return None, 200, int(feature_text)
