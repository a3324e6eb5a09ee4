"""Training inputs from the hub (hf://), offline: a stand-in for `datasets.load_dataset` and the hub API serves rows in
each dataset's published schema (Bactrian-X: one config per language, id/instruction/input/output; OPUS-100:
config en-zh, a `translation` column), through the real `datasets.Dataset`."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import datasets
import huggingface_hub
import pytest
import yaml
from huggingface_hub.errors import OfflineModeIsEnabled
from rich.console import Console

from afp_cli.data.build import build_mixture, ensure_mixture, pin_hub_inputs
from afp_cli.data.hub import HubReference
from afp_cli.data.mixture_config import Mixture, MixturePart
from afp_cli.errors import AfpError

BACTRIAN = "MBZUAI/Bactrian-X"
OPUS = "Helsinki-NLP/opus-100"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def bactrian_rows(lang: str, size: int = 12) -> list[dict]:
    """Bactrian-X's published schema; every fourth record has an empty input (null on the hub)."""
    return [
        {
            "id": f"alpaca-{i}",
            "instruction": f"[{lang}] instruction {i}",
            "input": None if i % 4 == 0 else f"[{lang}] input {i}",
            "output": f"[{lang}] answer {i}",
        }
        for i in range(size)
    ]


def opus_rows(size: int = 10) -> list[dict]:
    return [{"translation": {"en": f"sentence {i}", "zh": f"句子 {i}"}} for i in range(size)]


class FakeHub:
    """Serves datasets by (repo, config) and the current commit of each repo; counts downloads; can go offline."""

    def __init__(self) -> None:
        self.data = {(BACTRIAN, lang): bactrian_rows(lang) for lang in ("en", "zh", "de")}
        self.data[(OPUS, "en-zh")] = opus_rows()
        self.commits = {BACTRIAN: COMMIT_A, OPUS: COMMIT_A, "someone/pairs": COMMIT_A}
        self.offline = False
        self.scripts: set[str] = set()  # repositories only a loading script reads
        self.loads: list[tuple] = []

    def load_dataset(self, path, name=None, split=None, revision=None, **kwargs):
        if self.offline:
            raise ConnectionError(f"Couldn't reach '{path}' on the Hub (OfflineModeIsEnabled)")
        if path in self.scripts:  # datasets >= 4, as load.py words it
            raise RuntimeError(f"Dataset scripts are no longer supported, but found {path.split('/')[-1]}.py")
        if (path, name) not in self.data:
            raise ValueError(
                f"BuilderConfig '{name}' not found. Available: {sorted(c for p, c in self.data if p == path)}"
            )
        assert split == "train" and revision == self.commits[path], (split, revision)
        self.loads.append((path, name, revision))
        return datasets.Dataset.from_list(self.data[(path, name)])

    def dataset_info(self, repo_id, revision=None, **kwargs):
        if self.offline:
            raise OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/datasets: offline mode is enabled.")
        return SimpleNamespace(sha=self.commits[repo_id])


@pytest.fixture
def hub(monkeypatch, tmp_path) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(datasets, "load_dataset", fake.load_dataset)
    monkeypatch.setattr(
        huggingface_hub.HfApi, "dataset_info", lambda self, repo_id, **kw: fake.dataset_info(repo_id, **kw)
    )
    monkeypatch.setenv("AFP_CACHE_DIR", str(tmp_path / "afp-cache"))
    return fake


def write_local_bactrian(folder: Path, hub: FakeHub, languages=("en", "zh")) -> Path:
    folder.mkdir(parents=True)
    for lang in languages:
        rows = hub.data[(BACTRIAN, lang)]
        (folder / f"{lang}.jsonl").write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
        )
    return folder


