"""What the HTML pages need beyond ``app.services.queries``: a labeller's progress and undo, figure files, chart data.

The numbers come from ``app.services.queries`` wherever it has them, so a page and its JSON twin never disagree.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Dictionary, Feature, Label
from app.db.session import serialized_writes
from app.services import queries
from app.services.estimates import ALPHA
from app.services.schemas import AgreementOut, DictionaryOut, EstimateOut, FeatureDetail, LabelOut, PersistenceOut
from app.settings import Settings
from app.web.svg_charts import CategoryPoint, SizeChart, SizePoint, category_chart, size_chart
from app.web.token_display import format_number

FIGURES_DIR = "figures"
TOY_DIR = "toy"  # a toy experiment's --out inside the run directory, shown beside the LM's figures
FEATURE_COUNT_FIGURE = "mmcs_with_larger.png"
CONVERGENCE_FIGURE = "heldout_objective_vs_samples.png"
TOY_VS_LM_FIGURE = "toy_vs_lm.png"
_FIGURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}\.(png|svg)$")
MAX_SKIPPED = 200  # skips a tab remembers (in its card's form): older ones rejoin the random queue


@dataclass
class LabellerProgress:
    """How far one labeller is through one dictionary's alive features."""

    labelled: int
    alive: int


def labeller_progress(session: Session, dictionary: Dictionary, labeller: str) -> LabellerProgress:
    """Distinct alive features (groups of near-duplicates) this labeller has labelled, of all of them.

    A group counts as labelled once, whichever and however many of its latents the labeller labelled.
    """
    group = func.coalesce(Feature.group_index, Feature.index)
    in_dictionary = (Feature.dictionary_id == dictionary.id) & Feature.alive
    alive = session.scalar(select(func.count(func.distinct(group))).where(in_dictionary)) or 0
    mine = (Label.dictionary_hash == dictionary.content_hash) & (Label.labeller == labeller)
    labelled = (
        session.scalar(
            select(func.count(func.distinct(group)))
            .join(Label, Label.feature_index == Feature.index)
            .where(in_dictionary, mine)
        )
        or 0
    )
    return LabellerProgress(labelled=labelled, alive=alive)


def undo_label(session: Session, dictionary: Dictionary, labeller: str, label_id: int) -> LabelOut | None:
    """Delete exactly the label ``label_id`` when it is this labeller's in this dictionary, and commit.

    The deleted label, or None when it is not there (already undone, or someone else's). Deleting (rather than
    adding a superseding row) restores exactly the state before the mistaken key press: an earlier label of
    the same feature by the same person counts again.
    """
    row = session.scalar(
        select(Label).where(
            Label.id == label_id,
            Label.dictionary_hash == dictionary.content_hash,
            Label.labeller == labeller,
        )
    )
    if row is None:
        return None
    undone = queries.label_out(row)
    session.delete(row)
    with serialized_writes(session):
        session.commit()
    return undone


@dataclass(frozen=True)
class UndoAction:
    """The one action of this tab that its Undo button takes back: a stored label (by id) or a skip."""

    kind: Literal["label", "skip"]
    feature_index: int
    label_id: int | None = None
    verdict: str | None = None

    @property
    def target(self) -> int:
        """What the undo form sends back: the label's id, or the skipped feature's index."""
        return self.label_id if self.label_id is not None else self.feature_index

    @property
    def words(self) -> str:
        """The button's text: which action it undoes, with the feature's number."""
        if self.kind == "skip":
            return f"Undo skip of #{self.feature_index}"
        return f"Undo label of #{self.feature_index}"


def parse_skipped(raw: str | None) -> list[int]:
    """The features this tab skipped, oldest first, from the card's ``skipped`` field ("12,40,7"); junk dropped."""
    indices: list[int] = []
    for part in (raw or "").split(","):
        part = part.strip()
        if part.isdecimal() and len(part) <= 10 and int(part) not in indices:
            indices.append(int(part))
    return indices[-MAX_SKIPPED:]


def with_skip(skipped: list[int], index: int) -> list[int]:
    """The skip list with ``index`` moved to its back (its newest skip)."""
    return [*[i for i in skipped if i != index], index][-MAX_SKIPPED:]


def queue_rng(dictionary: Dictionary, labeller: str, labelled: int) -> random.Random:
    """The random draw of a labeller's next feature, fixed by how many they have labelled.

    A reload, or a second submit of a card already stored, draws the same feature as before, so none is
    skipped unseen; each label moves the draw on. The draw stays uniform over the unlabelled alive features.
    """
    return random.Random(f"{dictionary.content_hash}/{labeller}/{labelled}")


