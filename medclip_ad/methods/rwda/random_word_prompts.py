"""Labelled text embeddings for the `rwda` method: normal / abnormal sentences diversified with random words.

The method trains its classifier on text alone, so the text has to cover far more of CLIP's embedding
space than a few hand-written sentences do. Each prompt starts from one of the ensemble's sentences (the
project's single list of normal and abnormal phrasings) and gets several random words inserted at
random word boundaries; a random word is a short sequence of token ids drawn uniformly from CLIP's
ordinary vocabulary. Prompts are built as token ids directly (random tokens need not decode to text)
and encoded in batches with the frozen text encoder. Everything is drawn from one seeded generator, so a
seed fixes the whole training set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from medclip_ad.methods.ensemble.prompt_ensemble import ensemble_sentences
from medclip_ad.methods.rwda.recipe import RandomWordSettings
from medclip_ad.modeling.text_encoder import TextEncoder
from medclip_ad.modeling.tokenizer import tokenize

NORMAL, ABNORMAL = 0, 1


@dataclass
class LabelledTextEmbeddings:
    """L2-normalised text embeddings (N, D) and their labels (N,): 0 normal, 1 abnormal."""

    embeddings: torch.Tensor
    labels: torch.Tensor


def random_word_token_ids(settings: RandomWordSettings, seed: int,
                          context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (2 * prompts_per_class, context_length) of the diversified prompts, and their labels.

    Rows are laid out as the tokenizer does: start token, sentence tokens, end token, zero padding.
    """
    if settings.prompts_per_class < 1 or settings.max_random_words < 1 or settings.max_tokens_per_word < 1:
        raise ValueError(f"random-word settings must be positive: {settings}")
    start_token, end_token = (int(token) for token in tokenize([""], context_length)[0, :2])
    ordinary_tokens = min(start_token, end_token)  # CLIP numbers its two special tokens last
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for label, sentences in zip((NORMAL, ABNORMAL), ensemble_sentences()):
        sentence_words = [_word_tokens(sentence, context_length) for sentence in sentences]
        for _ in range(settings.prompts_per_class):
            words = list(sentence_words[rng.integers(len(sentence_words))])
            for _ in range(rng.integers(1, settings.max_random_words + 1)):
                length = rng.integers(1, settings.max_tokens_per_word + 1)
                words.insert(rng.integers(len(words) + 1), rng.integers(ordinary_tokens, size=length).tolist())
            tokens = [start_token, *(token for word in words for token in word), end_token]
            if len(tokens) > context_length:
                raise ValueError(f"a prompt of {len(tokens)} tokens exceeds the context of {context_length}; "
                                 f"lower max_random_words or max_tokens_per_word")
            rows.append(tokens + [0] * (context_length - len(tokens)))
            labels.append(label)
    return torch.tensor(rows, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


@torch.no_grad()
def encode_token_ids(text_encoder: TextEncoder, token_ids: torch.Tensor, batch_size: int,
                     show_progress: bool = False) -> torch.Tensor:
    """Features (N, D) of token-id rows, a batch at a time and without gradients (the encoder stays frozen)."""
    device = text_encoder.token_embedding.weight.device
    features = []
    for start in tqdm(range(0, len(token_ids), batch_size), desc="encoding prompts", disable=not show_progress,
                      leave=False):
        batch = token_ids[start:start + batch_size].to(device)
        features.append(text_encoder(text_encoder.embed_tokens(batch), batch).float().cpu())
    return torch.cat(features)


def random_word_embeddings(text_encoder: TextEncoder, settings: RandomWordSettings, seed: int, batch_size: int,
                           show_progress: bool = False) -> LabelledTextEmbeddings:
    """The rwda training set: every diversified prompt encoded by the frozen text encoder, with its label."""
    token_ids, labels = random_word_token_ids(settings, seed, text_encoder.position_embedding.shape[0])
    return LabelledTextEmbeddings(encode_token_ids(text_encoder, token_ids, batch_size, show_progress), labels)


def _word_tokens(sentence: str, context_length: int) -> list[list[int]]:
    """A sentence as a list of words, each the token ids the tokenizer gives it (CLIP splits at spaces too)."""
    words = sentence.split()
    rows = tokenize(words, context_length)
    return [row[1:int(row.argmax())].tolist() for row in rows]
