"""Tests for clip_flant5.flatten: equality with the upstream rule, modes, malformed records, the streaming reader."""

from __future__ import annotations

import copy
import json

import pytest

from clip_flant5.errors import UserError
from clip_flant5.flatten import (
    JsonStreamError,
    MalformedDataError,
    MalformedRecordError,
    atomic_json_array,
    flatten_file,
    flatten_record,
    iter_json_array,
)

LONG = "ShareGPT-like answer with unicode: é ü 漢字 🙂 " * 200  # spans many tiny chunks


def upstream_flatten(path) -> list[dict]:
    """The upstream script (convert_multi_turn_to_single_turn.py), written out independently."""
    samples = json.load(open(path))
    out = []
    for sample in samples:
        if len(sample["conversations"]) == 2:
            out.append(sample)
            continue
        first = copy.deepcopy(sample)
        first["conversations"] = sample["conversations"][:2]
        out.append(first)
        for i in range(2, len(sample["conversations"]), 2):
            new = copy.deepcopy(sample)
            pair = copy.deepcopy(new["conversations"][i : i + 2])
            pair[0]["value"] = "<image>\n" + pair[0]["value"]
            new["conversations"] = pair
            out.append(new)
    return out


def turns(n: int, tag: str = "q") -> list[dict]:
    return [
        {"from": "human" if i % 2 == 0 else "gpt", "value": ("<image>\n" if i == 0 else "") + f"{tag} {i} ✓"}
        for i in range(n)
    ]


def records() -> list[dict]:
    return [
        {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": turns(2)},
        {"id": "gqa-1", "image": "gqa/images/1.jpg", "conversations": turns(4, "gqa")},
        {"id": "vg-2", "image": "vg/VG_100K/2.jpg", "conversations": turns(6, "vg"), "extra": {"k": [1, 2.5, None]}},
        {"conversations": turns(8, "no id, conversations first"), "id": 7, "image": "ocr_vqa/images/7.jpg"},
        {"id": "sharegpt-1", "conversations": [{"from": "human", "value": LONG}, {"from": "gpt", "value": LONG}] * 3},
        {"id": "sharegpt-2", "conversations": turns(2, "text only, single")},
        {"id": "日本語", "model": "x", "image": "textvqa/train_images/a.jpg", "conversations": turns(4, "ключ")},
        {
            "id": "esc",
            "conversations": [{"from": "human", "value": 'quote " backslash \\ tab \t nl \n'}] + turns(4)[1:],
        },
    ]


def write_json(path, data) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


def ordered(items) -> list[str]:
    # json.dumps keeps key order, so this also checks that keys stay where upstream's copies had them.
    return [json.dumps(item, sort_keys=False) for item in items]


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1 << 22])
def test_faithful_equals_upstream(tmp_path, chunk_size):
    src, dst = tmp_path / "mix.json", tmp_path / "flat.json"
    write_json(src, records())
    report = flatten_file(src, dst, chunk_size=chunk_size)
    expected = upstream_flatten(src)
    assert ordered(json.loads(dst.read_text(encoding="utf-8"))) == ordered(expected)
    assert ordered(iter_json_array(dst, chunk_size=chunk_size)) == ordered(expected)
    assert report["records_in"] == 8 and report["records_out"] == len(expected) == 1 + 2 + 3 + 4 + 3 + 1 + 2 + 2
    assert (report["single_turn"], report["multi_turn"]) == (2, 6)
    assert (report["text_only_in"], report["text_only_out"], report["text_only_prefixed"]) == (3, 6, 3)
    assert report["malformed"] == report["leading_gpt_dropped"] == 0


def test_output_is_one_record_per_line(tmp_path):
    src, dst = tmp_path / "mix.json", tmp_path / "flat.json"
    write_json(src, records())
    flatten_file(src, dst)
    lines = dst.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "[" and lines[-2:] == ["]", ""]
    body = lines[1:-2]
    assert all(line.endswith(",") for line in body[:-1]) and not body[-1].endswith(",")
    assert [json.loads(line.rstrip(",")) for line in body] == json.loads(dst.read_text(encoding="utf-8"))
    assert "漢字" in dst.read_text(encoding="utf-8")  # ensure_ascii=False
    assert not list(tmp_path.glob(".*tmp"))


def test_corrected_differs_only_on_text_only_later_pairs(tmp_path):
    src = tmp_path / "mix.json"
    write_json(src, records())
    flatten_file(src, tmp_path / "f.json")
    faithful = json.loads((tmp_path / "f.json").read_text())
    report = flatten_file(src, tmp_path / "c.json", mode="corrected")
    corrected = json.loads((tmp_path / "c.json").read_text())
    assert len(faithful) == len(corrected) == report["records_out"] and report["text_only_prefixed"] == 0
    differ = [(f, c) for f, c in zip(faithful, corrected, strict=True) if f != c]
    assert len(differ) == 3
    for f, c in differ:
        assert "image" not in f
        assert f["conversations"][0]["value"] == "<image>\n" + c["conversations"][0]["value"]
        assert f["conversations"][1] == c["conversations"][1]


