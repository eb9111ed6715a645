"""Data the experiments start from.

- ``toy``: ``ToyConfig``, ``ToyData``: samples built from known ground-truth features;
- ``corpus``: ``load_corpus``, ``Corpus``, ``CorpusError``, ``corpus_subset``: the Brown corpus or the user's text;
- ``tokenizer``: ``tokenize_corpus``, ``load_tokenized``, ``TokenizedCorpus``: byte-level BPE and token ids on disk.
"""
