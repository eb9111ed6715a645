"""Request and response bodies of the REST API; the pages render the same records.

Field names are the contract in DESIGN.md: extend them, never rename them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StringConstraints,
    WithJsonSchema,
    computed_field,
    model_validator,
)

from app.services import label_rules
from training.analysis.duplicates import DUPLICATE_COSINE

# "too_little_evidence": the labeller could not judge; stored and exported, left out of every estimate.
Verdict = Literal["monosemantic", "polysemantic", "uninterpretable", "too_little_evidence"]
EvidenceLevel = Literal["dead", "rare", "alive"]
EvidenceFilter = Literal["alive", "rare", "dead", "all"]
# Checked by label_rules (one path for the API and the import); the schema states the same rules.
LabellerName = Annotated[
    str,
    AfterValidator(label_rules.checked_labeller),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": label_rules.MAX_LABELLER_CHARS,
            "pattern": label_rules.LABELLER_PATTERN,
            "description": "a name without control or formatting characters; white space around it is removed",
        }
    ),
]
LabelDescription = Annotated[
    str,
    StringConstraints(max_length=label_rules.MAX_DESCRIPTION_CHARS),
    AfterValidator(label_rules.checked_description),
    WithJsonSchema(
        {"type": "string", "maxLength": label_rules.MAX_DESCRIPTION_CHARS, "pattern": label_rules.DESCRIPTION_PATTERN}
    ),
]
FeatureSort = Literal["index", "density", "max_activation", "label_status"]
SortOrder = Literal["asc", "desc"]
MAX_DESCRIPTION_CHARS = label_rules.MAX_DESCRIPTION_CHARS


def json_integer(value: object) -> object:
    """A JSON integer as JSON Schema reads one (``3`` or ``3.0``); text, booleans and fractions are refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a whole number (a JSON integer, not text or a boolean)")
    return value


# Pydantic's lax mode would also take "3" and true as integers; JSON Schema (and this API) takes neither.
JSONInt = Annotated[int, BeforeValidator(json_integer)]
# Ids, feature indices and offsets fit a SQL INTEGER (PostgreSQL int4); larger ones would overflow SQLite's driver.
MAX_SQL_INT = 2**31 - 1


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str = Field(description="version of the monosemantic package")
    dictionaries: int = Field(description="number of indexed dictionaries")


class DictionaryOut(BaseModel):
    """One indexed dictionary (SAE) with its summary metrics."""

    id: int
    content_hash: str = Field(description="sha256 of the weights: labels are stored against it")
    name: str
    model: str
    layer: int | None
    site: str
    arch: str
    dict_size: int
    sparsity_key: str = Field(description='"l1" or "k"')
    sparsity_value: float
    l1: float | None = Field(description="the L1 coefficient when the architecture takes one")
    k: int | None = Field(description="active latents per sample for the top-k family")
    alive: int = Field(description="features with enough evidence to be labelled (see min_firings, min_contribution)")
    rare: int = Field(description="features that fire on the index corpus but with too little evidence")
    dead: int = Field(description="features that never fire on the index corpus")
    min_firings: int | None = Field(description="a feature firing on fewer tokens is rare")
    min_contribution: float | None = Field(
        description="a feature whose max activation x decoder norm is below this fraction of the activations' RMS "
        "norm is rare (None: indexed before contributions were kept, so only firings were tested)"
    )
    l0: float | None
    fvu: float | None
    ce_recovered: float | None
    n_tokens: int = Field(description="tokens the feature statistics were computed over")
    labelled: int = Field(description="features with at least one label")
    indexed_at: datetime
    source: str = Field(
        "ours", description='"ours" (trained here), or the format it was imported from: "saelens", "sparsify"'
    )
    holds: bool | None = Field(
        None,
        description="whether FVU, L0, dead, rare and MMCS-with-larger held when the training rows doubled "
        "(None: the run kept no half-rows copy)",
    )
    moved: list[dict] = Field(
        default_factory=list, description="what moved beyond its tolerance: metric, half, end, change, tolerance"
    )
    source_metadata: dict | None = Field(
        None, description="for an imported SAE: its format, original path, architecture and the metadata it carried"
    )


