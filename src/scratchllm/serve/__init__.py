"""Serving a model to people and programs.

* :mod:`scratchllm.serve.app` - the OpenAI-compatible HTTP server (FastAPI + uvicorn, server-sent events) over
  the continuous-batching :class:`~scratchllm.inference.Engine`, with the chat page (``static/index.html``) at
  ``/``;
* :mod:`scratchllm.serve.protocol` - the request bodies as strict pydantic models and OpenAI's error JSON;
* :mod:`scratchllm.serve.chat` - the terminal chat behind ``scratchllm chat``.

The server knows nothing of training: it gets a model and its tokenizer from :func:`scratchllm.weights.load`.
"""