def labelled_before(session: Session, dictionary: Dictionary, labeller: str, index: int) -> LabelOut | None:
    """This labeller's newest label of feature ``index``, or None when they have not labelled it."""
    row = session.scalar(
        select(Label)
        .where(
            Label.dictionary_hash == dictionary.content_hash,
            Label.labeller == labeller,
            Label.feature_index == index,
        )
        .order_by(Label.created_at.desc(), Label.id.desc())
        .limit(1)
    )
    return None if row is None else queries.label_out(row)


def next_feature_for(
    session: Session, dictionary: Dictionary, labeller: str, rng: random.Random, skipped: Sequence[int] = ()
) -> FeatureDetail | None:
    """A random alive feature the labeller has not labelled; the ``skipped`` ones come last, oldest skip first."""
    return queries.next_unlabelled_feature(session, dictionary, labeller, rng, last=skipped)


@dataclass
class Figure:
    url: str
    caption: str


def toy_workdir(settings: Settings) -> Path:
    """Where a toy experiment shown beside the LM lives: ``settings.toy_workdir`` if set, else ``<workdir>/toy``."""
    return Path(settings.toy_workdir) if settings.toy_workdir else Path(settings.workdir) / TOY_DIR


def figure_file(folder: Path, name: str) -> Path | None:
    """The figure ``name`` directly inside ``folder``, or None: only plain image names, never a path out of it."""
    if not _FIGURE_NAME.match(name):
        return None
    root = folder.resolve()
    path = (root / name).resolve()
    if path.parent != root or not path.is_file():
        return None
    return path


def feature_count_figures(settings: Settings) -> list[Figure]:
    """The MMCS-with-larger figures of the LM run and, when one exists, of the toy experiment."""
    figures = []
    if figure_file(Path(settings.workdir) / FIGURES_DIR, FEATURE_COUNT_FIGURE):
        figures.append(Figure(f"/figures/{FEATURE_COUNT_FIGURE}", "Tiny LM: MMCS with the next larger dictionary"))
    if figure_file(toy_workdir(settings) / FIGURES_DIR, FEATURE_COUNT_FIGURE):
        figures.append(
            Figure(f"/figures/toy/{FEATURE_COUNT_FIGURE}", "Toy data (known number of features): the same curve")
        )
    return figures


def toy_vs_lm_figure(settings: Settings) -> Figure | None:
    """The study's plots in one form for the run's toy twin and the LM, when the run drew them."""
    if figure_file(Path(settings.workdir) / FIGURES_DIR, TOY_VS_LM_FIGURE) is None:
        return None
    return Figure(
        f"/figures/{TOY_VS_LM_FIGURE}",
        "Toy data (d = the site's width, G near the LM's estimate) above, the LM below: the same heatmaps over "
        "dictionary size and l1, each row with how many of its SAEs hold when the rows double",
    )


def convergence_figure(settings: Settings) -> Figure | None:
    """The run's held-out objective curves, when the run drew them."""
    if figure_file(Path(settings.workdir) / FIGURES_DIR, CONVERGENCE_FIGURE) is None:
        return None
    return Figure(f"/figures/{CONVERGENCE_FIGURE}", "Each SAE's objective on fixed held-out rows, relative to its end")


@dataclass
class EstimatesView:
    """Everything ``/estimates`` shows."""

    rows: list[tuple[DictionaryOut, EstimateOut]]
    estimate_chart: SizeChart | None
    fraction_chart: SizeChart | None
    agreement: AgreementOut

    @property
    def labelled_rows(self) -> list[tuple[DictionaryOut, EstimateOut]]:
        """Dictionaries with at least one judged distinct feature: the ones with numbers to show."""
        return [(d, e) for d, e in self.rows if e.labelled]

    @property
    def unlabelled_rows(self) -> list[tuple[DictionaryOut, EstimateOut]]:
        """Dictionaries with no judged feature yet, listed apart (collapsed) so their dashes do not crowd the page."""
        return [(d, e) for d, e in self.rows if not e.labelled]


def sweep_name(d: DictionaryOut) -> str:
    """The series a dictionary belongs to across sizes: its architecture and sparsity (and layer if any)."""
    layer = f"layer {d.layer} · " if d.layer is not None else ""
    return f"{layer}{d.arch} {d.sparsity_key}={format_number(d.sparsity_value)}"


