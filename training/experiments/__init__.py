"""Whole experiments, each from its inputs to a run directory of artifacts.

- ``toy_experiment``: ``run_toy_experiment``, ``ToyExperimentConfig``: sweeps on toy data with known features;
- ``pipeline``: ``run_pipeline``, ``PipelineConfig``, ``PRESETS``: corpus to LM to SAEs to feature index;
- ``sweep_run``: ``train_run``, ``sweep_settings``: the SAE sweep on any run directory's activations;
- ``distributed``: ``init_replica``, ``train_sweep_distributed``: data parallelism under ``torchrun``;
- ``evidence_report``: ``add_evidence``, ``update_run_metrics``: dead/rare/alive counts in a run's metrics.
"""
