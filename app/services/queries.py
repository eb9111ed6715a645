"""Reads and writes over the app's database that the REST API and the HTML pages share.

Every function takes an open ``Session`` and returns the records of ``app.services.schemas``, so a page and its
JSON twin show the same numbers. Labels are keyed by the dictionary's content hash and the feature
index, never by row ids, so they survive re-indexing.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC
from pathlib import Path

from sqlalchemy import case, exists, func, select
from sqlalchemy.orm import Session, aliased

from app.db.models import JUDGED_VERDICTS, Dictionary, Example, Feature, Label
from app.db.session import serialized_writes
from app.services import feature_reads
from app.services.estimates import (
    POOLING_RULE,
    compare_proportions,
    density_quartiles,
    labellable_estimate,
    labeller_agreement,
    majority_monosemantic,
    pairwise_agreement,
)
from app.services.examples import decode_example
from app.services.schemas import (
    AgreementOut,
    Context,
    ConvergenceOut,
    ConvergenceRun,
    DictionaryOut,
    DistinctEstimate,
    DuplicateGroup,
    EstimateOut,
    EvidenceFilter,
    FeatureCountOut,
    FeatureDetail,
    FeaturePage,
    FeatureSort,
    FeatureSummary,
    GroupFraction,
    Histogram,
    LabelIn,
    LabellerCounts,
    LabellerEstimate,
    LabelOut,
    LogitEffects,
    Neighbour,
    PairAgreement,
    PersistenceOut,
    PopulationEstimate,
    PosTagCount,
    QuantileGroup,
    QuartileEstimate,
    ReadingEstimate,
    SortOrder,
    TokenEffect,
    TopToken,
)
from training.analysis.duplicates import DUPLICATE_COSINE
from training.features.index import FeatureIndexConfig

METRICS_FILE = "metrics.json"
# Quantile samples come from this many equal-width intervals over (0, max activation] unless the
# feature's histogram record says otherwise (key "n_quantiles").
DEFAULT_QUANTILE_INTERVALS = FeatureIndexConfig().n_quantiles
# A feature whose best cosine with the next larger dictionary reaches this has (nearly) the same direction
# there: it persists as the dictionary grows.
PERSISTENCE_THRESHOLD = 0.9


# --- dictionaries --------------------------------------------------------------------------------------


def get_dictionary(session: Session, dictionary_id: int) -> Dictionary | None:
    """The dictionary row with this id, or None."""
    return session.get(Dictionary, dictionary_id)


def list_dictionaries(session: Session) -> list[DictionaryOut]:
    """Every indexed dictionary, by layer, architecture, sparsity and size, with its labelled-feature count."""
    labelled = dict(
        session.execute(
            select(Label.dictionary_hash, func.count(func.distinct(Label.feature_index))).group_by(
                Label.dictionary_hash
            )
        ).all()
    )
    rows = session.scalars(
        select(Dictionary).order_by(
            Dictionary.layer, Dictionary.arch, Dictionary.sparsity_value, Dictionary.dict_size, Dictionary.id
        )
    ).all()
    return [dictionary_out(d, labelled.get(d.content_hash, 0)) for d in rows]


def dictionary_out(dictionary: Dictionary, labelled: int) -> DictionaryOut:
    """The API record of a dictionary row."""
    key = dictionary.sparsity_key
    return DictionaryOut(
        id=dictionary.id,
        content_hash=dictionary.content_hash,
        name=dictionary.name,
        model=dictionary.model,
        layer=dictionary.layer,
        site=dictionary.site,
        arch=dictionary.arch,
        dict_size=dictionary.dict_size,
        sparsity_key=key,
        sparsity_value=dictionary.sparsity_value,
        l1=dictionary.sparsity_value if key == "l1" else None,
        k=round(dictionary.sparsity_value) if key == "k" else None,
        alive=dictionary.alive,
        rare=dictionary.rare or 0,
        dead=dictionary.dead,
        min_firings=dictionary.min_firings,
        min_contribution=dictionary.min_contribution,
        l0=dictionary.l0,
        fvu=dictionary.fvu,
        ce_recovered=dictionary.ce_recovered,
        n_tokens=dictionary.n_tokens,
        labelled=labelled,
        indexed_at=dictionary.indexed_at.replace(tzinfo=UTC),
        source=dictionary.source,
        holds=dictionary.holds,
        moved=dictionary.moved or [],
        source_metadata=dictionary.source_metadata,
    )


# --- features ----------------------------------------------------------------------------------------------


def feature_page(
    session: Session,
    dictionary: Dictionary,
    sort: FeatureSort = "index",
    order: SortOrder = "asc",
    q: str | None = None,
    limit: int = 50,
    offset: int = 0,
    evidence: EvidenceFilter = "all",
) -> FeaturePage:
    """One page of a dictionary's features, filtered by top-token text and evidence level, and sorted.

    ``q`` keeps features whose top-token text or a label's description contains it (case-insensitive);
    ``evidence`` keeps one level
    ("alive", "rare", "dead") or all of them. ``sort=label_status`` puts
    unlabelled features first with ``order=asc`` and labelled first with ``order=desc``; ties always go
    by index.
    """
    condition = Feature.dictionary_id == dictionary.id
    if q:
        described = exists().where(
            Label.dictionary_hash == dictionary.content_hash,
            Label.feature_index == Feature.index,
            Label.description.icontains(q, autoescape=True),
        )
        condition = condition & (Feature.top_token_text.icontains(q, autoescape=True) | described)
    if evidence != "all":
        condition = condition & (Feature.evidence == evidence)
    total = session.scalar(select(func.count()).select_from(Feature).where(condition)) or 0
    if sort == "label_status":
        labelled = exists().where(
            Label.dictionary_hash == dictionary.content_hash, Label.feature_index == Feature.index
        )
        key = case((labelled, 1), else_=0)
    else:
        key = getattr(Feature, sort)
    ordering = [key.desc() if order == "desc" else key.asc()]
    if sort != "index":
        ordering.append(Feature.index.asc())
    features = session.scalars(select(Feature).where(condition).order_by(*ordering).limit(limit).offset(offset)).all()
    vocab = dictionary.vocabulary.tokens
    counts, latest, described = _label_summaries(session, dictionary.content_hash, [f.index for f in features])
    return FeaturePage(
        total=total,
        limit=limit,
        offset=offset,
        features=[
            FeatureSummary(
                index=f.index,
                alive=f.alive,
                evidence=f.evidence,
                fire_count=f.fire_count,
                density=f.density,
                mean_activation=f.mean_activation,
                max_activation=f.max_activation,
                mmcs_with_larger=f.mmcs_with_larger,
                top_tokens=_top_tokens(f, vocab),
                label_count=counts.get(f.index, 0),
                latest_verdict=latest.get(f.index),
                latest_description=described.get(f.index, ""),
            )
            for f in features
        ],
    )


def _label_summaries(session: Session, dictionary_hash: str, indices: list[int]) -> tuple[dict, dict, dict]:
    """Label count, newest verdict and newest non-empty description per feature index, for these indices only."""
    if not indices:
        return {}, {}, {}
    rows = session.execute(
        select(Label.feature_index, Label.verdict, Label.description)
        .where(Label.dictionary_hash == dictionary_hash, Label.feature_index.in_(indices))
        .order_by(Label.created_at, Label.id)
    ).all()
    counts: dict[int, int] = defaultdict(int)
    latest: dict[int, str] = {}
    described: dict[int, str] = {}
    for index, verdict, description in rows:
        counts[index] += 1
        latest[index] = verdict
        if description:
            described[index] = description
    return counts, latest, described


def feature_names(session: Session, dictionary: Dictionary, indices: set[int]) -> dict[int, str]:
    """A short name for each of these features: its newest label description, else its top tokens."""
    if not indices:
        return {}
    names = {
        index: " ".join(text.split()[:4])
        for index, text in session.execute(
            select(Feature.index, Feature.top_token_text).where(
                Feature.dictionary_id == dictionary.id, Feature.index.in_(indices)
            )
        )
        if text
    }
    _, _, described = _label_summaries(session, dictionary.content_hash, sorted(indices))
    return names | described


def get_feature(session: Session, dictionary: Dictionary, index: int) -> Feature | None:
    """The feature row of this dictionary with this index, or None."""
    return session.scalar(select(Feature).where(Feature.dictionary_id == dictionary.id, Feature.index == index))


def feature_detail(session: Session, dictionary: Dictionary, index: int) -> FeatureDetail | None:
    """Everything the feature page shows for one feature, or None if the dictionary has no such feature."""
    feature = get_feature(session, dictionary, index)
    return None if feature is None else _detail(session, dictionary, feature)


def _detail(session: Session, dictionary: Dictionary, feature: Feature) -> FeatureDetail:
    vocab = dictionary.vocabulary.tokens
    tag_vocab = dictionary.vocabulary.tag_vocab or []
    examples = session.scalars(select(Example).where(Example.feature_id == feature.id)).all()
    top = sorted((e for e in examples if e.kind == "top"), key=lambda e: e.rank)
    by_interval: dict[int, list[Example]] = defaultdict(list)
    for example in examples:
        if example.kind == "quantile":
            by_interval[example.quantile or 0].append(example)
    histogram = feature.histogram or {}
    n_intervals = int(histogram.get("n_quantiles") or DEFAULT_QUANTILE_INTERVALS)
    n_intervals = max(n_intervals, max(by_interval, default=-1) + 1)
    width = feature.max_activation / n_intervals
    quantiles = [
        QuantileGroup(
            interval=q,
            low=q * width,
            high=(q + 1) * width,
            contexts=[_context(e, vocab) for e in sorted(by_interval[q], key=lambda e: e.rank)],
        )
        for q in sorted(by_interval)
    ]
    return FeatureDetail(
        dictionary_id=dictionary.id,
        dictionary_hash=dictionary.content_hash,
        index=feature.index,
        alive=feature.alive,
        evidence=feature.evidence,
        fire_count=feature.fire_count,
        max_contribution=feature.max_contribution,
        density=feature.density,
        mean_activation=feature.mean_activation,
        max_activation=feature.max_activation,
        mmcs_with_larger=feature.mmcs_with_larger,
        top_contexts=[_context(e, vocab) for e in top],
        quantile_samples=quantiles,
        histogram=_histogram(histogram),
        top_tokens=_top_tokens(feature, vocab),
        logit_effects=LogitEffects(
            promoted=[_token_effect(e, vocab) for e in feature.logit_promoted or []],
            suppressed=[_token_effect(e, vocab) for e in feature.logit_suppressed or []],
        ),
        pos_tags=[_pos_tag(p, tag_vocab) for p in feature.pos_tags or []],
        duplicate_group=duplicate_group(session, feature),
        neighbours=_neighbours(session, feature.neighbours or []),
        labels=feature_labels(session, dictionary, feature.index),
    )


def duplicate_group(session: Session, feature: Feature) -> DuplicateGroup | None:
    """The group of near-duplicate alive latents ``feature`` belongs to; None unless it is alive."""
    if not feature.alive or feature.evidence != "alive":
        return None
    group = feature.index if feature.group_index is None else feature.group_index
    members = session.scalars(
        select(Feature.index)
        .where(
            Feature.dictionary_id == feature.dictionary_id,
            Feature.alive,
            Feature.evidence == "alive",
            func.coalesce(Feature.group_index, Feature.index) == group,
        )
        .order_by(Feature.index)
    ).all()
    return DuplicateGroup(representative=group, size=len(members), members=list(members), threshold=DUPLICATE_COSINE)


def feature_labels(session: Session, dictionary: Dictionary, index: int) -> list[LabelOut]:
    """Every label of one feature, newest first."""
    return feature_reads.feature_labels(session.connection(), dictionary.content_hash, index)


def _context(example: Example, vocab: list[str]) -> Context:
    decoded = decode_example(example, vocab)
    return Context(**decoded, position=example.position)


def _histogram(record: dict) -> Histogram:
    counts = [int(c) for c in record.get("counts", [])]
    top = float(record.get("max", 0.0))
    bins = len(counts)
    return Histogram(max=top, edges=[top * i / bins for i in range(bins + 1)] if bins else [], counts=counts)


def _token(vocab: list[str], token_id: int) -> str:
    return vocab[token_id] if 0 <= token_id < len(vocab) else f"<{token_id}>"


def _top_tokens(feature: Feature, vocab: list[str]) -> list[TopToken]:
    return [
        TopToken(
            token_id=t["token_id"],
            token=_token(vocab, t["token_id"]),
            count=t["count"],
            mean_activation=t["mean_activation"],
        )
        for t in feature.top_tokens or []
    ]


def _token_effect(entry: dict, vocab: list[str]) -> TokenEffect:
    return TokenEffect(token_id=entry["token_id"], token=_token(vocab, entry["token_id"]), value=entry["value"])


def _pos_tag(entry: dict, tag_vocab: list[str]) -> PosTagCount:
    tag = entry["tag"]
    if isinstance(tag, int):
        tag = tag_vocab[tag] if 0 <= tag < len(tag_vocab) else f"<{tag}>"
    return PosTagCount(tag=str(tag), count=entry["count"])


def _neighbours(session: Session, entries: list[dict]) -> list[Neighbour]:
    return resolve_neighbours(session, [Neighbour(**e, dictionary_id=None) for e in entries])


def resolve_neighbours(session: Session, neighbours: list[Neighbour]) -> list[Neighbour]:
    """The neighbours with the ids their dictionaries have here now (None for one not indexed here)."""
    return feature_reads.resolve_neighbours(session.connection(), neighbours)


def next_unlabelled_feature(
    session: Session,
    dictionary: Dictionary,
    labeller: str,
    rng: random.Random | None = None,
    last: Sequence[int] = (),
) -> FeatureDetail | None:
    """The representative of a uniformly random distinct feature ``labeller`` has not labelled; None when none is left.

    A distinct feature is a group of near-duplicate alive features (``Feature.group_index``): the queue
    draws groups, not latents, and a label on any member counts for the whole group. Dead and rare
    features are never served: their labels would say nothing about the layer. Features in ``last`` (the
    ones this labeller skipped, oldest first) wait at the back of the queue: one of them comes only when
    nothing else is left, the oldest skip first.

    One COUNT over the unlabelled groups' representatives, then one row at a random offset of them in index
    order: uniform without loading the candidates.
    """
    unlabelled = _unlabelled_groups(dictionary, labeller)
    waiting: set[int] = set()
    if last:
        waiting = set(session.scalars(select(Feature.index).where(unlabelled, Feature.index.in_(list(last)))))
        unlabelled = unlabelled & Feature.index.not_in(list(last))
    count = session.scalar(select(func.count()).select_from(Feature).where(unlabelled)) or 0
    if count == 0:
        if waiting:
            oldest = next(index for index in last if index in waiting)
            return feature_detail(session, dictionary, oldest)
        return None
    offset = (rng or random).randrange(count)
    feature = session.scalar(select(Feature).where(unlabelled).order_by(Feature.index).offset(offset).limit(1))
    return None if feature is None else _detail(session, dictionary, feature)


def _unlabelled_groups(dictionary: Dictionary, labeller: str):
    """The condition on ``Feature`` rows of the queue: representatives of alive groups with no label by labeller.

    A feature indexed before groups were kept (``group_index`` None) is its own group.
    """
    group = func.coalesce(Feature.group_index, Feature.index)
    member = aliased(Feature)
    return (
        (Feature.dictionary_id == dictionary.id)
        & Feature.alive
        & (Feature.evidence == "alive")
        & (group == Feature.index)
        & ~exists().where(
            member.dictionary_id == dictionary.id,
            func.coalesce(member.group_index, member.index) == Feature.index,
            Label.dictionary_hash == dictionary.content_hash,
            Label.feature_index == member.index,
            Label.labeller == labeller,
        )
    )


# --- labels ------------------------------------------------------------------------------------------------


def label_out(label: Label) -> LabelOut:
    """The API record of a label row."""
    return LabelOut(
        id=label.id,
        dictionary_hash=label.dictionary_hash,
        feature_index=label.feature_index,
        labeller=label.labeller,
        verdict=label.verdict,
        description=label.description,
        confidence=label.confidence,
        top_contexts_monosemantic=label.top_contexts_monosemantic,
        seconds_on_screen=label.seconds_on_screen,
        created_at=label.created_at.replace(tzinfo=UTC),
    )


def add_label(session: Session, dictionary: Dictionary, index: int, label: LabelIn) -> LabelOut:
    """Store a label of feature ``index`` against the dictionary's content hash and commit; the stored row."""
    row = Label(
        dictionary_hash=dictionary.content_hash,
        feature_index=index,
        labeller=label.labeller,
        verdict=label.verdict,
        description=label.description,
        confidence=label.confidence,
        top_contexts_monosemantic=label.top_contexts_monosemantic,
        seconds_on_screen=label.seconds_on_screen,
    )
    session.add(row)
    with serialized_writes(session):
        session.commit()
    return label_out(row)