def estimates_view(session: Session) -> EstimatesView:
    """Per-dictionary estimates, the same plotted against dictionary size, and labeller agreement overall."""
    rows = []
    for out in queries.list_dictionaries(session):
        dictionary = queries.get_dictionary(session, out.id)
        if dictionary is not None:
            rows.append((out, queries.dictionary_estimate(session, dictionary)))
    estimates: dict[str, list[SizePoint]] = {}
    fractions: dict[str, list[SizePoint]] = {}
    for d, e in rows:
        g = e.distinct
        if g is None or not g.labelled or g.estimate is None or g.fraction is None:
            continue
        label = f"{d.name}: {g.monosemantic} of {g.labelled} distinct features labelled monosemantic"
        estimates.setdefault(sweep_name(d), []).append(
            SizePoint(d.dict_size, g.estimate, g.estimate_low, g.estimate_high, f"{label}; estimate {g.estimate:.0f}")
        )
        fractions.setdefault(sweep_name(d), []).append(
            SizePoint(d.dict_size, g.fraction, g.fraction_low, g.fraction_high, f"{label} ({g.fraction:.0%})")
        )
    return EstimatesView(
        rows=rows,
        estimate_chart=size_chart(estimates, "labellable features"),
        fraction_chart=size_chart(fractions, "monosemantic fraction", y_max=1.0),
        agreement=queries.agreement_out(queries.latest_verdicts(session), queries.seconds_on_screen(session)),
    )


@dataclass
class DictionaryBreakdown:
    """What ``/estimates`` shows for one dictionary: the fraction per density quartile and persistent vs not."""

    dictionary: DictionaryOut
    estimate: EstimateOut  # with ``quartiles`` and ``persistence`` filled
    quartile_chart: SizeChart | None
    persistence_reading: str


def breakdown_dictionary(dictionaries: list[DictionaryOut], wanted: int | None) -> DictionaryOut | None:
    """The dictionary with id ``wanted`` (None if there is none), or by default the most-labelled one.

    Ties, and a database with no labels yet, go to the first dictionary in the overview's order.
    """
    if wanted is not None:
        return next((d for d in dictionaries if d.id == wanted), None)
    return max(dictionaries, key=lambda d: d.labelled, default=None)


def dictionary_breakdown(session: Session, dictionary: DictionaryOut) -> DictionaryBreakdown:
    """The density-quartile table and chart and the persistence comparison of one dictionary."""
    row = queries.get_dictionary(session, dictionary.id)
    if row is None:
        raise LookupError(f"dictionary {dictionary.id} disappeared while the page was drawn")
    estimate = queries.dictionary_estimate(session, row, by_density=True, by_persistence=True)
    points = []
    for q in estimate.quartiles or []:
        title = f"Q{q.quartile}: {q.monosemantic} of {q.labelled} labelled monosemantic"
        if q.fraction is not None:
            title += f" ({q.fraction:.0%}, 95% interval {q.fraction_low:.0%} to {q.fraction_high:.0%})"
        points.append(CategoryPoint(f"Q{q.quartile}", q.fraction, q.fraction_low, q.fraction_high, title))
    chart = category_chart(points, "monosemantic fraction", "density quartile (1 rarest, 4 densest)")
    assert estimate.persistence is not None  # asked for above
    return DictionaryBreakdown(
        dictionary=dictionary,
        estimate=estimate,
        quartile_chart=chart,
        persistence_reading=persistence_reading(estimate.persistence),
    )


def _points(value: float) -> str:
    """A proportion (or difference of two) in whole percentage points, with a true minus sign."""
    rounded = round(100 * value)
    return f"−{-rounded}" if rounded < 0 else str(rounded)


def _p_value(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def persistence_reading(p: PersistenceOut) -> str:
    """One plain sentence on whether persistent features are labelled monosemantic more often than the rest."""
    high, low = p.persistent, p.not_persistent
    if high.alive + low.alive == 0:
        return (
            "No feature here has a larger dictionary in its sweep to persist into, so persistence cannot be "
            "compared: pick a smaller dictionary of the sweep."
        )
    if p.difference is None or high.fraction is None or low.fraction is None:
        return (
            f"Not enough labels to compare: {high.labelled} persistent and {low.labelled} other features are "
            "labelled, and both groups need at least one."
        )
    assert p.difference_low is not None and p.difference_high is not None and p.p_value is not None
    shares = f"{_points(high.fraction)}% vs {_points(low.fraction)}%"
    numbers = (
        f"difference {_points(p.difference)} points (95% CI {_points(p.difference_low)} to "
        f"{_points(p.difference_high)}; Fisher's exact {_p_value(p.p_value)})"
    )
    direction = "more" if p.difference > 0 else "less"
    if p.significant:
        return f"Persistent features were labelled monosemantic {direction} often: {shares}, {numbers}."
    if p.interval_excludes_zero or p.p_value < ALPHA:
        doubt = "Fisher's test is not below 0.05" if p.interval_excludes_zero else "the interval includes zero"
        return (
            f"Persistent features may be labelled monosemantic {direction} often, but not clearly: {shares}, "
            f"{numbers}; {doubt}, so more labels are needed."
        )
    return f"No clear difference between persistent features and the rest: {shares}, {numbers}."
