"""The offline library of monosemantic: every stage of the experiment, writing artifacts into a run directory.

One subpackage per stage, each importing only the stages before it:

- ``runtime``: the compute device every stage runs on, and how large tensors are allocated;
- ``data``: the toy generator with known features, the corpus and the tokenizer;
- ``lm``: the tiny language model, its training and its spliced losses;
- ``activations``: harvesting an MLP site's activations to disk (TinyLM or any transformers model);
- ``saes``: the sparse autoencoder architectures, their initialisation and dead-latent resampling;
- ``analysis``: metrics of a dictionary (MMCS, FVU, L0, dead) and the feature-count estimates;
- ``sweeps``: training many SAEs in one pass over the same batches, and what watches that training;
- ``features``: the feature index (top contexts, quantiles, logit effects) for the app;
- ``figures``: PNG figures drawn from plain records;
- ``experiments``: the toy experiment, the LM pipeline and its presets, sweeps on any run, data parallelism;
- ``formats``: SAEs in and out of the field's on-disk layouts (SAELens, sparsify).

No module here imports ``app``: the run directory is the seam between the two. Importing the package
turns on huge pages for large CPU tensors (``runtime.memory``; ``THP_MEM_ALLOC_ENABLE=0`` turns them off).
"""

from training.runtime.memory import use_huge_pages

use_huge_pages()