def latest_readings(
    session: Session, dictionary_hash: str | None = None, group_of: Mapping[int, int] | None = None
) -> dict[tuple[str, int], dict[str, tuple[str, bool | None]]]:
    """{(dictionary hash, feature index): {labeller: (latest verdict, its top_contexts_monosemantic)}}.

    "Latest" is by ``created_at`` then row id, so an imported older label never overrides a newer one. With
    ``group_of`` (feature index -> its group's representative) labels are keyed by group, and a labeller's
    latest label on any member of a group is their verdict on the group; indices it lacks stay as they are.
    """
    query = select(
        Label.dictionary_hash, Label.feature_index, Label.labeller, Label.verdict, Label.top_contexts_monosemantic
    ).order_by(Label.created_at, Label.id)
    if dictionary_hash is not None:
        query = query.where(Label.dictionary_hash == dictionary_hash)
    group_of = group_of or {}
    readings: dict[tuple[str, int], dict[str, tuple[str, bool | None]]] = defaultdict(dict)
    for dict_hash, index, labeller, verdict, top in session.execute(query):
        readings[(dict_hash, group_of.get(index, index))][labeller] = (verdict, top)
    return readings


def latest_verdicts(session: Session, dictionary_hash: str | None = None) -> dict[tuple[str, int], dict[str, str]]:
    """{(dictionary hash, feature index): {labeller: that labeller's latest verdict}}, for one or all dictionaries."""
    return {
        key: {labeller: verdict for labeller, (verdict, _) in by.items()}
        for key, by in latest_readings(session, dictionary_hash).items()
    }


