"""Activations of one model site for every token, on disk, and batches of them for SAEs.

- ``harvest``: ``harvest_activations``, ``load_activations``, ``ActivationSource``: the TinyLM's MLP activations;
- ``hf_harvest``: ``harvest_hf``, ``HFHarvestConfig``: any module of a local transformers model;
- ``store``: ``harvest_shard``, ``merge_store``, ``ShardedSource``: the sharded store several workers write.
"""
