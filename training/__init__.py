"""Offline library of monosemantic: toy data, sparse autoencoders, sweeps and metrics."""