def seconds_on_screen(session: Session) -> dict[str, list[float]]:
    """{labeller: the seconds each of their timed labels' cards was on screen}, over every label."""
    times: dict[str, list[float]] = defaultdict(list)
    query = select(Label.labeller, Label.seconds_on_screen).where(Label.seconds_on_screen.is_not(None))
    for labeller, seconds in session.execute(query):
        times[labeller].append(seconds)
    return times


def agreement_out(
    verdicts: dict[tuple[str, int], dict[str, str]], seconds: Mapping[str, list[float]] | None = None
) -> AgreementOut:
    """Cohen's or Fleiss' kappa over features with several labellers, and every labeller's verdict counts.

    ``too_little_evidence`` verdicts are counted per labeller but left out of the kappa: they judge nothing.
    With ``seconds`` (``seconds_on_screen``) each labeller also gets the median time a card was on screen.
    """
    seconds = seconds or {}
    judged = {key: {name: v for name, v in by.items() if v in JUDGED_VERDICTS} for key, by in verdicts.items()}
    result = labeller_agreement(judged)
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for by_labeller in verdicts.values():
        for labeller, verdict in by_labeller.items():
            per[labeller][verdict] += 1
    return AgreementOut(
        method=result.method,
        kappa=result.kappa,
        observed=result.observed,
        expected=result.expected,
        features=result.features,
        labellers=result.labellers,
        per_labeller=[
            LabellerCounts(
                labeller=name,
                labelled=sum(counts.values()),
                monosemantic=counts["monosemantic"],
                polysemantic=counts["polysemantic"],
                uninterpretable=counts["uninterpretable"],
                too_little_evidence=counts["too_little_evidence"],
                timed_labels=len(seconds.get(name, ())),
                median_seconds_per_label=statistics.median(seconds[name]) if seconds.get(name) else None,
            )
            for name, counts in sorted(per.items())
        ],
    )


