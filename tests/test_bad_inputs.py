"""Every command against every class of bad input, as a new user meets them: exit 2, no traceback, nothing written.

Classes: missing, empty, binary, Latin-1, UTF-16, truncated and wrong-schema files; values of the wrong type or out
of range; unknown options; an existing output. Errors of afp's own are one line naming the file (and line where
known); usage errors are click's usage block ending in one `Error:` line. The table is the specification: a new
command or input gets its rows here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import GOOD_LINES, write_recipe

BINARY = bytes(range(256)) * 8
LATIN1_PAIRS = "en\tzh\ncafé au lait\tcafé\n".encode("latin-1")
UTF16_PAIRS = "en\tzh\nI like tea.\t我喜欢茶。\n".encode("utf-16")
JSONL_PAIR = '{"en": "I like tea.", "zh": "我喜欢茶。"}\n'


@dataclass
class Case:
    name: str
    args: list[str]  # {tmp} is replaced by the test's folder
    files: dict[str, bytes | str]  # written under {tmp} before the run
    pattern: str  # what the error line must say (a regular expression)
    usage: bool = False  # a click usage error (usage block + one Error: line) rather than afp's one line


def training_file(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


RECIPE = "{tmp}/recipe.yaml"
LOSS = ["analyze", "loss", "-m", "{tmp}/model", "-o", "{tmp}/rep", "-d"]
CASES = [
    # afp align: the recipe
    Case("align-recipe-missing", ["align", "{tmp}/nope.yaml"], {}, r"nope.yaml: recipe not found"),
    Case(
        "align-recipe-empty", ["align", "{tmp}/empty.yaml"], {"empty.yaml": ""}, r"empty.yaml.*missing section 'model'"
    ),
    Case(
        "align-recipe-binary", ["align", "{tmp}/bin.yaml"], {"bin.yaml": BINARY}, r"bin.yaml(:\d+)?: .*(UTF-8|binary)"
    ),
    Case(
        "align-recipe-latin1",
        ["align", "{tmp}/l1.yaml"],
        {"l1.yaml": "# café\nmodel: {}\n".encode("latin-1")},
        r"l1.yaml.*UTF-8",
    ),
    Case(
        "align-recipe-truncated",
        ["align", "{tmp}/cut.yaml"],
        {"cut.yaml": "model:\n  name_or_path: [a, b\n"},
        r"cut.yaml:\d+: invalid YAML",
    ),
    Case(
        "align-recipe-unknown-key",
        ["align", RECIPE, "train.learning_rate=1e-4"],
        {},
        r"command line: unknown key 'train.learning_rate'",
    ),
    Case("align-wrong-type", ["align", RECIPE, "train.lr=fast"], {}, r"'train.lr' must be float"),
    Case("align-out-of-range", ["align", RECIPE, "train.warmup_ratio=2"], {}, r"'train.warmup_ratio' must be in"),
    Case("align-unknown-option", ["align", RECIPE, "--bogus"], {}, r"No such option:? '?--bogus", usage=True),
    Case("align-existing-output", ["align", RECIPE], {"run/notes.txt": "precious"}, r"output folder is not empty"),
    Case(
        "align-output-is-a-file",
        ["align", RECIPE, "output_dir={tmp}/notes.txt"],
        {"notes.txt": "mine"},
        r"notes.txt: output_dir is a file, not a folder",
    ),
    # afp align: the training data
    Case("align-data-binary", ["align", RECIPE], {"data.jsonl": BINARY}, r"data.jsonl(:1)?: .*(UTF-8|binary)"),
    Case(
        "align-data-latin1",
        ["align", RECIPE],
        {"data.jsonl": '{"sent0": "café"}\n'.encode("latin-1")},
        r"data.jsonl(:1)?: .*UTF-8",
    ),
    Case(
        "align-data-utf16",
        ["align", RECIPE],
        {"data.jsonl": training_file(GOOD_LINES).encode("utf-16")},
        r"data.jsonl(:1)?: .*(UTF-8|UTF-16)",
    ),
    Case("align-data-empty", ["align", RECIPE], {"data.jsonl": ""}, r"data.jsonl: no training examples"),
    Case(
        "align-data-truncated",
        ["align", RECIPE],
        {"data.jsonl": training_file(GOOD_LINES)[:-40]},
        r"data.jsonl:12: not valid JSON",
    ),
    # afp data
    Case(
        "data-parallel-missing",
        ["data", "translation", "-p", "{tmp}/nope.tsv", "-l", "en", "zh", "-o", "{tmp}/out.jsonl"],
        {},
        r"nope.tsv",
    ),
    Case(
        "data-parallel-binary",
        ["data", "translation", "-p", "{tmp}/p.tsv", "-l", "en", "zh", "-o", "{tmp}/out.jsonl"],
        {"p.tsv": BINARY},
        r"p.tsv(:\d+)?: .*(UTF-8|binary)",
    ),
    Case(
        "data-parallel-latin1",
        ["data", "translation", "-p", "{tmp}/p.tsv", "-l", "en", "zh", "-o", "{tmp}/out.jsonl"],
        {"p.tsv": LATIN1_PAIRS},
        r"p.tsv(:\d+)?: .*UTF-8",
    ),
    Case(
        "data-parallel-utf16",
        ["data", "translation", "-p", "{tmp}/p.tsv", "-l", "en", "zh", "-o", "{tmp}/out.jsonl"],
        {"p.tsv": UTF16_PAIRS},
        r"p.tsv(:\d+)?: .*(UTF-8|UTF-16)",
    ),
    Case(
        "data-parallel-empty",
        ["data", "translation", "-p", "{tmp}/p.tsv", "-l", "en", "zh", "-o", "{tmp}/out.jsonl"],
        {"p.tsv": ""},
        r"p.tsv",
    ),
    Case(
        "data-out-of-range",
        ["data", "translation", "-p", "{tmp}/p.jsonl", "-l", "en", "zh", "--change-prob", "2", "-o", "{tmp}/out.jsonl"],
        {"p.jsonl": JSONL_PAIR},
        r"change.prob",
    ),
    Case(
        "data-wrong-type",
        ["data", "translation", "-p", "{tmp}/p.jsonl", "-l", "en", "zh", "--repeat", "many", "-o", "{tmp}/out.jsonl"],
        {"p.jsonl": JSONL_PAIR},
        r"--repeat",
        usage=True,
    ),
    Case("data-unknown-option", ["data", "translation", "--nope"], {}, r"No such option:? '?--nope", usage=True),
    Case(
        "data-existing-output",
        ["data", "translation", "-p", "{tmp}/p.jsonl", "-l", "en", "zh", "-o", "{tmp}/out.jsonl"],
        {"p.jsonl": JSONL_PAIR, "out.jsonl": "mine\n"},
        r"out.jsonl.*(exists|--overwrite)",
    ),
    Case(
        "data-stats-binary",
        ["data", "stats", "{tmp}/m.jsonl"],
        {"m.jsonl": BINARY},
        r"m.jsonl(:\d+)?: .*(UTF-8|binary)",
    ),
    Case(
        "data-stats-truncated",
        ["data", "stats", "{tmp}/m.jsonl"],
        {"m.jsonl": training_file(GOOD_LINES)[:-40]},
        r"m.jsonl:12",
    ),
    # afp evaluate
    Case(
        "evaluate-wrong-type",
        ["evaluate", "-m", "{tmp}/model", "--tasks", "afp_pawsx_en", "--limit", "abc"],
        {},
        r"--limit",
        usage=True,
    ),
    Case("evaluate-unknown-option", ["evaluate", "--bogus"], {}, r"No such option:? '?--bogus", usage=True),
    Case(
        "evaluate-out-of-range",
        ["evaluate", "-m", "{tmp}/model", "--tasks", "afp_pawsx_en", "--num-fewshot", "-1", "-o", "{tmp}/eval"],
        {},
        r"num.fewshot",
    ),
    Case(
        "evaluate-data-dir-missing",
        ["evaluate", "-m", "{tmp}/model", "--tasks", "afp_pawsx_en", "--data-dir", "{tmp}/nodata", "-o", "{tmp}/eval"],
        {},
        r"nodata",
    ),
    Case(
        "evaluate-adapter-not-an-adapter",
        ["evaluate", "-m", "{tmp}/model", "-a", "{tmp}/notes", "--tasks", "afp_pawsx_en", "-o", "{tmp}/eval"],
        {"notes/readme.txt": "hi"},
        r"notes: not a PEFT adapter",
    ),
    Case(
        "evaluate-existing-output",
        ["evaluate", "-m", "{tmp}/model", "--tasks", "afp_pawsx_en", "-o", "{tmp}/eval"],
        {"eval/comparison.md": "mine"},
        r"comparison.md already exists: pass --overwrite",
    ),
    # afp analyze
    Case(
        "rate-generations-missing",
        ["analyze", "language-rate", "-g", "{tmp}/nope.jsonl", "--target-lang", "zh", "-o", "{tmp}/rep"],
        {},
        r"nope.jsonl",
    ),
    Case(
        "rate-generations-binary",
        ["analyze", "language-rate", "-g", "{tmp}/g.jsonl", "--target-lang", "zh", "-o", "{tmp}/rep"],
        {"g.jsonl": BINARY},
        r"g.jsonl(:\d+)?: .*(UTF-8|binary)",
    ),
    Case(
        "rate-generations-latin1",
        ["analyze", "language-rate", "-g", "{tmp}/g.jsonl", "--target-lang", "zh", "-o", "{tmp}/rep"],
        {"g.jsonl": '{"text": "café"}\n'.encode("latin-1")},
        r"g.jsonl(:\d+)?: .*UTF-8",
    ),
    Case(
        "rate-generations-utf16",
        ["analyze", "language-rate", "-g", "{tmp}/g.jsonl", "--target-lang", "zh", "-o", "{tmp}/rep"],
        {"g.jsonl": '{"text": "我喜欢茶"}\n'.encode("utf-16")},
        r"g.jsonl(:\d+)?: .*(UTF-8|UTF-16)",
    ),
    Case(
        "rate-generations-truncated",
        ["analyze", "language-rate", "-g", "{tmp}/g.jsonl", "--target-lang", "zh", "-o", "{tmp}/rep"],
        {"g.jsonl": '{"text": "我喜欢茶"}\n{"text": "我'},
        r"g.jsonl:2",
    ),
    Case(
        "rate-generations-wrong-schema",
        ["analyze", "language-rate", "-g", "{tmp}/g.jsonl", "--target-lang", "zh", "-o", "{tmp}/rep"],
        {"g.jsonl": '{"answer_text": "我喜欢茶"}\n'},
        r"g.jsonl:1",
    ),
    Case("rate-unknown-option", ["analyze", "language-rate", "--bogus"], {}, r"No such option:? '?--bogus", usage=True),
    Case(
        "alignment-pairs-missing",
        ["analyze", "alignment", "-p", "{tmp}/nope.tsv", "-m", "{tmp}/model", "-o", "{tmp}/rep"],
        {},
        r"nope.tsv",
    ),
    Case(
        "alignment-pairs-binary",
        ["analyze", "alignment", "-p", "{tmp}/p.tsv", "-m", "{tmp}/model", "-o", "{tmp}/rep"],
        {"p.tsv": BINARY},
        r"p.tsv(:\d+)?: .*(UTF-8|binary)",
    ),
    Case(
        "alignment-pairs-latin1",
        ["analyze", "alignment", "-p", "{tmp}/p.tsv", "-m", "{tmp}/model", "-o", "{tmp}/rep"],
        {"p.tsv": LATIN1_PAIRS},
        r"p.tsv(:\d+)?: .*UTF-8",
    ),
    Case(
        "alignment-pairs-empty",
        ["analyze", "alignment", "-p", "{tmp}/p.tsv", "-m", "{tmp}/model", "-o", "{tmp}/rep"],
        {"p.tsv": ""},
        r"p.tsv",
    ),
    Case(
        "alignment-out-of-range",
        [
            "analyze",
            "alignment",
            "-p",
            "{tmp}/p.jsonl",
            "-m",
            "{tmp}/model",
            "-l",
            "en,zh",
            "--layers",
            "0,99",
            "-o",
            "{tmp}/rep",
        ],
        {"p.jsonl": JSONL_PAIR * 4},
        r"99",
    ),
    Case("loss-data-missing", [*LOSS, "{tmp}/nope.jsonl"], {}, r"nope.jsonl: file not found"),
    Case("loss-data-empty", [*LOSS, "{tmp}/d.jsonl"], {"d.jsonl": ""}, r"d.jsonl: no examples"),
    Case("loss-data-binary", [*LOSS, "{tmp}/d.jsonl"], {"d.jsonl": BINARY}, r"d.jsonl(:\d+)?: .*(UTF-8|binary)"),
    Case(
        "loss-data-no-fields",
        [*LOSS, "{tmp}/d.jsonl"],
        {"d.jsonl": '{"text": "Hi."}\n'},
        r"d.jsonl:1: field 'sent0': missing",
    ),
    Case(
        "loss-data-line-without-field",
        [*LOSS, "{tmp}/d.jsonl"],
        {"d.jsonl": training_file([GOOD_LINES[0], '{"sent0": "Hi.", "clm_text": "Hi. 你好", "clm_prompt_len": 4}'])},
        r"d.jsonl:2: field 'sent1': missing",
    ),
    Case("loss-out-of-range", [*LOSS, "{tmp}/data.jsonl", "--pooling", "last-9"], {}, r"layer 9 is beyond the model"),
    Case(
        "loss-existing-output",
        [*LOSS, "{tmp}/data.jsonl"],
        {"rep/loss.md": "mine"},
        r"loss.md already exists: pass --overwrite",
    ),
]


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes() if path.is_file() else b"<dir>"
        for path in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, run_cli, tiny_model_dir):
    import shutil

    shutil.copytree(tiny_model_dir("llama"), tmp_path / "model")
    write_recipe(tmp_path, tmp_path / "data.jsonl")
    (tmp_path / "data.jsonl").write_text(training_file(GOOD_LINES), encoding="utf-8")
    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    before = _tree(tmp_path)

    code, _, err = run_cli(*[arg.replace("{tmp}", str(tmp_path)) for arg in case.args])

    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    if case.usage:
        assert lines[0].startswith("Usage: afp") and lines[-1].startswith("Error: "), err
        assert re.search(case.pattern, err), err
    else:
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert re.search(case.pattern, lines[0]), lines[0]
    assert _tree(tmp_path) == before  # nothing written, nothing changed, nothing left behind


def test_every_command_has_rows_in_the_table():
    commands = {" ".join(arg for arg in case.args[:2] if not arg.startswith(("-", "{"))) for case in CASES}
    assert {
        "align",
        "data translation",
        "data stats",
        "evaluate",
        "analyze language-rate",
        "analyze alignment",
        "analyze loss",
    } <= {command.replace("evaluate --bogus", "evaluate") for command in commands}
