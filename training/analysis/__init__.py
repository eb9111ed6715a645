"""What a trained dictionary says.

- ``metrics``: ``mmcs``, ``mmcs_with_larger``, ``evaluate`` (FVU, L0, dead), ``feature_count_estimate``.
"""
