"""The study's tiny language model.

- ``tinylm``: ``TinyLM``, ``TinyLMConfig``, ``train_lm``, ``TrainLMConfig``, ``load_lm``, ``evaluate_lm``,
  ``splice_losses`` (the LM's loss with an SAE's reconstruction spliced into the MLP).
"""
