"""`afp data`: sampling semantics, exact prompt boundaries, readers, statistics, caching and bad input."""

from __future__ import annotations

import json
import math
import re
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
import typer
from helpers import write_instructions
from typer.testing import CliRunner

from afp_cli.commands import data as data_command
from afp_cli.data.build import build_mixture, ensure_mixture, mixture_stats
from afp_cli.data.mixture_config import MixturePart
from afp_cli.data.readers import read_instructions, read_parallel
from afp_cli.data.stats import percentiles
from afp_cli.errors import AfpError
from afp_cli.languages import language_name

FIVE = ["en", "zh", "th", "tr", "sw"]


def build(tmp_path: Path, name: str = "out.jsonl", **settings) -> tuple[list[dict], dict]:
    report = build_mixture(MixturePart(**settings), tmp_path / name, overwrite=True)
    lines = (tmp_path / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines], report


def within_binomial(count: int, total: int, probability: float, sigmas: float = 4.0) -> bool:
    return abs(count - total * probability) <= sigmas * math.sqrt(total * probability * (1 - probability))


def answer_of(example: dict) -> str:
    return example["clm_text"][example["clm_prompt_len"] :]


@pytest.fixture(scope="module")
def two_languages(tmp_path_factory) -> Path:
    return write_instructions(tmp_path_factory.mktemp("bx2"), ["en", "zh"], size=200)


@pytest.fixture(scope="module")
def five_languages(tmp_path_factory) -> Path:
    return write_instructions(tmp_path_factory.mktemp("bx5"), FIVE, size=300)


# ----------------------------------------------------------------------------------------------------- bilingual


@pytest.mark.parametrize("cross_prob", [0.0, 0.5, 1.0])
def test_bilingual_cross_share_and_answers_follow_the_target_language(tmp_path, two_languages, cross_prob):
    examples, report = build(
        tmp_path,
        mode="bilingual",
        languages=["en", "zh"],
        instructions=str(two_languages),
        cross_prob=cross_prob,
        repeat=2,
        seed=1,
    )
    assert len(examples) == 400 == report["examples"]
    crossed = sum(example["src_lang"] != example["tgt_lang"] for example in examples)
    assert within_binomial(crossed, 400, cross_prob)
    assert report["cross_lingual_share"] == pytest.approx(crossed / 400, abs=1e-4)
    for example in examples:
        source, target, record_id = example["src_lang"], example["tgt_lang"], example["id"]
        assert answer_of(example) == f"[{target}] answer {record_id}"
        prompt = example["clm_text"][: example["clm_prompt_len"]]
        assert prompt.startswith(f"[{source}] instruction {record_id} ")
        assert prompt.endswith(f" Answer in {language_name(target)}: ")
        assert (f"[{source}] input {record_id}" in prompt) == (int(record_id) % 3 != 0)
    # Source languages are drawn uniformly.
    assert within_binomial(sum(example["src_lang"] == "en" for example in examples), 400, 0.5)


def test_bilingual_mcl_pairs_are_aligned_instructions_each_used_once_per_cycle(tmp_path, two_languages):
    examples, report = build(
        tmp_path, mode="bilingual", languages=["en", "zh"], instructions=str(two_languages), repeat=2
    )
    pairs = Counter((example["sent0"], example["sent1"]) for example in examples)
    assert len(pairs) == 200 and set(pairs.values()) == {2}  # 400 examples walk the 200 pairs exactly twice
    for sent0, sent1 in pairs:
        assert sent0.startswith("[en] instruction ") and sent1 == sent0.replace("[en]", "[zh]")
    assert report["mcl_pairs"] == {"en-zh": 400}
    # Records are used epoch by epoch: each id exactly twice with repeat 2.
    assert set(Counter(example["id"] for example in examples).values()) == {2}