class TopToken(BaseModel):
    token_id: int
    token: str
    count: int
    mean_activation: float


class FeatureSummary(BaseModel):
    """A row of the feature browser."""

    index: int
    alive: bool = Field(description="enough evidence to be labelled")
    evidence: EvidenceLevel
    fire_count: int | None = Field(description="tokens of the index corpus it fires on")
    density: float = Field(description="fraction of tokens on which the feature fires")
    mean_activation: float = Field(description="mean over the tokens where it fires")
    max_activation: float
    mmcs_with_larger: float | None = Field(description="best cosine of this atom with the next larger dictionary")
    top_tokens: list[TopToken]
    label_count: int
    latest_verdict: Verdict | None = Field(description="verdict of the newest label, any labeller")
    latest_description: str = Field("", description="the newest non-empty label description, any labeller")


class FeaturePage(BaseModel):
    total: int = Field(description="features matching the filter, before limit and offset")
    limit: int
    offset: int
    features: list[FeatureSummary]


class Context(BaseModel):
    """A window of text around one token, with the feature's activation on every token."""

    tokens: list[str]
    activations: list[float]
    center: int = Field(description="position in tokens of the token the window was sampled for")
    position: int = Field(description="that token's position in the corpus")


class QuantileGroup(BaseModel):
    """Contexts sampled from one equal-width interval of the feature's activations."""

    interval: int
    low: float
    high: float
    contexts: list[Context]


class Histogram(BaseModel):
    """Counts of the feature's nonzero activations in equal-width bins over (0, max]."""

    max: float
    edges: list[float]
    counts: list[int]


class TokenEffect(BaseModel):
    token_id: int
    token: str
    value: float


class LogitEffects(BaseModel):
    """Tokens whose logits the feature's decoder direction raises or lowers most (direct path)."""

    promoted: list[TokenEffect]
    suppressed: list[TokenEffect]


class PosTagCount(BaseModel):
    tag: str
    count: int


# Two atoms of one dictionary whose decoder directions have at least this cosine read as one feature learnt
# twice (e.g. #978 and #200 of relu_n1024_l1 0.3 on the default run): the merge of distinct features.
LIKELY_DUPLICATE_COSINE = DUPLICATE_COSINE


class Neighbour(BaseModel):
    """A feature's nearest decoder atom in the next smaller or larger dictionary, or among its own ("same")."""

    dictionary_hash: str
    dictionary_id: int | None = Field(description="id of that dictionary when it is indexed here too")
    dictionary_size: int
    direction: Literal["smaller", "larger", "same"] = Field(
        description="which dictionary: the next smaller or larger of the sweep, or this one (similar features)"
    )
    index: int
    cosine: float = Field(description="cosine of the two features' decoder directions")

    @computed_field(description=f"an atom of this same dictionary at cosine {LIKELY_DUPLICATE_COSINE} or more")
    @property
    def likely_duplicate(self) -> bool:
        """Whether this is another atom of the feature's own dictionary, close enough to be the same feature."""
        return self.direction == "same" and self.cosine >= LIKELY_DUPLICATE_COSINE


