"""The numbers that define the AnomalyCLIP computation, each stated once.

Everything here is fixed by the published method (see docs/method.md); changing any of them changes
every score and map, so they are constants rather than options.
"""

# OpenAI CLIP normalisation, applied after scaling 8-bit RGB to [0, 1].
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# Input side length the published prompts were trained and evaluated at (37 x 37 patches of 14 px).
IMAGE_SIZE: int = 518

# Fixed similarity temperature for global and patch logits (not CLIP's learned logit scale).
TEMPERATURE: float = 0.07

# DPAM: blocks before this 1-based index are vanilla; from it on a value-value path runs alongside.
DPAM_FIRST_BLOCK: int = 6

# Layers whose maps the published numbers use (1-based block indices).
DEFAULT_LAYERS: tuple[int, ...] = (24,)

# Gaussian smoothing of the summed map at IMAGE_SIZE (scipy convention: reflect border, truncate 4).
BLUR_SIGMA: float = 4.0
BLUR_TRUNCATE: float = 4.0

# Object-agnostic prompt learner shape.
PROMPT_CONTEXT_LENGTH: int = 12  # learnable words per sentence
PROMPT_DEPTH: int = 9  # deep text prompts go in before text blocks 2..PROMPT_DEPTH
DEEP_PROMPT_LENGTH: int = 4  # sequence positions 1..4 are overwritten in those blocks

# Glocal loss weighting of the local (focal + dice) term against the global cross-entropy.
LOCAL_LOSS_WEIGHT: float = 4.0

# Backbone the published numbers use.
DEFAULT_BACKBONE: str = "ViT-L-14-336"