def test_fractional_repeat_gives_int_repeat_times_records(tmp_path, two_languages):
    examples, _ = build(tmp_path, mode="bilingual", languages=["en", "zh"], instructions=str(two_languages), repeat=1.5)
    uses = Counter(example["id"] for example in examples)
    assert len(examples) == 300 and sorted(Counter(uses.values()).items()) == [(1, 100), (2, 100)]


# ----------------------------------------------------------------------------------------------------- multilingual


def test_multilingual_pairs_involve_the_pivot_and_directions_follow_the_probabilities(tmp_path, five_languages):
    examples, report = build(
        tmp_path,
        mode="multilingual",
        languages=FIVE,
        instructions=str(five_languages),
        cross_prob=0.6,
        change_prob=0.25,
        repeat=4,
        seed=3,
    )
    total = len(examples)
    assert total == 1200
    for example in examples:
        assert example["sent0_lang"] == "en" and example["sent0"].startswith("[en] instruction ")
        assert example["sent1"].startswith(f"[{example['sent1_lang']}] instruction ")
        assert example["sent1"].split()[-1] == example["sent0"].split()[-1]  # same id: a translation pair
        assert answer_of(example) == f"[{example['tgt_lang']}] answer {example['id']}"
    directions = Counter(f"{example['src_lang']}->{example['tgt_lang']}" for example in examples)
    for other in FIVE[1:]:
        assert within_binomial(directions[f"en->{other}"], total, 0.6 * 0.75 / 4)
        assert within_binomial(directions[f"{other}->en"], total, 0.6 * 0.25 / 4)
    for lang in FIVE:
        assert within_binomial(directions[f"{lang}->{lang}"], total, 0.4 / 5)
    assert len(directions) == 4 + 4 + 5  # nothing between two non-pivot languages
    assert set(report["mcl_pairs"]) == {f"en-{other}" for other in FIVE[1:]}
    assert report["directions"]["en→zh"] == directions["en->zh"]


# ----------------------------------------------------------------------------------------------------- translation


def test_translation_on_tatoeba_uses_both_templates_and_balanced_directions(tmp_path, shared_data):
    examples, report = build(
        tmp_path,
        mode="translation",
        languages=["en", "zh"],
        parallel=str(shared_data / "parallel" / "tatoeba_en-zh.tsv"),
        change_prob=0.5,
        repeat=0.5,
    )
    total = len(examples)
    assert total == int(0.5 * report["inputs"]["usable"]) and total > 8000
    names = {"en": "English", "zh": "Chinese"}
    templates = Counter()
    for example in examples:
        prompt, answer = example["clm_text"][: example["clm_prompt_len"]], answer_of(example)
        assert answer == example["sent1"] and prompt.startswith(example["sent0"] + " ")
        if prompt == f"{example['sent0']} = ":
            templates["="] += 1
        else:
            assert prompt == f"{example['sent0']} Translate into {names[example['tgt_lang']]}: "
            templates["translate"] += 1
    assert within_binomial(templates["="], total, 0.5)
    assert within_binomial(sum(example["src_lang"] == "en" for example in examples), total, 0.5)
    assert report["inputs"]["records"] == {"pairs": 17133}


def test_translation_tsv_header_decides_column_order_and_duplicates_are_dropped(tmp_path):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("zh\ten\n你好\tHello\n你好\tHello\n\t空\n谢谢\tThanks\n", encoding="utf-8")
    examples, report = build(
        tmp_path, mode="translation", languages=["en", "zh"], parallel=str(tsv), change_prob=0.0, repeat=1
    )
    assert sorted((example["sent0"], example["sent1"]) for example in examples) == [
        ("Hello", "你好"),
        ("Thanks", "谢谢"),
    ]
    assert report["inputs"] | {"mcl_pairs_available": None} == {
        "records": {"pairs": 4},
        "usable": 2,
        "empty_skipped": 1,
        "duplicates_dropped": 1,
        "untranslated_skipped": 0,
        "mcl_pairs_available": None,
    }
    assert {example["id"] for example in examples} == {"2", "5"}  # line numbers


