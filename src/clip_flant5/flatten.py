"""Multi-turn flattening of the stage-2 conversation JSON (spec: data.md "Multi-turn flattening"), streamed.

The input is a ~1 GB JSON array (665K records) and the output ~3-4M records: loading it whole as Python
objects takes several GB, so the array is parsed one element at a time (`iter_json_array`) and written one
record per line (`atomic_json_array`), which keeps the output valid JSON and streamable by the same reader.

Leading gpt turns: upstream's flattening script paired turns blindly, and its training code dropped one
leading non-human turn of each flattened record afterwards, so a record starting with a gpt turn came out
misaligned (pairs gpt/human, later ones with "<image>\n" prefixed to a gpt answer). We drop a leading gpt turn
before pairing, in both modes, and count it (`leading_gpt_dropped`); for all other records the output equals
upstream's record for record.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import sys
from collections.abc import Iterator

from .atomic import atomic_json_array, write_json
from .errors import UserError
from .prompts import IMAGE_TOKEN, has_image

MODES = ("faithful", "corrected")
CHUNK_SIZE = 1 << 22  # bytes read per refill (4 MiB): records are ~1.5 KB, so ~3K records per read
REPORT_LIMIT = 100  # malformed records listed in the report
MESSAGE_LIMIT = 20  # ... and in the error message

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class JsonStreamError(UserError):
    """The input is not a well-formed JSON array; the message names the file and the byte offset."""


class MalformedRecordError(UserError):
    """A record does not have the shape flattening needs (the message says why)."""


class MalformedDataError(UserError):
    """The input holds malformed records and skipping them was not asked for."""


class _Reader:
    """A growing window over a UTF-8 file: `buf[pos:]` is unread text, `start` the byte offset of `buf[0]`.

    Kept instead of ijson (measured in benchmarks/README.md, "Streaming JSON reader"): ijson's C backend is no
    faster here (x0.96 records/s) and changes strings silently, where json (and so upstream) keeps them: a lone
    surrogate escape becomes "?", and a high surrogate followed by any other escape becomes one bogus character;
    its errors give no byte offset. Its correct pure-Python backend runs at x0.08."""

    def __init__(self, file, name: str, chunk_size: int):
        self.file, self.name, self.chunk_size = file, name, chunk_size
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.start, self.bytes_read, self.eof = "", 0, 0, 0, False

    def fill(self) -> bool:
        """Append the next chunk, dropping consumed text; False at end of file."""
        if self.eof:
            return False
        tail = self.buf[self.pos :]
        pending = len(self.decoder.getstate()[0])  # bytes of a character cut by the previous chunk
        # Encoding only the (short) unread tail keeps byte offsets exact without re-encoding everything.
        self.start = self.bytes_read - pending - len(tail.encode("utf-8"))
        # Read at least as much as is buffered, so a record larger than a chunk is re-parsed O(log n) times.
        raw = self.file.read(max(self.chunk_size, len(tail)))
        try:
            text = self.decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as err:
            raise JsonStreamError(
                f"{self.name}: not UTF-8 at byte {self.bytes_read - pending + err.start}: {err.reason}"
            ) from None
        self.bytes_read += len(raw)
        self.buf, self.pos, self.eof = tail + text, 0, not raw
        return bool(raw)

    def peek(self) -> str:
        """Skip whitespace; the next character, or "" at end of file."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def value(self):
        if not self.peek():
            raise self.error("unexpected end of file, expected an array element")
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as err:
                if self.eof or not _maybe_cut(err, len(self.buf)):
                    raise self.error(f"invalid JSON ({err.msg})", err.pos) from None
            else:
                # A number or literal ending at the buffer's end may go on in the next chunk.
                if end < len(self.buf) or self.eof or isinstance(obj, dict | list | str):
                    self.pos = end
                    return obj
            self.fill()

    def error(self, message: str, pos: int | None = None) -> JsonStreamError:
        pos = self.pos if pos is None else pos
        offset = self.start + len(self.buf[:pos].encode("utf-8"))
        return JsonStreamError(f"{self.name}: {message} at byte {offset}")