def examples(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ----------------------------------------------------------------------------------------------- references


def test_reference_syntax_round_trips_and_bad_ones_name_the_option():
    ref = HubReference.parse(f"hf://{OPUS}@en-zh?revision={COMMIT_A}&limit=5", "--parallel")
    assert (ref.repo, ref.config, ref.revision, ref.split, ref.limit) == (OPUS, "en-zh", COMMIT_A, "train", 5)
    assert str(ref) == f"hf://{OPUS}@en-zh?revision={COMMIT_A}&limit=5" and ref.pinned
    assert str(HubReference.parse(f"hf://{BACTRIAN}", "--instructions")) == f"hf://{BACTRIAN}"
    assert HubReference.parse(f"hf://{OPUS}", "--parallel").configs("parallel", ["zh", "en"])[0][0] == "en-zh"
    for text, message in (
        (f"hf://{OPUS}?limit=0", "limit must be a positive whole number"),
        (f"hf://{OPUS}?rev=x", "unknown setting 'rev'"),
        ("hf://a b/c", "is not a hub reference"),
    ):
        with pytest.raises(AfpError, match=message):
            HubReference.parse(text, "--parallel")
    with pytest.raises(AfpError, match=r"one config per language \(Bactrian-X layout\); drop '@en'"):
        MixturePart(mode="bilingual", languages=["en", "zh"], instructions=f"hf://{BACTRIAN}@en")


# ----------------------------------------------------------------------------------------------- loading, conversion


def test_bactrian_from_the_hub_builds_the_same_bytes_as_the_same_rows_on_disk(tmp_path, hub):
    settings = dict(mode="bilingual", languages=["en", "zh"], cross_prob=0.5, repeat=2, seed=3)
    build_mixture(MixturePart(instructions=f"hf://{BACTRIAN}", **settings), tmp_path / "hub.jsonl")
    local = write_local_bactrian(tmp_path / "bx", hub)
    build_mixture(MixturePart(instructions=str(local), **settings), tmp_path / "local.jsonl")
    assert (tmp_path / "hub.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert len(examples(tmp_path / "hub.jsonl")) == 24
    assert sorted(hub.loads) == [(BACTRIAN, "en", COMMIT_A), (BACTRIAN, "zh", COMMIT_A)]
    meta = json.loads((tmp_path / "hub.jsonl.meta.json").read_text(encoding="utf-8"))
    assert meta["parts"][0]["config"]["instructions"] == f"hf://{BACTRIAN}?revision={COMMIT_A}"


def test_opus_translation_column_and_two_text_columns_give_the_pairs(tmp_path, hub):
    build_mixture(
        MixturePart(mode="translation", languages=["en", "zh"], parallel=f"hf://{OPUS}@en-zh", change_prob=0.0),
        tmp_path / "opus.jsonl",
    )
    pairs = sorted((example["sent0"], example["sent1"]) for example in examples(tmp_path / "opus.jsonl"))
    assert pairs == sorted((f"sentence {i}", f"句子 {i}") for i in range(10))
    # columns named by language (in the other order), and two unnamed text columns (taken in the languages' order)
    hub.data[("someone/pairs", "zh-en")] = [{"zho_Hans": f"句子 {i}", "eng_Latn": f"sentence {i}"} for i in range(4)]
    hub.data[("someone/pairs", "plain")] = [
        {"id": i, "source": f"sentence {i}", "target": f"句子 {i}"} for i in range(4)
    ]
    for config in ("zh-en", "plain"):
        out = tmp_path / f"{config}.jsonl"
        build_mixture(
            MixturePart(
                mode="translation", languages=["en", "zh"], parallel=f"hf://someone/pairs@{config}", change_prob=0.0
            ),
            out,
        )
        assert sorted((e["sent0"], e["sent1"]) for e in examples(out)) == [
            (f"sentence {i}", f"句子 {i}") for i in range(4)
        ]


def script_repo(hub, monkeypatch, tmp_path, files: dict[str, list[dict]]) -> str:
    """A repository only a loading script reads (what datasets >= 4 refuses), holding ``files`` (gzipped JSON lists)."""
    import gzip

    repo = "someone/script-only"
    hub.commits[repo] = COMMIT_A
    hub.scripts.add(repo)
    stored = tmp_path / "hub-files"
    for name, rows in files.items():
        (stored / name).parent.mkdir(parents=True, exist_ok=True)
        (stored / name).write_bytes(gzip.compress(json.dumps(rows, ensure_ascii=False).encode("utf-8")))
    listing = [*files, "README.md", "script-only.py"]

    def list_repo_files(self, repo_id, repo_type=None, revision=None, **kwargs):
        assert (repo_id, repo_type, revision) == (repo, "dataset", COMMIT_A)
        return listing

    def hf_hub_download(repo_id, filename, repo_type=None, revision=None, **kwargs):
        assert (repo_id, repo_type, revision) == (repo, "dataset", COMMIT_A)
        return str(stored / filename)

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return repo


def test_instructions_only_a_loading_script_reads_come_from_their_files_at_the_same_commit(
    tmp_path, hub, monkeypatch, capsys
):
    # datasets >= 4 refuses loading scripts; Bactrian-X-style files ({lang}.json.gz) are read directly instead
    repo = script_repo(
        hub, monkeypatch, tmp_path, {f"data/{lang}.json.gz": hub.data[(BACTRIAN, lang)] for lang in ("en", "zh")}
    )
    settings = dict(mode="bilingual", languages=["en", "zh"], cross_prob=0.5, repeat=2, seed=3)
    build_mixture(MixturePart(instructions=f"hf://{repo}", **settings), tmp_path / "script.jsonl")
    build_mixture(MixturePart(instructions=f"hf://{BACTRIAN}", **settings), tmp_path / "loaded.jsonl")
    assert (tmp_path / "script.jsonl").read_bytes() == (tmp_path / "loaded.jsonl").read_bytes()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: hf://{repo}?revision={COMMIT_A}: read by a loading script, which datasets "
        f"{datasets.__version__} no longer runs; reading its file data/{lang}.json.gz at the same "
        "commit instead"
        for lang in ("en", "zh")
    ]


def test_a_loading_script_without_files_afp_can_read_is_one_line(tmp_path, hub, monkeypatch, run_cli):
    repo = script_repo(hub, monkeypatch, tmp_path, {"data/english.json.gz": hub.data[(BACTRIAN, "en")]})
    out = tmp_path / "out" / "mix.jsonl"
    code, _, stderr = run_cli("data", "bilingual", "--instructions", f"hf://{repo}", "-l", "en", "zh", "-o", out)
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith(
        f"error: instructions: hf://{repo}?revision={COMMIT_A}: the dataset is read by a "
        f"loading script, which datasets {datasets.__version__} no longer runs; download its data "
        f"files (hf download {repo} --repo-type dataset --revision {COMMIT_A} --local-dir DIR)"
    )
    assert stderr.rstrip().endswith(
        "(afp reads the repository's one en.json[l][.gz] file in its place, but it has none)"
    )
    assert not out.parent.exists()
    # parallel text has no file layout to fall back on: the refusal alone
    code, _, stderr = run_cli("data", "translation", "--parallel", f"hf://{repo}@en-zh", "-l", "en", "zh", "-o", out)
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.rstrip().endswith("name the downloaded files instead (docs/data.md, Input formats)")


def test_rows_in_the_wrong_schema_name_dataset_config_row_and_field(tmp_path, hub):
    hub.data[(BACTRIAN, "zh")][2].pop("output")
    with pytest.raises(
        AfpError, match=rf"hf://{BACTRIAN}\?revision={COMMIT_A} \(config zh\): row 3: field 'output': missing"
    ):
        build_mixture(
            MixturePart(mode="bilingual", languages=["en", "zh"], instructions=f"hf://{BACTRIAN}"), tmp_path / "o.jsonl"
        )
    hub.data[("someone/pairs", "en-zh")] = [{"a": "x", "b": "y", "c": "z"}]
    with pytest.raises(AfpError, match="expected a 'translation' column or two text columns, found columns a, b, c"):
        build_mixture(
            MixturePart(mode="translation", languages=["en", "zh"], parallel="hf://someone/pairs"), tmp_path / "o.jsonl"
        )
    with pytest.raises(AfpError, match="BuilderConfig 'fr' not found"):
        build_mixture(
            MixturePart(mode="bilingual", languages=["en", "fr"], instructions=f"hf://{BACTRIAN}"), tmp_path / "o.jsonl"
        )
    assert not (tmp_path / "o.jsonl").exists()


# ----------------------------------------------------------------------------------------------- revisions, cache


def test_the_cache_key_follows_the_revision_and_a_cached_mixture_needs_no_download(tmp_path, hub):
    config = MixturePart(mode="bilingual", languages=["en", "zh"], instructions=f"hf://{BACTRIAN}", seed=1)
    first = ensure_mixture(config, tmp_path / "mixtures")
    assert len(hub.loads) == 2
    assert ensure_mixture(config, tmp_path / "mixtures") == first and len(hub.loads) == 2  # reused, not downloaded
    hub.commits[BACTRIAN] = COMMIT_B  # a new commit on the hub: a new mixture
    hub.data[(BACTRIAN, "en")][5]["instruction"] = "[en] instruction five"
    second = ensure_mixture(config, tmp_path / "mixtures")
    assert second != first and '"sent0": "[en] instruction five"' in second.read_text(encoding="utf-8")
    pinned = MixturePart(
        mode="bilingual", languages=["en", "zh"], instructions=f"hf://{BACTRIAN}?revision={COMMIT_A}", seed=1
    )
    assert ensure_mixture(pinned, tmp_path / "mixtures") == first  # pinning the old commit finds the old build
    hub.offline = True  # offline, the pin recorded online still finds the cached build
    assert ensure_mixture(config, tmp_path / "mixtures") == second


def test_align_records_the_pinned_revision_in_the_recipe(tmp_path, hub):
    from afp_cli.align.config import load_config
    from afp_cli.align.train import resolve_train_file

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": {"architecture": {"model_type": "llama"}},
                "data": {
                    "build": [
                        {"mode": "bilingual", "instructions": f"hf://{BACTRIAN}", "languages": ["en", "zh"]},
                        {"mode": "translation", "parallel": f"hf://{OPUS}@en-zh", "languages": ["en", "zh"]},
                    ]
                },
            }
        ),
        encoding="utf-8",
    )
    config = load_config(recipe)
    path = resolve_train_file(config, Console(file=io.StringIO()))
    assert [part.get("instructions") or part.get("parallel") for part in config.data.build] == [
        f"hf://{BACTRIAN}?revision={COMMIT_A}",
        f"hf://{OPUS}@en-zh?revision={COMMIT_A}",
    ]
    assert len(examples(path)) == 12 + 10


