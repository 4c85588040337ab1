"""The VQAScore engine: P("Yes" | image, "Does this figure show ...?") from a CLIP-FlanT5 model, fast.

Default = the published formula: exp(-mean cross-entropy over the answer tokens, `</s>` included), the
`t5_chat` prompt, `pad` images, softmax over the tokenizer's vocabulary (32100 of FlanT5's 32128 rows)
as the published scorer does. Unlike it, each image is loaded, preprocessed and CLIP-encoded once
however many texts it is paired with; pairs are batched by text length; the decoder runs over the
answer tokens only. Work is done in fixed chunks of images whose results are saved as they finish,
so a killed run resumes where it stopped with identical scores.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from .atomic import write_json
from .data import pad_rows
from .errors import UserError
from .images import load_image, preprocess_image
from .jsonl import iter_jsonl, read_jsonl, write_jsonl
from .prompts import MODEL_MAX_LENGTH, answer_text, scoring_prompt, tokenize_with_image
from .provenance import claim, model_identity, tokenizer_identity
from .vqascore import ScoreSettings


def read_pairs(path: str | os.PathLike) -> list[dict]:
    """Pairs of a JSONL file; a malformed line or an empty text is an error naming the line."""
    return read_jsonl(path, keys=("image", "text"), what="pair", check=_pair_problem)


def _pair_problem(pair: dict) -> str | None:
    if not isinstance(pair["image"], str) or not pair["image"]:
        return f"image must be a path, got {pair['image']!r}"
    if not isinstance(pair["text"], str) or not pair["text"].strip():
        return f"empty text for image {pair['image']!r}"
    return None


class VQAScorer:
    def __init__(self, model, tokenizer, settings: ScoreSettings | None = None):
        self.model, self.tokenizer, self.settings = model.eval(), tokenizer, settings or ScoreSettings()
        self.device = next(model.parameters()).device
        self.vocab = model.config.vocab_size if self.settings.full_vocab else len(tokenizer)
        self.truncated: set[str] = set()  # texts whose prompt or answer was cut at MODEL_MAX_LENGTH tokens
        self._prompts: dict[str, list[int]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._loader: ThreadPoolExecutor | None = None
        self._provenance: dict | None = None

    def prompt_ids(self, text: str) -> list[int]:
        """The prompt's ids, cut at MODEL_MAX_LENGTH as the published scorer cuts them (before the image's patches
        are spliced in): a text of any length costs at most that many tokens."""
        if text not in self._prompts:
            question = scoring_prompt(text, self.settings.prompt_style, self.settings.question_template)
            self._prompts[text] = self._cut(tokenize_with_image(question, self.tokenizer), text)
        return self._prompts[text]

    def answer_ids(self, text: str) -> list[int]:
        return self._cut(self.tokenizer(answer_text(self.settings.answer_template, text)).input_ids, text)

    def _cut(self, ids: list[int], text: str) -> list[int]:
        if len(ids) > MODEL_MAX_LENGTH:
            self.truncated.add(text)
        return ids[:MODEL_MAX_LENGTH]

    def provenance(self) -> dict:
        """What the scores depend on: the model (content and dtype) and tokenizer, the settings that change a
        score (not batch size, chunking or workers)."""
        if self._provenance is None:
            fields = ("question_template", "answer_template", "prompt_style", "score", "full_vocab")
            self._provenance = {
                "model": model_identity(self.model), "tokenizer": tokenizer_identity(self.tokenizer),
                "settings": {f: getattr(self.settings, f) for f in fields},
            }  # fmt: skip
        return self._provenance

    def load_images(self, images: list) -> torch.Tensor:
        """Pixels of image files or PIL images, loaded and preprocessed in parallel."""
        size, aspect = self.model.vision_tower.image_size, self.model.config.image_aspect_ratio

        def pixels(image):
            return preprocess_image(image if isinstance(image, Image.Image) else load_image(image), size, aspect)

        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.settings.workers)
        return torch.stack(list(self._pool.map(pixels, images)))

    def score_images(self, images: list, pairs: list[tuple[int, str]]) -> list[float]:
        """Scores of (index into `images`, text) pairs, in order, `images_per_chunk` images at a time (in memory:
        nothing is saved; `score_pairs` is the resumable path)."""
        chunk = self.settings.images_per_chunk
        by_chunk: dict[int, list[int]] = {}
        for k, (i, _) in enumerate(pairs):
            by_chunk.setdefault(i // chunk, []).append(k)
        scores: list[float] = [0.0] * len(pairs)
        for number, members in sorted(by_chunk.items()):
            start = number * chunk
            local = [(pairs[k][0] - start, pairs[k][1]) for k in members]
            for k, value in zip(members, self.score_chunk(images[start : start + chunk], local), strict=True):
                scores[k] = value
        return scores

    def prefetch(self, paths: list[Path]) -> Future:
        """Load images in the background (the next chunk's, while the model works on this one)."""
        if self._loader is None:
            self._loader = ThreadPoolExecutor(1)
        return self._loader.submit(self.load_images, paths)

    @torch.inference_mode()
    def score_chunk(self, images: list[Path] | Future, pairs: list[tuple[int, str]]) -> list[float]:
        """Scores of (index into `images`, text) pairs; each image is encoded once."""
        dtype = next(self.model.mm_projector.parameters()).dtype
        pixels = images.result() if isinstance(images, Future) else self.load_images(images)
        features = self.model.get_image_features(pixels.to(self.device, dtype))
        order = sorted(range(len(pairs)), key=lambda k: len(self.prompt_ids(pairs[k][1])))
        scores = [0.0] * len(pairs)
        for start in range(0, len(order), self.settings.batch_size):
            batch = order[start : start + self.settings.batch_size]
            values = self._score_batch(features, [pairs[k] for k in batch])
            for k, value in zip(batch, values, strict=True):
                scores[k] = value
        return scores

    def _score_batch(self, features: torch.Tensor, pairs: list[tuple[int, str]]) -> list[float]:
        prompts = [self.prompt_ids(text) for _, text in pairs]
        answers = [self.answer_ids(text) for _, text in pairs]
        ids = pad_rows(prompts, 0).to(self.device)
        labels = pad_rows(answers, -100).to(self.device)
        embeds, mask = self.model.embed_multimodal(ids, ids != 0, features[[i for i, _ in pairs]])
        encoded = self.model.encoder(inputs_embeds=embeds, attention_mask=mask)
        out = self.model(
            encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=self.model._shift_right(labels),
            decoder_attention_mask=labels != -100, use_cache=False,
        )  # fmt: skip
        logp = torch.log_softmax(out.logits[..., : self.vocab].float(), dim=-1)
        valid = labels != -100
        token_logp = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * valid
        if self.settings.score == "first-token":
            return token_logp[:, 0].exp().tolist()
        return (token_logp.sum(1) / valid.sum(1)).exp().tolist()


def score_pairs(
    scorer: VQAScorer,
    pairs: list[dict],
    image_root: str | os.PathLike,
    parts_dir: str | os.PathLike,
    *,
    progress: bool = True,
    restart: bool = False,
) -> list[float]:
    """Scores of `pairs` in input order, computed chunk by chunk (each chunk's results saved in
    `parts_dir` as it finishes; chunks already there are reused if the same model, tokenizer and settings made
    them, else UserError unless `restart`)."""
    root, parts = Path(image_root), Path(parts_dir)
    claim(parts, scorer.provenance(), restart=restart, what="scores",
          restart_hint="rerun with --restart (restart=True)")  # fmt: skip
    images = sorted({p["image"] for p in pairs})
    by_image: dict[str, list[int]] = {}
    for k, pair in enumerate(pairs):
        by_image.setdefault(pair["image"], []).append(k)
    scores: list[float | None] = [None] * len(pairs)
    chunk = scorer.settings.images_per_chunk
    chunks = []  # (part file, image names, (image index, pair index) members, saved scores or None)
    for number, start in enumerate(range(0, len(images), chunk)):
        names = images[start : start + chunk]
        members = [(j, k) for j, name in enumerate(names) for k in by_image[name]]
        part = parts / f"chunk-{number:06d}.json"
        chunks.append((part, names, members, _read_part(part, _keys(names, members, pairs))))
    todo = [i for i, c in enumerate(chunks) if c[3] is None]
    load = {i: None for i in todo}
    bar = tqdm(total=len(pairs), unit="pair", disable=not progress, desc="VQAScore")
    for n, i in enumerate(todo):
        for j in todo[n : n + 2]:  # this chunk's images, and the next one's loading meanwhile
            load[j] = load[j] or scorer.prefetch([root / name for name in chunks[j][1]])
        part, names, members, _ = chunks[i]
        saved = scorer.score_chunk(load.pop(i), [(j, pairs[k]["text"]) for j, k in members])
        _write_part(part, _keys(names, members, pairs), saved)
        chunks[i] = (part, names, members, saved)
        bar.update(len(members))
    bar.update(len(pairs) - bar.n)
    for _, _, members, saved in chunks:
        for (_, k), value in zip(members, saved, strict=True):
            scores[k] = value
    bar.close()
    return scores


def _keys(names: list[str], members: list[tuple[int, int]], pairs: list[dict]) -> list[tuple[str, str]]:
    return [(names[j], pairs[k]["text"]) for j, k in members]


def _read_part(path: Path, keys: list[tuple[str, str]]) -> list[float] | None:
    """A finished chunk's scores, if it was computed for exactly these pairs."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data["scores"] if data["pairs"] == [list(k) for k in keys] else None


def _write_part(path: Path, keys: list[tuple[str, str]], scores: list[float]) -> None:
    write_json(path, {"pairs": keys, "scores": scores}, indent=None)


def write_scores(pairs: list[dict], scores: list[float], out: str | os.PathLike) -> None:
    """Each input pair with "score" added, in input order."""
    write_jsonl(out, [{**pair, "score": score} for pair, score in zip(pairs, scores, strict=True)])


def score_file(
    scorer: VQAScorer,
    pairs_path,
    out,
    *,
    image_root=None,
    shard: tuple[int, int] = (0, 1),
    progress=True,
    restart: bool = False,
) -> Path:
    """Score a pairs JSONL into `out` (resumable through `<out>.parts/`). With `shard=(i, n)` only the
    pairs of the i-th of n disjoint image groups are scored (pairs of one image stay together)."""
    pairs = read_pairs(pairs_path)
    if not pairs:
        raise UserError(f"{pairs_path} holds no pairs: nothing to score (one JSON object per line, image and text)")
    index, count = shard
    if not 0 <= index < count:
        raise UserError(f"shard {index}/{count}: expected i/n with 0 <= i < n")
    if count > 1:
        images = sorted({p["image"] for p in pairs})
        mine = set(images[index::count])
        pairs = [p for p in pairs if p["image"] in mine]
    root = Path(image_root) if image_root is not None else Path(pairs_path).parent
    if not root.is_dir():
        raise UserError(f"image root {root} does not exist: the pairs' image paths are relative to it (--image-root)")
    parts = Path(f"{out}.parts")
    scores = score_pairs(scorer, pairs, root, parts, progress=progress, restart=restart)
    if scorer.truncated:
        count, example = len(scorer.truncated), next(iter(scorer.truncated))[:80]
        print(f"[clip-flant5] {count} text(s) longer than {MODEL_MAX_LENGTH} tokens were cut at {MODEL_MAX_LENGTH}, "
              f"as the published scorer cuts them, e.g. {example!r}...", file=sys.stderr)  # fmt: skip
    write_scores(pairs, scores, out)
    shutil.rmtree(parts, ignore_errors=True)
    return Path(out)


def merge_scores(pairs_path, shard_paths: list, out) -> Path:
    """Merge shard outputs back into the order of the pairs file; every pair must be scored once."""
    scored = {}
    for path in shard_paths:
        for row in iter_jsonl(path, keys=("image", "text", "score"), what="scored pair"):
            scored[(row["image"], row["text"])] = row["score"]
    pairs = read_pairs(pairs_path)
    missing = [p for p in pairs if (p["image"], p["text"]) not in scored]
    if missing:
        raise UserError(f"{len(missing)} pairs of {pairs_path} are in no shard, e.g. {missing[0]}")
    write_scores(pairs, [scored[(p["image"], p["text"])] for p in pairs], out)
    return Path(out)
