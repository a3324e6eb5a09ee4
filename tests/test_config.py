"""Recipes load and validate; overrides apply; bad keys and values name the file, line and key."""

from pathlib import Path

import pytest
import yaml

from afp_cli.align.config import AlignConfig, config_to_yaml, load_config
from afp_cli.errors import AfpError
from afp_cli.model.pooling import Pooling
from afp_cli.typed_yaml import parse_override

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
REQUIRED_RECIPES = {"tiny-demo", "xglm-564m_en-zh", "bloom-560m_en-zh", "llama-2-7b_en-zh", "qwen2.5-1.5b_multilingual"}


def test_the_required_recipes_ship():
    assert REQUIRED_RECIPES <= {path.stem for path in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_every_recipe_loads_validates_and_documents_its_launch_command(recipe):
    config = load_config(recipe)
    assert isinstance(config, AlignConfig)
    header = recipe.read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith(f"# {recipe.stem}:")
    assert f"afp align recipes/{recipe.name}" in recipe.read_text(encoding="utf-8")
    assert config.mcl.temperature == 0.05 and config.mcl.pooling == "last-1"
    assert (config.mcl.weight, config.cit.weight) == (1.0, 1.5)


def test_paper_defaults_without_a_recipe_value(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  name_or_path: facebook/xglm-564M\ndata:\n  train_file: d.jsonl\n")
    config = load_config(recipe)
    assert (config.train.scheduler, config.train.warmup_ratio, config.train.max_grad_norm) == ("cosine", 0.03, 1.0)
    assert config.mcl.pooled == Pooling("last", 1)
    assert config.lora.enabled and config.data.train_file == str(tmp_path / "d.jsonl")
    assert config.lora.targets == "auto" and config.lora.target_modules is None


@pytest.mark.parametrize(
    ("overrides", "expected_lr"),
    [
        ([], 1e-4),  # LoRA: afp's default rate
        (["lora.enabled=false"], 1e-5),  # full fine-tuning: the official rate
        (["lora.enabled=false", "train.lr=3e-5"], 3e-5),  # a recipe's own value always wins
        (["train.lr=2e-4"], 2e-4),
    ],
)
def test_the_learning_rate_defaults_by_training_mode_and_is_written_resolved(tmp_path, overrides, expected_lr):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  name_or_path: facebook/xglm-564M\ndata:\n  train_file: d.jsonl\n")
    config = load_config(recipe, overrides)
    assert config.train.lr == pytest.approx(expected_lr)
    assert yaml.safe_load(config_to_yaml(config))["train"]["lr"] == pytest.approx(expected_lr)


def test_overrides_apply_with_types(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  name_or_path: m\ndata:\n  train_file: d.jsonl\ntrain:\n  lr: 1e-4\n")
    config = load_config(
        recipe,
        ["train.lr=2e-5", "lora.r=8", "output_dir=runs/x", "mcl.pooling=avg-3", "lora.target_modules=[q_proj,v_proj]"],
    )
    assert config.train.lr == 2e-5 and config.lora.r == 8 and config.output_dir == "runs/x"
    assert config.mcl.pooled == Pooling("avg", 3)
    assert config.lora.target_modules == ["q_proj", "v_proj"]
    assert load_config(recipe).train.lr == 1e-4  # "1e-4" in YAML 1.1 is a string; it is read as the number
    assert load_config(recipe, ["lora.target_modules=all-linear"]).lora.target_modules == "all-linear"
    assert load_config(recipe, ["train.cpu_threads=1"]).train.cpu_threads == 1


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        (
            "model:\n  name_or_path: m\ndata:\n  train_file: d\ntrain:\n  lr: 1e-4\n  batchsize: 4\n",
            [],
            r"r.yaml:7: unknown key 'train.batchsize' \(did you mean 'batch_size'\?\)",
        ),
        (
            "model:\n  name_or_path: m\ndata:\n  train_file: d\ntrain:\n  warmup_ratio: 2\n",
            [],
            r"r.yaml:6: 'train.warmup_ratio' must be in \[0, 1\)",
        ),
        (
            "model:\n  name_or_path: m\ndata:\n  train_file: d\nmcl:\n  pooling: first-1\n",
            [],
            r"r.yaml:6: 'mcl.pooling' 'first-1' is not one of",
        ),
        (
            "model:\n  name_or_path: m\ndata:\n  train_file: d\ntrain:\n  batch_size: two\n",
            [],
            r"r.yaml:6: 'train.batch_size' must be int, got 'two'",
        ),
        (
            "model:\n  name_or_path: m\ndata:\n  train_file: d\n",
            ["train.batch_size=1"],
            r"command line: 'train.batch_size' must be >= 2 when MCL is on",
        ),
        (
            "model:\n  name_or_path: m\ndata:\n  train_file: d\n",
            ["lora.rank=4"],
            r"command line: unknown key 'lora.rank'",
        ),
        (
            "model:\n  name_or_path: m\ndata:\n  train_file: d\n",
            ["lora.target_modules=[1, 2]"],
            r"command line: 'lora.target_modules' must be list\[str\] or str, got \[1, 2\]",
        ),
        ("model:\n  name_or_path: m\n", [], r"r.yaml: missing section 'data'"),
        ("model:\n  name_or_path: m\ndata:\n  train_file: d\n  bild: {}\n", [], r"r.yaml:5: unknown key 'data.bild'"),
        (
            "model:\n  name_or_path: m\n  architecture: {model_type: llama}\ndata:\n  train_file: d\n",
            [],
            r"r.yaml:2: 'model.name_or_path' or 'model.architecture' must be set, not both",
        ),
        ("model: [\n", [], r"r.yaml:2: invalid YAML"),
    ],
)
def test_bad_recipes_name_file_line_and_key(tmp_path, text, overrides, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(AfpError, match=message):
        load_config(recipe, overrides)


def test_a_bad_data_build_section_is_reported_at_its_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model:\n  name_or_path: m\ndata:\n  build:\n    mode: translation\n    languages: [en, zh]\n"
        "    parallel: p.tsv\n    change_prob: 1.5\n"
    )
    with pytest.raises(AfpError, match=r"r.yaml:4: 'data.build' .*must be a probability in \[0, 1\], got 1.5"):
        load_config(recipe)


def test_override_syntax():
    assert parse_override("train.lr=2e-5") == ("train.lr", "2e-5")  # the dataclass field turns it into a float
    assert parse_override("lora.enabled=false") == ("lora.enabled", False)
    with pytest.raises(AfpError, match="must look like section.key=value"):
        parse_override("train.lr")


def test_the_recipe_reference_in_docs_is_current():
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("generator", root / "docs" / "_generate_align_reference.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    document = (root / "docs" / "align.md").read_text(encoding="utf-8")
    assert generator.render(document) == document, "run: python docs/_generate_align_reference.py"