READINGS = {
    "top_contexts": "one concept in the top contexts",
    "activation_range": "one concept across the activation range (top contexts and quantile samples)",
}


def dictionary_estimate(
    session: Session,
    dictionary: Dictionary,
    by_density: bool = False,
    by_persistence: bool = False,
    persistence_threshold: float = PERSISTENCE_THRESHOLD,
) -> EstimateOut:
    """The labellable-feature estimate of a dictionary, per alive latent and per distinct feature.

    Counting rules: only alive features (enough evidence, ``training.features.evidence``) count, and labels of rare
    or dead features are kept but counted apart (``labelled_not_alive``). Alive latents whose decoder atoms
    have cosine >= 0.9 form one group, a distinct feature (``Feature.group_index``): a labeller's latest
    label on any member is their verdict on the group, so a group counts once however many of its latents
    were labelled. A ``too_little_evidence`` verdict is left out of the denominator; a group counts as
    monosemantic by ``POOLING_RULE``. ``distinct`` gives the fraction over groups and distinct x fraction
    (the headline count); the top-level figures are per alive latent, each latent taking its group's
    verdict. Intervals are Wilson's 95%, and an estimate's bounds are its population times the fraction's
    bounds. The top-level numbers are the strict reading (one concept across the activation range: the
    verdict); ``readings`` adds the looser one (one concept in the top contexts), counted over the labels
    that record it. ``per_labeller`` gives each labeller's own figures, ``pairwise_agreement`` Cohen's kappa
    of each pair. With ``by_density`` the strict numbers are given per quartile of the alive latents'
    densities; with ``by_persistence`` the fraction is compared between alive latents with
    ``mmcs_with_larger >= persistence_threshold`` and those below it (see ``PersistenceOut``).
    """
    # In index order, so features of equal density fall into quartiles by index on any database.
    alive_rows = session.execute(
        select(Feature.index, Feature.density, Feature.mmcs_with_larger, Feature.group_index)
        .where(Feature.dictionary_id == dictionary.id, Feature.alive, Feature.evidence == "alive")
        .order_by(Feature.index)
    ).all()
    alive_index = {row.index for row in alive_rows}
    # A group whose representative is not alive here (an index classified under other criteria) falls apart.
    group_of = {row.index: row.group_index if row.group_index in alive_index else row.index for row in alive_rows}
    members: dict[int, list[int]] = defaultdict(list)
    for index, group in group_of.items():
        members[group].append(index)
    sizes = {group: len(latents) for group, latents in members.items()}
    readings = latest_readings(session, dictionary.content_hash, group_of)
    labelled_not_alive = sum(1 for _, index in readings if index not in alive_index)
    readings = {key: by for key, by in readings.items() if key[1] in alive_index}
    verdicts = {
        key: {name: verdict for name, (verdict, _) in by.items() if verdict in JUDGED_VERDICTS}
        for key, by in readings.items()
    }
    verdicts = {key: by for key, by in verdicts.items() if by}
    too_little = sum(1 for key in readings if key not in verdicts)
    top_verdicts = {
        key: {
            name: "monosemantic" if top else "polysemantic"
            for name, (verdict, top) in by.items()
            if verdict in JUDGED_VERDICTS and top is not None
        }
        for key, by in readings.items()
    }
    top_verdicts = {key: by for key, by in top_verdicts.items() if by}
    mono_groups = {group for (_, group), by in verdicts.items() if majority_monosemantic(list(by.values()))}
    labelled_groups = {group for _, group in verdicts}
    # Per alive latent, every latent of a judged group takes the group's verdict.
    labelled = {index for group in labelled_groups for index in members[group]}
    mono = {index for group in mono_groups for index in members[group]}
    overall = labellable_estimate(len(alive_rows), len(labelled), len(mono))
    quartiles = None
    persistence: PersistenceOut | None = None
    if by_persistence:
        mmcs = {row.index: row.mmcs_with_larger for row in alive_rows}
        persistence = _persistence(mmcs, labelled, mono, persistence_threshold)
    if by_density:
        quartiles = []
        for q, group in enumerate(density_quartiles([row.density for row in alive_rows]), start=1):
            rows = [alive_rows[i] for i in group]
            indices = {row.index for row in rows}
            part = labellable_estimate(len(rows), len(indices & labelled), len(indices & mono))
            quartiles.append(
                QuartileEstimate(
                    quartile=q,
                    density_low=min((row.density for row in rows), default=None),
                    density_high=max((row.density for row in rows), default=None),
                    **fraction_fields(part),
                )
            )
    # Per-labeller counts include "too little evidence"; the kappa leaves it out (agreement_out does).
    agreement = agreement_out(
        {key: {name: verdict for name, (verdict, _) in by.items()} for key, by in readings.items()}
    )
    distinct = _distinct_estimate(sizes, labelled_groups, mono_groups)
    return EstimateOut(
        dictionary_id=dictionary.id,
        rare=dictionary.rare or 0,
        dead=dictionary.dead,
        min_firings=dictionary.min_firings,
        min_contribution=dictionary.min_contribution,
        population=estimate_population(dictionary, len(alive_rows)),
        labelled_not_alive=labelled_not_alive,
        too_little_evidence=too_little,
        **fraction_fields(overall),
        estimate=overall.estimate,
        estimate_low=overall.estimate_low,
        estimate_high=overall.estimate_high,
        agreement=agreement,
        readings=[
            _reading("top_contexts", sizes, top_verdicts),
            _reading("activation_range", sizes, verdicts, agreement),
        ],
        quartiles=quartiles,
        persistence=persistence,
        per_latent_population=PER_LATENT_POPULATION,
        distinct=distinct,
        per_labeller=_per_labeller(sizes, verdicts),
        rule=POOLING_RULE,
        pairwise_agreement=[
            PairAgreement(
                labellers=list(pair.labellers), features=pair.features, observed=pair.observed, kappa=pair.kappa
            )
            for pair in pairwise_agreement({key: by for key, by in verdicts.items()})
        ],
    )


