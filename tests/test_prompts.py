"""Templates, prompt styles and tokenization against the spec text and the upstream token goldens."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from clip_flant5 import prompts
from clip_flant5.prompts import (
    DEFAULT_ANSWER_TEMPLATE,
    DEFAULT_QUESTION_TEMPLATE,
    IGNORE_INDEX,
    IMAGE_TOKEN,
    IMAGE_TOKEN_INDEX,
    PROMPT_STYLES,
    SYSTEM,
    TEMPLATES,
    answer_text,
    build_texts,
    normalise_image_messages,
    scoring_prompt,
    tokenize_record,
    tokenize_with_image,
)

FIXTURE = Path(__file__).parent / "fixtures" / "upstream-tiny"
GOLDENS = json.loads((FIXTURE / "token_goldens.json").read_text())["cases"]

# Written out from the spec text (data.md), not derived from the module.
SYS = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions."
)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(FIXTURE / "base"))


def qa(question, answer, **extra):
    return {
        **extra,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
    }


# --- constants ---------------------------------------------------------------------------------


def test_constants():
    assert SYSTEM == SYS
    assert (IMAGE_TOKEN, IMAGE_TOKEN_INDEX, IGNORE_INDEX) == ("<image>", -200, -100)
    assert TEMPLATES == ("t5_v1", "t5_plain", "t5_plain_split_text")
    assert DEFAULT_QUESTION_TEMPLATE == 'Does this figure show "{}"? Please answer yes or no.'
    assert DEFAULT_ANSWER_TEMPLATE == "Yes"
    assert answer_text() == "Yes"
    assert answer_text("It shows {}", text="a cat") == "It shows a cat"


# --- upstream token goldens ----------------------------------------------------------------------


@pytest.mark.parametrize("case", GOLDENS, ids=[f"{i}-{c['template']}" for i, c in enumerate(GOLDENS)])
def test_token_goldens(case, tok):
    record = case["record"]
    assert prompts.has_image(record) == case["has_image"]
    conv = record["conversations"]
    normalised = normalise_image_messages(conv) if case["has_image"] else conv
    if "split_at" not in case:  # the split goldens carry no `normalised` field
        assert normalised == case["normalised"]
    out = tokenize_record(record, case["template"], tok, split_at=case.get("split_at"))
    assert out == {"input_ids": case["input_ids"], "labels": case["labels"]}


def test_goldens_cover_every_template():
    assert {c["template"] for c in GOLDENS} == set(TEMPLATES)


def test_scoring_prompt_matches_scoring_golden(tok):
    # Golden case: a scoring-style record; the scorer's own prompt must tokenize identically.
    (case,) = [c for c in GOLDENS if "a red circle" in c["record"]["conversations"][0]["value"]]
    ids = tokenize_with_image(scoring_prompt("a red circle"), tok)
    assert ids == case["input_ids"]
    assert tok(answer_text()).input_ids == case["labels"] == [tok("Yes").input_ids[0], 1]


# --- golden strings from the spec ---------------------------------------------------------------


def test_t5_v1_single_qa_string():
    rec = qa("What is this?\n<image>", "A cat.", image="x.jpg")
    assert build_texts(rec, "t5_v1") == (SYS + " USER: <image>\nWhat is this? ASSISTANT: ", "A cat.")


def test_t5_v1_multi_turn_string():
    rec = {
        "id": "m1",
        "image": "x.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nQ1"},
            {"from": "gpt", "value": "A1"},
            {"from": "human", "value": "Q2"},
            {"from": "gpt", "value": "A2"},
        ],
    }
    assert build_texts(rec, "t5_v1") == (SYS + " USER: <image>\nQ1 ASSISTANT: A1 USER: Q2 ASSISTANT: ", "A2")


def test_t5_v1_text_only_keeps_literal_image():
    rec = qa("Q <image> here", " A ")
    assert build_texts(rec, "t5_v1") == (SYS + " USER: Q <image> here ASSISTANT: ", " A ")


def test_scoring_prompt_styles_strings():
    q = 'Does this figure show "a dog"? Please answer yes or no.'
    assert scoring_prompt("a dog") == SYS + " USER: <image>\n" + q + " ASSISTANT: "
    assert scoring_prompt("a dog", "t5_chat") == SYS + " USER: <image>\n" + q + " ASSISTANT: "
    assert scoring_prompt("a dog", "t5_chat_no_system") == "USER: <image>\n" + q + " ASSISTANT: "
    assert scoring_prompt("a dog", "t5_chat_no_system_no_user") == "<image>\n" + q + " : "
    assert scoring_prompt("a dog", "t5_plain") == "<image>" + q
    assert set(PROMPT_STYLES) == {"t5_chat", "t5_chat_no_system", "t5_chat_no_system_no_user", "t5_plain"}
    assert scoring_prompt("{x} {}", "t5_plain", question_template="Q {}?") == "<image>Q {x} {}?"


def test_scoring_prompt_equals_t5_v1_single_turn():
    q = DEFAULT_QUESTION_TEMPLATE.format("a cat")
    enc, dec = build_texts(qa(q + "\n<image>", "Yes", image="i.jpg"), "t5_v1")
    assert (enc, dec) == (scoring_prompt("a cat"), answer_text())


def test_unknown_style_lists_valid():
    with pytest.raises(ValueError, match="t5_chat_no_system_no_user") as e:
        scoring_prompt("x", "chat")
    assert all(name in str(e.value) for name in PROMPT_STYLES)


def test_unknown_template():
    with pytest.raises(ValueError, match="t5_plain_split_text"):
        build_texts(qa("<image>", "c", image="i"), "v1")


def test_t5_plain_string():
    rec = qa("Summarise the photo.\n<image>", "a red circle", image="i.jpg")
    assert build_texts(rec, "t5_plain") == ("<image>", "a red circle")


@pytest.mark.parametrize(
    ("k", "expected"),
    [(0, ("<image>", "abcdef")), (1, ("<image>a", "bcdef")), (3, ("<image>abc", "def"))],
)
def test_split_text_strings(k, expected):
    rec = qa("<image>\nDescribe.", "abcdef", image="i.jpg")
    assert build_texts(rec, "t5_plain_split_text", split_at=k) == expected


def test_split_text_mid_word_tokens(tok):
    rec = qa("<image>", "hello world", image="i.jpg")
    out = tokenize_record(rec, "t5_plain_split_text", tok, split_at=3)
    assert out["input_ids"] == [1, -200] + tok("hel").input_ids
    assert out["labels"] == tok("lo world").input_ids


def test_split_at_out_of_range():
    with pytest.raises(ValueError, match="split_at"):
        build_texts(qa("<image>", "abc", image="i"), "t5_plain_split_text", split_at=4)


# --- split-text rule ------------------------------------------------------------------------------

CAPTIONS = [
    "",
    "x",
    "ab",
    "abc",
    "a red circle on the left of a blue square " * 5,
    "héllo wörld 🐱 ∑ 中文字符 ok",
]


@pytest.mark.parametrize("caption", CAPTIONS, ids=lambda c: f"n{len(c)}")
@pytest.mark.parametrize("kind", ["random", "numpy"])
def test_split_rule(caption, kind):
    n = len(caption)
    rec = qa("<image>\nDescribe.", caption, image="i.jpg")
    seen = set()
    for seed in range(300):
        rng = random.Random(seed) if kind == "random" else np.random.default_rng(seed)
        enc, dec = build_texts(rec, "t5_plain_split_text", rng=rng)
        assert enc.startswith("<image>")
        prefix = enc[len("<image>") :]
        k = len(prefix)
        assert prefix + dec == caption  # every character exactly once, in order
        if n < 2:
            assert k == 0
        else:
            assert 1 <= k <= n // 2
        seen.add(k)
    if 2 <= n <= 20:
        assert seen == set(range(1, n // 2 + 1))  # every allowed cut, both ends included, is drawn
    elif n > 20:
        assert len(seen) > 10


def test_split_redrawn_per_call_and_deterministic_per_seed():
    rec = qa("<image>", "a fairly long caption for splitting", image="i.jpg")
    rng = random.Random(0)
    draws = [build_texts(rec, "t5_plain_split_text", rng=rng) for _ in range(20)]
    assert len(set(draws)) > 1
    rng2 = random.Random(0)
    assert draws == [build_texts(rec, "t5_plain_split_text", rng=rng2) for _ in range(20)]


# --- normalisation, role checks -------------------------------------------------------------------


def test_normalise_moves_image_front_and_does_not_mutate():
    conv = [{"from": "human", "value": "  Q? <image>  more "}, {"from": "gpt", "value": "A"}]
    before = json.dumps(conv)
    assert normalise_image_messages(conv) == [
        {"from": "human", "value": "<image>\nQ?   more"},
        {"from": "gpt", "value": "A"},
    ]
    assert json.dumps(conv) == before
    assert normalise_image_messages([{"from": "human", "value": "<image>"}]) == [
        {"from": "human", "value": "<image>"}  # prefix then strip again drops the bare newline
    ]


def test_normalisation_only_for_image_records():
    with_img = qa("Q\n<image>", "A", image="i.jpg")
    without = qa("Q\n<image>", "A")
    assert build_texts(with_img, "t5_v1")[0] == SYS + " USER: <image>\nQ ASSISTANT: "
    assert build_texts(without, "t5_v1")[0] == SYS + " USER: Q\n<image> ASSISTANT: "


def test_text_only_literal_image_is_ordinary_tokens(tok):
    out = tokenize_record(qa("Q\n<image>", "A"), "t5_v1", tok)
    assert IMAGE_TOKEN_INDEX not in out["input_ids"]
    assert out["input_ids"] == tok(SYS + " USER: Q\n<image> ASSISTANT: ").input_ids


def test_leading_gpt_dropped():
    rec = {
        "id": "g1",
        "image": "i.jpg",
        "conversations": [
            {"from": "gpt", "value": "Hi."},
            {"from": "human", "value": "<image>\nQ"},
            {"from": "gpt", "value": "A"},
        ],
    }
    assert build_texts(rec, "t5_v1") == (SYS + " USER: <image>\nQ ASSISTANT: ", "A")


@pytest.mark.parametrize(
    ("conv", "match"),
    [
        (["human", "human"], "alternate"),
        (["human", "gpt", "gpt", "gpt"], "alternate"),
        (["gpt", "gpt", "human"], "alternate"),
        (["human", "gpt", "human"], "odd number"),
        (["human"], "odd number"),
        (["gpt"], "no human/gpt"),
        ([], "no human/gpt"),
        (["human", "system"], "alternate"),
    ],
)
def test_bad_roles_raise_with_id(conv, match):
    rec = {"id": "rec-42", "conversations": [{"from": r, "value": "v"} for r in conv]}
    with pytest.raises(ValueError, match=match) as e:
        build_texts(rec, "t5_v1")
    assert "rec-42" in str(e.value)


@pytest.mark.parametrize("template", ["t5_plain", "t5_plain_split_text"])
def test_plain_needs_one_pair_with_image(template):
    with pytest.raises(ValueError, match="rec-7"):
        build_texts({"id": "rec-7", **qa("<image>", "c")}, template, split_at=0)
    three = {"id": "rec-7", "image": "i", "conversations": qa("<image>", "c")["conversations"] * 2}
    with pytest.raises(ValueError, match="rec-7"):
        build_texts(three, template, split_at=0)


# --- tokenization ---------------------------------------------------------------------------------


def test_tokenize_with_image_chunks(tok):
    assert tokenize_with_image("<image>", tok) == [1, -200, 1]
    assert tokenize_with_image("", tok) == [1]
    a, b = tok("ab ").input_ids, tok("\ncd").input_ids
    assert tokenize_with_image("ab <image>\ncd", tok) == a + [-200] + b
    assert tokenize_with_image("<image><image>", tok) == [1, -200, 1, -200, 1]


def test_text_only_truncation_keeps_eos(tok):
    rec = qa("Write a short poem about the sea. " * 20, "Blue and wide, blue and deep. " * 20)
    full = tokenize_record(rec, "t5_v1", tok)
    cut = tokenize_record(rec, "t5_v1", tok, max_length=16)
    for key in ("input_ids", "labels"):
        assert len(full[key]) > 16
        assert cut[key] == full[key][:15] + [1]
    short = tokenize_record(qa("Hi", "Yo"), "t5_v1", tok, max_length=2048)
    assert short == tokenize_record(qa("Hi", "Yo"), "t5_v1", tok)


def test_image_records_not_truncated_here(tok):
    rec = qa("<image>\n" + "many words here " * 50, "A", image="i.jpg")
    assert len(tokenize_record(rec, "t5_v1", tok, max_length=16)["input_ids"]) > 16
