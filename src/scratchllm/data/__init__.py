"""Data: from raw text to the batches a model trains on.

* :mod:`~scratchllm.data.windows`: the teaching path, one text cut into sliding windows (a torch ``Dataset``);
* :mod:`~scratchllm.data.prepare`: files -> cleaned, filtered, deduplicated token shards + ``meta.json``;
* :mod:`~scratchllm.data.shards`: the shard format and :class:`ShardReader` (resumable, rank-sliced batches);
* :mod:`~scratchllm.data.mixture`: weighted sampling across several prepared datasets;
* :mod:`~scratchllm.data.stdlib_corpus`: a corpus every machine has (Python's standard-library docstrings);
* :mod:`~scratchllm.data.download`: a few public files, checked by sha256 and cached.

Submodules import torch only where they need it, so ``import scratchllm.data.prepare`` stays light.
"""