class LabelIn(BaseModel):
    """A labeller's judgement of one feature."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": label_rules.READINGS_SCHEMA})

    labeller: LabellerName
    verdict: Verdict = Field(
        description="the strict reading: monosemantic when one concept covers the top contexts and the quantile "
        "samples (the whole activation range); too_little_evidence counts in no estimate"
    )
    description: LabelDescription = ""
    # Strict: JSON's false, "0.5" or 1 for a boolean are mistakes to report, not values to convert.
    confidence: StrictFloat | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    top_contexts_monosemantic: StrictBool | None = Field(
        None,
        description="the looser reading: one concept covers the top contexts (what the study labelled from); "
        "implied true by a monosemantic verdict",
    )
    seconds_on_screen: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="seconds the labelling card was visible before the verdict (it takes one only once ready, "
        "after 0.25 s); null when not measured (API and imported labels)",
    )

    @model_validator(mode="after")
    def _readings_agree(self) -> LabelIn:
        problem = label_rules.readings_problem(self.verdict, self.top_contexts_monosemantic)
        if problem is not None:
            raise ValueError(problem)
        if self.verdict == "monosemantic":
            self.top_contexts_monosemantic = True
        return self


class LabelOut(BaseModel):
    id: int
    dictionary_hash: str
    feature_index: int
    labeller: str
    verdict: Verdict
    description: str
    confidence: float | None
    top_contexts_monosemantic: bool | None = Field(description="one concept covers the top contexts")
    seconds_on_screen: float | None = Field(
        None,
        description="seconds the labelling card was visible before the verdict; null when not measured (API and "
        "imported labels)",
    )
    created_at: datetime


class DuplicateGroup(BaseModel):
    """A feature's group of near-duplicate alive latents (decoder cosine >= threshold): one distinct feature."""

    representative: int = Field(description="the group's lowest index: the latent the labelling queue serves")
    size: int = Field(description="alive latents in the group; a verdict on any of them counts once for all")
    members: list[int] = Field(description="every latent of the group, in index order")
    threshold: float = Field(description="the decoder cosine at which alive latents merge")


class FeatureDetail(BaseModel):
    """Everything a labeller looks at for one feature."""

    dictionary_id: int
    dictionary_hash: str
    index: int
    alive: bool = Field(description="enough evidence to be labelled")
    evidence: EvidenceLevel
    fire_count: int | None = Field(description="tokens of the index corpus it fires on")
    max_contribution: float | None = Field(description="max activation x decoder norm, in activation units")
    density: float
    mean_activation: float
    max_activation: float
    mmcs_with_larger: float | None
    top_contexts: list[Context]
    quantile_samples: list[QuantileGroup]
    histogram: Histogram
    top_tokens: list[TopToken]
    logit_effects: LogitEffects
    pos_tags: list[PosTagCount]
    duplicate_group: DuplicateGroup | None = Field(
        None, description="its group of near-duplicate alive latents (None for rare and dead features)"
    )
    # Keep these two last: the API caches the JSON of the fields above and appends these per request.
    neighbours: list[Neighbour]
    labels: list[LabelOut] = Field(description="every label of this feature, newest first")


class LabellerCounts(BaseModel):
    """A labeller's latest verdicts on one dictionary's alive features (or on all, for /api/agreement)."""

    labeller: str
    labelled: int
    monosemantic: int
    polysemantic: int
    uninterpretable: int
    too_little_evidence: int = 0
    timed_labels: int = Field(0, description="labels of this labeller that recorded seconds_on_screen (page labels)")
    median_seconds_per_label: float | None = Field(
        None, description="median seconds a card was on screen before this labeller's verdict; None when none timed"
    )


class AgreementOut(BaseModel):
    method: Literal["cohen", "fleiss"] | None = Field(description="cohen for two labellers, fleiss for three or more")
    kappa: float | None = Field(description="None when undefined (no overlap, or all verdicts alike)")
    observed: float | None
    expected: float | None
    features: int = Field(description="features with latest verdicts from two or more labellers")
    labellers: int = Field(description="labellers among those features")
    per_labeller: list[LabellerCounts]


class QuartileEstimate(BaseModel):
    quartile: int = Field(description="1 (rarest features) to 4 (densest)")
    density_low: float | None
    density_high: float | None
    alive: int
    labelled: int
    monosemantic: int
    fraction: float | None
    fraction_low: float
    fraction_high: float


