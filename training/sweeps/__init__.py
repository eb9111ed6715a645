"""Training a sweep of SAEs in one pass: every SAE sees the same batches.

- ``trainer``: ``train_sweep``, ``TrainConfig``, ``SweepRun``, ``BatchSource``, ``SweepObserver``;
- ``optim``: ``Adam`` over hand-computed gradients and the ``learning_rate`` schedule;
- ``convergence``: ``HeldOutTracker``, ``sweep_convergence``: the objective on fixed held-out rows over training;
- ``recovery``: ``RecoveryTracker``, ``recovery_metrics``: when each ground-truth feature is first found;
- ``init_comparison``: ``init_comparison``: samples each initialisation needs to reach an MMCS.
"""