def test_parallel_jsonl_plain_and_nested_forms(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        '{"en": "Hi", "zh": "嗨"}\n{"translation": {"eng_Latn": "Bye", "zho_Hans": "再见"}, "id": "b7"}\n',
        encoding="utf-8",
    )
    pairs = list(read_parallel(path, "zh", "en"))
    assert [(p.source, p.target, p.id, p.line) for p in pairs] == [("嗨", "Hi", "1", 1), ("再见", "Bye", "b7", 2)]


# ----------------------------------------------------------------------------------------------------- readers, format


def test_json_list_records_carry_their_line_numbers(two_languages):
    records = list(read_instructions(two_languages / "en.json"))
    text = (two_languages / "en.json").read_text(encoding="utf-8").splitlines()
    assert len(records) == 200
    for record in records[:5] + records[-2:]:
        assert text[record.line - 1].strip() == "{" and f'"id": "{record.id}"' in text[record.line]


def test_empty_untranslated_and_duplicate_records_are_counted(tmp_path):
    folder = write_instructions(tmp_path / "bx", ["en", "zh"], size=10)
    zh = [json.loads(line) for line in (folder / "zh.jsonl").read_text(encoding="utf-8").splitlines()]
    en = json.loads((folder / "en.json").read_text(encoding="utf-8"))
    zh[1]["output"] = "  "  # empty after stripping: record 1 skipped in both languages
    zh[2]["instruction"] = en[2]["instruction"]  # untranslated: no MCL pair, still a CIT record
    en[4]["instruction"], zh[4]["instruction"] = en[3]["instruction"], zh[3]["instruction"]  # repeated pair
    (folder / "zh.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in zh), encoding="utf-8")
    (folder / "en.json").write_text(json.dumps(en), encoding="utf-8")
    examples, report = build(tmp_path, mode="bilingual", languages=["en", "zh"], instructions=str(folder), repeat=1)
    assert report["inputs"] == {
        "records": {"en": 10, "zh": 10},
        "usable": 9,
        "empty_skipped": 1,
        "duplicates_dropped": 1,
        "untranslated_skipped": 1,
        "mcl_pairs_available": {"en-zh": 7},
    }
    assert len(examples) == 9 and "1" not in {example["id"] for example in examples}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, two_languages):
    settings = dict(mode="bilingual", languages=["en", "zh"], instructions=str(two_languages), repeat=1.5)
    for name, seed in (("a.jsonl", 7), ("b.jsonl", 7), ("c.jsonl", 8)):
        build_mixture(MixturePart(seed=seed, **settings), tmp_path / name)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()


def test_official_format_has_exactly_the_four_official_fields_and_custom_templates_apply(tmp_path, two_languages):
    examples, _ = build(
        tmp_path,
        mode="bilingual",
        languages=["en", "zh"],
        instructions=str(two_languages),
        audit_fields=False,
        template="Q: {instruction} | {input} -> {language}: {output}",
        template_no_input="Q: {instruction} -> {language}: {output}",
    )
    assert all(list(example) == ["sent0", "sent1", "clm_text", "clm_prompt_len"] for example in examples)
    for example in examples:
        match = re.match(
            r"Q: \[(en|zh)\] instruction (\d+)( \| \[\1\] input \2)? -> (English|Chinese): ", example["clm_text"]
        )
        assert match and match.end() == example["clm_prompt_len"]
        assert bool(match.group(3)) == (int(match.group(2)) % 3 != 0)


def test_memory_does_not_grow_with_repeat(tmp_path, two_languages):
    peaks = []
    for repeat in (1, 20):
        tracemalloc.start()
        build_mixture(
            MixturePart(mode="bilingual", languages=["en", "zh"], instructions=str(two_languages), repeat=repeat),
            tmp_path / f"r{repeat}.jsonl",
        )
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert (tmp_path / "r20.jsonl").read_text(encoding="utf-8").count("\n") == 4000
    assert peaks[1] < 1.3 * peaks[0], peaks


