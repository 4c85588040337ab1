"""Training data: a lazy dataset over LLaVA-format JSON and the collator that pads and truncates.

The JSON files training reads are the workflow's validated files, written one record per line, so
records are found by byte offset and parsed on access: memory stays at a few bytes per record
whatever the file size (the original loaded every record into every dataloader worker).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .images import dummy_image, load_and_preprocess
from .prompts import IGNORE_INDEX, MODEL_MAX_LENGTH, TEMPLATES, has_image, tokenize_record


class RecordIndex:
    """Byte offsets and modality lengths of the records of a one-record-per-line JSON array."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        starts, ends, lengths = [], [], []
        with open(self.path, "rb") as f:
            offset = 0
            for number, line in enumerate(f, 1):
                body = line.strip().rstrip(b",")
                if body and body not in (b"[", b"]", b"[]"):
                    try:
                        record = json.loads(body)
                    except json.JSONDecodeError as err:
                        raise UserError(
                            f"{self.path}:{number}: not one JSON record per line ({err.msg}); training reads the "
                            "files `clip-flant5 validate-data` writes: pass this file through it first"
                        ) from None
                    if not isinstance(record, dict):
                        held = f"a JSON array of {len(record)}" if isinstance(record, list) else type(record).__name__
                        raise UserError(
                            f"{self.path}:{number}: {held} where one record (a JSON object) per line was expected; "
                            "training reads the files `clip-flant5 validate-data --clean` writes: pass it through first"
                        )
                    starts.append(offset)
                    ends.append(offset + len(line))
                    lengths.append(modality_length(record))
                offset += len(line)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.ends = np.asarray(ends, dtype=np.int64)
        self.modality_lengths = np.asarray(lengths, dtype=np.int64)
        self._file = None

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict:
        if self._file is None:  # opened lazily: each dataloader worker gets its own handle
            self._file = open(self.path, "rb")  # noqa: SIM115
        self._file.seek(self.starts[i])
        return json.loads(self._file.read(self.ends[i] - self.starts[i]).strip().rstrip(b","))

    def __getstate__(self):
        return {**self.__dict__, "_file": None}


def modality_length(record: dict) -> int:
    """Words over all turns; positive for image records, negative for text-only (the sampler's key)."""
    words = sum(len(turn.get("value", "").split()) for turn in record.get("conversations", []))
    words = max(words, 1)  # the sign must survive an empty conversation
    return words if has_image(record) else -words


class ConversationDataset(torch.utils.data.Dataset):
    """Samples {"input_ids", "labels", "images"} of a LLaVA-format JSON under a template."""

    def __init__(
        self,
        json_path: str | os.PathLike,
        image_root: str | os.PathLike,
        tokenizer,
        *,
        template: str,
        image_size: int,
        aspect_ratio: str,
        model_max_length: int = MODEL_MAX_LENGTH,
        seed: int = 0,
    ):
        if template not in TEMPLATES:
            raise UserError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)}")
        self.records = RecordIndex(json_path)
        self.image_root = Path(image_root)
        self.tokenizer = tokenizer
        self.template = template
        self.image_size = image_size
        self.aspect_ratio = aspect_ratio
        self.model_max_length = model_max_length
        self.seed = seed
        # The split-text cut is drawn from (seed, epoch, index): anew per epoch, reproducibly. Training sets the
        # epoch (callbacks.DatasetEpoch) before each epoch's dataloader workers copy the dataset.
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    @property
    def modality_lengths(self) -> np.ndarray:
        return self.records.modality_lengths

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        rng = random.Random(f"{self.seed}/{self.epoch}/{i}")
        try:
            tokens = tokenize_record(record, self.template, self.tokenizer, rng=rng, max_length=self.model_max_length)
        except ValueError as err:
            raise UserError(f"{self.records.path} record {i}: {err}") from None
        if has_image(record):
            path = self.image_root / record["image"]
            try:
                image = load_and_preprocess(path, self.image_size, self.aspect_ratio)
            except ValueError as err:
                raise UserError(
                    f"{self.records.path} record {i} (id {record.get('id')!r}): {err}. Validation should have "
                    "caught this: rerun the validate rule on this file"
                ) from None
        else:
            image = dummy_image(self.image_size)  # ZeRO-3: every rank runs CLIP in every step
        return {"input_ids": tokens["input_ids"], "labels": tokens["labels"], "images": image}


class Collator:
    """Right-pad input_ids with 0 and labels with -100, then truncate both to `model_max_length`."""

    def __init__(self, pad_token_id: int = 0, model_max_length: int = MODEL_MAX_LENGTH):
        self.pad_token_id = pad_token_id
        self.model_max_length = model_max_length

    def __call__(self, samples: list[dict]) -> dict:
        input_ids = pad_rows([s["input_ids"] for s in samples], self.pad_token_id)[:, : self.model_max_length]
        labels = pad_rows([s["labels"] for s in samples], IGNORE_INDEX)[:, : self.model_max_length]
        return {
            "input_ids": input_ids,
            "attention_mask": (input_ids != self.pad_token_id).long(),
            "labels": labels,
            "decoder_attention_mask": (labels != IGNORE_INDEX).long(),
            "images": torch.stack([s["images"] for s in samples]),
        }


def pad_rows(rows: list[list[int]], value: int) -> torch.Tensor:
    """Right-pad lists of token ids into one LongTensor."""
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out