PER_LATENT_POPULATION = (
    "every alive latent takes the verdict of its group of near-duplicates, so a direction the "
    "dictionary holds n times counts n times (and the interval treats the copies as separate draws)"
)


def _population_estimate(population: str, size: int, labelled: int, monosemantic: int) -> PopulationEstimate:
    part = labellable_estimate(size, labelled, monosemantic)
    return PopulationEstimate(
        population=population,
        size=size,
        labelled=labelled,
        monosemantic=monosemantic,
        fraction=part.fraction,
        fraction_low=part.fraction_low,
        fraction_high=part.fraction_high,
        estimate=part.estimate,
        estimate_low=part.estimate_low,
        estimate_high=part.estimate_high,
    )


def _distinct_estimate(sizes: Mapping[int, int], labelled: set[int], mono: set[int]) -> DistinctEstimate:
    """The estimate per distinct feature from {group representative: latents} and the judged groups."""
    groups, alive = len(sizes), sum(sizes.values())
    duplicated = sum(n for n in sizes.values() if n > 1)
    population = (
        f"per distinct feature: the {alive:,} alive latents merged into {groups:,} groups where their decoder "
        f"atoms have cosine >= {DUPLICATE_COSINE:g} ({duplicated:,} latents have a near-duplicate); the queue draws "
        "groups uniformly and a verdict on a group counts once"
    )
    part = _population_estimate(population, groups, len(labelled), len(mono))
    return DistinctEstimate(
        **part.model_dump(),
        groups=groups,
        threshold=DUPLICATE_COSINE,
        duplicated_latents=duplicated,
        largest_group=max(sizes.values(), default=0),
    )


