"""CLIP's byte-pair tokenizer (open_clip ships its vocabulary, so this works offline)."""

from __future__ import annotations

from functools import lru_cache

import torch
from open_clip.tokenizer import SimpleTokenizer


@lru_cache(maxsize=1)
def _tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


def tokenize(sentences: list[str], context_length: int = 77) -> torch.Tensor:
    """Token ids (len(sentences), context_length) with start/end tokens, zero-padded."""
    return _tokenizer()(sentences, context_length=context_length)
