"""Gradient-free clients behind a model-as-a-service boundary.

:mod:`.service` is the boundary (prompts and token ids in, pooled features or
label-word logits out, as numpy; usage counted per client), :mod:`.client` the
CMA-ES client, :mod:`.server` the aggregation of search distributions
(FedBPT's rule, or the plain mean of the client means).
"""