# ----------------------------------------------------------------------------------------------------- stats, cache


def test_percentiles_are_nearest_rank():
    histogram = Counter({length: 1 for length in range(1, 101)})
    assert percentiles(histogram) == {"p50": 50, "p90": 90, "p99": 99, "max": 100, "mean": 50.5}
    assert percentiles(Counter({3: 9, 40: 1})) == {"p50": 3, "p90": 3, "p99": 40, "max": 40, "mean": 6.7}


def test_stats_of_a_file_match_the_build_summary_and_count_tokens(tmp_path, two_languages, tiny_tokenizer):
    _, built = build(tmp_path, mode="bilingual", languages=["en", "zh"], instructions=str(two_languages), repeat=1)
    reread = mixture_stats(tmp_path / "out.jsonl", tokenizer=tiny_tokenizer)
    assert {key: value for key, value in reread.items() if key != "length_tokens"} == built
    longest = max(
        len(tiny_tokenizer(json.loads(line)["clm_text"], add_special_tokens=False)["input_ids"])
        for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    )
    assert reread["length_tokens"]["clm_text"]["max"] == longest


def test_ensure_mixture_builds_once_and_rebuilds_when_an_input_or_setting_changes(tmp_path):
    folder = write_instructions(tmp_path / "bx", ["en", "zh"], size=20)
    config = MixturePart(mode="bilingual", languages=["en", "zh"], instructions=str(folder), seed=1)
    first = ensure_mixture(config, tmp_path / "cache")
    stamp = first.stat().st_mtime_ns
    assert ensure_mixture(config, tmp_path / "cache") == first and first.stat().st_mtime_ns == stamp
    other_seed = ensure_mixture(
        MixturePart(mode="bilingual", languages=["en", "zh"], instructions=str(folder), seed=2), tmp_path / "cache"
    )
    assert other_seed != first
    english = (folder / "en.json").read_text(encoding="utf-8")
    (folder / "en.json").write_text(
        english.replace('"[en] instruction 5"', '"[en] instruction five"'), encoding="utf-8"
    )
    changed = ensure_mixture(config, tmp_path / "cache")
    # With repeat 1 every MCL pair is used once, so the edited instruction must show up as a sent0.
    assert changed != first and '"sent0": "[en] instruction five"' in changed.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------- CLI and bad input


@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()
    app.add_typer(data_command.app, name="data")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["data", *map(str, args)])


