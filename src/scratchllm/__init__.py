"""scratchllm: a GPT-style language model built from scratch, from raw text to a served model.

The package is laid out as the pipeline it implements (``tokenizer <- data <- model <- train <- recipes <- cli``);
each stage is importable on its own, and the ``scratchllm`` command drives them all.
"""

from scratchllm.errors import ScratchLLMError

__version__ = "0.1.0"
__all__ = ["ScratchLLMError", "__version__"]
