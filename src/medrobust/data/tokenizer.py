"""Report tokenizer built from the training reports (Hugging Face ``tokenizers``; nothing downloaded).

WordPiece with lower-casing and BERT pre-tokenisation, special tokens ``[PAD]=0, [UNK]=1, [CLS]=2,
[MASK]=3``. Every encoded report starts with ``[CLS]`` and is padded with ``[PAD]`` to ``max_len``.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[MASK]")
PAD, UNK, CLS, MASK = range(4)


def _pipeline(tok) -> None:
    """Lower-case, strip accents, split on white space and punctuation (BERT style); decode WordPiece."""
    from tokenizers import decoders, normalizers, pre_tokenizers

    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()


class ReportTokenizer:
    """Thin wrapper around a trained ``tokenizers.Tokenizer`` with fixed-length integer output."""

    def __init__(self, tokenizer, max_len: int):
        self._tok = tokenizer
        self.max_len = max_len
        self._tok.enable_truncation(max_len - 1)  # room for [CLS]

    @classmethod
    def train(cls, texts: Sequence[str], vocab_size: int = 1000, max_len: int = 48) -> "ReportTokenizer":
        """Build the vocabulary from ``texts``: deterministic for the same texts, whatever their order.

        The ``tokenizers`` WordPiece *trainer* breaks ties between equally frequent pieces in hash order,
        so two trainings on the same reports can differ. We therefore build the WordPiece vocabulary
        ourselves — every character (word-initial and ``##`` continuation) so any word can be spelled,
        then whole words by descending frequency (ties alphabetical) up to ``vocab_size`` — and let
        ``tokenizers`` do the normalising, pre-tokenising and greedy longest-match encoding.
        """
        from collections import Counter

        from tokenizers import Tokenizer, models

        if not texts:
            raise ValueError("cannot train a report tokenizer on an empty list of texts")
        tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(SPECIAL)}, unk_token="[UNK]"))
        _pipeline(tok)
        words = Counter(w for text in texts for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)))
        chars = sorted({c for w in words for c in w})
        vocab = list(SPECIAL) + chars + ["##" + c for c in chars]
        ranked = sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))
        vocab += ranked[: max(0, vocab_size - len(vocab))]
        tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                         max_input_chars_per_word=100))
        _pipeline(tok)
        return cls(tok, max_len)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``int64 [N, max_len]`` token ids: ``[CLS]`` then the report, ``[PAD]``-filled."""
        out = np.full((len(texts), self.max_len), PAD, dtype=np.int64)
        out[:, 0] = CLS
        for i, enc in enumerate(self._tok.encode_batch(list(texts), add_special_tokens=False)):
            ids = enc.ids[: self.max_len - 1]
            out[i, 1 : 1 + len(ids)] = ids
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids if int(i) not in (PAD, CLS)])

    def to_json(self) -> str:
        return json.dumps({"max_len": self.max_len, "tokenizer": self._tok.to_str()})

    @classmethod
    def from_json(cls, text: str) -> "ReportTokenizer":
        from tokenizers import Tokenizer

        state = json.loads(text)
        return cls(Tokenizer.from_str(state["tokenizer"]), state["max_len"])
