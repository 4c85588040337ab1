"""Training dataset, collator and the modality-length grouped sampler."""

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from clip_flant5.data import Collator, ConversationDataset, RecordIndex, modality_length
from clip_flant5.errors import UserError
from clip_flant5.prompts import IMAGE_TOKEN_INDEX, tokenize_record
from clip_flant5.sampler import ModalityLengthGroupedSampler, modality_grouped_indices

RECORDS = [
    {"id": "a", "image": "img/a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is the circle?"}, {"from": "gpt", "value": "Red."}]},
    {"id": "b", "conversations": [
        {"from": "human", "value": "Write a short poem about the sea."}, {"from": "gpt", "value": "Blue and wide."}]},
    {"id": "c", "image": "img/c.png", "conversations": [
        {"from": "human", "value": "Is there a square?\n<image>"}, {"from": "gpt", "value": "Yes"}]},
    {"id": "ü", "image": "img/a.png", "conversations": [
        {"from": "human", "value": "<image>\nDescribe ünïcode."}, {"from": "gpt", "value": "A red circle, twice: ½."}]},
]  # fmt: skip


def write_lines(path, records):
    path.write_text("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n")
    return path


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (50, 30), (255, 0, 0)).save(tmp_path / "img/a.png")
    Image.new("RGB", (20, 40), (0, 0, 255)).save(tmp_path / "img/c.png")
    write_lines(tmp_path / "data.json", RECORDS)
    return tmp_path


def test_record_index_reads_records_lazily_and_pickles(data_dir):
    index = RecordIndex(data_dir / "data.json")
    assert len(index) == 4
    assert [index[i] for i in (3, 0, 2, 1)] == [RECORDS[i] for i in (3, 0, 2, 1)]
    assert index.modality_lengths.tolist() == [modality_length(r) for r in RECORDS]
    assert (index.modality_lengths > 0).tolist() == [True, False, True, True]
    clone = pickle.loads(pickle.dumps(index))  # dataloader workers get a copy without the open file
    assert clone[1] == RECORDS[1]


def test_record_index_rejects_other_layouts(tmp_path):
    (tmp_path / "indented.json").write_text(json.dumps(RECORDS, indent=4))
    with pytest.raises(ValueError, match="indented.json:2: not one JSON record per line.*validate-data"):
        RecordIndex(tmp_path / "indented.json")
    (tmp_path / "one-line.json").write_text(json.dumps(RECORDS) + "\n")  # JSON, but all records on one line
    with pytest.raises(UserError, match=f"one-line.json:1: a JSON array of {len(RECORDS)} where one record"):
        RecordIndex(tmp_path / "one-line.json")


def test_dataset_samples(data_dir, tiny_tokenizer):
    ds = ConversationDataset(
        data_dir / "data.json", data_dir, tiny_tokenizer, template="t5_v1", image_size=32, aspect_ratio="pad"
    )
    image_sample, text_sample = ds[0], ds[1]
    assert image_sample["input_ids"] == tokenize_record(RECORDS[0], "t5_v1", tiny_tokenizer)["input_ids"]
    assert image_sample["input_ids"].count(IMAGE_TOKEN_INDEX) == 1
    assert image_sample["images"].shape == (3, 32, 32) and image_sample["images"].abs().sum() > 0
    assert IMAGE_TOKEN_INDEX not in text_sample["input_ids"]
    assert torch.equal(text_sample["images"], torch.zeros(3, 32, 32))  # dummy image for text-only samples


