"""Mixtures of several parts (the official training file), recipe data.build lists, and `afp data mix` / stats."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import write_instructions

from afp_cli.data.build import build_mixture
from afp_cli.data.mixture_config import Mixture, MixturePart
from afp_cli.errors import AfpError


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mix")
    folder = write_instructions(root / "bx", ["en", "zh"], size=40)
    tsv = root / "pairs.tsv"
    tsv.write_text("en\tzh\n" + "".join(f"sentence {i}\t句子 {i}\n" for i in range(60)), encoding="utf-8")
    return folder, tsv


def official_parts(folder: Path, tsv: Path) -> list[dict]:
    return [
        {"mode": "bilingual", "instructions": str(folder), "languages": ["en", "zh"], "cross_prob": 0.5, "repeat": 3},
        {"mode": "translation", "parallel": str(tsv), "languages": ["en", "zh"], "change_prob": 0.5, "repeat": 3},
    ]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_official_mix_has_each_part_in_full_interleaved_at_random(tmp_path, inputs):
    report = build_mixture(Mixture.from_mappings(official_parts(*inputs), seed=5), tmp_path / "mix.jsonl")
    examples = lines(tmp_path / "mix.jsonl")
    assert report["parts"] == {"bilingual": 120, "translation": 180} and len(examples) == 300
    assert report["inputs"]["bilingual"]["usable"] == 40 and report["inputs"]["translation"]["usable"] == 60
    parts = [example["part"] for example in examples]
    # shuffled, not concatenated: the first half holds about half of each part (4 sigma of a hypergeometric draw)
    assert abs(parts[:150].count("bilingual") - 60) <= 4 * (120 * 180 * 150 * 150 / 300**2 / 299) ** 0.5
    runs = sum(1 for a, b in zip(parts, parts[1:]) if a != b)
    assert runs > 100  # a random interleaving of 120 and 180 changes part about 144 times
    # each part is its own single-part build, in the same order
    alone = build_mixture(MixturePart(**official_parts(*inputs)[1], seed=6), tmp_path / "t.jsonl")
    assert alone["examples"] == 180
    assert [e for e in examples if e["part"] == "translation"] == [
        {**e, "part": "translation"} for e in lines(tmp_path / "t.jsonl")
    ]


def test_mix_is_fixed_by_the_seed_and_one_part_is_the_plain_build(tmp_path, inputs):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        build_mixture(Mixture.from_mappings(official_parts(*inputs), seed=seed), tmp_path / f"{name}.jsonl")
    assert (
        (tmp_path / "a.jsonl").read_bytes()
        == (tmp_path / "b.jsonl").read_bytes()
        != (tmp_path / "c.jsonl").read_bytes()
    )
    build_mixture(Mixture.from_mappings(official_parts(*inputs)[0], seed=3), tmp_path / "one.jsonl")
    build_mixture(MixturePart(**official_parts(*inputs)[0], seed=3), tmp_path / "plain.jsonl")
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "plain.jsonl").read_bytes()
    assert "part" not in lines(tmp_path / "one.jsonl")[0]


def test_a_bad_part_is_named_and_nothing_is_written(tmp_path, inputs):
    parts = official_parts(*inputs)
    parts[1]["repeat"] = 0
    with pytest.raises(AfpError, match=r"data.build\[1\]: --repeat: must be > 0, got 0"):
        Mixture.from_mappings(parts, seed=0)
    parts[1] = {**official_parts(*inputs)[1], "parallel": str(inputs[1].with_name("missing.tsv"))}
    with pytest.raises(AfpError, match="missing.tsv: parallel file not found"):
        build_mixture(Mixture.from_mappings(parts, seed=0), tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()
    with pytest.raises(AfpError, match=r"data.build\[0\]: unexpected keyword argument 'cross'"):
        Mixture.from_mappings([{"mode": "bilingual", "cross": 0.5}], seed=0)


def test_recipe_build_list_resolves_each_parts_path_and_seeds_parts_apart(tmp_path, inputs):
    from afp_cli.align.config import load_config

    (tmp_path / "recipes").mkdir()
    folder, tsv = inputs
    parts = official_parts(folder, tsv)
    parts[1]["parallel"] = str(Path("..") / tsv.relative_to(tsv.parents[1]))  # relative to the recipe
    (tmp_path / tsv.parent.name).symlink_to(tsv.parent)
    parts.append({"mode": "translation", "parallel": "hf://Helsinki-NLP/opus-100@en-zh", "languages": ["en", "zh"]})
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {"model": {"architecture": {"model_type": "llama"}}, "data": {"build": parts}, "train": {"seed": 9}}
        )
    )
    spec = load_config(recipe).data.mixture(seed=9)
    assert [part.seed for part in spec.parts] == [9, 10, 11] and spec.seed == 9
    assert spec.parts[1].parallel == str((tmp_path / tsv.parent.name / tsv.name).resolve())
    assert spec.parts[2].parallel == "hf://Helsinki-NLP/opus-100@en-zh"
    assert spec.names == ["bilingual", "translation-1", "translation-2"]
    bad = recipe.read_text().replace("repeat: 3", "repeat: -1", 1)
    recipe.write_text(bad)
    with pytest.raises(AfpError, match=r"r.yaml:\d+: 'data.build' data.build\[0\]: --repeat: must be > 0"):
        load_config(recipe)


def test_cli_mix_of_part_files_and_stats_per_part(tmp_path, inputs, run_cli):
    folder, tsv = inputs
    part_files = []
    for index, part in enumerate(official_parts(folder, tsv)):
        path = tmp_path / f"part{index}.yaml"
        path.write_text(yaml.safe_dump(part))
        part_files.append(path)
    out = tmp_path / "mix.jsonl"
    code, stdout, stderr = run_cli("data", "mix", *part_files, "--seed", "4", "-o", out)
    assert code == 0, stderr
    assert "| bilingual | 120 |" in stdout and "| translation | 180 |" in stdout and "wrote 300 examples" in stdout
    code, stdout, _ = run_cli("data", "stats", out, "--json", tmp_path / "s.json")
    assert (
        code == 0
        and "bilingual: inputs read: en 40, zh 40" in stdout
        and "translation: inputs read: pairs 60" in stdout
    )
    assert json.loads((tmp_path / "s.json").read_text())["parts"] == {"bilingual": 120, "translation": 180}
    official = tmp_path / "official.jsonl"
    assert run_cli("data", "mix", *part_files, "--official-format", "-o", official)[0] == 0
    assert all(list(example) == ["sent0", "sent1", "clm_text", "clm_prompt_len"] for example in lines(official))
    (tmp_path / "bad.yaml").write_text("mode: bilingual\nlanguages: [en, zh\n")
    code, _, stderr = run_cli("data", "mix", tmp_path / "bad.yaml", "-o", tmp_path / "x.jsonl")
    assert code == 2 and stderr.startswith(f"error: {tmp_path / 'bad.yaml'}:3: invalid YAML")


def test_counts_by_direction_follow_each_parts_probabilities(tmp_path, inputs):
    build_mixture(Mixture.from_mappings(official_parts(*inputs), seed=0), tmp_path / "m.jsonl")
    by_part = Counter((e["part"], e["src_lang"] != e["tgt_lang"]) for e in lines(tmp_path / "m.jsonl"))
    assert by_part[("translation", False)] == 0  # translation examples always cross languages
    assert 30 <= by_part[("bilingual", True)] <= 90  # cross 0.5 of 120 (4 sigma: 60 ± 22)
