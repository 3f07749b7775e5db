"""CLIP's byte-level BPE tokenizer without torch or open_clip.

A cold ``searchindex search`` must not pay the seconds that importing torch and
open_clip costs, so the text path tokenises on its own: the same cleaning
(ftfy, HTML unescaping, whitespace, lower case), the same pre-tokenising
pattern and the same merge table (read from CLIP's vocabulary file, which ships
inside this package).  The output is
token-for-token what ``open_clip.get_tokenizer(name)`` gives for models that use
the default CLIP tokenizer (``tests/test_tokenizer.py`` checks it).
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["ClipTokenizer", "bpe_vocabulary_path", "clip_tokenizer"]

_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
# The merge table keeps its first 49152 - 256 - 2 entries: 256 byte symbols, their
# 256 end-of-word forms, the merges and two special tokens make CLIP's 49,408 ids.
_N_MERGES = 49152 - 256 - 2
_SOT, _EOT = "<start_of_text>", "<end_of_text>"
_END = "</w>"


def bpe_vocabulary_path() -> Path:
    """CLIP's BPE merge file: the copy that ships inside this package (beside this module; OpenAI's CLIP
    vocabulary, MIT licence, the same file open_clip ships), else the one in an installed open_clip."""
    shipped = Path(__file__).resolve().parent / _VOCAB_FILE
    if shipped.is_file():
        return shipped
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{_VOCAB_FILE} is missing from this installation of searchindex")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / _VOCAB_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{_VOCAB_FILE} not found in this package nor in open_clip")


def _byte_symbols() -> list[str]:
    """One printable character per byte value, so BPE never sees whitespace or control bytes.

    Bytes that are printable Latin-1 stand for themselves; the others are
    assigned the code points from 256 upwards, in byte order.
    """
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    symbols, extra = [], 0
    for b in range(256):
        if b in keep:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def _base_alphabet() -> list[str]:
    """The 256 byte symbols in vocabulary order: printable ones by value, then the rest."""
    symbols = _byte_symbols()
    printable = [s for s in symbols if ord(s) < 256]
    return printable + [s for s in symbols if ord(s) >= 256]


def _build_tables(vocabulary: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Token ids, and merge ranks keyed ``"first second"`` (symbols never hold a space; string keys
    load from the cache three times faster than pairs), from the gzipped merge file."""
    lines = gzip.open(vocabulary, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:_N_MERGES + 1]]
    alphabet = _base_alphabet()
    vocab = alphabet + [s + _END for s in alphabet] + ["".join(m) for m in merges] + [_SOT, _EOT]
    return {tok: i for i, tok in enumerate(vocab)}, {" ".join(pair): i for i, pair in enumerate(merges)}


def _tables(vocabulary: Path) -> tuple[dict[str, int], dict[str, int]]:
    """:func:`_build_tables`, kept in the shared cache as ``marshal`` data.

    Reading and splitting the gzipped merge file costs ~0.14 s of a cold search on a quiet
    machine; loading the two ready-made tables ~0.02 s.  The cache file is named by the
    vocabulary file's path, size and mtime, so another vocabulary never reuses it; any
    trouble with it only means building the tables again.
    """
    import hashlib
    import marshal

    from .cache import cache_root, write_atomic

    try:
        st = vocabulary.stat()
        key = hashlib.sha256(f"{_CACHE_FORMAT}|{vocabulary.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        cached = cache_root() / "tokenizer" / f"bpe-{key.hexdigest()[:24]}.marshal"
    except OSError:
        return _build_tables(vocabulary)
    try:
        ids, ranks = marshal.loads(cached.read_bytes())
        if isinstance(ids, dict) and isinstance(ranks, dict) and len(ranks) == _N_MERGES:
            return ids, ranks
    except (OSError, ValueError, EOFError, TypeError):
        pass
    ids, ranks = _build_tables(vocabulary)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cached, lambda tmp: Path(tmp).write_bytes(marshal.dumps((ids, ranks))))
    except OSError:
        pass
    return ids, ranks


_CACHE_FORMAT = 2  # 2: merge ranks keyed by "first second"

#: Text that ftfy.fix_text returns unchanged: printable ASCII, tabs and newlines, no ``&``.
_PLAIN = re.compile(r"[\t\n\x20-\x25\x27-\x7e]*")


class ClipTokenizer:
    """Texts to CLIP token ids, ``(n, context_length)`` int64, zero-padded.

    A text longer than the context is cut and its last kept token replaced by
    the end-of-text token, as open_clip does.
    """

    def __init__(self, context_length: int = 77, vocabulary: Path | None = None) -> None:
        import regex

        self.context_length = context_length
        self._ids, self._ranks = _tables(vocabulary or bpe_vocabulary_path())
        self._byte_symbol = _byte_symbols()
        self.sot_id, self.eot_id = self._ids[_SOT], self._ids[_EOT]
        self._pattern = regex.compile(
            rf"{_SOT}|{_EOT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+",
            regex.IGNORECASE,
        )
        self._words: dict[str, list[int]] = {_SOT: [self.sot_id], _EOT: [self.eot_id]}

    @staticmethod
    def clean(text: str) -> str:
        """open_clip's default 'lower' cleaning: ftfy, HTML entities twice, whitespace runs, lower case.

        ftfy repairs mis-decoded Unicode and leaves printable ASCII without ``&`` as it is, so
        such text (most queries) skips it, and the tenth of a second its import costs.
        """
        if not _PLAIN.fullmatch(text):
            import ftfy

            text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text)).strip()
        return " ".join(text.split()).lower()

    def _merge(self, word: str) -> list[str]:
        """Apply the merges to one pre-token (already mapped to byte symbols), lowest rank first."""
        parts = [*word[:-1], word[-1] + _END]
        while len(parts) > 1:
            rank, at = min((self._ranks.get(f"{a} {b}", _N_MERGES), i)
                           for i, (a, b) in enumerate(zip(parts[:-1], parts[1:], strict=True)))
            if rank == _N_MERGES:
                break
            first, second = parts[at], parts[at + 1]
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without the start and end tokens."""
        out: list[int] = []
        for piece in self._pattern.findall(self.clean(text)):
            ids = self._words.get(piece)
            if ids is None:
                symbols = "".join(self._byte_symbol[b] for b in piece.encode("utf-8"))
                ids = [self._ids[p] for p in self._merge(symbols)]
                self._words[piece] = ids
            out.extend(ids)
        return out

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot_id
            out[row, : len(ids)] = ids
        return out


@lru_cache(maxsize=4)
def clip_tokenizer(context_length: int = 77) -> ClipTokenizer:
    """A shared tokenizer per context length (the merge table takes ~0.1 s to read)."""
    return ClipTokenizer(context_length)