def _per_labeller(sizes: Mapping[int, int], verdicts: dict[tuple[str, int], dict[str, str]]) -> list[LabellerEstimate]:
    """Each labeller's own estimate from their latest judged verdict on each group."""
    by_labeller: dict[str, dict[int, str]] = defaultdict(dict)
    for (_, group), by in verdicts.items():
        for name, verdict in by.items():
            by_labeller[name][group] = verdict
    alive = sum(sizes.values())
    out = []
    for name, theirs in sorted(by_labeller.items()):
        mono = [group for group, verdict in theirs.items() if verdict == "monosemantic"]
        out.append(
            LabellerEstimate(
                labeller=name,
                per_latent=_population_estimate(
                    f"{name}'s verdicts per alive latent",
                    alive,
                    sum(sizes[g] for g in theirs),
                    sum(sizes[g] for g in mono),
                ),
                distinct=_population_estimate(
                    f"{name}'s verdicts per distinct feature", len(sizes), len(theirs), len(mono)
                ),
            )
        )
    return out


def estimate_population(dictionary: Dictionary, alive: int) -> str:
    """The population of a dictionary's estimate in words: which features count, and how many do not."""
    if dictionary.min_firings is None:
        head = f"of {alive:,} features that fired on the index corpus"
    else:
        times = "time" if dictionary.min_firings == 1 else "times"
        head = f"of {alive:,} features that fired at least {dictionary.min_firings:,} {times}"
        if dictionary.min_contribution:
            head += (
                f" with a largest contribution of at least {dictionary.min_contribution:.0%} of the activations' "
                "RMS norm"
            )
    rare, dead = dictionary.rare or 0, dictionary.dead
    left_out = []
    if rare:
        left_out.append(f"{rare:,} rarer {'one' if rare == 1 else 'ones'}")
    if dead:
        left_out.append(f"{dead:,} dead {'one' if dead == 1 else 'ones'}")
    return head + (f"; {' and '.join(left_out)} not counted" if left_out else "")