def test_flatten_record_does_not_modify_input():
    record = {"id": "x", "image": "a.jpg", "conversations": turns(4)}
    before = copy.deepcopy(record)
    out = flatten_record(record)
    assert record == before
    assert [o["conversations"][0]["value"] for o in out] == ["<image>\nq 0 ✓", "<image>\nq 2 ✓"]
    assert flatten_record(record, "corrected") == out
    text = {"id": "t", "conversations": turns(4)}
    assert flatten_record(text, "corrected")[1]["conversations"][0]["value"] == "q 2 ✓"
    with pytest.raises(ValueError, match="unknown flattening mode"):
        flatten_record(record, "exact")


def test_leading_gpt_turn_dropped_and_counted(tmp_path):
    gpt = {"from": "gpt", "value": "Hello! How can I help?"}
    data = [
        {"id": "a", "conversations": [gpt, *turns(4)]},
        {"id": "b", "image": "x.jpg", "conversations": [gpt, *turns(2)]},
    ]
    src, dst = tmp_path / "mix.json", tmp_path / "flat.json"
    write_json(src, data)
    report = flatten_file(src, dst)
    assert report["leading_gpt_dropped"] == 2 and (report["multi_turn"], report["single_turn"]) == (1, 1)
    out = json.loads(dst.read_text())
    assert [o["conversations"] for o in out] == [
        turns(2),
        [{"from": "human", "value": "<image>\nq 2 ✓"}, turns(4)[3]],
        turns(2),
    ]


MALFORMED = [
    ([1, 2], "not a JSON object"),
    ({"id": "nc"}, "'conversations' is missing"),
    ({"id": "empty", "conversations": []}, "'conversations' is missing, empty"),
    ({"id": "str", "conversations": "hi"}, "not a list"),
    ({"id": "nofrom", "conversations": [{"value": "q"}, {"from": "gpt", "value": "a"}]}, "turn 0 is not an object"),
    ({"id": "noval", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt"}]}, "turn 1 is not an object"),
    ({"id": "numval", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "a"}]}, "not a string"),
    ({"id": "odd", "conversations": turns(3)}, "3 turns; expected"),
    ({"id": "onlygpt", "conversations": [{"from": "gpt", "value": "a"}]}, "0 turns after dropping"),
    ({"id": "alt", "conversations": [turns(2)[0], turns(2)[0]]}, "turn 1 is from 'human', expected 'gpt'"),
    ({"id": "role", "conversations": [{"from": "system", "value": "s"}, turns(2)[1]]}, "turn 0 is from 'system'"),
]


@pytest.mark.parametrize(("record", "reason"), MALFORMED)
def test_flatten_record_rejects_malformed(record, reason):
    with pytest.raises(MalformedRecordError, match=reason):
        flatten_record(record)


def test_malformed_records_fail_the_run_by_default(tmp_path):
    data = [records()[0], *(record for record, _ in MALFORMED), records()[1]]
    src, dst, report_path = tmp_path / "mix.json", tmp_path / "flat.json", tmp_path / "report.json"
    write_json(src, data)
    with pytest.raises(MalformedDataError) as info:
        flatten_file(src, dst, report_path=report_path)
    message = str(info.value)
    assert f"{len(MALFORMED)} malformed record(s)" in message
    assert "record 1 (id=None): not a JSON object" in message and "record 8 (id='odd')" in message
    assert "flatten --skip-malformed" in message
    assert not dst.exists() and not list(tmp_path.glob(".*tmp"))
    report = json.loads(report_path.read_text())
    assert report["malformed"] == len(MALFORMED) and not report["malformed_skipped"]
    assert [m["index"] for m in report["malformed_first"]] == list(range(1, len(MALFORMED) + 1))


def test_malformed_records_skipped_and_counted(tmp_path):
    data = [records()[0], *(record for record, _ in MALFORMED), records()[1]]
    src, dst, report_path = tmp_path / "mix.json", tmp_path / "flat.json", tmp_path / "report.json"
    write_json(src, data)
    report = flatten_file(src, dst, skip_malformed=True, report_path=report_path)
    assert json.loads(report_path.read_text()) == report
    assert report["malformed"] == len(MALFORMED) and report["malformed_skipped"]
    assert report["records_in"] == len(data) and report["records_out"] == 3
    assert [(m["index"], m["id"]) for m in report["malformed_first"][:3]] == [(1, None), (2, "nc"), (3, "empty")]
    assert json.loads(dst.read_text()) == upstream_flatten_list([records()[0], records()[1]])


def upstream_flatten_list(data) -> list[dict]:
    return [item for record in data for item in flatten_record(copy.deepcopy(record))]