# ----------------------------------------------------------------------------------------------- offline


OFFLINE_LINE = (
    f"error: instructions: hf://{BACTRIAN}: the Hugging Face hub cannot be reached and it is not in the "
    f"local cache; on a machine with internet run `afp data fetch --instructions hf://{BACTRIAN} --languages en zh "
    "-o DIR`, copy DIR here and use DIR/Bactrian-X as instructions"
)


def test_offline_is_one_line_that_says_how_to_fetch_and_nothing_is_written(tmp_path, hub, run_cli):
    hub.offline = True
    out = tmp_path / "out" / "mix.jsonl"
    code, stdout, stderr = run_cli(
        "data", "bilingual", "--instructions", f"hf://{BACTRIAN}", "-l", "en", "zh", "-o", out
    )
    assert code == 2 and stderr.strip().splitlines() == [OFFLINE_LINE]
    assert not out.parent.exists()


@pytest.mark.parametrize(
    "recipe", ["xglm-564m_en-zh", "bloom-560m_en-zh", "llama-2-7b_en-zh", "qwen2.5-1.5b_multilingual"]
)
def test_paper_recipes_offline_dry_run_fails_only_with_the_fetch_line(tmp_path, hub, run_cli, recipe):
    hub.offline = True
    path = Path(__file__).resolve().parents[1] / "recipes" / f"{recipe}.yaml"
    code, stdout, stderr = run_cli("align", path, "--dry-run", f"output_dir={tmp_path / 'run'}")
    assert code == 2, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "the Hugging Face hub cannot be reached" in lines[0] and "afp data fetch" in lines[0]
    assert f"hf://{BACTRIAN}" in lines[0] and not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------- afp data fetch


