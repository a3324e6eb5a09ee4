"""An analysis's outputs: report files (Markdown, JSON, PNG) written atomically."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from afp_cli.report import json_text, refuse_existing
from afp_cli.text_files import write_all_atomically


def report_paths(output_dir: str | Path, stem: str, figures: tuple[str, ...]) -> dict[str, Path]:
    """``{"md": …/stem.md, "json": …/stem.json, <figure>: …/stem_<figure>.png}``."""
    folder = Path(output_dir)
    paths = {"md": folder / f"{stem}.md", "json": folder / f"{stem}.json"}
    paths.update({figure: folder / f"{stem}_{figure}.png" for figure in figures})
    return paths


def check_writable(paths: Mapping[str, Path], overwrite: bool) -> None:
    """Refuse before any work is done, so a long run never ends on an existing report."""
    refuse_existing(list(paths.values()), overwrite)


def figure_png(figure) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def write_report(paths: Mapping[str, Path], markdown: str, payload: Any, figures: Mapping[str, Any]) -> list[Path]:
    """Write the report's files as one set (each to a temporary file, all renamed once all are written): a reader
    never sees half a report, and a disk that fills on the last file leaves none of them changed."""
    contents: dict[Path, str | bytes] = {paths[name]: figure_png(figure) for name, figure in figures.items()}
    contents[paths["json"]] = json_text(payload)
    contents[paths["md"]] = markdown
    return write_all_atomically(contents, what="the report")
