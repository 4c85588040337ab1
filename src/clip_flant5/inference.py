"""Asking a CLIP-FlanT5 model about an image: tokenizer loading, prompt encoding, generation."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoTokenizer

from .errors import UserError
from .images import load_and_preprocess
from .prompts import MODEL_MAX_LENGTH, scoring_prompt, tokenize_with_image


def load_tokenizer(path: str | os.PathLike, model_max_length: int = MODEL_MAX_LENGTH):
    """The FlanT5 SentencePiece tokenizer of a folder (or hub id), right padding, as in training.

    Loaded with `from_pretrained` on the folder: constructing T5Tokenizer(vocab_file=...) directly
    silently ignores the file in transformers 5 and maps every word to <unk>.
    """
    local = Path(path)
    if local.is_dir() and not any((local / f).is_file() for f in ("spiece.model", "tokenizer.json")):
        raise UserError(f"{local} holds no tokenizer (spiece.model or tokenizer.json): pass --tokenizer")
    return AutoTokenizer.from_pretrained(
        str(path), model_max_length=model_max_length, padding_side="right", truncation_side="right"
    )


def encode_prompt(tokenizer, question: str, style: str = "t5_chat") -> torch.LongTensor:
    """[1, L] input ids of a one-turn prompt with the image placeholder (-200)."""
    prompt = scoring_prompt(question, style=style, question_template="{}")
    return torch.tensor([tokenize_with_image(prompt, tokenizer)])


@torch.no_grad()
def ask(model, tokenizer, image_path, question: str, style: str = "t5_chat", **generation_kwargs) -> str:
    """The model's answer to `question` about the image (greedy unless generation_kwargs say otherwise)."""
    device = next(model.parameters()).device
    pixels = load_and_preprocess(image_path, model.vision_tower.image_size, model.config.image_aspect_ratio)
    input_ids = encode_prompt(tokenizer, question, style).to(device)
    generation_kwargs.setdefault("max_new_tokens", 64)
    output = model.generate(input_ids=input_ids, images=pixels[None].to(device), **generation_kwargs)
    return tokenizer.decode(output[0], skip_special_tokens=True).strip()
