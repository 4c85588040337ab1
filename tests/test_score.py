"""The VQAScore engine: the published formula, batching/order independence, encode-once, resume, bad input."""

import json
import math
import random

import pytest
import torch
from PIL import Image

from clip_flant5.checkpoint import load_model
from clip_flant5.errors import UserError
from clip_flant5.images import ImageLoadError, load_and_preprocess
from clip_flant5.inference import load_tokenizer
from clip_flant5.prompts import IMAGE_TOKEN_INDEX, MODEL_MAX_LENGTH
from clip_flant5.score import ScoreSettings, VQAScorer, merge_scores, read_pairs, score_file, score_pairs


@pytest.fixture
def fixture_scorer(upstream):
    return VQAScorer(load_model(upstream / "ckpt"), load_tokenizer(upstream / "base"))


def reference(upstream):
    return {(r["image"], r["text"]): r["score"] for r in map(json.loads, (upstream / "scores.jsonl").open())}


def read_scores(path):
    return [json.loads(line) for line in open(path)]


@pytest.mark.parametrize("batch_size, per_chunk", [(1, 1), (3, 2), (16, 64)])
def test_matches_the_original_scorer_for_any_batching(upstream, tmp_path, batch_size, per_chunk):
    model, tok = load_model(upstream / "ckpt"), load_tokenizer(upstream / "base")
    scorer = VQAScorer(model, tok, ScoreSettings(batch_size=batch_size, images_per_chunk=per_chunk))
    out = score_file(scorer, upstream / "pairs.jsonl", tmp_path / "s.jsonl", progress=False)
    rows, ref = read_scores(out), reference(upstream)
    assert [(r["image"], r["text"]) for r in rows] == [
        (p["image"], p["text"]) for p in read_pairs(upstream / "pairs.jsonl")
    ]
    for row in rows:
        assert abs(math.log(row["score"]) - math.log(ref[(row["image"], row["text"])])) < 1e-5


def test_scores_do_not_depend_on_input_order(fixture_scorer, upstream, tmp_path):
    pairs = read_pairs(upstream / "pairs.jsonl")
    shuffled = pairs[:]
    random.Random(0).shuffle(shuffled)
    (tmp_path / "shuffled.jsonl").write_text("".join(json.dumps(p) + "\n" for p in shuffled))
    a = score_file(fixture_scorer, upstream / "pairs.jsonl", tmp_path / "a.jsonl", progress=False)
    b = score_file(
        fixture_scorer, tmp_path / "shuffled.jsonl", tmp_path / "b.jsonl", image_root=upstream, progress=False
    )
    by_pair = {(r["image"], r["text"]): r["score"] for r in read_scores(b)}
    for row in read_scores(a):
        assert row["score"] == pytest.approx(by_pair[(row["image"], row["text"])], rel=1e-5)


