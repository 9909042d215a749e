"""``python -m scratchllm`` is the same as the ``scratchllm`` command (torchrun needs the module form)."""

import sys

from scratchllm.cli import main

if __name__ == "__main__":
    sys.exit(main())