class GroupFraction(BaseModel):
    """The monosemantic fraction of one group of alive features, with its Wilson 95% interval."""

    alive: int
    labelled: int
    monosemantic: int
    fraction: float | None = Field(description="None when no feature of the group is labelled")
    fraction_low: float
    fraction_high: float


class PersistenceOut(BaseModel):
    """Whether features that persist into the next larger dictionary are labelled monosemantic more often.

    A feature is persistent when its decoder direction's best cosine with the next larger dictionary of
    its sweep (``mmcs_with_larger``) is at least ``threshold``. Features without a larger dictionary are
    left out of both groups and counted in ``no_larger``.
    """

    threshold: float = Field(description="mmcs_with_larger at or above which a feature is persistent")
    persistent: GroupFraction
    not_persistent: GroupFraction
    no_larger: int = Field(description="alive features with no larger dictionary to compare with (left out)")
    no_larger_labelled: int = Field(description="of those, how many are labelled")
    difference: float | None = Field(description="persistent fraction minus not-persistent fraction")
    difference_low: float | None = Field(description="Newcombe's hybrid score 95% interval of the difference")
    difference_high: float | None
    p_value: float | None = Field(description="two-sided Fisher's exact test of the 2 x 2 table")
    interval_excludes_zero: bool | None = Field(description="whether the difference's 95% interval excludes zero")
    significant: bool | None = Field(
        description="the interval excludes zero and p_value < 0.05 (both; with few labels they can disagree)"
    )


class ReadingEstimate(BaseModel):
    """The estimate under one reading of "monosemantic", over the alive features labelled with that reading."""

    reading: Literal["top_contexts", "activation_range"]
    description: str = Field(description="the reading in words")
    labelled: int = Field(description="alive features with a verdict under this reading")
    monosemantic: int
    fraction: float | None
    fraction_low: float
    fraction_high: float
    estimate: float | None = Field(description="alive x fraction")
    estimate_low: float
    estimate_high: float
    agreement: AgreementOut


class PopulationEstimate(BaseModel):
    """The monosemantic fraction over one population (alive latents or distinct features) and what it implies."""

    population: str = Field(description="the population and how its labels count, in words")
    size: int = Field(description="alive latents, or distinct features (groups of near-duplicate alive latents)")
    labelled: int
    monosemantic: int
    fraction: float | None
    fraction_low: float
    fraction_high: float
    estimate: float | None = Field(description="size x fraction")
    estimate_low: float
    estimate_high: float


class DistinctEstimate(PopulationEstimate):
    """The estimate per distinct feature: alive latents merged where their decoder atoms have cosine >= 0.9."""

    groups: int = Field(description="distinct features: groups of alive latents with decoder cosine >= threshold")
    threshold: float = Field(description="the decoder cosine at which alive latents merge (the stable-atom merge)")
    duplicated_latents: int = Field(description="alive latents in groups of two or more")
    largest_group: int = Field(description="latents in the largest group")


class LabellerEstimate(BaseModel):
    """One labeller's own estimate from their latest verdicts, per alive latent and per distinct feature."""

    labeller: str
    per_latent: PopulationEstimate
    distinct: PopulationEstimate


class PairAgreement(BaseModel):
    """Cohen's kappa of two labellers over the distinct features both judged."""

    labellers: list[str] = Field(description="the two labellers, in name order")
    features: int = Field(description="distinct features both judged")
    observed: float | None = Field(description="share of those features with the same verdict")
    kappa: float | None = Field(description="None when undefined (no overlap, or all verdicts alike)")


