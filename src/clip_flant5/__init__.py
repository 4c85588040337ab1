"""CLIP-FlanT5: a frozen CLIP vision tower, an MLP projector and a FlanT5 encoder-decoder (VQAScore).

    from clip_flant5 import VQAScore
    scorer = VQAScore("clip-flant5-xxl", device="cuda")
    scores = scorer(images=["a.jpg", "b.jpg"], texts=["a cat on a mat", "a dog"])  # [2 images x 2 texts]

Importing the package loads no model code: torch and transformers come in when a scorer is built.
"""

from .errors import UserError
from .vqascore import ScoreSettings, VQAScore

__version__ = "0.1.0"
__all__ = ["ScoreSettings", "UserError", "VQAScore", "__version__"]
