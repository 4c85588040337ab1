"""CLIP-FlanT5: a frozen CLIP vision tower, an MLP projector and a FlanT5 encoder-decoder (VQAScore)."""

__version__ = "0.1.0"