def _maybe_cut(err: json.JSONDecodeError, buffered: int) -> bool:
    # A document cut by the chunk boundary fails at (or a few characters before: "tr", "\u12") the buffer's
    # end, or as an unterminated string; any other error is in the data itself.
    return err.pos >= buffered - 16 or err.msg.startswith("Unterminated string")


def iter_json_array(path: str | os.PathLike, *, chunk_size: int = CHUNK_SIZE) -> Iterator:
    """Yield the elements of the JSON array in `path` one by one, in constant memory (one element at a time).

    Raises JsonStreamError naming the byte offset for invalid JSON, a top level that is not an array, or
    data after the closing bracket; UserError for a missing file.
    """
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{os.fspath(path)}: no such file (expected a JSON array of records)") from None
    with file:
        reader = _Reader(file, os.fspath(path), chunk_size)
        if reader.peek() != "[":
            raise reader.error("expected a JSON array ('[')")
        reader.pos += 1
        if reader.peek() == "]":
            reader.pos += 1
        else:
            while True:
                yield reader.value()
                char = reader.peek()
                if char not in (",", "]"):
                    raise reader.error("expected ',' or ']' after an array element")
                reader.pos += 1
                if char == "]":
                    break
        if reader.peek():
            raise reader.error("unexpected data after the closing ']'")


def _turns(record) -> tuple[list, bool]:
    """The record's turns without a leading gpt turn, and whether one was dropped; raises MalformedRecordError."""
    if not isinstance(record, dict):
        raise MalformedRecordError(f"not a JSON object but {type(record).__name__}")
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise MalformedRecordError("'conversations' is missing, empty or not a list")
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise MalformedRecordError(f"turn {i} is not an object with 'from' and 'value'")
        if not isinstance(turn["value"], str):
            raise MalformedRecordError(f"turn {i} 'value' is not a string")
    dropped = conv[0]["from"] == "gpt"
    if dropped:
        conv = conv[1:]
    if not conv or len(conv) % 2:
        after = " after dropping the leading gpt turn" if dropped else ""
        raise MalformedRecordError(f"{len(conv)} turns{after}; expected human/gpt pairs")
    for i, turn in enumerate(conv):
        expected = "gpt" if i % 2 else "human"
        if turn["from"] != expected:
            raise MalformedRecordError(f"turn {i + dropped} is from {turn['from']!r}, expected {expected!r}")
    return conv, dropped


def _with_turns(record: dict, turns: list) -> dict:
    # Rebuilt in place of deepcopy: same key order as upstream's copy, unchanged values shared.
    return {key: turns if key == "conversations" else value for key, value in record.items()}


def _flatten(record: dict, conv: list, dropped: bool, mode: str) -> list[dict]:
    if len(conv) == 2 and not dropped:
        return [record]  # kept as is, as upstream
    prefix = IMAGE_TOKEN + "\n" if mode == "faithful" or has_image(record) else ""
    out = [_with_turns(record, conv[:2])]
    for i in range(2, len(conv), 2):
        question = dict(conv[i], value=prefix + conv[i]["value"])
        out.append(_with_turns(record, [question, conv[i + 1]]))
    return out


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UserError(f"unknown flattening mode {mode!r}; valid modes: {', '.join(MODES)}")


def flatten_record(record, mode: str = "faithful") -> list[dict]:
    """The single-QA-pair records that `record` flattens to (see `flatten_file` for the rule and modes).

    The results share unchanged values with `record`: deep-copy them before mutating.
    Raises MalformedRecordError for a record that cannot be flattened.
    """
    _check_mode(mode)
    conv, dropped = _turns(record)
    return _flatten(record, conv, dropped, mode)


def _record_id(record):
    return record.get("id") if isinstance(record, dict) else None


