"""An adapter is loaded on the model it was trained on, whatever that model's folder is called now."""

from __future__ import annotations

import json

import pytest

from afp_cli.errors import AfpError
from afp_cli.model.adapter_base import check_adapter_base
from afp_cli.model.loading import quiet_saving
from afp_cli.model.tiny import build_model, tiny_architecture


@pytest.fixture
def save_base(tmp_path, tiny_tokenizer):
    def save(name: str, seed: int = 0, **architecture):
        folder = tmp_path / name
        with quiet_saving():
            build_model(tiny_architecture("llama", **architecture), tiny_tokenizer, seed=seed).save_pretrained(folder)
        return folder

    return save


def adapter_on(folder, base) -> str:
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    return str(folder)


def test_a_copy_of_the_base_under_another_name_loads_with_a_warning(save_base, tmp_path, capsys):
    adapter = adapter_on(tmp_path / "run", save_base("demo-run-1/base_model", seed=0))
    check_adapter_base(adapter, str(save_base("demo-run-2/base_model", seed=0)))  # same seed: same weights
    warning = capsys.readouterr().err
    assert warning.startswith("warning: ") and "(same architecture and weights)" in warning
    assert warning.count("\n") == 1


def test_the_same_folder_by_another_spelling_is_silent(save_base, tmp_path, capsys, monkeypatch):
    base = save_base("base")
    adapter = adapter_on(tmp_path / "run", base)
    monkeypatch.chdir(tmp_path)
    check_adapter_base(adapter, "./base/")
    assert capsys.readouterr().err == ""


def test_other_weights_of_the_same_architecture_are_refused_unless_allowed(save_base, tmp_path, capsys):
    adapter = adapter_on(tmp_path / "run", save_base("a", seed=0))
    other = str(save_base("b", seed=1))
    with pytest.raises(AfpError, match=r"same architecture but other weights; pass --allow-other-base"):
        check_adapter_base(adapter, other)
    check_adapter_base(adapter, other, allow_other_base=True)
    assert "other weights" in capsys.readouterr().err


def test_another_architecture_is_refused_naming_what_differs(save_base, tmp_path):
    adapter = adapter_on(tmp_path / "run", save_base("a"))
    with pytest.raises(AfpError, match=r"architecture differs from .*hidden_size 64 vs 32"):
        check_adapter_base(adapter, str(save_base("b", hidden_size=32)))


def test_a_recorded_base_that_is_gone_cannot_be_compared_and_is_said_so(save_base, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter = adapter_on(tmp_path / "run", tmp_path / "moved-away")
    check_adapter_base(adapter, str(save_base("here")))
    assert "cannot be compared here" in capsys.readouterr().err