def _reading(
    reading: str,
    sizes: Mapping[int, int],
    verdicts: dict[tuple[str, int], dict[str, str]],
    agreement: AgreementOut | None = None,
) -> ReadingEstimate:
    """The per-latent estimate and kappa of one reading from {group: {labeller: verdict under that reading}}.

    ``sizes`` maps each group's representative to its number of alive latents, which all take its verdict.
    """
    mono = sum(sizes[group] for (_, group), by in verdicts.items() if majority_monosemantic(list(by.values())))
    part = labellable_estimate(sum(sizes.values()), sum(sizes[group] for _, group in verdicts), mono)
    return ReadingEstimate(
        reading=reading,
        description=READINGS[reading],
        labelled=part.labelled,
        monosemantic=part.monosemantic,
        fraction=part.fraction,
        fraction_low=part.fraction_low,
        fraction_high=part.fraction_high,
        estimate=part.estimate,
        estimate_low=part.estimate_low,
        estimate_high=part.estimate_high,
        agreement=agreement or agreement_out(verdicts),
    )


def _group_fraction(members: set[int], labelled: set[int], mono: set[int]) -> GroupFraction:
    part = labellable_estimate(len(members), len(members & labelled), len(members & mono))
    return GroupFraction(**fraction_fields(part))


def fraction_fields(part) -> dict:
    """The counts and the monosemantic fraction with its interval, as the response models name them."""
    names = ("alive", "labelled", "monosemantic", "fraction", "fraction_low", "fraction_high")
    return {name: getattr(part, name) for name in names}


