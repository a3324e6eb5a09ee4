"""Report writing: tables, atomic writes, refusal to overwrite."""

import json
import os

import pytest

from afp_cli.errors import AfpError
from afp_cli.report import markdown_table, refuse_existing, write_json


def test_markdown_table_formats_floats_and_missing_cells():
    table = markdown_table([{"model": "base", "acc": 0.5}, {"model": "a|b"}], ["model", "acc"], digits=2)
    assert table.splitlines() == ["| model | acc |", "|---|---|", "| base | 0.50 |", "| a\\|b | – |"]


def test_write_json_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out" / "report.json"
    write_json(target, {"rate": 0.75, "lang": "中文"})
    write_json(target, {"rate": 1.0})
    assert json.loads(target.read_text(encoding="utf-8")) == {"rate": 1.0}
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]
    old_umask = os.umask(0o022)
    try:
        write_json(target, {})
    finally:
        os.umask(old_umask)
    assert target.stat().st_mode & 0o777 == 0o644  # not mkstemp's owner-only 0600


def test_refuse_existing_names_the_file_unless_overwrite(tmp_path):
    existing = tmp_path / "report.md"
    existing.write_text("old")
    with pytest.raises(AfpError, match="report.md already exists: pass --overwrite"):
        refuse_existing([tmp_path / "new.md", existing], overwrite=False)
    refuse_existing([existing], overwrite=True)