def test_fetch_writes_the_layout_afp_data_reads_with_limit_and_source(tmp_path, hub, run_cli):
    code, stdout, stderr = run_cli(
        "data",
        "fetch",
        "--instructions",
        f"hf://{BACTRIAN}",
        "--parallel",
        f"hf://{OPUS}@en-zh",
        "--languages",
        "en",
        "zh",
        "--limit",
        "5",
        "-o",
        tmp_path / "inputs",
    )
    assert code == 0, stderr
    folder = tmp_path / "inputs" / "Bactrian-X"
    assert sorted(path.name for path in folder.iterdir()) == ["en.jsonl", "source.json", "zh.jsonl"]
    assert [json.loads(line)["id"] for line in (folder / "zh.jsonl").read_text(encoding="utf-8").splitlines()] == [
        f"alpaca-{i}" for i in range(5)
    ]
    assert (
        json.loads((folder / "source.json").read_text())["reference"] == f"hf://{BACTRIAN}?revision={COMMIT_A}&limit=5"
    )
    opus = tmp_path / "inputs" / "opus-100" / "en-zh.jsonl"
    assert json.loads(opus.read_text(encoding="utf-8").splitlines()[4]) == {"en": "sentence 4", "zh": "句子 4"}
    assert f"instructions: {folder}" in stdout and f"parallel: {opus}" in stdout
    again = run_cli("data", "fetch", "--instructions", f"hf://{BACTRIAN}", "-l", "en", "-o", tmp_path / "inputs")
    assert again[0] == 2 and "already exists: pass --overwrite" in again[2]


