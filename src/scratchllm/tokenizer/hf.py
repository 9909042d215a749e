"""Hugging Face byte-level BPE tokenizers (``tokenizer.json`` + ``tokenizer_config.json``), encoded by our own code.

The open models (Llama 3, Qwen2/3, SmolLM2) ship their tokenizer as one ``tokenizer.json`` describing a pipeline:

1. *normalizer* (none, or Unicode NFC for Qwen);
2. *added tokens* (``<|im_start|>``...) cut out of the text before anything else;
3. *pre-tokenizer*: regex splits, so merges never cross word boundaries (GPT-2's regex, Llama 3's, Qwen2's,
   or SmolLM2's "every digit alone, then GPT-2's regex");
4. *model*: byte-level BPE. Each pre-token becomes its UTF-8 bytes, then the adjacent pair with the lowest
   **merge rank** is merged until no listed pair is left.

Step 4 differs subtly from tiktoken's rule in :mod:`scratchllm.tokenizer.bpe` ("merge the pair whose
*concatenation* has the lowest id"): a vocabulary trained by Hugging Face's trainer may contain ``abc`` made from
``a + bc`` while ``ab + c`` is not a merge, so the two rules can disagree. Here the merge table is keyed by the
pair, exactly as ``tokenizers`` does it. The byte alphabet (:func:`bytes_to_unicode`), the special-token
contract and the decoder are shared with the other tokenizers.

The same :class:`HFTokenizer` constructor builds the tokenizer of a GGUF file (:mod:`scratchllm.weights.gguf`),
and the tokenizer is written back as a ``tokenizer.json`` that the ``tokenizers`` library loads.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer.base import ENDOFTEXT, Tokenizer, read_json, special_regex, write_json
from scratchllm.tokenizer.bpe import GPT2_PATTERN, BPETokenizer
from scratchllm.tokenizer.gpt2 import bytes_to_unicode

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"

#: GPT-2's pre-tokenizer regex as ``tokenizers``' ByteLevel(use_regex=True) applies it.
GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
#: Llama 3's (tiktoken cl100k-style) split: numbers in groups of up to three, case-insensitive contractions.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: Qwen2's split: Llama 3's with every digit on its own.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_NORMALIZERS = ("NFC", "NFD", "NFKC", "NFKD")
_NO_RANK = (1 << 62, -1)


# ---------------------------------------------------------------------------------------------- pipeline
def byte_level(add_prefix_space: bool = False, use_regex: bool = True) -> dict[str, Any]:
    """The ``tokenizer.json`` spelling of a ByteLevel pre-tokenizer."""
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": True, "use_regex": use_regex}


def regex_split(pattern: str) -> dict[str, Any]:
    """The ``tokenizer.json`` spelling of "split on this regex, keeping every match as its own piece"."""
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


def _split(text: str, pattern: regex.Pattern[str], behavior: str) -> list[str]:
    """One ``Split`` step: cut ``text`` at every match of ``pattern``; ``behavior`` says where a match goes."""
    spans = [m.span() for m in pattern.finditer(text) if m.end() > m.start()]
    if behavior == "Contiguous":  # adjacent matches form one delimiter, kept as its own piece
        joined: list[tuple[int, int]] = []
        for a, b in spans:
            if joined and joined[-1][1] == a:
                joined[-1] = (joined[-1][0], b)
            else:
                joined.append((a, b))
        spans, behavior = joined, "Isolated"
    pieces: list[str] = []
    start = 0
    for a, b in spans:
        gap, hit = text[start:a], text[a:b]
        if behavior == "Isolated":
            pieces += [gap, hit]
        elif behavior == "Removed":
            pieces.append(gap)
        elif behavior == "MergedWithPrevious":
            pieces.append(gap + hit)
        else:  # MergedWithNext: the match starts the next piece
            pieces.append(gap)
            start = a
            continue
        start = b
    pieces.append(text[start:])
    return [p for p in pieces if p]


class PreTokenizer:
    """A ``tokenizer.json`` pre-tokenizer (ByteLevel, Split, Digits, or a Sequence of them) as a function.

    ``steps`` cut every current piece into smaller ones, in order; ``byte_level`` says a ByteLevel step was seen
    (required: without it the vocabulary is not spelled in GPT-2's byte alphabet).
    """

    def __init__(self, spec: dict[str, Any] | None, where: str) -> None:
        self.spec = spec
        self.steps: list[Callable[[str], list[str]]] = []
        #: what the steps do, independent of spelling (``Digits`` and an equivalent ``Split`` compare equal)
        self.signature: list[tuple[str, ...]] = []
        self.byte_level = False
        if spec is not None:
            self._add(spec, f"{where}: pre_tokenizer")

    def _add(self, spec: Any, where: str) -> None:
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind == "Sequence":
            for i, step in enumerate(spec.get("pretokenizers") or []):
                self._add(step, f"{where}.pretokenizers[{i}]")
        elif kind == "ByteLevel":
            self.byte_level = True
            prefix = bool(spec.get("add_prefix_space", False))
            if prefix:
                self.signature.append(("prefix_space",))
                self.steps.append(lambda s: [s if s.startswith(" ") else " " + s])
            if spec.get("use_regex", True):
                self._add_split(GPT2_SPLIT, "Isolated", where)
        elif kind == "Digits":
            self._add_split(r"\p{N}" if spec.get("individual_digits") else r"\p{N}+", "Isolated", where)
        elif kind == "Split":
            pattern = spec.get("pattern") or {}
            behavior = spec.get("behavior")
            if spec.get("invert"):
                raise ScratchLLMError(f"{where}: Split with invert=true is not supported")
            if behavior not in ("Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"):
                raise ScratchLLMError(f"{where}.behavior: unknown Split behavior {behavior!r}")
            if "Regex" in pattern:
                source = pattern["Regex"]
            elif "String" in pattern:
                source = regex.escape(pattern["String"])
            else:
                raise ScratchLLMError(f"{where}.pattern: expected {{'Regex': ...}} or {{'String': ...}}")
            self._add_split(source, behavior, f"{where}.pattern")
        else:
            raise ScratchLLMError(
                f"{where}.type: unsupported pre-tokenizer {kind!r}; expected ByteLevel, Split, Digits or Sequence "
                "(byte-level BPE tokenizers)"
            )

    def _add_split(self, source: str, behavior: str, where: str) -> None:
        try:
            compiled = regex.compile(source)
        except regex.error as exc:
            raise ScratchLLMError(f"{where}: invalid regex {source!r} ({exc})") from None
        self.signature.append(("split", source, behavior))
        self.steps.append(lambda s: _split(s, compiled, behavior))

    def __call__(self, text: str) -> list[str]:
        pieces = [text]
        for step in self.steps:
            pieces = [p for piece in pieces for p in step(piece)]
        return pieces


def _normalizer(spec: Any, where: str) -> Callable[[str], str] | None:
    """Unicode normal forms (alone or in a Sequence); anything else is refused."""
    if spec is None:
        return None
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind in _NORMALIZERS:
        return lambda s: unicodedata.normalize(kind, s)
    if kind == "Sequence":
        steps = [_normalizer(n, f"{where}.normalizers[{i}]") for i, n in enumerate(spec.get("normalizers") or [])]
        active = [s for s in steps if s is not None]

        def run(text: str) -> str:
            for step in active:
                text = step(text)
            return text

        return run
    raise ScratchLLMError(f"{where}.type: unsupported normalizer {kind!r}; expected one of {_NORMALIZERS}")


# ---------------------------------------------------------------------------------------------- tokenizer
@dataclass(frozen=True)
class AddedToken:
    """A token matched whole in the text before pre-tokenization (``special`` ones obey ``allowed_special``)."""

    content: str
    id: int
    special: bool = True


class HFTokenizer(Tokenizer):
    """Byte-level BPE with merge ranks keyed by pair, as Hugging Face ``tokenizers`` encodes it.

    Built by :func:`load_hf_tokenizer` / :func:`from_tokenizer_json`, :func:`scratchllm.weights.gguf.gguf_tokenizer`
    and :func:`to_hf_tokenizer`; ``pre_tokenizer`` and ``normalizer`` are given in ``tokenizer.json`` spelling.

    Attributes beyond :class:`Tokenizer`: ``bos_token`` / ``eos_token`` / ``pad_token`` (text or None),
    ``add_bos_token`` (whether the model expects BOS before a prompt; :meth:`encode` never adds it by itself),
    ``chat_template`` (Jinja source or None), ``vocab`` (token text in the byte alphabet -> id), ``merges``.
    """

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[tuple[str, str]],
        pre_tokenizer: dict[str, Any] | None,
        added_tokens: Sequence[AddedToken] = (),
        normalizer: dict[str, Any] | None = None,
        ignore_merges: bool = False,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        add_bos_token: bool = False,
        chat_template: str | None = None,
        where: str = "tokenizer",
    ) -> None:
        self.where = where
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        self.added_tokens = list(added_tokens)
        self.ignore_merges = ignore_merges
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        self.add_bos_token = add_bos_token
        self.chat_template = chat_template
        self.normalizer_spec = normalizer
        self._normalize = _normalizer(normalizer, f"{where}: normalizer")
        self.pre_tokenizer = PreTokenizer(pre_tokenizer, where)
        if not self.pre_tokenizer.byte_level:
            raise ScratchLLMError(
                f"{where}: pre_tokenizer has no ByteLevel step; only byte-level BPE tokenizers are supported"
            )

        byte_of = {ch: b for b, ch in bytes_to_unicode().items()}
        self._decoder: dict[int, bytes] = {}
        self._byte_ids: dict[int, int] = {}
        for token, i in self.vocab.items():
            try:
                self._decoder[i] = bytes(byte_of[ch] for ch in token)
            except KeyError:
                self._decoder[i] = token.encode("utf-8")  # e.g. "<|im_start|>" spelled outside the byte alphabet
            if len(token) == 1 and token in byte_of:
                self._byte_ids[byte_of[token]] = i
        self._pairs: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b) in enumerate(self.merges):
            ids = (self.vocab.get(a), self.vocab.get(b), self.vocab.get(a + b))
            if None in ids:
                missing = (a, b, a + b)[ids.index(None)]
                raise ScratchLLMError(f"{where}: merges[{rank}] {a + ' ' + b!r} uses {missing!r}, not in the vocab")
            self._pairs.setdefault((ids[0], ids[1]), (rank, ids[2]))
        self.special_tokens = {t.content: t.id for t in self.added_tokens if t.special}
        self._added_plain = {t.content: t.id for t in self.added_tokens if not t.special}
        for t in self.added_tokens:
            self._decoder[t.id] = t.content.encode("utf-8")
        self.vocab_size = max(self._decoder) + 1 if self._decoder else 0
        self._cache: dict[str, list[int]] = {}

    # ------------------------------------------------------------------------------------------ ids
    def token_id(self, token: str | None) -> int | None:
        """The id of a token given as text (an added token or a vocabulary entry), or None."""
        if token is None:
            return None
        for table in (self.special_tokens, self._added_plain, self.vocab):
            if token in table:
                return table[token]
        return None

    @property
    def bos_id(self) -> int | None:
        return self.token_id(self.bos_token)

    @property
    def eos_id(self) -> int | None:
        return self.token_id(self.eos_token)

    @property
    def pad_id(self) -> int | None:
        return self.token_id(self.pad_token)

    # ------------------------------------------------------------------------------------------ encode
    def encode_ordinary(self, text: str) -> list[int]:
        if not self._added_plain:
            return self._encode_text(text)
        ids: list[int] = []
        start = 0
        for match in special_regex(frozenset(self._added_plain)).finditer(text):
            ids += self._encode_text(text[start : match.start()])
            ids.append(self._added_plain[match.group()])
            start = match.end()
        return ids + self._encode_text(text[start:])

    def _encode_text(self, text: str) -> list[int]:
        if not text:
            return []
        if self._normalize is not None:
            text = self._normalize(text)
        cache = self._cache
        ids: list[int] = []
        for piece in self.pre_tokenizer(text):
            found = cache.get(piece)
            if found is None:
                found = self._encode_piece(piece)
                if len(cache) > 1 << 18:
                    cache.clear()
                if len(piece) <= 64:
                    cache[piece] = found
            ids += found
        return ids

    def _encode_piece(self, piece: str) -> list[int]:
        try:
            data = piece.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates cannot be UTF-8: U+FFFD instead, as tiktoken does
            data = piece.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")
        if self.ignore_merges:
            whole = self.vocab.get("".join(bytes_to_unicode()[b] for b in data))
            if whole is not None:
                return [whole]
        try:
            parts = [self._byte_ids[b] for b in data]
        except KeyError as exc:
            raise ScratchLLMError(f"{self.where}: the vocabulary has no token for byte {exc.args[0]}") from None
        return merge_pairs(parts, self._pairs)

    # ------------------------------------------------------------------------------------------ decode
    def token_bytes(self, token_id: int) -> bytes:
        self._check_id(token_id)
        found = self._decoder.get(token_id)
        if found is None:
            raise ScratchLLMError(f"{self.where}: token id {token_id} is not assigned to any token")
        return found

    # ------------------------------------------------------------------------------------------ files
    def to_json(self) -> dict[str, Any]:
        """This tokenizer as a ``tokenizer.json`` document (the ``tokenizers`` library loads it)."""
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {
                    "id": t.id,
                    "content": t.content,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": t.special,
                }
                for t in self.added_tokens
            ],
            "normalizer": self.normalizer_spec,
            "pre_tokenizer": self.pre_tokenizer.spec,
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": self.ignore_merges,
                "vocab": self.vocab,
                "merges": [list(m) for m in self.merges],
            },
        }

    def config_json(self) -> dict[str, Any]:
        """The ``tokenizer_config.json`` fields we understand."""
        return {
            "tokenizer_class": "PreTrainedTokenizerFast",  # use tokenizer.json as written, whatever the model
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "add_bos_token": self.add_bos_token,
            "chat_template": self.chat_template,
        }

    def _save_files(self, folder: Path) -> dict[str, Any]:
        write_json(folder / TOKENIZER_FILE, self.to_json())
        write_json(folder / CONFIG_FILE, self.config_json())
        return {"kind": "hf"}

    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, where={self.where!r})"


def merge_pairs(parts: list[int], pairs: dict[tuple[int, int], tuple[int, int]]) -> list[int]:
    """Merge the adjacent pair of lowest merge rank (leftmost on ties) until no listed pair is left.

    ``pairs[(a, b)] = (rank, merged id)``; ``ranks[i]`` caches the entry of ``parts[i], parts[i + 1]``, and a merge
    only changes its two neighbours' entries (the same bookkeeping as :func:`scratchllm.tokenizer.bpe.bpe_merge`).
    """
    get = pairs.get
    ranks = [get((parts[i], parts[i + 1]), _NO_RANK) for i in range(len(parts) - 1)]
    while ranks:
        best = min(ranks)
        if best[0] == _NO_RANK[0]:
            break
        i = ranks.index(best)
        parts[i : i + 2] = [best[1]]
        del ranks[i]
        if i < len(ranks):
            ranks[i] = get((parts[i], parts[i + 1]), _NO_RANK)
        if i > 0:
            ranks[i - 1] = get((parts[i - 1], parts[i]), _NO_RANK)
    return parts


# ---------------------------------------------------------------------------------------------- builders
def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ScratchLLMError(f"{where}: field {key!r} missing or not a {names}")
    return value


def _parse_merges(raw: list[Any], where: str) -> list[tuple[str, str]]:
    merges = []
    for i, m in enumerate(raw):
        if isinstance(m, str):
            parts = m.split(" ")
        elif isinstance(m, list):
            parts = m
        else:
            parts = []
        if len(parts) != 2 or not all(isinstance(p, str) for p in parts):
            raise ScratchLLMError(f"{where}: model.merges[{i}] must be 'a b' or ['a', 'b'], got {m!r}")
        merges.append((parts[0], parts[1]))
    return merges


def _token_text(value: Any) -> str | None:
    """``tokenizer_config.json`` spells special tokens as text or as ``{"content": text, ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _template_bos(post_processor: Any) -> str | None:
    """The special token a ``TemplateProcessing`` post-processor puts before every text (Llama 3's BOS), or None.

    ``tokenizers`` adds BOS this way, while ``tokenizer_config.json`` often says nothing about it.
    """
    if not isinstance(post_processor, dict):
        return None
    if post_processor.get("type") == "Sequence":
        found = [_template_bos(p) for p in post_processor.get("processors") or []]
        return next((f for f in found if f is not None), None)
    single = post_processor.get("single") if post_processor.get("type") == "TemplateProcessing" else None
    first = single[0] if isinstance(single, list) and single else {}
    return _token_text((first.get("SpecialToken") or {}).get("id")) if isinstance(first, dict) else None


def from_tokenizer_json(data: dict[str, Any], config: dict[str, Any] | None = None, where: str = TOKENIZER_FILE) -> HFTokenizer:
    """Build the tokenizer a parsed ``tokenizer.json`` (and optional ``tokenizer_config.json``) describes."""
    model = _field(data, "model", dict, where)
    if model.get("type", "BPE") != "BPE":
        raise ScratchLLMError(f"{where}: model.type is {model.get('type')!r}; only byte-level 'BPE' is supported")
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback"):
        if model.get(key) not in (None, "", False):
            raise ScratchLLMError(f"{where}: model.{key} = {model.get(key)!r} is not supported (byte-level BPE)")
    vocab = _field(model, "vocab", dict, f"{where}: model")
    merges = _parse_merges(_field(model, "merges", list, f"{where}: model"), where)
    added = []
    for i, t in enumerate(data.get("added_tokens") or []):
        if not isinstance(t, dict) or not isinstance(t.get("content"), str) or not isinstance(t.get("id"), int):
            raise ScratchLLMError(f"{where}: added_tokens[{i}] needs a string 'content' and an integer 'id'")
        for flag in ("lstrip", "rstrip", "single_word"):
            if t.get(flag):
                raise ScratchLLMError(f"{where}: added_tokens[{i}] ({t['content']!r}): {flag}=true is not supported")
        added.append(AddedToken(t["content"], t["id"], bool(t.get("special", False))))
    config = config or {}
    template_bos = _template_bos(data.get("post_processor"))
    chat_template = config.get("chat_template")
    if isinstance(chat_template, list):  # several named templates: the default one is used for chat
        named = {t.get("name"): t.get("template") for t in chat_template if isinstance(t, dict)}
        chat_template = named.get("default")
    return HFTokenizer(
        vocab,
        merges,
        data.get("pre_tokenizer"),
        added,
        normalizer=data.get("normalizer"),
        ignore_merges=bool(model.get("ignore_merges", False)),
        bos_token=_token_text(config.get("bos_token")) or template_bos,
        eos_token=_token_text(config.get("eos_token")),
        pad_token=_token_text(config.get("pad_token")),
        add_bos_token=bool(config.get("add_bos_token", template_bos is not None)),
        chat_template=chat_template if isinstance(chat_template, str) else None,
        where=where,
    )


def is_hf_tokenizer_folder(folder: Path) -> bool:
    return (folder / TOKENIZER_FILE).is_file()


def load_hf_tokenizer(folder: str | Path) -> HFTokenizer:
    """A Hugging Face tokenizer folder: ``tokenizer.json`` plus, when present, ``tokenizer_config.json``."""
    folder = Path(folder)
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        raise ScratchLLMError(f"{folder}: no {TOKENIZER_FILE} (expected a Hugging Face tokenizer folder)")
    data = read_json(path)
    if not isinstance(data, dict):
        raise ScratchLLMError(f"{path}: expected a JSON object at the top level")
    config_path = folder / CONFIG_FILE
    config = read_json(config_path) if config_path.is_file() else {}
    if not isinstance(config, dict):
        raise ScratchLLMError(f"{config_path}: expected a JSON object at the top level")
    return from_tokenizer_json(data, config, where=str(path))


def tiktoken_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Merges that make the pair rule encode exactly as tiktoken's rank rule on ``ranks``.

    tiktoken merges *any* adjacent pair whose concatenation is a token, ranked by that token. Listing every split
    ``(left, right)`` of every token whose halves are tokens too, ordered by the token's rank, says the same in
    pairs (as transformers does when it converts tiktoken vocabularies).
    """
    merges = []
    for token, rank in ranks.items():
        for k in range(1, len(token)):
            left, right = ranks.get(token[:k]), ranks.get(token[k:])
            if left is not None and right is not None:
                merges.append((rank, left, right, token[:k], token[k:]))
    merges.sort()
    return [(m[3], m[4]) for m in merges]


def to_hf_tokenizer(tok: Tokenizer) -> HFTokenizer:
    """Our byte-level :class:`BPETokenizer` as an :class:`HFTokenizer` (same ids), e.g. to write it to GGUF."""
    if isinstance(tok, HFTokenizer):
        return tok
    if not isinstance(tok, BPETokenizer):
        raise ScratchLLMError(f"tokenizer: a {type(tok).__name__} cannot be written as a byte-level BPE vocabulary")
    spell = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(spell[x] for x in b)

    if tok.pattern == GPT2_PATTERN:
        pre = byte_level()
    else:
        pre = {"type": "Sequence", "pretokenizers": [regex_split(tok.pattern), byte_level(use_regex=False)]}
    eot = ENDOFTEXT if ENDOFTEXT in tok.special_tokens else None
    return HFTokenizer(
        {text(b): i for b, i in tok.ranks.items()},
        [(text(a), text(b)) for a, b in tiktoken_merges(tok.ranks)],
        pre,
        [AddedToken(t, i) for t, i in tok.special_tokens.items()],
        bos_token=eot,
        eos_token=eot,
        ignore_merges=True,
        where=f"tokenizer {tok.name}",
    )
