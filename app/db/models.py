"""The app's database schema: indexed dictionaries, their features and example contexts, and human labels.

Dictionaries are identified by ``content_hash``, a hash of their weights. Re-indexing a dictionary replaces
its feature and example rows but never its labels: a label names the dictionary's content hash and the
feature's index, not a row id, so it survives any number of re-indexes.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# "too_little_evidence" is stored and exported but counts in no estimate: the labeller could not judge.
VERDICTS = ("monosemantic", "polysemantic", "uninterpretable", "too_little_evidence")
JUDGED_VERDICTS = VERDICTS[:3]


def utc_now() -> datetime:
    """The current time in UTC (the database stores naive UTC timestamps)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Vocabulary(Base):
    """The display strings of a tokenizer's ids, shared by every dictionary indexed over it."""

    __tablename__ = "vocabularies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    tokens: Mapped[list] = mapped_column(JSON)
    tag_vocab: Mapped[list | None] = mapped_column(JSON, nullable=True)


class Dictionary(Base):
    """One trained SAE whose features were indexed, with its summary metrics."""

    __tablename__ = "dictionaries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    run_dir: Mapped[str] = mapped_column(Text)
    artifact_dir: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(200), default="tinylm")
    layer: Mapped[int | None] = mapped_column(Integer, nullable=True)
    site: Mapped[str] = mapped_column(String(100))
    arch: Mapped[str] = mapped_column(String(50))
    dict_size: Mapped[int] = mapped_column(Integer)
    sparsity_key: Mapped[str] = mapped_column(String(10))
    sparsity_value: Mapped[float] = mapped_column(Float)
    alive: Mapped[int] = mapped_column(Integer)  # features with enough evidence (training.features.evidence)
    dead: Mapped[int] = mapped_column(Integer)
    rare: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    min_firings: Mapped[int | None] = mapped_column(Integer, nullable=True)
    min_contribution: Mapped[float | None] = mapped_column(Float, nullable=True)
    l0: Mapped[float | None] = mapped_column(Float, nullable=True)
    fvu: Mapped[float | None] = mapped_column(Float, nullable=True)
    ce_recovered: Mapped[float | None] = mapped_column(Float, nullable=True)
    n_tokens: Mapped[int] = mapped_column(Integer)
    vocabulary_id: Mapped[int] = mapped_column(ForeignKey("vocabularies.id"))
    indexed_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)
    # Identity of the artifact the feature rows came from, so re-running `index` skips unchanged dictionaries.
    artifact_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # "ours" for a dictionary trained here, else the format it was imported from ("saelens", "sparsify").
    source: Mapped[str] = mapped_column(String(20), default="ours", server_default="ours")
    source_metadata: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # The doubling test (metrics.json): None when the run kept no half-rows copy of this SAE.
    holds: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    moved: Mapped[list | None] = mapped_column(JSON, nullable=True)

    vocabulary: Mapped[Vocabulary] = relationship()
    features: Mapped[list[Feature]] = relationship(back_populates="dictionary", cascade="all, delete-orphan")


class Feature(Base):
    """Statistics of one feature (latent) of a dictionary over the whole corpus.

    JSON columns hold small lists the pages show as they are: ``histogram`` {"max", "counts"},
    ``top_tokens`` [{"token_id", "count", "mean_activation"}], ``logit_promoted``/``logit_suppressed``
    [{"token_id", "value"}], ``pos_tags`` [{"tag", "count"}], ``neighbours`` [{"dictionary_hash",
    "dictionary_size", "direction": "smaller"|"larger", "index", "cosine"}].
    """

    __tablename__ = "features"
    __table_args__ = (
        UniqueConstraint("dictionary_id", "index", name="uq_feature_dictionary_index"),
        Index("ix_features_dictionary_density", "dictionary_id", "density"),
        Index("ix_features_dictionary_max", "dictionary_id", "max_activation"),
        Index("ix_features_dictionary_group", "dictionary_id", "group_index"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dictionary_id: Mapped[int] = mapped_column(ForeignKey("dictionaries.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    alive: Mapped[bool] = mapped_column(Boolean)  # enough evidence to be labelled: evidence == "alive"
    evidence: Mapped[str] = mapped_column(String(5), default="alive", server_default="alive")
    fire_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_contribution: Mapped[float | None] = mapped_column(Float, nullable=True)
    density: Mapped[float] = mapped_column(Float)
    mean_activation: Mapped[float] = mapped_column(Float)
    max_activation: Mapped[float] = mapped_column(Float)
    mmcs_with_larger: Mapped[float | None] = mapped_column(Float, nullable=True)
    top_token_text: Mapped[str] = mapped_column(Text, default="")
    histogram: Mapped[dict] = mapped_column(JSON)
    top_tokens: Mapped[list] = mapped_column(JSON)
    logit_promoted: Mapped[list] = mapped_column(JSON)
    logit_suppressed: Mapped[list] = mapped_column(JSON)
    pos_tags: Mapped[list] = mapped_column(JSON)
    neighbours: Mapped[list] = mapped_column(JSON)
    # The index of the representative of its group of near-duplicate alive features (itself when it leads
    # one; training.analysis.duplicates); None for dead and rare features. A group is one distinct feature.
    group_index: Mapped[int | None] = mapped_column(Integer, nullable=True)

    dictionary: Mapped[Dictionary] = relationship(back_populates="features")
    examples: Mapped[list[Example]] = relationship(
        back_populates="feature", cascade="all, delete-orphan", order_by="Example.id"
    )


class Example(Base):
    """One context window of a feature: a top activation (``kind`` "top") or a quantile sample ("quantile").

    ``token_ids`` is little-endian uint16 and ``activations`` little-endian float16, one per token;
    ``center`` is the position of the sampled token inside the window.
    """

    __tablename__ = "examples"
    __table_args__ = (Index("ix_examples_feature", "feature_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(10))
    rank: Mapped[int] = mapped_column(Integer)
    quantile: Mapped[int | None] = mapped_column(Integer, nullable=True)
    position: Mapped[int] = mapped_column(Integer)
    center: Mapped[int] = mapped_column(Integer)
    token_ids: Mapped[bytes] = mapped_column(LargeBinary)
    activations: Mapped[bytes] = mapped_column(LargeBinary)

    feature: Mapped[Feature] = relationship(back_populates="examples")


class Label(Base):
    """One human judgement of one feature. Relabelling adds a row; the latest row per labeller counts."""

    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_feature", "dictionary_hash", "feature_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dictionary_hash: Mapped[str] = mapped_column(String(64))
    feature_index: Mapped[int] = mapped_column(Integer)
    labeller: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(20))
    description: Mapped[str] = mapped_column(Text, default="")
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)
    # The looser reading: one concept covers the top contexts (the verdict reads the whole activation range).
    top_contexts_monosemantic: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    # Seconds the labelling card was visible before the verdict (it takes one only once ready); null for API
    # and imported labels, which had no card on screen.
    seconds_on_screen: Mapped[float | None] = mapped_column(Float, nullable=True)
