"""Run under transformers 4.49 (what t2v_metrics 3.0 users run): load a checkpoint we wrote the way the
original CLIP-T5 code did and report logits and token ids, for tests/test_transformers4_compat.py.

The classes below restate the original model's structure (spec model.md): a T5ForConditionalGeneration
with `self.embed_tokens = self.encoder.embed_tokens`, a wrapper `vision_tower` holding a CLIPVisionModel
also named `vision_tower`, and `mm_projector` = Linear, GELU, Linear; config model_type "clip_t5".

usage: python load_checkpoint.py CHECKPOINT INPUTS.pt OUTPUT.pt
"""

import sys

import torch
import transformers
from torch import nn
from transformers import AutoTokenizer, CLIPVisionConfig, CLIPVisionModel, T5Config, T5ForConditionalGeneration

assert transformers.__version__ == "4.49.0", transformers.__version__


class CLIPT5Config(T5Config):
    model_type = "clip_t5"


class CLIPVisionTower(nn.Module):
    def __init__(self, name):
        super().__init__()
        self.vision_tower = CLIPVisionModel(CLIPVisionConfig.from_pretrained(name))
        self.vision_tower.requires_grad_(False)

    def forward(self, images, select_layer):
        hidden = self.vision_tower(images, output_hidden_states=True).hidden_states
        return hidden[select_layer][:, 1:]


class CLIPT5ForConditionalGeneration(T5ForConditionalGeneration):
    config_class = CLIPT5Config

    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = self.encoder.embed_tokens
        self.vision_tower = CLIPVisionTower(config.mm_vision_tower)
        self.mm_projector = nn.Sequential(
            nn.Linear(config.mm_hidden_size, config.d_model), nn.GELU(), nn.Linear(config.d_model, config.d_model)
        )

    def splice(self, input_ids, images):
        """Per-row, as the original: text before -200, the image's features, text after; pad right."""
        features = self.mm_projector(self.vision_tower(images, self.config.mm_vision_select_layer))
        rows = []
        for ids, feats in zip(input_ids, features, strict=True):
            ids = ids[ids != self.config.pad_token_id]
            where = (ids == -200).nonzero()
            if len(where):
                p = int(where[0])
                rows.append(torch.cat([self.embed_tokens(ids[:p]), feats, self.embed_tokens(ids[p + 1 :])]))
            else:
                rows.append(self.embed_tokens(ids))
        length = max(len(r) for r in rows)
        embeds = torch.zeros(len(rows), length, rows[0].shape[1])
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, r in enumerate(rows):
            embeds[i, : len(r)], mask[i, : len(r)] = r, 1
        return embeds, mask


def main(checkpoint, inputs_path, output_path):
    inputs = torch.load(inputs_path)
    model, info = CLIPT5ForConditionalGeneration.from_pretrained(
        checkpoint, torch_dtype=torch.float32, output_loading_info=True
    )
    model.eval()
    with torch.no_grad():
        embeds, mask = model.splice(inputs["input_ids"], inputs["images"])
        logits = model(inputs_embeds=embeds, attention_mask=mask, labels=inputs["labels"]).logits
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    torch.save(
        {
            "missing_keys": info["missing_keys"],
            "unexpected_keys": info["unexpected_keys"],
            "mismatched_keys": [k[0] for k in info["mismatched_keys"]],
            "lm_head_tied": model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr(),
            "logits": logits,
            "token_ids": [tokenizer(t).input_ids for t in inputs["texts"]],
            "tokenizer_class": type(tokenizer).__name__,
        },
        output_path,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
