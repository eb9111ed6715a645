"""What the REST API and the pages both do with the database; neither calls the other.

- ``queries``: dictionaries, feature pages and details, labels, the next feature to label, estimates;
- ``feature_reads``: the prepared reads a feature view makes on every request;
- ``estimates``: Wilson intervals, the labellable estimate, agreement (kappa), proportion comparisons;
- ``ingest``: ``ingest_run``: a run's feature index into the database;
- ``labels_io``: label export and import as CSV or JSONL;
- ``inspector``: ``ActivationInspector``: which features fire on a text;
- ``examples``: the stored form of example contexts;
- ``schemas``: the records services return and the REST API serves (pydantic).
"""