def test_split_text_cut_is_reproducible_and_varies_across_records(data_dir, tiny_tokenizer):
    """Per epoch: tests/test_train.py trains two epochs and compares the cuts drawn."""
    caption = "a red circle on the left of a blue square next to a small green triangle"
    turns = [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": caption}]
    records = [{"id": str(i), "image": "img/a.png", "conversations": turns} for i in range(20)]
    write_lines(data_dir / "captions.json", records)
    kwargs = dict(template="t5_plain_split_text", image_size=32, aspect_ratio="square", seed=3)
    first = ConversationDataset(data_dir / "captions.json", data_dir, tiny_tokenizer, **kwargs)
    second = ConversationDataset(data_dir / "captions.json", data_dir, tiny_tokenizer, **kwargs)
    cuts = [first[i]["labels"] for i in range(20)]
    assert cuts == [second[i]["labels"] for i in range(20)]
    assert len({tuple(c) for c in cuts}) > 3  # the cut varies across records


def test_unreadable_image_names_record_and_file(data_dir, tiny_tokenizer):
    (data_dir / "img/c.png").write_bytes(b"not an image")
    ds = ConversationDataset(
        data_dir / "data.json", data_dir, tiny_tokenizer, template="t5_v1", image_size=32, aspect_ratio="pad"
    )
    with pytest.raises(ValueError, match=r"record 2 \(id 'c'\).*img/c.png.*Validation should have caught"):
        ds[2]


def test_collator_pads_and_truncates():
    samples = [
        {"input_ids": [5, 6, IMAGE_TOKEN_INDEX, 7, 1], "labels": [8, 1], "images": torch.ones(3, 4, 4)},
        {"input_ids": [9, 1], "labels": [10, 11, 12, 1], "images": torch.zeros(3, 4, 4)},
    ]
    batch = Collator(model_max_length=4)(samples)
    assert batch["input_ids"].tolist() == [[5, 6, IMAGE_TOKEN_INDEX, 7], [9, 1, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[8, 1, -100, -100], [10, 11, 12, 1]]
    assert batch["decoder_attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["images"].shape == (2, 3, 4, 4)


def _lengths(n_image, n_text, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.concatenate([rng.integers(1, 200, n_image), -rng.integers(1, 200, n_text)])
    return lengths[rng.permutation(len(lengths))]


@pytest.mark.parametrize("n_image, n_text", [(230, 70), (100, 0), (0, 50), (7, 3)])
def test_sampler_is_a_seeded_permutation(n_image, n_text):
    lengths = _lengths(n_image, n_text)
    order = modality_grouped_indices(lengths, per_device_batch=4, grad_accum=2, world_size=3, seed=1)
    assert sorted(order) == list(range(len(lengths)))
    assert order == modality_grouped_indices(lengths, 4, 2, 3, seed=1)
    if max(n_image, n_text) >= 2 * 24:  # with at least two full megabatches the order depends on the seed
        assert order != modality_grouped_indices(lengths, 4, 2, 3, seed=2)
        assert order != modality_grouped_indices(lengths, 4, 2, 3, seed=1, epoch=1)


def test_global_batches_never_mix_modalities_except_the_last():
    lengths = _lengths(230, 70)
    megabatch = 4 * 2 * 3
    order = modality_grouped_indices(lengths, per_device_batch=4, grad_accum=2, world_size=3, seed=0)
    leftover = 230 % megabatch + 70 % megabatch  # both partial megabatches, merged and put last
    head, tail = order[: len(order) - leftover], order[len(order) - leftover :]
    groups = [head[i : i + megabatch] for i in range(0, len(head), megabatch)]
    assert len(groups) == 230 // megabatch + 70 // megabatch
    assert all(len({bool(lengths[i] > 0) for i in g}) == 1 for g in groups)
    assert {bool(lengths[i] > 0) for i in tail} == {True, False} and tail == sorted(tail)


def test_ranks_get_similar_lengths_within_a_megabatch():
    lengths = np.abs(_lengths(960, 0))
    per_rank = 4 * 2
    order = modality_grouped_indices(lengths, per_device_batch=4, grad_accum=2, world_size=4, seed=0)
    megabatch = order[: per_rank * 4]
    totals = [lengths[megabatch[r * per_rank : (r + 1) * per_rank]].sum() for r in range(4)]
    assert max(totals) - min(totals) <= lengths.max()  # greedy dealing: within one sample's length
    random_totals = [lengths[r * per_rank : (r + 1) * per_rank].sum() for r in range(4)]
    assert max(totals) - min(totals) <= max(random_totals) - min(random_totals)


def test_sampler_epochs_and_zero_lengths():
    sampler = ModalityLengthGroupedSampler(_lengths(50, 10), per_device_batch=2, grad_accum=1, world_size=2, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert len(sampler) == 60 and sorted(list(sampler)) == sorted(first) and list(sampler) != first
    with pytest.raises(ValueError, match="non-zero"):
        modality_grouped_indices([3, 0, -2], 1, 1, 1, seed=0)
