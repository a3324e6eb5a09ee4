"""Bad data inputs are one line naming file, line and field (not UTF-8, truncated, wrong schema); official files
read as the official trainer reads them (empty answers, a third column); language names match the official table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afp_cli.data.training_records import read_training_file
from afp_cli.errors import AfpError
from afp_cli.languages import BACTRIAN_X_CODES, language_name

GOOD = {"sent0": "Hello", "sent1": "你好", "clm_text": "Hello Translate into Chinese: 你好", "clm_prompt_len": 30}

# How a user's non-UTF-8 file looks: (bytes of the bad line, what the message says)
ENCODINGS = {
    "latin-1": ("café\tkaffe\n".encode("latin-1"), "byte 0xe9; Latin-1 or another legacy encoding?"),
    "utf-16": ("en\tzh\n".encode("utf-16"), "byte 0xff; it looks like UTF-16"),
    "binary": (bytes(range(256)), "byte 0x00; it looks binary or UTF-16"),
}


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")


def instruction_folder(tmp_path: Path, zh_bytes: bytes, name: str = "zh.jsonl") -> list[str]:
    folder = tmp_path / "bx"
    folder.mkdir()
    records = [{"id": str(i), "instruction": f"q{i}", "output": f"a{i}"} for i in range(3)]
    (folder / "en.jsonl").write_bytes(jsonl(records))
    (folder / name).write_bytes(zh_bytes)
    return ["bilingual", "--instructions", str(folder), "-l", "en", "zh"]


def parallel_file(tmp_path: Path, data: bytes, name: str = "pairs.tsv") -> list[str]:
    (tmp_path / name).write_bytes(data)
    return ["translation", "--parallel", str(tmp_path / name), "-l", "en", "zh"]


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("kind", ["instructions", "parallel"])
def test_a_file_that_is_not_utf8_is_one_line_naming_file_and_line(tmp_path, run_cli, kind, encoding):
    bad, says = ENCODINGS[encoding]
    prefix = (
        b""
        if encoding != "latin-1"
        else (
            jsonl([{"id": str(i), "instruction": "q", "output": "a"} for i in range(2)])
            if kind == "instructions"
            else b"a\tb\nc\td\n"
        )
    )
    line = 3 if prefix else 1
    args = (
        instruction_folder(tmp_path, prefix + bad) if kind == "instructions" else parallel_file(tmp_path, prefix + bad)
    )
    bad_file = tmp_path / ("bx/zh.jsonl" if kind == "instructions" else "pairs.tsv")
    out = tmp_path / "out" / "o.jsonl"
    code, stdout, stderr = run_cli("data", *args, "-o", out)
    assert code == 2 and stderr.strip().splitlines() == [
        f"error: {bad_file}:{line}: not UTF-8 text ({says}); save it as UTF-8"
    ]
    assert not out.parent.exists()


def test_a_json_list_in_latin1_names_the_line_of_the_bad_byte(tmp_path, run_cli):
    records = [{"id": str(i), "instruction": f"q{i}", "output": "café" if i == 2 else f"a{i}"} for i in range(3)]
    args = instruction_folder(tmp_path, json.dumps(records, indent=1, ensure_ascii=False).encode("latin-1"), "zh.json")
    code, _, stderr = run_cli("data", *args, "-o", tmp_path / "o.jsonl")
    text = json.dumps(records, indent=1, ensure_ascii=False).splitlines()
    line = next(number for number, row in enumerate(text, start=1) if "café" in row)
    assert code == 2 and f"zh.json:{line}: not UTF-8 text (byte 0xe9" in stderr


def test_training_files_not_utf8_truncated_or_wrong_schema(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(
        jsonl([GOOD, GOOD])
        + json.dumps({**GOOD, "sent1": "Grüße", "clm_text": "Hallo = Grüße"}, ensure_ascii=False).encode("latin-1")
        + b"\n"
    )
    with pytest.raises(AfpError, match=r"train.jsonl:3: not UTF-8 text \(byte 0xfc"):
        read_training_file(path, True, True)
    path.write_bytes(jsonl([GOOD, GOOD]) + jsonl([GOOD])[:25])  # the last line cut off
    with pytest.raises(AfpError, match=r"train.jsonl:3: not valid JSON \(.*\); the line looks truncated"):
        read_training_file(path, True, True)
    path.write_bytes(jsonl([GOOD, {**GOOD, "clm_text": 7}]))
    with pytest.raises(AfpError, match=r"train.jsonl:2: field 'clm_text': must be a string, got int"):
        read_training_file(path, True, True)
    path.write_bytes(b"\x1f\x8b\x08\x00binary")
    with pytest.raises(
        AfpError, match=r"train.jsonl:1: not UTF-8 text \(byte 0x8b; it looks gzip-compressed: name it \*.gz\)"
    ):
        read_training_file(path, True, True)


# ----------------------------------------------------------------------------------------------- official files


def test_empty_answers_are_skipped_with_a_count_and_one_warning_naming_the_first(tmp_path):
    empty = {**GOOD, "clm_text": "Hello Answer in Chinese: ", "clm_prompt_len": 25}
    path = tmp_path / "official.jsonl"
    path.write_bytes(jsonl([GOOD, empty, GOOD, empty, empty, GOOD]))
    warnings: list[str] = []
    examples = read_training_file(path, need_pairs=True, need_instructions=True, warn=warnings.append)
    assert [example.line for example in examples] == [1, 3, 6]
    assert warnings == [
        f"skipped 3 of 6 lines with an empty answer (clm_prompt_len = len(clm_text), no CIT target); first: {path}:2"
    ]
    # without CIT the answer does not matter: every line is an MCL pair
    assert len(read_training_file(path, need_pairs=True, need_instructions=False, warn=warnings.append)) == 6
    assert len(warnings) == 1
    path.write_bytes(jsonl([empty, empty]))
    with pytest.raises(AfpError, match="all 2 lines have an empty answer"):
        read_training_file(path, True, True)


def test_a_third_column_under_any_name_is_the_hard_negative(tmp_path):
    path = tmp_path / "negatives.jsonl"
    lines = [
        {
            "sent0": "a",
            "sent1": "b",
            "negative_zh": f"n{i}",
            "clm_text": "q: x",
            "clm_prompt_len": 3,
            "src_lang": "en",
            "id": str(i),
        }
        for i in range(3)
    ]
    path.write_bytes(jsonl(lines))
    assert [example.hard_negative for example in read_training_file(path, True, True)] == ["n0", "n1", "n2"]
    path.write_bytes(jsonl([{**GOOD, "x": "1", "y": "2"}]))
    with pytest.raises(AfpError, match=r"negatives.jsonl:1: field 'y': too many columns: x, y besides sent0"):
        read_training_file(path, True, True)
    path.write_bytes(jsonl([{**GOOD, "hard_neg": "n"}, GOOD]))
    with pytest.raises(AfpError, match=r"negatives.jsonl:2: field 'hard_neg': missing"):
        read_training_file(path, True, True)


# The official table, src/lang_dict.py of chongli17/CrossLingualAlignment (commit 13dcc1b), written out here.
OFFICIAL_NAMES = {
    "af": "Afrikaans",
    "ar": "Arabic",
    "az": "Azerbaijani",
    "bn": "Bengali",
    "cs": "Czech",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "fa": "Persian",
    "fi": "Finnish",
    "fr": "French",
    "gl": "Galician",
    "gu": "Gujarati",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "ka": "Georgian",
    "kk": "Kazakh",
    "km": "Khmer",
    "ko": "Korean",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "mk": "Macedonian",
    "ml": "Malayalam",
    "mn": "Mongolian",
    "mr": "Marathi",
    "my": "Burmese",
    "ne": "Nepali",
    "nl": "Dutch",
    "pl": "Polish",
    "ps": "Pashto",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "si": "Sinhala",
    "sl": "Slovene",
    "sv": "Swedish",
    "sw": "Swahili",
    "ta": "Tamil",
    "te": "Telugu",
    "th": "Thai",
    "tl": "Tagalog",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "ur": "Urdu",
    "vi": "Vietnamese",
    "xh": "Xhosa",
    "zh": "Chinese",
}


def test_answer_in_language_names_match_the_official_table():
    assert {code: language_name(code) for code in OFFICIAL_NAMES} == OFFICIAL_NAMES
    assert set(BACTRIAN_X_CODES) == set(OFFICIAL_NAMES)


def test_align_prints_one_warning_line_for_skipped_empty_answers(tmp_path, run_cli):
    import yaml

    from afp_cli.model.tiny import tiny_architecture

    empty = {**GOOD, "clm_text": "Hello Answer in Chinese: ", "clm_prompt_len": 25}
    data = tmp_path / "official.jsonl"
    data.write_bytes(jsonl([{**GOOD, "sent0": f"Hello {i}"} for i in range(6)] + [empty, empty]))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": {"architecture": tiny_architecture("llama"), "tokenizer_vocab_size": 400},
                "data": {"train_file": str(data), "held_out": 2, "max_length": 32},
                "train": {"batch_size": 2, "max_steps": 1},
                "output_dir": str(tmp_path / "run"),
            }
        )
    )
    code, stdout, stderr = run_cli("align", recipe, "--dry-run")
    assert code == 0, stderr
    warnings = [line for line in stdout.splitlines() if line.startswith("warning: skipped")]
    assert warnings == [
        f"warning: skipped 2 of 8 lines with an empty answer (clm_prompt_len = len(clm_text), no CIT "
        f"target); first: {data}:7"
    ]
    assert "examples: 4 train, 2 held out" in stdout
