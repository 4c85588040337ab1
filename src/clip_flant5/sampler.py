"""The modality-length grouped sampler of LLaVA-1.5 (stage 2), deterministic and single-modality safe.

Image and text-only samples never share a global batch; inside a megabatch (one optimizer step over
all ranks) samples are sorted by length and dealt to ranks in chunks of similar total length, which
cuts padding (upstream measured ~25% faster). Upstream asserted that both modalities exist and drew
part of its shuffle from an unseeded generator; here everything follows `seed` and the epoch.
"""

from __future__ import annotations

import numpy as np
import torch


def split_even_chunks(indices: list[int], lengths, n_chunks: int) -> list[list[int]]:
    """Deal indices (longest first) to the chunk with the smallest total so far, equal counts."""
    if len(indices) % n_chunks:
        return [indices[i::n_chunks] for i in range(n_chunks)]
    per_chunk = len(indices) // n_chunks
    chunks: list[list[int]] = [[] for _ in range(n_chunks)]
    totals = [0] * n_chunks
    for index in indices:
        open_chunks = [c for c in range(n_chunks) if len(chunks[c]) < per_chunk]
        target = min(open_chunks, key=totals.__getitem__)
        chunks[target].append(index)
        totals[target] += abs(int(lengths[index]))
    return chunks


def length_grouped(lengths, megabatch: int, world_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffle, cut into megabatches, sort each by length (descending), deal to ranks evenly."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    groups = []
    for start in range(0, len(order), megabatch):
        group = sorted(order[start : start + megabatch], key=lambda i: abs(int(lengths[i])), reverse=True)
        groups.append([i for chunk in split_even_chunks(group, lengths, world_size) for i in chunk])
    return groups


def modality_grouped_indices(
    lengths, per_device_batch: int, grad_accum: int, world_size: int, seed: int, epoch: int = 0
) -> list[int]:
    """The epoch's sample order. lengths: positive for image samples, negative for text-only ones."""
    lengths = np.asarray(lengths)
    if (lengths == 0).any():
        raise ValueError("modality lengths must be non-zero (positive: image sample, negative: text-only)")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    megabatch = world_size * grad_accum * per_device_batch
    megabatches, leftovers = [], []
    for mask in (lengths > 0, lengths < 0):
        members = np.flatnonzero(mask)
        if len(members) == 0:  # one modality only: nothing to keep apart
            continue
        groups = [
            [int(members[i]) for i in g] for g in length_grouped(lengths[members], megabatch, world_size, generator)
        ]
        if len(groups[-1]) < megabatch:
            leftovers += groups.pop()
        megabatches += groups
    permutation = torch.randperm(len(megabatches), generator=generator).tolist()
    ordered = [megabatches[i] for i in permutation]
    if leftovers:  # partial megabatches of both modalities, merged, last
        ordered.append(sorted(leftovers))
    return [i for group in ordered for i in group]


class ModalityLengthGroupedSampler(torch.utils.data.Sampler):
    """The full index order for all ranks; the Trainer's dataloader shards it across processes.

    Deterministic for (seed, epoch): a resumed run replays the same order and skips what it has seen.
    """

    def __init__(self, lengths, per_device_batch: int, grad_accum: int, world_size: int, seed: int = 0):
        self.lengths = np.asarray(lengths)
        self.per_device_batch, self.grad_accum, self.world_size = per_device_batch, grad_accum, world_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        yield from modality_grouped_indices(
            self.lengths, self.per_device_batch, self.grad_accum, self.world_size, self.seed, self.epoch
        )


class SeededRandomSampler(torch.utils.data.Sampler):
    """A plain shuffle that depends only on (seed, epoch), so a resumed run replays the same order."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(self.size, generator=generator).tolist()