def test_matches_a_vqascore_derived_by_hand(tiny_model, tiny_tokenizer, tmp_path):
    """Forward pass, log-softmax over the tokenizer-length vocabulary, mean over the two answer tokens."""
    Image.new("RGB", (50, 30), (200, 40, 40)).save(tmp_path / "red.png")
    text = "a red square"
    prompt = (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        'detailed, and polite answers to the user\'s questions. USER: <image>\nDoes this figure show "a red square"? '
        "Please answer yes or no. ASSISTANT: "
    )
    head, tail = prompt.split("<image>")
    ids = torch.tensor([tiny_tokenizer(head).input_ids + [IMAGE_TOKEN_INDEX] + tiny_tokenizer(tail).input_ids])
    answer = tiny_tokenizer("Yes").input_ids
    assert len(answer) == 2 and answer[-1] == 1
    image = load_and_preprocess(tmp_path / "red.png", 64, "pad")[None]
    with torch.no_grad():
        logits = tiny_model(input_ids=ids, images=image, labels=torch.tensor([answer])).logits[0]
    logp = torch.log_softmax(logits[:, : len(tiny_tokenizer)], dim=-1)
    expected = math.exp((logp[0, answer[0]] + logp[1, answer[1]]).item() / 2)
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"image": "red.png", "text": text}) + "\n")
    out = score_file(
        VQAScorer(tiny_model, tiny_tokenizer), tmp_path / "pairs.jsonl", tmp_path / "s.jsonl", progress=False
    )
    assert read_scores(out)[0]["score"] == pytest.approx(expected, rel=1e-5)
    first = VQAScorer(tiny_model, tiny_tokenizer, ScoreSettings(score="first-token"))
    out = score_file(first, tmp_path / "pairs.jsonl", tmp_path / "f.jsonl", progress=False)
    assert read_scores(out)[0]["score"] == pytest.approx(logp[0, answer[0]].exp().item(), rel=1e-5)
    full = VQAScorer(tiny_model, tiny_tokenizer, ScoreSettings(full_vocab=True))
    out = score_file(full, tmp_path / "pairs.jsonl", tmp_path / "v.jsonl", progress=False)
    assert read_scores(out)[0]["score"] < expected  # more logits share the probability mass


def test_each_image_is_encoded_once(fixture_scorer, upstream, tmp_path):
    calls = []
    tower = fixture_scorer.model.vision_tower
    tower.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    score_file(fixture_scorer, upstream / "pairs.jsonl", tmp_path / "s.jsonl", progress=False)
    pairs = read_pairs(upstream / "pairs.jsonl")
    assert sum(calls) == len({p["image"] for p in pairs}) < len(pairs)


def test_a_killed_run_resumes_with_identical_scores(fixture_scorer, upstream, tmp_path):
    pairs = read_pairs(upstream / "pairs.jsonl")
    settings = ScoreSettings(images_per_chunk=2)
    straight = score_pairs(VQAScorer(fixture_scorer.model, fixture_scorer.tokenizer, settings), pairs, upstream,
                           tmp_path / "a", progress=False)  # fmt: skip

    class Killed(Exception):
        pass

    scorer = VQAScorer(fixture_scorer.model, fixture_scorer.tokenizer, settings)
    real, done = scorer.score_chunk, []

    def dies_on_third_chunk(*args):
        if len(done) == 2:
            raise Killed
        done.append(1)
        return real(*args)

    scorer.score_chunk = dies_on_third_chunk
    with pytest.raises(Killed):
        score_pairs(scorer, pairs, upstream, tmp_path / "b", progress=False)
    assert len(list((tmp_path / "b").glob("chunk-*.json"))) == 2
    computed = []
    scorer.score_chunk = lambda *args: computed.append(1) or real(*args)
    resumed = score_pairs(scorer, pairs, upstream, tmp_path / "b", progress=False)
    assert resumed == straight
    assert len(computed) == math.ceil(len({p["image"] for p in pairs}) / 2) - 2


def test_shards_merge_to_the_single_run(fixture_scorer, upstream, tmp_path):
    whole = score_file(fixture_scorer, upstream / "pairs.jsonl", tmp_path / "all.jsonl", progress=False)
    shards = [
        score_file(fixture_scorer, upstream / "pairs.jsonl", tmp_path / f"s{i}.jsonl", shard=(i, 3), progress=False)
        for i in range(3)
    ]
    merged = merge_scores(upstream / "pairs.jsonl", shards, tmp_path / "merged.jsonl")
    assert read_scores(merged) == read_scores(whole)
    with pytest.raises(ValueError, match="in no shard"):
        merge_scores(upstream / "pairs.jsonl", shards[:2], tmp_path / "bad.jsonl")


