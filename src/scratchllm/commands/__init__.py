"""Typed functions behind each ``scratchllm`` subcommand (see :mod:`scratchllm.cli`).

Keep these thin: parse nothing by hand, import heavy modules inside the function, and delegate the real work to
the library so that every command is also a clean Python API.
"""
