"""Self-attention, from the textbook version to the fused fast path, side by side.

Read top to bottom, each class adds one idea to the previous one:

1. :func:`simplified_self_attention` - no weights: each token's output is an average of all tokens, weighted by
   the softmax of dot products. Shows *what* attention computes.
2. :class:`SelfAttention` - trainable query/key/value projections and the ``1/sqrt(d_k)`` scale, so the model
   learns *which* similarities matter and the softmax does not saturate as the width grows.
3. :class:`CausalAttention` - a mask hides future tokens (a language model must not peek at what it predicts)
   and dropout regularises the attention weights.
4. :class:`MultiHeadAttentionWrapper` - several causal heads run independently and their outputs are
   concatenated; easy to read, slow (one small matmul per head).
5. :class:`MultiHeadAttention` - the same maths fused: one QKV projection, a reshape that splits heads, one
   batched matmul, and an output projection. ``use_sdpa=True`` (what :class:`~scratchllm.model.GPTModel` uses)
   calls :func:`torch.nn.functional.scaled_dot_product_attention`, which picks a fused kernel (flash attention
   on GPU, a blocked kernel on CPU) and never materialises the full ``T x T`` matrix when it does not have to.
   It also reads and writes a :class:`KVCache` layer during generation, and carries the Llama family's
   options: grouped-query attention, rotary embeddings and q/k norm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchllm.model.norms import RMSNorm
from scratchllm.model.rope import apply_rope


# ------------------------------------------------------------------------------------------ 1. no weights
def simplified_self_attention(x: Tensor) -> Tensor:
    """Attention without trainable weights: ``softmax(x x^T) x``.

    Every output row is a weighted average of all input rows, the weights being how similar (dot product) the
    two tokens' embeddings are. ``x`` is ``[T, d]`` or ``[B, T, d]``.
    """
    scores = x @ x.transpose(-2, -1)
    weights = torch.softmax(scores, dim=-1)
    return weights @ x


class SimplifiedSelfAttention(nn.Module):
    """Module form of :func:`simplified_self_attention` (it has no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        return simplified_self_attention(x)


# ------------------------------------------------------------------------------------------ 2. trainable
class SelfAttention(nn.Module):
    """Scaled dot-product self-attention with trainable ``W_q``, ``W_k``, ``W_v``.

    Queries ask, keys answer, values are what gets mixed. Scores are divided by ``sqrt(d_out)`` so that their
    variance stays near 1 whatever the width, which keeps the softmax out of its flat, zero-gradient regions.
    """

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
        return torch.softmax(scores, dim=-1) @ v


# ------------------------------------------------------------------------------------------ 3. causal
class CausalAttention(nn.Module):
    """:class:`SelfAttention` plus a causal mask and dropout on the attention weights.

    Position ``t`` may only look at positions ``<= t``: scores above the diagonal are set to ``-inf`` before the
    softmax, so their weights are exactly zero and the remaining weights still sum to one. Dropout zeroes random
    attention weights during training only (``model.eval()`` turns it off).
    """

    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float = 0.0, qkv_bias: bool = False
    ) -> None:
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        # A buffer moves with .to(device) but is not a parameter; persistent=False keeps it out of checkpoints.
        mask = torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[-2]
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
        scores = scores.masked_fill(self.mask[:T, :T], float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return weights @ v


# ------------------------------------------------------------------------------------------ 4. many heads
class MultiHeadAttentionWrapper(nn.Module):
    """``num_heads`` independent :class:`CausalAttention` heads whose outputs are concatenated.

    Each head can attend to a different kind of relation. The output width is ``num_heads * d_out``.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        num_heads: int,
        dropout: float = 0.0,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([head(x) for head in self.heads], dim=-1)


# ------------------------------------------------------------------------------------------ 5. fused
class KVCache:
    """Preallocated keys and values for every layer, so generating a token attends to the past without
    recomputing it.

    ``k`` and ``v`` are ``[n_layers, B, n_kv_heads, max_len, head_dim]``; positions ``[0, length)`` are filled.
    With grouped-query attention only the key/value heads are stored, which is the point of having fewer.
    ``pad`` (``[B]``) counts the left-padding slots of each row: those keys are never attended to, and a row's
    token positions start after them, so a batch of prompts of different lengths behaves like each prompt alone.
    The model advances ``length`` after a forward pass has written every layer.

    A serving engine keeps one cache as a *pool of slots*, one independent sequence per row
    (:mod:`scratchllm.inference.engine`). :meth:`rows` gives a cache over some of its rows that shares the
    storage; with ``lengths`` (``[rows]``, each row's own fill) a forward pass appends each row's tokens at that
    row's own position and each row attends only to its own keys, so sequences of any lengths decode together
    in one batch while the others wait, join and leave.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        pad: Tensor | None = None,
    ) -> None:
        shape = (n_layers, batch_size, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0
        self.pad = left_padding(pad, device)
        self.lengths: Tensor | None = None

    static = False  # see StaticKVCache

    def reset(self, pad: Tensor | None = None) -> None:
        """Forget every position (the buffers are reused, not reallocated)."""
        self.length = 0
        self.pad = left_padding(pad, self.k.device)

    def rows(self, start: int, stop: int, lengths: Tensor | None = None) -> KVCache:
        """A cache over rows ``[start, stop)`` sharing this one's storage (what it writes lands here).

        Without ``lengths`` the view starts empty (``length`` 0), for filling one slot with a prompt; with
        ``lengths`` (``[stop - start]`` integers, updated in place by the model) every row continues from its
        own length.
        """
        view = object.__new__(KVCache)
        view.k, view.v = self.k[:, start:stop], self.v[:, start:stop]
        view.max_len, view.length, view.pad, view.lengths = self.max_len, 0, None, lengths
        return view

    def copy_row(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` positions of row ``src`` into row ``dst`` (every layer)."""
        self.k[:, dst, :, :length] = self.k[:, src, :, :length]
        self.v[:, dst, :, :length] = self.v[:, src, :, :length]

    def advance(self, n: int) -> None:
        """Record that a forward pass wrote ``n`` more positions (of every row)."""
        if self.lengths is not None:
            self.lengths += n
        else:
            self.length += n

    def write(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Store this call's keys/values ``[B, n_kv_heads, T, head_dim]`` for ``layer``; return every key and
        value to attend to and the mask that goes with them (None: plain causal, or a single query that sees
        the whole cache)."""
        T = k.shape[2]
        if self.lengths is None:
            start, end = self.length, self.length + T
            self.k[layer, :, :, start:end] = k
            self.v[layer, :, :, start:end] = v
            return self.k[layer, :, :, :end], self.v[layer, :, :, :end], attention_mask(T, start, self.pad, k.device)
        # One sequence per row: row b writes at its own positions lengths[b] + [0, T) and sees keys up to them.
        positions = self.lengths[:, None] + torch.arange(T, device=k.device)  # [B, T]
        rows = torch.arange(k.shape[0], device=k.device)[:, None]
        self.k[layer, rows, :, positions] = k.transpose(1, 2)  # indexed slots come first: [B, T, G, hd]
        self.v[layer, rows, :, positions] = v.transpose(1, 2)
        end = int(self.lengths.max()) + T
        keys = torch.arange(end, device=k.device)
        mask = keys[None, None, :] <= positions[:, :, None]  # [B, T, end]
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end], mask[:, None]


class StaticKVCache:
    """A KV cache whose shapes never change, for decoding steps compiled with ``torch.compile``.

    A :class:`KVCache` returns the keys filled so far, a tensor that grows by one position per step, and
    tracks its fill in a Python int: a compiled graph would be rebuilt (or made shape-generic and slower) at
    every step. Here every call attends over all ``max_len`` slots, the unwritten ones masked, and the fill
    is a tensor (``position``, the same for every row: a batch's prompts are left-padded to one length), so
    one graph serves every step. Each layer has its own key and value tensors, and a step writes its slot
    with ``index_copy_``: the compiler then updates the cache in place instead of copying it every step.
    Masked slots cost a little attention work and nothing else.

    The interface the model uses is :class:`KVCache`'s: ``write``, ``advance``, ``reset``, ``max_len``,
    ``pad``, ``lengths`` (always None), plus ``static`` and ``position``.
    """

    static = True

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        pad: Tensor | None = None,
    ) -> None:
        shape = (batch_size, n_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.max_len = max_len
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # slots filled, in every row
        self.lengths = None
        self.pad: Tensor | None = None
        self.reset(pad)

    def reset(self, pad: Tensor | None = None) -> None:
        """Forget every position (the buffers are reused, not reallocated)."""
        self.position.zero_()
        self.pad = left_padding(pad, self.position.device)

    def advance(self, n: int) -> None:
        """Record that a forward pass wrote ``n`` more positions (of every row)."""
        self.position += n

    def write(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Store this call's keys/values ``[B, n_kv_heads, T, head_dim]`` at slots ``position + [0, T)`` of
        ``layer``; return the layer's whole keys and values and the mask ``[B or 1, 1, T, max_len]``."""
        slots = self.position + torch.arange(k.shape[2], device=k.device)  # [T]
        self.k[layer].index_copy_(2, slots, k)
        self.v[layer].index_copy_(2, slots, v)
        keys = torch.arange(self.max_len, device=k.device)  # unwritten slots are past every query: masked
        return self.k[layer], self.v[layer], causal_mask(slots, keys, self.pad)


class Packing:
    """A batch of rows of different lengths stored back to back, without padding.

    A right-padded batch ``[B, T]`` wastes work on every padding slot, and most of a transformer's work (norms,
    projections, the MLP) is per token, so it can run on the real tokens alone: ``[1, N]`` with ``N`` the sum of
    the row lengths. Only attention needs rows: :meth:`unpack` scatters its inputs into the padded layout (padding
    slots are zeros, past every real token, so causal attention never lets a real query see them) and
    :meth:`pack` gathers its outputs back. The rows' real tokens come first in each row (right padding).
    """

    def __init__(self, lengths: Sequence[int], device: torch.device | str = "cpu") -> None:
        if not lengths or min(lengths) < 1:
            raise ValueError(f"every packed row needs at least one token, got lengths {list(lengths)}")
        self.lengths = list(lengths)
        self.batch, self.width = len(lengths), max(lengths)
        counts = torch.tensor(self.lengths, device=device)
        rows = torch.repeat_interleave(torch.arange(self.batch, device=device), counts)
        starts = torch.cumsum(counts, 0) - counts
        cols = torch.arange(int(counts.sum()), device=device) - starts[rows]
        self.index = rows * self.width + cols  # [N]: where each packed token sits in the flattened [B, T] grid
        self.last = starts + counts - 1  # [B]: each row's last token in the packed order

    def unpack(self, x: Tensor) -> Tensor:
        """``[1, N, ...]`` -> ``[B, T, ...]`` with zeros in the padding slots."""
        out = x.new_zeros(self.batch * self.width, *x.shape[2:])
        out[self.index] = x[0]
        return out.view(self.batch, self.width, *x.shape[2:])

    def pack(self, x: Tensor) -> Tensor:
        """``[B, T, ...]`` -> ``[1, N, ...]``: the real slots only."""
        return x.reshape(self.batch * self.width, *x.shape[2:])[self.index][None]


def left_padding(pad: Tensor | None, device: torch.device | str) -> Tensor | None:
    """``pad`` (left-padding slots per row) on ``device``, or None when no row has any (no mask needed)."""
    return pad.to(device) if pad is not None and bool((pad > 0).any()) else None


def causal_mask(q_pos: Tensor, k_pos: Tensor, pad: Tensor | None) -> Tensor:
    """Boolean mask ``[B or 1, 1, q, k]`` (True = may attend) for queries at slots ``q_pos`` and keys at ``k_pos``.

    A query sees keys at or before its own slot; with left padding, a real query never sees a padding key (a
    padding query sees everything causal, so no softmax row is empty; its output is unused).
    """
    mask = k_pos[None, :] <= q_pos[:, None]  # [q, k]
    if pad is None:
        return mask[None, None]
    key_real = k_pos[None, :] >= pad[:, None]  # [B, k]
    query_pad = q_pos[None, :] < pad[:, None]  # [B, q]
    return (mask[None] & (key_real[:, None, :] | query_pad[:, :, None]))[:, None]


def attention_mask(q_len: int, start: int, pad: Tensor | None, device: torch.device | str) -> Tensor | None:
    """:func:`causal_mask` for queries at slots ``start + [0, q_len)`` over keys ``[0, start + q_len)``, or None
    when plain causal attention will do."""
    if pad is None and (q_len == 1 or start == 0):
        return None  # q_len == 1: the single query sees the whole cache; start == 0: is_causal does it
    q_pos = torch.arange(start, start + q_len, device=device)
    return causal_mask(q_pos, torch.arange(start + q_len, device=device), pad)


class MultiHeadAttention(nn.Module):
    """Fused causal multi-head attention: one QKV projection, split into heads, attend, project back.

    Mathematically the same as :class:`MultiHeadAttentionWrapper` (heads are slices of one big projection
    instead of separate modules); the tests prove it with copied weights. ``use_sdpa=False`` keeps the explicit
    ``softmax(q k^T / sqrt(d)) v`` for reading; ``use_sdpa=True`` hands the same computation to PyTorch's fused
    kernel, which is faster and uses less memory.

    The Llama family adds three options, all off by default (GPT-2):

    * **grouped-query attention** (``num_kv_heads`` < ``num_heads``): each key/value head is shared by
      ``num_heads / num_kv_heads`` query heads. Quality stays close to full multi-head attention, and the KV
      cache, which dominates memory when generating long sequences, shrinks by the same factor
      (``num_kv_heads=1`` is multi-query attention).
    * **rotary embeddings**: ``forward`` gets ``rope=(cos, sin)`` and rotates queries and keys (see
      :mod:`scratchllm.model.rope`); the cache stores keys already rotated.
    * **q/k norm** (Qwen3): an RMSNorm over each query and key head before the rotation keeps the attention
      logits bounded.

    The projection is named ``qkv`` (rows ordered: all query heads, then key heads, then value heads), the
    output one ``out_proj``; ``q_norm``/``k_norm`` exist only with ``qk_norm``.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        num_heads: int,
        dropout: float = 0.0,
        qkv_bias: bool = False,
        use_sdpa: bool = True,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        out_bias: bool = True,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        num_kv_heads = num_kv_heads or num_heads
        if head_dim is None:
            if d_out % num_heads != 0:
                raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
            head_dim = d_out // num_heads
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"num_kv_heads ({num_kv_heads}) must divide num_heads ({num_heads})")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.d_out = d_out
        self.dropout = dropout
        self.use_sdpa = use_sdpa
        self.qkv = nn.Linear(d_in, (num_heads + 2 * num_kv_heads) * head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(num_heads * head_dim, d_out, bias=out_bias)
        if qk_norm:
            self.q_norm = RMSNorm(head_dim, norm_eps)
            self.k_norm = RMSNorm(head_dim, norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(
        self,
        x: Tensor,
        kv_cache: KVCache | StaticKVCache | None = None,
        layer: int = 0,
        pad: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        packing: Packing | None = None,
    ) -> Tensor:
        """``x`` ``[B, T, d_in]`` -> ``[B, T, d_out]``.

        With ``kv_cache``, this call's keys/values are written at slots ``[cache.length, cache.length + T)``
        of layer ``layer`` (each row's own ``cache.lengths[b]`` onwards, for a pool of sequences) and the
        queries attend to everything cached so far. ``pad`` (``[B]``) is the left
        padding per row when no cache is used (with a cache, the cache's own ``pad`` applies). ``rope`` is
        the ``(cos, sin)`` pair of this call's positions, for models with rotary embeddings. With ``packing``,
        ``x`` is ``[1, N, d_in]``: the projections run on the real tokens only, attention on the padded rows.
        """
        qkv = self.qkv(x)
        if packing is not None:
            qkv = packing.unpack(qkv)
        B, T, _ = qkv.shape
        H, G, hd = self.num_heads, self.num_kv_heads, self.head_dim
        # [B, T, (H + 2G) * hd] -> [B, H + 2G, T, hd], then query, key and value heads are slices (views).
        qkv = qkv.view(B, T, H + 2 * G, hd).transpose(1, 2)
        q, k, v = qkv.split([H, G, G], dim=1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v, mask = kv_cache.write(layer, k, v)
        else:
            mask = attention_mask(T, 0, pad, x.device)
        causal = mask is None and T > 1
        p = self.dropout if self.training else 0.0
        if self.use_sdpa and T == 1 and G != H:
            # Decoding one token: a group's H/G query heads become H/G query rows of its one key/value head,
            # which is plain attention, with no copy of the cache (PyTorch's CPU kernel for enable_gqa is
            # about 5x slower in bf16 here).
            y = F.scaled_dot_product_attention(q.reshape(B, G, H // G, hd), k, v, attn_mask=mask, dropout_p=p)
            y = y.view(B, H, 1, hd)
        elif self.use_sdpa:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal, enable_gqa=G != H
            )
        else:
            if G != H:  # each key/value head serves H / G consecutive query heads
                k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)
            scores = q @ k.transpose(-2, -1) / math.sqrt(hd)
            if mask is None and causal:
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = F.dropout(torch.softmax(scores, dim=-1), p=p, training=p > 0)
            y = weights @ v
        y = y.transpose(1, 2).reshape(B, T, H * hd)
        return self.out_proj(packing.pack(y) if packing is not None else y)
