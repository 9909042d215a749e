"""One exception type for every mistake a user can make.

The CLI prints a :class:`ScratchLLMError` as a single line (no traceback) and exits non-zero, so every message
must say *where* the problem is (file, line, field, tensor name) and *what was expected*.
"""


class ScratchLLMError(Exception):
    """A problem with the user's input, files or settings, explained in one line."""
