"""AnomalyCLIP's object-agnostic prompts: two learned sentences, "[v1..v12] object." and
"[w1..w12] damaged object.", plus deep prompts that overwrite the first hidden states of text blocks.

Only these tensors train (43,008 values with ViT-L); CLIP stays frozen. The deep prompts enter the
text blocks rounded through fp16, as the reference casts them in training and at test time: every
reference-trained checkpoint learned its deep prompts through that rounding.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from medclip_ad.constants import DEEP_PROMPT_LENGTH, PROMPT_CONTEXT_LENGTH, PROMPT_DEPTH
from medclip_ad.modeling.text_encoder import TextEncoder
from medclip_ad.modeling.tokenizer import tokenize

NORMAL_SUFFIX = "object."
ABNORMAL_SUFFIX = "damaged object."
INIT_STD = 0.02


class ObjectAgnosticPromptLearner(nn.Module):
    """Learned context for the [normal, abnormal] sentence pair; `forward` yields their text features."""

    def __init__(self, text_encoder: TextEncoder, n_ctx: int = PROMPT_CONTEXT_LENGTH,
                 depth: int = PROMPT_DEPTH, deep_length: int = DEEP_PROMPT_LENGTH) -> None:
        super().__init__()
        self.text_encoder = [text_encoder]  # held outside the module tree: CLIP is not ours to save or train
        width = text_encoder.width
        self.n_ctx = n_ctx
        placeholder = " ".join(["X"] * n_ctx)
        token_ids = tokenize([f"{placeholder} {NORMAL_SUFFIX}", f"{placeholder} {ABNORMAL_SUFFIX}"])
        with torch.no_grad():
            fixed = text_encoder.embed_tokens(token_ids.to(text_encoder.token_embedding.weight.device))
        self.register_buffer("token_ids", token_ids, persistent=False)
        self.register_buffer("prefix", fixed[:, :1].clone(), persistent=False)
        self.register_buffer("suffix", fixed[:, 1 + n_ctx:].clone(), persistent=False)
        self.ctx_normal = nn.Parameter(torch.randn(n_ctx, width) * INIT_STD)
        self.ctx_abnormal = nn.Parameter(torch.randn(n_ctx, width) * INIT_STD)
        self.deep_prompts = nn.ParameterList(
            [nn.Parameter(torch.randn(deep_length, width) * INIT_STD) for _ in range(depth - 1)])

    def sentence_embeddings(self) -> torch.Tensor:
        """(2, context, width): fixed start token, learned context, fixed words and padding."""
        context = torch.stack([self.ctx_normal, self.ctx_abnormal]).to(self.prefix.dtype)
        return torch.cat([self.prefix, context, self.suffix], dim=1)

    def rounded_deep_prompts(self, sentences: int) -> list[torch.Tensor]:
        """Each deep prompt copied per sentence, then rounded to fp16 (the encoder promotes it back).

        Copying before the cast makes the backward pass round each sentence's gradient to fp16 before
        the copies are summed in fp32, which is what the reference's gradients are.
        """
        return [prompt.expand(sentences, -1, -1).half() for prompt in self.deep_prompts]

    def forward(self) -> torch.Tensor:
        """Text features (2, D), L2-normalised, order [normal, abnormal]."""
        encoder = self.text_encoder[0]
        sentences = self.sentence_embeddings()
        return encoder(sentences, self.token_ids, self.rounded_deep_prompts(sentences.shape[0]))
