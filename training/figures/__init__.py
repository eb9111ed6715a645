"""PNG figures drawn from plain records.

- ``sweep``: ``write_figures``, ``write_heatmaps``, ``plot_mmcs_with_larger``, ``plot_training_curve``,
  ``plot_heldout_objective``;
- ``recovery``: ``write_recovery_figures``: recovery order and initialisation schemes.
"""