class EstimateOut(BaseModel):
    """The labellable-feature estimate of one dictionary (see ``queries.dictionary_estimate``).

    The top-level fraction and estimate are the strict reading (``activation_range``); ``readings`` gives
    both readings, the looser ``top_contexts`` first (the one the study's figure compares with).
    """

    dictionary_id: int
    alive: int = Field(description="features with enough evidence: the population of the estimate")
    rare: int = Field(0, description="features that fired with too little evidence (not counted)")
    dead: int = Field(0, description="features that never fired on the index corpus (not counted)")
    min_firings: int | None = None
    min_contribution: float | None = None
    population: str = Field("", description="the population of the estimate in words")
    labelled_not_alive: int = Field(
        0, description="rare or dead features with labels: the labels are kept and exported but not counted"
    )
    too_little_evidence: int = Field(
        0, description="alive features whose only verdicts are too_little_evidence (left out of the denominator)"
    )
    labelled: int
    monosemantic: int
    fraction: float | None
    fraction_low: float
    fraction_high: float
    estimate: float | None
    estimate_low: float
    estimate_high: float
    confidence_level: float = 0.95
    agreement: AgreementOut
    readings: list[ReadingEstimate] = Field(default_factory=list, description="top_contexts, then activation_range")
    quartiles: list[QuartileEstimate] | None = Field(None, description="with ?by=density")
    persistence: PersistenceOut | None = Field(None, description="with ?by=persistence")
    per_latent_population: str = Field("", description="how the top-level figures (per alive latent) count, in words")
    distinct: DistinctEstimate | None = Field(
        None, description="the same figures per distinct feature: the headline labellable count is its estimate"
    )
    per_labeller: list[LabellerEstimate] = Field(
        default_factory=list, description="each labeller's own fraction and estimate from their latest verdicts"
    )
    rule: str = Field("", description="how several labellers' verdicts pool into the top-level and distinct figures")
    pairwise_agreement: list[PairAgreement] = Field(
        default_factory=list, description="Cohen's kappa of every pair of labellers over the features both judged"
    )


class MMCSRecord(BaseModel):
    """One point of the MMCS-with-larger curve: a dictionary size against the next larger one."""

    model_config = ConfigDict(extra="allow")

    arch: str
    dict_size: int
    mmcs_with_larger: float
    larger_size: int | None = None
    l1: float | None = None
    k: int | None = None


class FeatureCountEstimate(BaseModel):
    model_config = ConfigDict(extra="allow")

    value: float | None
    low: float | None
    high: float | None
    method: str
    curve: dict[str, int] | None = Field(None, description="stable atoms of each consecutive pair of sizes")
    peak_at_largest_pair: bool | None = Field(
        None, description="the count still rises at the largest pair of sizes: a lower bound, not a level"
    )


class FeatureCountOut(BaseModel):
    mmcs_with_larger: list[MMCSRecord]
    feature_count_estimate: FeatureCountEstimate | None
    true_feature_count: int | None = Field(None, description="the known G of a toy experiment")


class ConvergenceRun(BaseModel):
    """Whether one SAE had stopped improving: its held-out objective's fall over the window, and where it ended."""

    name: str
    converged: bool
    objective_fall: float = Field(description="relative fall of the held-out objective over the window")
    objective: float = Field(description="final objective on the tracked held-out rows")
    fvu: float
    l0: float


class ConvergenceOut(BaseModel):
    window: list[float] = Field(description="the stretch of training measured, as fractions of it (before the decay)")
    tolerance: float = Field(description="a fall below this counts as converged")
    runs: list[ConvergenceRun]
    preset: str | None = Field(None, description="the preset the sweep was trained with")


class ActivationsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dictionary_id: JSONInt = Field(ge=1, le=MAX_SQL_INT)
    text: str = Field(min_length=1)
    feature: Annotated[int, Field(ge=0, le=MAX_SQL_INT), BeforeValidator(json_integer)] | None = Field(
        None, description="also report this feature's activation on every token"
    )


class FeatureActivation(BaseModel):
    index: int
    activation: float


class TokenActivations(BaseModel):
    token: str = Field(description="the token's text as it appears in the input")
    start: int = Field(description="character offset of the token in the input")
    end: int
    top_features: list[FeatureActivation] = Field(description="strongest active features, at most 5")
    feature_activation: float | None = Field(description="activation of the requested feature, if any")