def test_fetched_recipe_inputs_build_the_same_mixture_offline(tmp_path, hub, run_cli):
    parts = [
        {"mode": "bilingual", "instructions": f"hf://{BACTRIAN}", "languages": ["en", "zh"], "repeat": 3},
        {"mode": "translation", "parallel": f"hf://{OPUS}@en-zh", "languages": ["en", "zh"], "repeat": 3},
    ]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"architecture": {"model_type": "llama"}}, "data": {"build": parts}}))
    code, _, stderr = run_cli("data", "fetch", "--recipe", recipe, "-o", tmp_path / "inputs")
    assert code == 0, stderr
    online = build_mixture(Mixture.from_mappings(parts, seed=4), tmp_path / "online.jsonl")
    hub.offline = True
    local = [
        {**parts[0], "instructions": str(tmp_path / "inputs" / "Bactrian-X")},
        {**parts[1], "parallel": str(tmp_path / "inputs" / "opus-100" / "en-zh.jsonl")},
    ]
    offline = build_mixture(Mixture.from_mappings(local, seed=4), tmp_path / "offline.jsonl")
    assert (tmp_path / "online.jsonl").read_bytes() == (tmp_path / "offline.jsonl").read_bytes()
    assert online["parts"] == offline["parts"] == {"bilingual": 36, "translation": 30}


def test_pin_keeps_a_pinned_reference_without_asking_the_hub(hub):
    hub.offline = True
    spec = pin_hub_inputs(
        MixturePart(mode="bilingual", languages=["en", "zh"], instructions=f"hf://{BACTRIAN}?revision={COMMIT_B}")
    )
    assert spec.parts[0].instructions == f"hf://{BACTRIAN}?revision={COMMIT_B}"


@pytest.mark.parametrize("recipe", ["xglm-564m_en-zh", "bloom-560m_en-zh", "llama-2-7b_en-zh"])
def test_paper_recipes_train_on_the_official_mix_from_the_hub(recipe):
    from afp_cli.align.config import load_config

    spec = load_config(Path(__file__).resolve().parents[1] / "recipes" / f"{recipe}.yaml").data.mixture()
    bilingual, translation = spec.parts
    assert (bilingual.mode, bilingual.instructions, bilingual.cross_prob, bilingual.repeat) == (
        "bilingual",
        f"hf://{BACTRIAN}",
        0.5,
        3,
    )
    assert (
        translation.mode,
        translation.hub_reference.repo,
        translation.hub_reference.config,
        translation.change_prob,
        translation.repeat,
    ) == ("translation", OPUS, "en-zh", 0.5, 3)