def test_cli_builds_with_space_separated_languages_and_prints_the_summary(tmp_path, two_languages, cli):
    out = tmp_path / "x.jsonl"
    result = cli(
        "bilingual",
        "--instructions",
        two_languages,
        "--languages",
        "en",
        "zh",
        "--cross-prob",
        "1",
        "--repeat",
        "0.5",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "en→zh" in result.output and "zh→en" in result.output and "cross-lingual share: 100.0%" in result.output
    assert out.read_text(encoding="utf-8").count("\n") == 100
    stats = cli("stats", out, "--json", tmp_path / "s.json")
    assert stats.exit_code == 0 and json.loads((tmp_path / "s.json").read_text())["examples"] == 100
    again = cli("bilingual", "--instructions", two_languages, "--languages", "en,zh", "-o", out)
    assert isinstance(again.exception, AfpError) and "--overwrite" in str(again.exception)


def _misaligned(tmp_path: Path) -> Path:
    folder = write_instructions(tmp_path / "bad", ["en", "zh"], size=12)
    lines = (folder / "zh.jsonl").read_text(encoding="utf-8").splitlines()
    lines[4] = lines[4].replace('"id": "4"', '"id": "x4"')
    lines[7] = lines[7].replace('"id": "7"', '"id": "x7"')
    (folder / "zh.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _missing_output(tmp_path: Path) -> Path:
    folder = write_instructions(tmp_path / "bad", ["en", "zh"], size=5)
    lines = (folder / "zh.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[2])
    del record["output"]
    lines[2] = json.dumps(record)
    (folder / "zh.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _three_columns(tmp_path: Path) -> Path:
    path = tmp_path / "p.tsv"
    path.write_text("a\tb\nc\td\te\n", encoding="utf-8")
    return path


BAD_INPUTS = {
    "misaligned ids": (
        lambda tmp: ["bilingual", "--instructions", _misaligned(tmp), "-l", "en", "zh"],
        "zh.jsonl:5: field 'id': 4 ids do not align between en.json and zh.jsonl (2 only in zh.jsonl, 2 missing from "
        "it; first: 'x4', 'x7', '4', '7')",
    ),
    "missing field": (
        lambda tmp: ["bilingual", "--instructions", _missing_output(tmp), "-l", "en", "zh"],
        "zh.jsonl:3: field 'output': missing",
    ),
    "three columns": (
        lambda tmp: ["translation", "--parallel", _three_columns(tmp), "-l", "en", "zh"],
        "p.tsv:2: field 'columns': expected 2 tab-separated columns, found 3",
    ),
    "probability": (
        lambda tmp: ["bilingual", "--instructions", tmp, "-l", "en", "zh", "--cross-prob", "1.5"],
        "--cross-prob: must be a probability in [0, 1], got 1.5",
    ),
    "repeat": (
        lambda tmp: ["translation", "--parallel", tmp / "p.tsv", "-l", "en", "zh", "--repeat", "0"],
        "--repeat: must be > 0, got 0.0",
    ),
    "language": (
        lambda tmp: ["bilingual", "--instructions", tmp, "-l", "en", "zz"],
        "unknown language code 'zz'; closest known codes:",
    ),
    "template": (
        lambda tmp: ["bilingual", "--instructions", tmp, "-l", "en", "zh", "--template", "{output} {instruction}"],
        "must end with {output}",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_error_naming_where_and_leaves_no_file(tmp_path, cli, case):
    make_args, message = BAD_INPUTS[case]
    out = tmp_path / "out" / "mix.jsonl"
    result = cli(*make_args(tmp_path), "-o", out)
    assert isinstance(result.exception, AfpError), result.output
    assert message in str(result.exception)
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))


def test_main_prints_one_line_and_exits_2(tmp_path):
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("afp_cli.commands.align") is None:
        pytest.skip("afp_cli.cli imports the align command, which has not landed yet")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "afp_cli.cli",
            "data",
            "translation",
            "--parallel",
            str(_three_columns(tmp_path)),
            "--languages",
            "en",
            "zh",
            "-o",
            str(tmp_path / "o.jsonl"),
        ],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'p.tsv'}:2: field 'columns': expected 2 tab-separated columns, found 3"
    ]
    assert not (tmp_path / "o.jsonl").exists()


def test_gzip_files_and_a_bad_list_element_reported_at_its_line(tmp_path):
    import gzip

    folder = write_instructions(tmp_path / "bx", ["en", "zh"], size=6)
    for name in ("en.json", "zh.jsonl"):
        (folder / (name + ".gz")).write_bytes(gzip.compress((folder / name).read_bytes()))
        (folder / name).unlink()
    examples, _ = build(
        tmp_path, mode="bilingual", languages=["eng_Latn", "zho_Hans"], instructions=str(folder), repeat=1
    )
    assert len(examples) == 6 and {e["src_lang"] for e in examples} <= {"en", "zh"}
    broken = tmp_path / "list.json"
    broken.write_text(
        '[\n  {"id": "1", "instruction": "a", "output": "b"},\n  {"id": "2", "instruction": "a", "output": 3}\n]\n'
    )
    with pytest.raises(AfpError, match=r"list.json:3: field 'output': expected a string, found int"):
        list(read_instructions(broken))
    broken.write_text('[\n  {"id": "1", "instruction": "a", "output": "b"}\n  {"id": "2"}\n]\n')
    with pytest.raises(AfpError, match=r"list.json:3: expected ',' or ']' between list elements"):
        list(read_instructions(broken))
