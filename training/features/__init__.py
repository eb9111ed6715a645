"""The per-feature evidence labellers read.

- ``index``: ``index_run``, ``compute_feature_index``, ``FeatureIndexConfig``, ``load_feature_index``;
- ``stream``: bounded-memory streaming statistics (``RunningTopK``, ``QuantileSampler``, ``FiringCache``);
- ``evidence``: ``EvidenceCriteria``, ``classify_evidence``, ``count_evidence``: dead, rare or alive, defined once.
"""