class ActivationsOut(BaseModel):
    dictionary_id: int
    feature: int | None
    tokens: list[TokenActivations]


class LabelsImportOut(BaseModel):
    imported: int = Field(description="label rows written")
    skipped: int = Field(description="rows already stored exactly (importing an export twice adds nothing)")


ContrastExample = Annotated[str, StringConstraints(max_length=500)]


class ContrastIn(BaseModel):
    """Two sets of token positions, each a pattern over the run's text with its target marked, or examples."""

    model_config = ConfigDict(extra="forbid")

    a: str | None = Field(
        None, max_length=500, description=r"regex with the target in [[...]] or (?P<target>...), e.g. (Mr|Dr)[[\.]]"
    )
    b: str | None = Field(None, max_length=500, description="the other set's regex, marked the same way")
    a_examples: list[ContrastExample] | None = Field(
        None, max_length=50, description="instead of a: literal example strings, each with its target in [[...]]"
    )
    b_examples: list[ContrastExample] | None = Field(None, max_length=50, description="instead of b: literal examples")
    max_positions: JSONInt = Field(2000, ge=20, le=20_000, description="positions kept per set (a seeded sample)")
    seed: JSONInt = Field(0, ge=0, le=MAX_SQL_INT, description="seed of the sample and of the train/held-out split")


class AucOut(BaseModel):
    value: float = Field(description="area under the ROC curve on held-out positions")
    low: float = Field(description="95% interval, from DeLong's variance")
    high: float


class ProbeOut(BaseModel):
    layer: int = Field(description="block index, 0-based (layer 2 is the study's third layer)")
    site: str = Field(description='"mlp" (MLP activations) or "resid" (residual stream after the block)')
    dim: int
    auc: AucOut
    best_unit: int = Field(description="the single neuron (or residual coordinate) that separates the sets best")
    best_unit_auc: AucOut = Field(description="its held-out AUC, the baseline a single SAE feature should beat")
    best_unit_more_on: str = Field(description='"a" or "b": the set it is higher on')


class ContrastFeatureOut(BaseModel):
    dictionary: str
    dictionary_id: int | None = Field(description="id in /api/dictionaries when the dictionary is indexed")
    index: int
    auc: AucOut
    fires_more_on: str = Field(description='"a" or "b"')
    fire_rate_a: float
    fire_rate_b: float
    contexts: list[str] = Field(description="where it fires most among the sets' positions, target in [[...]]")
    top_contexts: list[str] = Field(
        description="where it fires most in the whole corpus, from the run's feature index (empty without one)"
    )
    corpus_fire_count: int | None = Field(
        description="tokens of the training split it fires on (null: a top-k dictionary without a feature index)"
    )
    corpus_precision: float | None = Field(
        description="of those firings, the share at the matches of the set it fires more on: near 1 when it is "
        "specific to that set in the whole corpus"
    )


class ContrastPairOut(BaseModel):
    dictionary: str
    indices: list[int]
    auc: AucOut


class ContrastOut(BaseModel):
    a: str
    b: str
    positions_a: int
    positions_b: int
    dropped_overlap: int = Field(description="positions both patterns matched, left out of both sets")
    heldout_a: int
    heldout_b: int
    harvested_layer: int | None = Field(description="the layer whose MLP activations the SAEs were trained on")
    probes: list[ProbeOut]
    features: dict[str, list[ContrastFeatureOut]]
    pairs: dict[str, ContrastPairOut]
    seed: int
    config: dict[str, int | float] = Field(description="the search's settings: positions per set, seed, split, counts")
    indexed: list[str] = Field(description="dictionaries whose top_contexts come from a current feature index")
    matched_a: int = Field(description="positions pattern a matched (overlap removed), before the sample")
    matched_b: int = Field(description="positions pattern b matched (overlap removed), before the sample")