def test_bad_input_names_the_file_or_line(fixture_scorer, upstream, tmp_path):
    (tmp_path / "empty.jsonl").write_text('{"image": "img0.png", "text": "ok"}\n{"image": "img0.png", "text": " "}\n')
    with pytest.raises(ValueError, match="empty.jsonl:2: empty text"):
        read_pairs(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"image": "img0.png"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_pairs(tmp_path / "bad.jsonl")
    (tmp_path / "missing.jsonl").write_text('{"image": "nope.png", "text": "a cat"}\n')
    with pytest.raises(ImageLoadError, match="nope.png"):
        score_file(
            fixture_scorer, tmp_path / "missing.jsonl", tmp_path / "o.jsonl", image_root=upstream, progress=False
        )
    assert not (tmp_path / "o.jsonl").exists()


def test_partial_results_of_another_model_or_setting_are_never_reused(fixture_scorer, upstream, tmp_path, tiny_model):
    """A rerun into the same output with another model (or score kind) must not keep the old model's chunks."""
    pairs = read_pairs(upstream / "pairs.jsonl")
    parts = tmp_path / "out.jsonl.parts"
    first = VQAScorer(fixture_scorer.model, fixture_scorer.tokenizer, ScoreSettings(images_per_chunk=2))
    score_pairs(first, pairs, upstream, parts, progress=False)  # a run that left its chunks (killed before merging)
    other_model = VQAScorer(tiny_model, fixture_scorer.tokenizer, ScoreSettings(images_per_chunk=2))
    with pytest.raises(UserError, match=r"out.jsonl.parts holds scores made from other inputs \(changed: model\)"):
        score_pairs(other_model, pairs, upstream, parts, progress=False)
    other_kind = VQAScorer(fixture_scorer.model, fixture_scorer.tokenizer,
                           ScoreSettings(images_per_chunk=2, score="first-token"))  # fmt: skip
    with pytest.raises(UserError, match=r"changed: settings.score\).*--restart"):
        score_pairs(other_kind, pairs, upstream, parts, progress=False)
    restarted = score_pairs(other_kind, pairs, upstream, parts, progress=False, restart=True)
    fresh = score_pairs(other_kind, pairs, upstream, tmp_path / "fresh", progress=False)
    assert restarted == fresh
    bigger_batches = VQAScorer(fixture_scorer.model, fixture_scorer.tokenizer,
                               ScoreSettings(images_per_chunk=2, score="first-token", batch_size=7))  # fmt: skip
    assert score_pairs(bigger_batches, pairs, upstream, parts, progress=False) == fresh  # same inputs: resumed


def test_a_text_of_any_length_costs_at_most_the_context(fixture_scorer, upstream, tmp_path, capsys):
    """A caption of 24,000 tokens once made scoring allocate the whole machine; it is cut at 2048 tokens, as the
    published scorer cuts its inputs, and said so."""
    long_text = "a red circle on the left " * 4000
    ids = fixture_scorer.prompt_ids(long_text)
    assert len(ids) == MODEL_MAX_LENGTH and IMAGE_TOKEN_INDEX in ids
    (tmp_path / "long.jsonl").write_text(json.dumps({"image": "img0.png", "text": long_text}) + "\n")
    out = score_file(fixture_scorer, tmp_path / "long.jsonl", tmp_path / "o.jsonl", image_root=upstream,
                     progress=False)  # fmt: skip
    assert 0 < read_scores(out)[0]["score"] < 1
    assert "1 text(s) longer than 2048 tokens were cut at 2048" in capsys.readouterr().err


def test_empty_pairs_and_a_missing_image_root_are_errors(fixture_scorer, upstream, tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="empty.jsonl holds no pairs"):
        score_file(fixture_scorer, tmp_path / "empty.jsonl", tmp_path / "o.jsonl", progress=False)
    with pytest.raises(UserError, match="image root .*nowhere does not exist.*--image-root"):
        score_file(fixture_scorer, upstream / "pairs.jsonl", tmp_path / "o.jsonl", image_root=tmp_path / "nowhere",
                   progress=False)  # fmt: skip
    assert not (tmp_path / "o.jsonl").exists()
