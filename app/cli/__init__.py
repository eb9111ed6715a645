"""The ``monosemantic`` command line.

- ``commands``: ``main``, ``build_parser``: every subcommand (toy, run, index, labels, db, serve);
- ``steps``: the pipeline steps that also run alone (harvest, train-lm, train), under ``torchrun`` too;
- ``sae``: ``sae export`` and ``sae import`` in SAELens and sparsify layouts;
- ``arguments``: ``CommandParser`` and the argument types (``positive_int``, ``comma_list``, ...).
"""
