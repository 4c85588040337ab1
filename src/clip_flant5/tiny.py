"""Tiny random base models that stand in for `openai/clip-vit-large-patch14-336` and `google/flan-t5-*`.

They are written in the same on-disk layout as the real ones (transformers-4 key names, a
SentencePiece `spiece.model` with T5's special ids and sentinels), so the demo and the tests go
through exactly the loading code the real models go through.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import sentencepiece as spm
import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    GenerationConfig,
    T5Config,
    T5ForConditionalGeneration,
)

from .atomic import atomic_dir
from .checkpoint import config_for_disk, write_weights
from .images import CLIP_MEAN, CLIP_STD
from .prompts import DEFAULT_QUESTION_TEMPLATE, SYSTEM

EXTRA_IDS = 100  # sentinels <extra_id_0..99> at the top ids, as in FlanT5
VOCAB_MULTIPLE = 128  # FlanT5 pads its embedding (32128 rows) past the tokenizer (32100 ids)

_WORDS = """
the a an of and to in is it that on for with as at by from this be are was were or not no yes what which how
many much where who when why does do did show shows shown picture image photo figure scene view please answer
left right above below top bottom middle center centre corner edge side front back behind inside outside
between over under near far next beside close around across along red green blue yellow orange purple white
black gray grey brown pink cyan magenta gold silver dark light bright pale circle circles square squares
triangle triangles star stars shape shapes object objects line lines dot dots ring box boxes disk one two
three four five six seven eight nine ten zero first second third last only both all some none each every
more less most least same different larger smaller bigger big small large tiny huge little long short tall
wide narrow round flat empty full there here they them their these those we you he she his her its our your
man woman person people child dog cat bird horse car bus truck train bicycle boat plane street road city
house building room table chair bed window door wall floor grass tree trees flower sky cloud water sea river
mountain beach snow rain sun moon night day morning evening food pizza cake apple banana bowl plate cup
glass bottle phone computer book clock sign text word letter number count color colour size position
describe tell write give list explain short brief detailed summary caption question answer chat user
assistant curious artificial intelligence helpful polite answers questions between gives a an
sitting standing walking running holding wearing looking playing eating riding flying lying parked open
closed shows contains has have with without can could would should will may might must also very too just
then than so if but because while after before during into onto out up down off again still already
diamond diamonds cross crosses background contain see look like located cover band region sentence provide
provided description bounding coordinate describes using single phrase plus sides outline backwards letters
paint mix mixing get noise eleven twelve render clear concise summary summarize visual content given subsequent
terse informative explanation consistent hello help today pencil garden
""".split()


def tokenizer_corpus(n_sentences: int = 6000) -> list[str]:
    """A fixed English-like corpus: the prompt strings, shape captions and random word sequences."""
    rng = random.Random(0)
    lines = [SYSTEM, DEFAULT_QUESTION_TEMPLATE, "USER: ASSISTANT:", "".join(map(chr, range(32, 127)))]
    lines += ["Yes", "No", "Yes.", "No."] * 200  # one piece each, as in FlanT5: VQAScore's answer is "Yes" + </s>
    # Every word whole, lower-case and capitalised, as a real tokenizer has its language's common words: a model
    # trained from scratch is slow to learn a word it sees cut into letters.
    lines += [form for word in _WORDS for form in (word, word.capitalize())] * 8
    for _ in range(n_sentences):
        lines.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 16))).capitalize() + ".")
    return lines


def build_tokenizer(out_dir: Path, vocab_size: int = 2000) -> int:
    """Train a unigram SentencePiece model (pad 0, eos 1, unk 2, no BOS) and write T5 tokenizer files.

    Returns the tokenizer length (pieces + sentinels).
    """
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tokenizer_corpus()), model_writer=buf, vocab_size=vocab_size,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
        hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )  # fmt: skip
    (out_dir / "spiece.model").write_bytes(buf.getvalue())
    n_pieces = spm.SentencePieceProcessor(model_proto=buf.getvalue()).get_piece_size()
    sentinels = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    # The files transformers 4 wrote for FlanT5, which both transformers 4 and 5 read.
    _json(out_dir / "special_tokens_map.json", {"additional_special_tokens": sentinels, **special})
    _json(out_dir / "added_tokens.json", {s: n_pieces + EXTRA_IDS - 1 - i for i, s in enumerate(sentinels)})
    _json(
        out_dir / "tokenizer_config.json",
        {"tokenizer_class": "T5Tokenizer", "extra_ids": EXTRA_IDS, "additional_special_tokens": sentinels,
         "model_max_length": 512, "legacy": True, "sp_model_kwargs": {}, **special},
    )  # fmt: skip
    return n_pieces + EXTRA_IDS


def build_vision(out_dir: Path, seed: int, image_size: int = 64, patch_size: int = 8, width: int = 64) -> None:
    config = CLIPVisionConfig(
        hidden_size=width, intermediate_size=2 * width, num_hidden_layers=3, num_attention_heads=4,
        image_size=image_size, patch_size=patch_size, projection_dim=width, hidden_act="quick_gelu",
    )  # fmt: skip
    torch.manual_seed(seed)
    model = CLIPVisionModel(config)
    # transformers-4 key names (`vision_model.*`), as openai/clip-vit-large-patch14-336 has them.
    write_weights({f"vision_model.{k}": v for k, v in model.state_dict().items()}, out_dir)
    _json(out_dir / "config.json", config_for_disk(config, architectures=["CLIPVisionModel"]))
    _json(
        out_dir / "preprocessor_config.json",
        {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": image_size},
         "crop_size": {"height": image_size, "width": image_size}, "do_resize": True, "do_center_crop": True,
         "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
         "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "resample": 3},
    )  # fmt: skip


def build_language(out_dir: Path, seed: int, vocab_size: int, d_model: int = 64) -> None:
    """A FlanT5-shaped T5 (gated-gelu, untied lm_head, relative attention) at tiny sizes.

    Eight heads rather than four: trained from scratch on the demo, the model ties colour words to the pictures
    more often with more heads to search them with."""
    config = T5Config(
        vocab_size=vocab_size, d_model=d_model, d_ff=2 * d_model, d_kv=16, num_heads=8, num_layers=2,
        num_decoder_layers=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    # transformers 5 ties lm_head at construction whatever the config says: give it its own matrix,
    # scaled so the untrained model starts with unit-scale logits.
    model.lm_head.weight = nn.Parameter(torch.randn(vocab_size, d_model) * d_model**-0.5)
    write_weights(model.state_dict(), out_dir)
    _json(out_dir / "config.json", config_for_disk(config, architectures=["T5ForConditionalGeneration"]))
    GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0).to_json_file(
        out_dir / "generation_config.json"
    )


def make_tiny_base(out: str | Path, seed: int = 0) -> Path:
    """Write `out/vision` (tiny CLIP) and `out/language` (tiny FlanT5 + tokenizer), atomically."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        (tmp / "vision").mkdir()
        (tmp / "language").mkdir()
        build_vision(tmp / "vision", seed)
        n_tokens = build_tokenizer(tmp / "language")
        vocab = -(-n_tokens // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
        build_language(tmp / "language", seed, vocab_size=vocab)
    return out


def _json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
