"""Report tokenizer trained on the training reports (Hugging Face ``tokenizers``; nothing downloaded).

WordPiece with lower-casing and BERT pre-tokenisation, special tokens ``[PAD]=0, [UNK]=1, [CLS]=2,
[MASK]=3``. Every encoded report starts with ``[CLS]`` and is padded with ``[PAD]`` to ``max_len``.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[MASK]")
PAD, UNK, CLS, MASK = range(4)


class ReportTokenizer:
    """Thin wrapper around a trained ``tokenizers.Tokenizer`` with fixed-length integer output."""

    def __init__(self, tokenizer, max_len: int):
        self._tok = tokenizer
        self.max_len = max_len
        self._tok.enable_truncation(max_len - 1)  # room for [CLS]

    @classmethod
    def train(cls, texts: Sequence[str], vocab_size: int = 1000, max_len: int = 48) -> "ReportTokenizer":
        """Train WordPiece on ``texts``; deterministic for the same texts in the same order."""
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        if not texts:
            raise ValueError("cannot train a report tokenizer on an empty list of texts")
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL), show_progress=False)
        tok.train_from_iterator(list(texts), trainer=trainer)
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