def _persistence(
    mmcs_by_index: dict[int, float | None], labelled: set[int], mono: set[int], threshold: float
) -> PersistenceOut:
    """The monosemantic fraction of persistent vs not-persistent alive features, and their difference.

    ``mmcs_by_index`` maps each alive feature to its MMCS with the next larger dictionary (None: none).
    """
    persistent = {i for i, mmcs in mmcs_by_index.items() if mmcs is not None and mmcs >= threshold}
    not_persistent = {i for i, mmcs in mmcs_by_index.items() if mmcs is not None and mmcs < threshold}
    no_larger = {i for i, mmcs in mmcs_by_index.items() if mmcs is None}
    high, low = _group_fraction(persistent, labelled, mono), _group_fraction(not_persistent, labelled, mono)
    comparison = compare_proportions(high.monosemantic, high.labelled, low.monosemantic, low.labelled)
    return PersistenceOut(
        threshold=threshold,
        persistent=high,
        not_persistent=low,
        no_larger=len(no_larger),
        no_larger_labelled=len(no_larger & labelled),
        difference=comparison.difference,
        difference_low=comparison.low,
        difference_high=comparison.high,
        p_value=comparison.p_value,
        interval_excludes_zero=comparison.interval_excludes_zero,
        significant=comparison.significant,
    )


# --- run-level results -----------------------------------------------------------------------------------


def _run_metrics(workdir: Path) -> tuple[Path, dict | None]:
    """``<workdir>/metrics.json`` and its contents (None when absent); a ValueError names a corrupt file."""
    path = Path(workdir) / METRICS_FILE
    if not path.is_file():
        return path, None
    try:
        metrics = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not a metrics file of monosemantic run or toy: {exc}") from exc
    if not isinstance(metrics, dict):
        raise ValueError(f"{path} is not a metrics file of monosemantic run or toy: not a JSON object")
    return path, metrics


def run_toy_vs_lm(workdir: Path) -> dict | None:
    """The run's toy-twin comparison (``toy_vs_lm`` of metrics.json), None when the run has none."""
    _, metrics = _run_metrics(workdir)
    return (metrics or {}).get("toy_vs_lm")


def run_devices(workdir: Path) -> dict | None:
    """Where the run computed: ``{"device", "stage_devices"}`` from metrics.json (None for runs that predate it)."""
    _, metrics = _run_metrics(workdir)
    if not metrics or "device" not in metrics:
        return None
    return {"device": metrics["device"], "stage_devices": metrics.get("stage_devices", {})}


def feature_count(workdir: Path) -> FeatureCountOut | None:
    """The MMCS-with-larger curve and feature-count estimate of ``<workdir>/metrics.json``; None without it.

    A ValueError names the file when it exists but is not the metrics JSON the pipeline writes.
    """
    path, metrics = _run_metrics(workdir)
    if metrics is None:
        return None
    try:
        return FeatureCountOut(
            mmcs_with_larger=metrics.get("mmcs_with_larger", []),
            feature_count_estimate=metrics.get("feature_count_estimate"),
            true_feature_count=metrics.get("true_feature_count"),
        )
    except ValueError as exc:
        raise ValueError(f"{path} is not a metrics file of monosemantic run or toy: {exc}") from exc


def training_convergence(workdir: Path) -> ConvergenceOut | None:
    """Which SAEs of the run had stopped improving (``convergence`` of metrics.json); None when it has none."""
    path, metrics = _run_metrics(workdir)
    record = None if metrics is None else metrics.get("convergence")
    if not record:
        return None
    try:
        runs = [ConvergenceRun(name=name, **values) for name, values in record["runs"].items()]
        return ConvergenceOut(
            window=record["window"], tolerance=record["tolerance"], runs=runs, preset=metrics.get("preset")
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} holds a convergence record of another shape: {exc}") from exc
