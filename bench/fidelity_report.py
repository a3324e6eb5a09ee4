"""Summarise the method-fidelity rows: mean and spread over seeds, the paper's directions checked, MD/JSON/PNG.

Spread is the sample standard deviation over seeds. A difference between two means is called *noise* when it is
not larger than the bigger of the two spreads (with one seed there is no spread, and every verdict says so).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from afp_cli.report import markdown_table, write_json
from afp_cli.text_files import write_atomically

# (row key, column title, higher is better)
METRICS = (
    ("retrieval_top1", "retrieval top-1 (pooling layer) ↑", True),
    ("retrieval_layer1", "retrieval layer 1 ↑", True),
    ("retrieval_last", "retrieval last layer ↑", True),
    ("chrf", "chrF++ ↑", True),
    ("bleu", "BLEU ↑", True),
    ("language_rate", "language rate ↑", True),
    ("held_out_cit_loss", "held-out CIT loss ↓", False),
)
PLOTTED = ("retrieval_top1", "chrf", "language_rate", "held_out_cit_loss")
OBJECTIVE_STUDIES = ("main", "icl")  # the studies whose groups differ by objective: the paper's claims apply


def group_key(row: dict) -> tuple:
    return row["variant"], row.get("targets"), row.get("pooling")


def group_label(key: tuple, study: str) -> str:
    """The main study varies the objectives only, so its groups are named by them (the paper's claims use these)."""
    variant, targets, pooling = key
    return variant if targets is None or study in OBJECTIVE_STUDIES else f"{variant} · {targets} · {pooling}"


def with_layer_means(row: dict) -> dict:
    """Both retrieval directions averaged per layer (the per-direction values stay in the row)."""
    row = dict(row)
    for layer in ("layer1", "last"):
        row[f"retrieval_{layer}"] = (row[f"retrieval_{layer}_en_zh"] + row[f"retrieval_{layer}_zh_en"]) / 2
    return row


def measured(rows: list[dict], metrics=METRICS) -> list[str]:
    """The metrics these rows carry (the LoRA study measures no generation)."""
    return [key for key, _, _ in metrics if key in with_layer_means(rows[0])]


def summarise(rows: list[dict], study: str, metrics=METRICS) -> list[dict]:
    """One entry per (variant, targets, pooling): mean, spread and per-seed values of every metric."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(group_key(row), []).append(with_layer_means(row))
    summary = []
    for key, members in groups.items():
        entry = {
            "variant": key[0],
            "targets": key[1],
            "pooling": key[2],
            "label": group_label(key, study),
            "seeds": [member["seed"] for member in members],
        }
        for metric in measured(rows, metrics):
            values = [member[metric] for member in members]
            entry[metric] = {
                "mean": statistics.fmean(values),
                "spread": statistics.stdev(values) if len(values) > 1 else None,
                "values": values,
            }
        summary.append(entry)
    return summary


def compare(summary: list[dict], better: str, worse: str, metric: str, metrics=METRICS) -> dict:
    """Is the mean of group ``better`` above that of ``worse`` (below, for a loss) by more than the spread?"""
    first, second = (next(entry for entry in summary if entry["label"] == label) for label in (better, worse))
    higher_is_better = next(high for key, _, high in metrics if key == metric)
    difference = first[metric]["mean"] - second[metric]["mean"]
    spreads = [first[metric]["spread"], second[metric]["spread"]]
    spread = None if None in spreads else max(spreads)
    gain = difference if higher_is_better else -difference
    if spread is None:
        verdict = "one seed: no spread to judge by"
    elif abs(difference) <= spread:
        verdict = "noise"
    else:
        verdict = "yes" if gain > 0 else "no (reversed)"
    return {"claim": f"{better} > {worse} on {metric}", "difference": difference, "spread": spread, "verdict": verdict}


# The paper's directions (NAACL 2024, Tables and Finding in docs/METHOD.md), as pairwise claims.
PAPER_CLAIMS = (
    ("mcl", "base", "retrieval_top1"),
    ("mcl+cit", "cit", "retrieval_top1"),
    ("mcl+cit", "base", "retrieval_top1"),
    ("cit", "base", "chrf"),
    ("cit", "base", "language_rate"),
    ("mcl+cit", "cit", "chrf"),
    ("mcl+cit", "cit", "language_rate"),
    ("cit", "base", "held_out_cit_loss"),
    ("mcl", "base", "chrf"),  # the paper: MCL alone does not help generation (expected: noise or no)
)


def check_claims(summary: list[dict], claims=PAPER_CLAIMS, metrics=METRICS) -> list[dict]:
    labels = {entry["label"] for entry in summary}
    return [
        compare(summary, better, worse, metric, metrics)
        for better, worse, metric in claims
        if better in labels and worse in labels and metric in summary[0]
    ]


def _cell(stat: dict) -> str:
    spread = "" if stat["spread"] is None else f" ± {stat['spread']:.3f}"
    return f"{stat['mean']:.3f}{spread}"


def render_markdown(
    summary: list[dict],
    claims: list[dict],
    rows: list[dict],
    commands: list[str],
    context: dict,
    metrics=METRICS,
    section: str = "",
) -> str:
    """``section``: a study's own Markdown, placed after the claims and before the per-seed rows."""
    shown = [(key, title) for key, title, _ in metrics if key in summary[0]]
    columns = ["model"] + [title for _, title in shown]
    table = [{"model": entry["label"], **{title: _cell(entry[key]) for key, title in shown}} for entry in summary]
    per_seed_columns = [
        "variant",
        "targets",
        "pooling",
        "seed",
        "retrieval_layer1_en_zh",
        "retrieval_layer1_zh_en",
        "retrieval_last_en_zh",
        "retrieval_last_zh_en",
        *[key for key in ("chrf", "bleu", "language_rate") if key in rows[0]],
        "held_out_cit_loss",
    ]
    per_seed_columns = context.get("per_seed_columns", per_seed_columns)
    lines = [
        f"# {context.get('title', 'Method fidelity')} "
        f"({context['study']} study{', quick' if context['quick'] else ''})",
        "",
        f"{context['date']} · {context['machine']} · load average at start {context['load_average_at_start']} · "
        f"{context['seconds']} s · seeds {context['seeds']}",
        "",
        f"```\n{context['command']}\n```",
        "",
        context.get("description")
        or (
            "Mean ± sample standard deviation over seeds. Retrieval: top-1 among "
            f"{context['scale']['retrieval_pairs']} held-out pairs (chance "
            f"{1 / context['scale']['retrieval_pairs']:.3f}), both directions averaged; 'pooling layer' is layer 1 for "
            "`last-1` (and for base and CIT), the last layer for `last`. chrF++/BLEU and language rate: both "
            "directions, 0- and 1-shot, averaged."
        ),
        "",
        markdown_table(table, columns),
    ]
    if claims:
        lines += [
            "## The paper's directions",
            "",
            "A difference not larger than the bigger spread of the two groups is called noise.",
            "",
            markdown_table(
                [
                    {
                        "claim": c["claim"],
                        "difference": f"{c['difference']:+.3f}",
                        "spread": "–" if c["spread"] is None else f"{c['spread']:.3f}",
                        "verdict": c["verdict"],
                    }
                    for c in claims
                ],
                ["claim", "difference", "spread", "verdict"],
            ),
        ]
    if section:
        lines += [section, ""]
    lines += [
        "## Per seed",
        "",
        markdown_table([with_layer_means(row) for row in rows], per_seed_columns),
        "## Commands",
        "",
        "```",
        *commands,
        "```",
        "",
    ]
    return "\n".join(lines)


def plot(summary: list[dict], metrics=METRICS, plotted_keys=PLOTTED):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {key: title for key, title, _ in metrics}
    plotted = [key for key in plotted_keys if key in summary[0]] or ["retrieval_top1"]
    if "chrf" not in summary[0]:  # the LoRA study: retrieval at both layers says where the alignment landed
        plotted = ["retrieval_layer1", "retrieval_last", "held_out_cit_loss"]
    figure, axes = plt.subplots(1, len(plotted), figsize=(4.2 * len(plotted), 3.2 + 0.18 * len(summary)))
    labels = [entry["label"] for entry in summary]
    for axis, metric in zip(axes, plotted):
        means = [entry[metric]["mean"] for entry in summary]
        spreads = [entry[metric]["spread"] or 0.0 for entry in summary]
        positions = range(len(summary))
        axis.barh(list(positions), means, xerr=spreads, color="#9ab", capsize=3)
        for position, entry in zip(positions, summary):  # each seed as a dot: the spread is visible, not hidden
            axis.plot(entry[metric]["values"], [position] * len(entry[metric]["values"]), "k.", markersize=4)
        axis.set_yticks(list(positions))
        axis.set_yticklabels(labels if axis is axes[0] else [], fontsize=8)
        axis.invert_yaxis()
        axis.set_title(titles[metric], fontsize=9)
    figure.tight_layout()
    return figure


def write_reports(
    out: Path,
    rows: list[dict],
    commands: list[str],
    context: dict,
    metrics=METRICS,
    plotted=PLOTTED,
    claims=PAPER_CLAIMS,
    section: str = "",
    extra: dict | None = None,
) -> None:
    """results.md / results.json / results.png. ``metrics``, ``plotted`` and ``claims`` default to this
    experiment's; bench/real_model.py passes its own (more measurements, more pooling layers); its ICL study adds
    a Markdown ``section`` and ``extra`` keys of results.json (its paired tests, screening and timings)."""
    import io

    summary = summarise(rows, context["study"], metrics)
    claims = check_claims(summary, claims, metrics) if context["study"] in OBJECTIVE_STUDIES else []
    buffer = io.BytesIO()
    figure = plot(summary, metrics, plotted)
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    write_atomically(out / "results.png", buffer.getvalue())
    write_json(
        out / "results.json",
        {"rows": rows, "summary": summary, "claims": claims, "commands": commands, "context": context, **(extra or {})},
    )
    markdown = render_markdown(summary, claims, rows, commands, context, metrics, section)
    write_atomically(out / "results.md", markdown)
