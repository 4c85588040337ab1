"""Conversation templates, prompt styles and tokenization, byte-compatible with the released checkpoints.

The exact strings and token ids here are what the published CLIP-FlanT5 models were trained and scored
with (spec: data.md "Conversation templates" / "Tokenization", scoring.md first section); a one-character
difference silently degrades every score, so tests pin them against upstream goldens.
"""

from __future__ import annotations

import random

from .errors import UserError

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_INDEX = -200  # placeholder id, replaced by the projected CLIP patches in the model
IGNORE_INDEX = -100  # label value the loss skips (padding)
MODEL_MAX_LENGTH = 2048  # the context the published models were trained with (tokens, image patches included)

TEMPLATES = ("t5_v1", "t5_plain", "t5_plain_split_text")
_ROLES = {"human": "USER", "gpt": "ASSISTANT"}

DEFAULT_QUESTION_TEMPLATE = 'Does this figure show "{}"? Please answer yes or no.'
DEFAULT_ANSWER_TEMPLATE = "Yes"

# Scoring prompt styles, named as in t2v_metrics. `{question}` is the filled question template;
# str.format does not re-parse argument values, so braces inside the question are safe.
PROMPT_STYLES = {
    "t5_chat": SYSTEM + " USER: " + IMAGE_TOKEN + "\n{question} ASSISTANT: ",  # released models
    "t5_chat_no_system": "USER: " + IMAGE_TOKEN + "\n{question} ASSISTANT: ",
    "t5_chat_no_system_no_user": IMAGE_TOKEN + "\n{question} : ",
    "t5_plain": IMAGE_TOKEN + "{question}",  # stage-1-only models
}
DEFAULT_PROMPT_STYLE = "t5_chat"


def _name(record: dict) -> str:
    return f"record id={record.get('id', '<no id>')!r}"


def has_image(record: dict) -> bool:
    # Upstream decides by key presence ('image' in record), not by the value.
    return "image" in record


def normalise_image_messages(conversations) -> list[dict]:
    """Move `<image>` to the front of every message that contains it (image records only).

    Returns new dicts; the input is not modified. Upstream did this so the image always precedes
    the question whatever order the source data used.
    """
    out = []
    for msg in conversations:
        msg = dict(msg)
        if IMAGE_TOKEN in msg["value"]:
            value = msg["value"].replace(IMAGE_TOKEN, "").strip()
            msg["value"] = (IMAGE_TOKEN + "\n" + value).strip()
        out.append(msg)
    return out


def _t5_v1(record: dict, conv: list[dict]) -> tuple[str, str]:
    if conv and conv[0]["from"] != "human":
        conv = conv[1:]  # upstream dropped one leading non-human turn
    if not conv:
        raise UserError(f"{_name(record)}: no human/gpt turns to template")
    for i, msg in enumerate(conv):
        expected = "human" if i % 2 == 0 else "gpt"
        if msg["from"] != expected:
            raise UserError(
                f"{_name(record)}: roles must alternate human/gpt, turn {i} is {msg['from']!r} (expected {expected!r})"
            )
    if len(conv) % 2:
        raise UserError(f"{_name(record)}: odd number of turns ({len(conv)}), last message must be from gpt")
    enc = SYSTEM + " " + "".join(f"{_ROLES[m['from']]}: {m['value']} " for m in conv[:-1]) + "ASSISTANT: "
    return enc, conv[-1]["value"]


def _caption(record: dict, conv: list[dict]) -> str:
    if not has_image(record):
        raise UserError(f"{_name(record)}: plain (stage-1) templates need an image record")
    if len(conv) != 2 or conv[0]["from"] != "human" or conv[1]["from"] != "gpt":
        raise UserError(f"{_name(record)}: plain templates need exactly one human turn then one gpt turn")
    return conv[1]["value"]


def _draw_split(n: int, rng) -> int:
    """k = 0 if n < 2 else uniform in [1, n // 2] inclusive; rng: random.Random, numpy Generator or None."""
    if n < 2:
        return 0
    if rng is None:
        rng = random  # the global stream, as upstream; pass an rng for determinism
    if hasattr(rng, "integers"):  # numpy Generator: high is exclusive
        return int(rng.integers(1, n // 2 + 1))
    return rng.randint(1, n // 2)


def build_texts(record: dict, template: str, *, rng=None, split_at=None) -> tuple[str, str]:
    """(encoder_text, decoder_text) of one record under a training template.

    For `t5_plain_split_text` the cut is drawn from `rng` on every call unless `split_at` fixes it.
    An explicit `split_at` is only checked to lie in [0, len(caption)]: the upstream goldens include a
    cut (21 of 41 characters) beyond the n // 2 bound of the random rule.
    """
    if template not in TEMPLATES:
        raise UserError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)}")
    conv = record.get("conversations") or []
    if has_image(record):
        conv = normalise_image_messages(conv)
    if template == "t5_v1":
        return _t5_v1(record, conv)
    caption = _caption(record, conv)
    if template == "t5_plain":
        return IMAGE_TOKEN, caption
    k = _draw_split(len(caption), rng) if split_at is None else split_at
    if not 0 <= k <= len(caption):
        raise UserError(f"{_name(record)}: split_at={k} outside [0, {len(caption)}]")
    return IMAGE_TOKEN + caption[:k], caption[k:]


def tokenize_with_image(text: str, tokenizer) -> list[int]:
    """Tokenize each `<image>`-separated chunk on its own (each ends with </s>), join with -200.

    The per-chunk </s> is an upstream quirk the released checkpoints were trained with; keep it.
    """
    ids: list[int] = []
    for i, chunk in enumerate(text.split(IMAGE_TOKEN)):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(tokenizer(chunk).input_ids)
    return ids


def tokenize_record(
    record: dict, template: str, tokenizer, *, rng=None, split_at=None, max_length: int | None = None
) -> dict:
    """{"input_ids", "labels"} as the original training preprocessing produced them.

    Image records are never truncated here (collation truncates). Text-only records are tokenized whole
    (a literal `<image>` is ordinary text) and, when `max_length` is given, truncated like the HF
    tokenizer does upstream: at most `max_length` ids, the last one still </s>.
    """
    enc, dec = build_texts(record, template, rng=rng, split_at=split_at)
    if has_image(record):
        return {"input_ids": tokenize_with_image(enc, tokenizer), "labels": tokenizer(dec).input_ids}
    kw = {"truncation": True, "max_length": max_length} if max_length is not None else {}
    return {"input_ids": tokenizer(enc, **kw).input_ids, "labels": tokenizer(dec, **kw).input_ids}


def scoring_prompt(
    text: str, style: str = DEFAULT_PROMPT_STYLE, question_template: str = DEFAULT_QUESTION_TEMPLATE
) -> str:
    """Encoder text (with `<image>`) for scoring `text` under a prompt style."""
    if style not in PROMPT_STYLES:
        raise UserError(f"unknown prompt style {style!r}; valid: {', '.join(PROMPT_STYLES)}")
    return PROMPT_STYLES[style].format(question=question_template.format(text))


def answer_text(answer_template: str = DEFAULT_ANSWER_TEMPLATE, text: str | None = None) -> str:
    """Decoder text whose likelihood is the score; a template with `{}` is filled with `text`."""
    return answer_template.format(text) if text is not None else answer_template