def flatten_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    mode: str = "faithful",
    skip_malformed: bool = False,
    report_path: str | os.PathLike | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> dict:
    """Flatten every multi-turn record of the JSON array `src` into single QA pairs, written to `dst`.

    Upstream rule, in input order: a 2-turn record is kept as is; a longer one gives its first pair unchanged,
    then one record per later pair with "<image>\n" prefixed to the human value; no earlier turns are kept as
    context and all other keys are copied (ids repeat).

    `mode="faithful"` (default) is exactly that rule, including its flaw: later pairs of TEXT-ONLY records
    also get the "<image>\n" prefix. It is the default because the published CLIP-FlanT5 checkpoints were
    trained on this data and reproducing them is the point of the workflow. `mode="corrected"` leaves the
    text-only records' later pairs unprefixed (image records are flattened identically in both modes).

    A leading gpt turn is dropped before pairing (module docstring). Malformed records (not an object,
    missing/empty/non-list `conversations`, a turn without `from`/`value`, an odd number of turns, roles not
    alternating human/gpt) make the call raise MalformedDataError listing them, after reading the whole
    input, unless `skip_malformed=True`, which skips and counts them. `dst` is written atomically (nothing
    is written on failure). The report (returned, and written to `report_path` also when malformed records
    fail the run) counts records in/out, single- and multi-turn, text-only in/out, the prefixed text-only
    pairs, the dropped leading gpt turns and the malformed records (count + the first ones with index, id
    and reason).
    """
    _check_mode(mode)
    keys = ("records_in", "single_turn", "multi_turn", "records_out", "text_only_in", "text_only_out")
    counts = dict.fromkeys((*keys, "text_only_prefixed", "leading_gpt_dropped", "malformed", "image_without_token"), 0)
    malformed, without_token = [], []
    with atomic_json_array(dst) as write:
        for index, record in enumerate(iter_json_array(src, chunk_size=chunk_size)):
            counts["records_in"] += 1
            try:
                conv, dropped = _turns(record)
            except MalformedRecordError as err:
                counts["malformed"] += 1
                if len(malformed) < REPORT_LIMIT:
                    malformed.append({"index": index, "id": _record_id(record), "reason": str(err)})
                continue
            out = _flatten(record, conv, dropped, mode)
            counts["leading_gpt_dropped"] += dropped
            counts["single_turn" if len(conv) == 2 else "multi_turn"] += 1
            counts["records_out"] += len(out)
            if not has_image(record):
                counts["text_only_in"] += 1
                counts["text_only_out"] += len(out)
                counts["text_only_prefixed"] += (len(out) - 1) * (mode == "faithful")
            elif IMAGE_TOKEN not in conv[0]["value"]:  # an image the first question never shows the model
                counts["image_without_token"] += 1
                if len(without_token) < REPORT_LIMIT:
                    without_token.append({"index": index, "id": _record_id(record)})
            for item in out:
                write(item)
        if counts["records_in"] == 0:
            raise UserError(f"{os.fspath(src)} holds no records (an empty JSON array): nothing to flatten; check the "
                            "file (clip-flant5 data-status shows what was downloaded)")  # fmt: skip
        report = {"input": os.fspath(src), "output": os.fspath(dst), "mode": mode, **counts}
        report["image_without_token_first"] = without_token
        report["malformed_skipped"] = skip_malformed and counts["malformed"] > 0
        report["malformed_first"] = malformed
        if counts["malformed"] and not skip_malformed:
            if report_path is not None:
                write_json(report_path, report)
            raise MalformedDataError(_malformed_message(src, counts["malformed"], malformed, report_path))
    if report_path is not None:
        write_json(report_path, report)
    if counts["image_without_token"]:
        first = ", ".join(f"record {r['index']} (id={r['id']!r})" for r in without_token[:MESSAGE_LIMIT])
        print(f"[clip-flant5] {os.fspath(src)}: {counts['image_without_token']} image record(s) whose first question "
              f"has no {IMAGE_TOKEN} (kept as upstream keeps them; counted in the report), e.g. {first}",
              file=sys.stderr)  # fmt: skip
    return report


def _malformed_message(src, count: int, malformed: list[dict], report_path) -> str:
    lines = [f"{os.fspath(src)}: {count} malformed record(s); nothing was written. First ones:"]
    lines += [f"  record {m['index']} (id={m['id']!r}): {m['reason']}" for m in malformed[:MESSAGE_LIMIT]]
    if count > MESSAGE_LIMIT:
        lines.append(f"  ... and {count - MESSAGE_LIMIT} more" + (f" (report: {report_path})" if report_path else ""))
    lines.append(
        "Fix the data, or skip and count these records: flatten --skip-malformed (skip_malformed=True; the "
        "workflow's data.skip_malformed_records)."
    )
    return "\n".join(lines)
