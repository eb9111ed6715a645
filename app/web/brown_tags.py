"""What the Brown corpus's part-of-speech tags mean, for the chips of a feature page.

A Brown tag is a base tag (``nn``, ``vbd``, ``.``) with optional marks: a ``-tl`` suffix for a word in a
title, ``-hl`` in a headline, ``-nc`` for a cited word, a ``fw-`` prefix for a foreign word, a ``*`` for a
negation, and ``+`` joining the tags of a contraction (``ppss+md``: "I'll").
"""

from __future__ import annotations

BASE_TAGS = {
    ".": "sentence end (. ? ! ;)",
    ",": "comma",
    ":": "colon",
    "(": "opening bracket",
    ")": "closing bracket",
    "--": "dash",
    "'": "quote",
    "''": "closing quote",
    "``": "opening quote",
    "abl": "pre-qualifier (quite, rather)",
    "abn": "pre-quantifier (half, all)",
    "abx": "pre-quantifier (both)",
    "ap": "post-determiner (many, next)",
    "at": "article (the, a)",
    "be": "be",
    "bed": "were",
    "bedz": "was",
    "beg": "being",
    "bem": "am",
    "ben": "been",
    "ber": "are",
    "bez": "is",
    "cc": "coordinating conjunction (and, or)",
    "cd": "cardinal number",
    "cs": "subordinating conjunction (if, that)",
    "do": "do",
    "dod": "did",
    "doz": "does",
    "dt": "singular determiner (this, that)",
    "dti": "determiner (some, any)",
    "dts": "plural determiner (these, those)",
    "dtx": "determiner (either, neither)",
    "ex": "existential there",
    "hv": "have",
    "hvd": "had",
    "hvg": "having",
    "hvn": "had (past participle)",
    "hvz": "has",
    "in": "preposition",
    "jj": "adjective",
    "jjr": "comparative adjective",
    "jjs": "superlative adjective (semantically)",
    "jjt": "superlative adjective",
    "md": "modal auxiliary (can, should)",
    "nil": "no tag",
    "nn": "singular noun",
    "nn$": "possessive singular noun",
    "nns": "plural noun",
    "nns$": "possessive plural noun",
    "np": "proper noun",
    "np$": "possessive proper noun",
    "nps": "plural proper noun",
    "nps$": "possessive plural proper noun",
    "nr": "adverbial noun (home, today)",
    "nrs": "plural adverbial noun",
    "od": "ordinal number",
    "pn": "nominal pronoun (everybody, nothing)",
    "pn$": "possessive nominal pronoun",
    "pp$": "possessive determiner (my, your)",
    "pp$$": "possessive pronoun (mine, yours)",
    "ppl": "singular reflexive pronoun",
    "ppls": "plural reflexive pronoun",
    "ppo": "object pronoun (me, him)",
    "pps": "third-person singular subject pronoun (he, it)",
    "ppss": "other subject pronoun (I, we, they)",
    "ql": "qualifier (very, too)",
    "qlp": "post-qualifier (enough)",
    "rb": "adverb",
    "rbr": "comparative adverb",
    "rbt": "superlative adverb",
    "rn": "nominal adverb (here, then)",
    "rp": "adverb or particle (about, off, up)",
    "to": "infinitive marker to",
    "uh": "interjection",
    "vb": "verb, base form",
    "vbd": "verb, past tense",
    "vbg": "verb, present participle or gerund",
    "vbn": "verb, past participle",
    "vbz": "verb, third-person singular present",
    "wdt": "wh- determiner (what, which)",
    "wp$": "possessive wh- pronoun (whose)",
    "wpo": "object wh- pronoun (whom)",
    "wps": "subject wh- pronoun (who)",
    "wql": "wh- qualifier (how)",
    "wrb": "wh- adverb (when, where)",
}
SUFFIXES = {"-tl": "in a title", "-hl": "in a headline", "-nc": "cited word"}


def describe_tag(tag: str) -> str:
    """A Brown tag in words ("nn-tl" -> "singular noun, in a title"); an unknown tag is returned as it is."""
    if not tag:
        return "no tag recorded"
    marks = []
    rest = tag.lower()
    if rest.startswith("fw-"):
        marks.append("foreign word")
        rest = rest[3:]
    for suffix, meaning in SUFFIXES.items():
        if rest.endswith(suffix) and rest != suffix:
            marks.append(meaning)
            rest = rest[: -len(suffix)]
    negated = rest.endswith("*") and len(rest) > 1
    rest = rest.rstrip("*") if negated else rest
    parts = [BASE_TAGS.get(part, part) for part in rest.split("+")] if rest not in BASE_TAGS else [BASE_TAGS[rest]]
    words = " + ".join(parts)
    if negated:
        marks.append("negated")
    return ", ".join([words, *marks])
