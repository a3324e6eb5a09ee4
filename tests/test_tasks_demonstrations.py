"""Demonstrations as the official evaluation draws them, XStoryCloze/XWinograd prompts, and bad local data files."""

from __future__ import annotations

import json
import random

import pytest
from helpers import TASKS_DIR, ScriptedLM, evaluate_tasks, load_module


def _pawsx_file(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["id\tsentence1\tsentence2\tlabel"] + [
        f"{i}\t{s1}\t{s2}\t{label}" for i, (s1, s2, label) in enumerate(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def pawsx_data(tmp_path):
    """12 English dev rows (the demonstration file) and 4 Chinese test rows in the official TSV layout."""
    dev = [(f"English one {i}.", f"English two {i}.", i % 2) for i in range(12)]
    test = [(f"中文句子{i}。", f"另一个句子{i}。", (i + 1) % 2) for i in range(4)]
    _pawsx_file(tmp_path / "pawsx" / "en_dev.tsv", dev)
    _pawsx_file(tmp_path / "pawsx" / "zh_test.tsv", test)
    _pawsx_file(tmp_path / "pawsx" / "zh_dev.tsv", test)
    return tmp_path


def _official_prompts(data_dir, seed: int, shots: int) -> list[list[str]]:
    """The official evaluation's prompt strings, rebuilt independently of afp: src/paws_x_prompt.py reads the
    TSV (header skipped, `line.strip().split("\\t")`), `random.seed(seed)`, shuffles the rows, takes the first k,
    formats `{sentence1}, right? {Yes|No}, {sentence2}` + `</s>` each, then `{demos}{sentence1}, right? {choice},
    {sentence2}` per test item and choice."""

    def read(path):
        return [line.strip().split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]

    yes_no = {"1": "Yes", "0": "No"}
    random.seed(seed)
    demonstrations = read(data_dir / "pawsx" / "en_dev.tsv")
    random.shuffle(demonstrations)
    demos = "".join(f"{s1}, right? {yes_no[label]}, {s2}</s>" for _, s1, s2, label in demonstrations[:shots])
    return [
        [f"{demos}{s1}, right? {choice}, {s2}" for choice in ("Yes", "No")]
        for _, s1, s2, _ in read(data_dir / "pawsx" / "zh_test.tsv")
    ]


@pytest.mark.parametrize("seed", [0, 7])
def test_five_shot_context_is_the_official_prompt_byte_for_byte(pawsx_data, seed):
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_dir": str(pawsx_data)})
    import lm_eval

    output = lm_eval.simple_evaluate(
        model=ScriptedLM(choose=lambda doc: 0),
        tasks=["afp_pawsx_zh"],
        num_fewshot=5,
        task_manager=manager,
        fewshot_random_seed=seed,
        log_samples=True,
    )
    samples = sorted(output["samples"]["afp_pawsx_zh"], key=lambda sample: sample["doc_id"])
    afp = [[context + continuation for context, continuation in sample["arguments"]] for sample in samples]
    assert afp == _official_prompts(pawsx_data, seed, 5)
    # every item starts with the same block of five demonstrations
    blocks = {sample["arguments"][0][0].rsplit("</s>", 1)[0] for sample in samples}
    assert len(blocks) == 1 and blocks.pop().count("</s>") == 4


def test_another_seed_draws_another_block_and_per_item_sampling_is_an_option(pawsx_data):
    import lm_eval

    from afp_cli.evaluation.run_tasks import per_item_demonstrations
    from afp_cli.evaluation.tasks import build_task_manager

    assert _official_prompts(pawsx_data, 0, 5)[0] != _official_prompts(pawsx_data, 7, 5)[0]
    manager = build_task_manager(TASKS_DIR, ["afp_pawsx_zh"], pawsx_data)
    manager.hooks = [per_item_demonstrations]
    output = lm_eval.simple_evaluate(
        model=ScriptedLM(choose=lambda doc: 0),
        tasks=["afp_pawsx_zh"],
        num_fewshot=5,
        task_manager=manager,
        fewshot_random_seed=0,
        log_samples=True,
    )
    blocks = {sample["arguments"][0][0].rsplit("</s>", 1)[0] for sample in output["samples"]["afp_pawsx_zh"]}
    assert len(blocks) > 1  # lm-eval's sampler: new demonstrations for each item


def test_official_order_is_random_shuffle_of_the_rows():
    common = load_module(TASKS_DIR / "afp_task_common.py", "afp_task_common_order")
    rows = [f"row{i}" for i in range(50)]
    random.seed(3)
    random.shuffle(rows)
    assert [f"row{i}" for i in common.official_demonstration_order(50, 3)] == rows


def test_xstorycloze_published_tsv_and_official_prompt(tmp_path):
    header = (
        "InputStoryid\tInputSentence1\tInputSentence2\tInputSentence3\tInputSentence4\t"
        "RandomFifthSentenceQuiz1\tRandomFifthSentenceQuiz2\tAnswerRightEnding"
    )
    rows = [f"s{i}\tA{i}.\tB{i}.\tC{i}.\tD{i}.\tGood end {i}.\tBad end {i}.\t{1 + i % 2}" for i in range(6)]
    (tmp_path / "xstorycloze").mkdir()
    for name in ("en_train", "zh_eval"):
        (tmp_path / "xstorycloze" / f"{name}.tsv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    gold = ScriptedLM(choose=lambda doc: int(doc["answer_right_ending"]) - 1)
    output = evaluate_tasks(gold, ["afp_xstorycloze_zh"], tmp_path, limit=None, num_fewshot=1)
    assert output["results"]["afp_xstorycloze_zh"]["acc,none"] == 1.0
    sample = min(output["samples"]["afp_xstorycloze_zh"], key=lambda s: s["doc_id"])
    context, continuation = sample["arguments"][1]
    assert context.endswith("</s>A0.B0.C0.D0.") and continuation == "Bad end 0."  # sentences joined as officially
    assert context.count("</s>") == 1


def test_xwinograd_cuts_the_sentence_at_its_blank(tmp_path):
    rows = [
        {
            "sentence": f"The trophy {i} does not fit because _ is too big.",
            "option1": "the trophy",
            "option2": "the case",
            "answer": "1" if i % 2 == 0 else "2",
        }
        for i in range(5)
    ]
    (tmp_path / "xwinograd").mkdir()
    for language in ("en", "fr"):
        (tmp_path / "xwinograd" / f"{language}_test.jsonl").write_text(
            "".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8"
        )
    output = evaluate_tasks(ScriptedLM(choose=lambda doc: 0), ["afp_xwinograd_fr"], tmp_path, limit=None)
    assert output["results"]["afp_xwinograd_fr"]["acc,none"] == pytest.approx(3 / 5)  # answer 1 for items 0, 2, 4
    sample = min(output["samples"]["afp_xwinograd_fr"], key=lambda s: s["doc_id"])
    assert [list(pair) for pair in sample["arguments"]] == [
        ["The trophy 0 does not fit because ", "the trophy is too big."],
        ["The trophy 0 does not fit because ", "the case is too big."],
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        ("id\tsentence1\tsentence2\tlabel\n0\tcafé\tb\t1\n".encode("latin-1"), r"not UTF-8 text \(byte 0xe9"),
        (b"id\tsentence1\tsentence2\tlabel\n0\tonly one field\n", r"zh_test.tsv:2: no value for 'sentence2'"),
        (
            b"id\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n",
            r"row 1: field 'label': 'maybe' is not an integer",
        ),
        (b"id\ttext\n0\ta\n", r"row 1: field 'sentence1' missing"),
    ],
)
def test_bad_local_files_are_one_line_naming_the_file(tmp_path, content, message):
    common = load_module(TASKS_DIR / "afp_task_common.py", "afp_task_common_bad_files")
    (tmp_path / "pawsx").mkdir()
    (tmp_path / "pawsx" / "zh_test.tsv").write_bytes(content)
    spec = {"hub_split": "test", "local": "pawsx/zh_test.tsv"}
    with pytest.raises(common.LocalDataError, match=message):
        common.load_splits(splits={"test": spec}, data_dir=str(tmp_path), fields=["sentence1", "sentence2", "label"])