@pytest.mark.parametrize("chunk_size", [1, 3, 10, 1000])
def test_reader_values_and_whitespace(tmp_path, chunk_size):
    # the surrogate escapes: lone ones and a high one before another escape stay as json reads them (ijson's C
    # backend turns them into "?" or one bogus character: why the reader is not ijson, benchmarks/README.md)
    text = (' \n[ 1234567 ,true,\tnull , "x\\u00e9y" ,-1.5e10,[1,[2]] ,{}, {"a": "ü\\ud800"}, false, '
            '"a\\udc00b", "\\ud800\\u0041", "\\ud83d\\ude00" ]\r\n ')  # fmt: skip
    path = tmp_path / "a.json"
    path.write_text(text, encoding="utf-8")
    assert list(iter_json_array(path, chunk_size=chunk_size)) == json.loads(text)
    path.write_text(" [ ] ", encoding="utf-8")
    assert list(iter_json_array(path, chunk_size=chunk_size)) == []


def test_lone_surrogate_round_trips(tmp_path):
    record = {"id": "s", "conversations": [{"from": "human", "value": "bad \ud800 \\"}, turns(2)[1]]}
    dst = tmp_path / "out.json"
    with atomic_json_array(dst) as write:
        write(record)
    assert json.loads(dst.read_text(encoding="utf-8")) == [record]


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        ('[{"a": "é"}, {"b": }]', "invalid JSON (Expecting value)", 20),
        ('[{"a": "é"} {"b": 1}]', "expected ',' or ']'", 13),
        ('[{"a": "é"}, {"b": 1}', "expected ',' or ']'", 22),
        ('[{"a": "é"}, {"b": "x', "invalid JSON (Unterminated string", 20),
        ('[{"a": "é"},]', "invalid JSON (Expecting value)", 13),
        ('[{"a": "é"}] x', "unexpected data after the closing ']'", 14),
        ('{"a": "é"}', "expected a JSON array", 0),
        ("", "expected a JSON array", 0),
        ("[", "unexpected end of file", 1),
    ],
)
@pytest.mark.parametrize("chunk_size", [2, 5, 1 << 20])
def test_invalid_json_names_byte_offset(tmp_path, text, message, offset, chunk_size):
    path = tmp_path / "bad.json"
    path.write_bytes(text.encode("utf-8"))
    with pytest.raises(JsonStreamError) as info:
        list(iter_json_array(path, chunk_size=chunk_size))
    assert (
        message in str(info.value) and str(info.value).endswith(f"at byte {offset}") and "bad.json" in str(info.value)
    )
    with pytest.raises(JsonStreamError):
        flatten_file(path, tmp_path / "out.json", chunk_size=chunk_size)
    assert not (tmp_path / "out.json").exists()


def test_invalid_utf8_names_byte_offset(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b'[{"a": "\xc3\xa9\xff"}]')
    with pytest.raises(JsonStreamError, match="not UTF-8 at byte 10"):
        list(iter_json_array(path, chunk_size=3))


def test_bad_input_is_a_user_error_naming_the_file(tmp_path):
    with pytest.raises(UserError, match=r"missing\.json: no such file \(expected a JSON array"):
        list(iter_json_array(tmp_path / "missing.json"))
    with pytest.raises(UserError, match=r"missing\.json: no such file"):
        flatten_file(tmp_path / "missing.json", tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()
    with pytest.raises(UserError, match="unknown flattening mode 'exact'; valid modes: faithful, corrected"):
        flatten_file(tmp_path / "missing.json", tmp_path / "out.json", mode="exact")
    truncated, one = tmp_path / "truncated.json", tmp_path / "one.json"
    truncated.write_text("[1,", encoding="utf-8")
    one.write_text("[1]", encoding="utf-8")
    for error, call in [(JsonStreamError, lambda: list(iter_json_array(truncated))),
                        (MalformedRecordError, lambda: flatten_record([1])),
                        (MalformedDataError, lambda: flatten_file(one, tmp_path / "o.json"))]:  # fmt: skip
        with pytest.raises(UserError) as info:  # what the CLI reports in one line, exit status 2
            call()
        assert type(info.value) is error


def test_an_empty_input_is_an_error_and_image_records_without_the_token_are_counted(tmp_path, capsys):
    (tmp_path / "empty.json").write_text("[]\n")
    with pytest.raises(UserError, match=r"empty.json holds no records \(an empty JSON array\)"):
        flatten_file(tmp_path / "empty.json", tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()
    turns = [{"from": "human", "value": "What is it?"}, {"from": "gpt", "value": "A cat."}]
    records = [{"id": "shown", "image": "a.jpg", "conversations": [dict(turns[0], value="<image>\nWhat is it?"),
                                                                   turns[1]]},
               {"id": "unseen", "image": "b.jpg", "conversations": turns},
               {"id": "text", "conversations": turns}]  # fmt: skip
    write_json(tmp_path / "mix.json", records)
    report = flatten_file(tmp_path / "mix.json", tmp_path / "out.json")
    assert report["image_without_token"] == 1 and report["image_without_token_first"] == [{"index": 1, "id": "unseen"}]
    assert "1 image record(s) whose first question has no <image>" in capsys.readouterr().err
