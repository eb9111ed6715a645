"""The field's on-disk SAE layouts, so SAEs move between monosemantic, SAELens and sparsify.

- ``raw``: ``RawSAE``, an SAE on raw activations in SAELens's orientation, and the conversions to and from
  our SAEs (which work on activations rescaled to unit mean squared norm);
- ``saelens``: ``write_saelens``, ``read_saelens``: ``cfg.json`` + ``sae_weights.safetensors``;
- ``sparsify``: ``write_sparsify``, ``read_sparsify``: ``cfg.json`` + ``sae.safetensors`` (top-k only);
- ``run_saes``: ``export_run_sae``, ``import_run_sae``: an SAE of a run directory out, a foreign SAE in.
"""
