"""Tiny base models: deterministic, real tokenizer, same on-disk layout and loaders as the real ones."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPVisionModel, T5ForConditionalGeneration

from clip_flant5.tiny import EXTRA_IDS, make_tiny_base

SENTENCES = [
    "A red circle on the left of a blue square.",
    'Does this figure show "two green triangles"? Please answer yes or no.',
    "The dog is sitting next to the car, near a large tree.",
    "There are 3 small yellow stars at the top.",
]


def file_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_weights(tiny_base, tmp_path):
    again = make_tiny_base(tmp_path / "again", seed=0)
    assert file_bytes(again) == file_bytes(tiny_base)
    other = file_bytes(make_tiny_base(tmp_path / "other", seed=1))
    assert other["language/spiece.model"] == file_bytes(tiny_base)["language/spiece.model"]
    assert other["language/model.safetensors"] != file_bytes(tiny_base)["language/model.safetensors"]
    assert other["vision/model.safetensors"] != file_bytes(tiny_base)["vision/model.safetensors"]


def test_tokenizer_tokenizes_and_round_trips(tiny_tokenizer):
    tok = tiny_tokenizer
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    for sentence in SENTENCES:
        ids = tok(sentence).input_ids
        assert ids[-1] == 1 and tok.unk_token_id not in ids, tok.convert_ids_to_tokens(ids)
        assert tok.decode(ids, skip_special_tokens=True) == sentence
        assert len(ids) < len(sentence)  # real subword pieces, not one id per character
    words = tok("circle square triangle answer").input_ids
    assert len(words) <= 5


def test_sentinels_sit_at_the_top_and_the_embedding_is_larger(tiny_base, tiny_tokenizer):
    n = len(tiny_tokenizer)
    assert tiny_tokenizer.convert_tokens_to_ids("<extra_id_0>") == n - 1
    assert tiny_tokenizer.convert_tokens_to_ids(f"<extra_id_{EXTRA_IDS - 1}>") == n - EXTRA_IDS
    vocab = json.loads((tiny_base / "language" / "config.json").read_text())["vocab_size"]
    assert vocab > n and vocab % 128 == 0  # like FlanT5: 32128 rows, 32100 tokens


def test_base_models_load_through_the_standard_loaders(tiny_base):
    vision, info = CLIPVisionModel.from_pretrained(tiny_base / "vision", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    on_disk = load_file(tiny_base / "vision" / "model.safetensors")
    assert all(k.startswith("vision_model.") for k in on_disk)  # transformers-4 names, as openai/clip-*
    assert torch.equal(vision.post_layernorm.weight, on_disk["vision_model.post_layernorm.weight"])

    language, info = T5ForConditionalGeneration.from_pretrained(tiny_base / "language", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    config = json.loads((tiny_base / "language" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["feed_forward_proj"] == "gated-gelu"
    assert not torch.equal(language.lm_head.weight, language.shared.weight)


@pytest.mark.parametrize("name", ["preprocessor_config.json", "config.json"])
def test_vision_image_size_is_consistent(tiny_base, name):
    data = json.loads((tiny_base / "vision" / name).read_text())
    size = data.get("image_size") or data["crop_size"]["height"]
    assert size == 64
