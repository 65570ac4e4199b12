"""`report.md` and a self-contained `report.html` (PNG plots inlined as base64) beside metrics.json.

The report is built once as a list of blocks (heading, text, table, image) and rendered twice,
so the two files always say the same thing. Plots go to `<run_dir>/plots/`.
"""

from __future__ import annotations

import base64
import html
import os
import re

from mmdist.contracts import MODALITIES
from mmdist.eval import plots

RETRIEVAL_COLUMNS = ("R@1", "R@5", "R@10", "MdR", "MnR")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"  # three significant digits
    return str(value)


def _table(header: list[str], rows: list[list]) -> tuple:
    return ("table", header, [[_fmt(cell) for cell in row] for row in rows])


def _section_table(section: dict, columns: tuple[str, ...], first: str) -> tuple:
    return _table([first, *columns], [[name, *(values.get(c) for c in columns)] for name, values in section.items()])


def build_blocks(metrics: dict, artifacts: dict, history: list[dict], plot_dir: str) -> list[tuple]:
    """The report's content, top to bottom."""
    os.makedirs(plot_dir, exist_ok=True)
    blocks: list[tuple] = [("h1", "Evaluation report"), ("p", f"Checkpoint `{metrics.get('checkpoint')}`; {metrics['num_clips']} clips evaluated, data `{metrics.get('data_path')}`.")]
    if metrics.get("dropped"):
        blocks.append(("p", f"Records dropped while decoding: {metrics['dropped']}."))

    blocks.append(("h2", "Retrieval"))
    blocks.append(("p", "Pessimistic ties (SPEC Sec. 5). Instance retrieval: the clip's own other modality is the only positive; "
                        "candidates per draw and draws as listed (the 1k-candidates protocol when there are more clips). "
                        "R@k in percent, chance R@1 = 100 / candidates."))
    if metrics["retrieval"]:
        blocks.append(_section_table(metrics["retrieval"], (*RETRIEVAL_COLUMNS, "num_candidates", "draws"), "query -> candidate"))
    if metrics["retrieval_action"]:
        blocks.append(("h3", "Retrieval by action group (any clip of the same action is a positive, MC3 Sec. 6.2)"))
        blocks.append(_section_table(metrics["retrieval_action"], (*RETRIEVAL_COLUMNS, "num_candidates"), "query -> candidate"))
    if metrics["retrieval_full_video"]:
        blocks.append(("h3", "Text to full video by caption averaging (MCN Sec. 4.5)"))
        blocks.append(_section_table(metrics["retrieval_full_video"], (*RETRIEVAL_COLUMNS, "num_videos", "num_captions"), "query -> candidate"))

    blocks.append(("h2", "Sounding-action discovery (MC3 Sec. 6.1)"))
    if metrics["discovery"]:
        blocks.append(_section_table(metrics["discovery"], ("roc_auc", "pr_auc", "positive_rate", "num_clips"), "pair"))
        path = plots.discovery_curves_figure(artifacts.get("discovery_curves", {}), metrics["discovery"], os.path.join(plot_dir, "discovery_curves.png"))
        blocks.append(("img", path, "ROC and precision-recall curves: cosine similarity as the sounding score"))
    else:
        blocks.append(("p", "No clip had both classes of the discovery label."))

    if metrics["probe"]:
        blocks.append(("h2", "Linear probe on frozen embeddings"))
        blocks.append(_section_table({m: v for m, v in metrics["probe"].items() if "skipped" not in v}, ("top1", "top5", "mean_class_accuracy", "map", "mean_auc", "num_train", "num_test", "num_classes"), "embedding"))
    if metrics["clustering"]:
        blocks.append(("h2", "Clustering (k-means; MCN Appendix B.2)"))
        blocks.append(_section_table(metrics["clustering"], ("nmi", "ari", "accuracy", "mean_entropy", "mean_max_purity", "num_clusters"), "embedding"))

    if metrics["codebook"]:
        blocks += codebook_blocks(metrics["codebook"], artifacts, plot_dir)

    blocks.append(("h2", "Training curves"))
    path = plots.training_curves_figure(history, os.path.join(plot_dir, "training_curves.png"))
    blocks.append(("img", path, "from the training run's metrics.json history") if path else ("p", "No training history given."))
    return blocks


def codebook_blocks(codebook: dict, artifacts: dict, plot_dir: str) -> list[tuple]:
    modalities = [key.removeprefix("active_codes_") for key in codebook if key.startswith("active_codes_")]
    blocks: list[tuple] = [("h2", "Codebook (CMCM Sec. 4.3)")]
    blocks.append(_table(
        ["modality", "active codes", "perplexity", "label purity (%)", "dominated codewords"],
        [[m, codebook[f"active_codes_{m}"], codebook[f"perplexity_{m}"], codebook.get(f"label_purity_{m}"), codebook[f"dominated_by_{m}"]] for m in modalities],
    ))
    blocks.append(("p", f"{codebook['active_codes']} active codewords, perplexity {codebook['perplexity']:.1f}; "
                        f"{codebook['jointly_used']} jointly used (no modality above {100 * codebook['joint_threshold']:.0f} % of the uses): "
                        f"share {codebook['jointly_used_share']:.3f}."))
    if "heatmap" in artifacts:
        path = plots.heatmaps_figure(artifacts["heatmap"], artifacts["label_names"], os.path.join(plot_dir, "label_given_codeword.png"))
        if path:
            blocks.append(("img", path, "P(label | codeword) per modality (CMCM Fig. 3)"))
    path = plots.codebook_map_figure(artifacts["codebook_map"], os.path.join(plot_dir, "codebook_map.png"))
    if path:
        blocks.append(("img", path, "Codebook in 2-D, coloured by dominant modality (CMCM Fig. 6)"))
    if codebook.get("table"):
        blocks.append(("h3", f"Codewords ranked by the precision of their top label on {codebook['table_modality']} inputs (CMCM Table 2)"))
        extra = [key for key in codebook["table"][0] if key.endswith(("_occurrence", "_precision")) and key != "second_precision"]
        columns = ["rank", "code", "occurrence", "top_label", "precision", "second_label", "second_precision", *extra]
        blocks.append(_table(columns, [[row.get(c) for c in columns] for row in codebook["table"]]))
    if codebook.get("localisation"):
        blocks.append(("h3", "Codeword localisation (mean position of its occurrences, 0 = start / top / left, 1 = end / bottom / right)"))
        rows = []
        for entry in codebook["localisation"]:
            for m in MODALITIES:
                if m in entry:
                    where = ", ".join(f"{axis} {value:.2f}" for axis, value in entry[m].items() if axis != "per_clip")
                    rows.append([entry["code"], m, where, entry[m]["per_clip"]])
        blocks.append(_table(["code", "modality", "mean position", "occurrences per clip"], rows))
        path = plots.localisation_figure(artifacts.get("localisation_maps", {}), os.path.join(plot_dir, "codeword_localisation.png"))
        if path:
            blocks.append(("img", path, "Codeword localisation: where and when the top codewords fire (CMCM Fig. 4)"))
    return blocks


def render_markdown(blocks: list[tuple], base_dir: str) -> str:
    lines = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "table":
            _, header, rows = block
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        elif kind == "img":
            lines += [f"![{block[2]}]({os.path.relpath(block[1], base_dir)})", "", f"*{block[2]}*", ""]
    return "\n".join(lines)


def render_html(blocks: list[tuple]) -> str:
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline_code(html.escape(block[1]))}</p>")
        elif kind == "table":
            _, header, rows = block
            text = [not all(_numeric(row[i]) for row in rows) for i in range(len(header))]  # columns of words
            head = "".join(f"<th{' class=text' if text[i] else ''}>{html.escape(cell)}</th>" for i, cell in enumerate(header))
            cells = "".join(
                "<tr>" + "".join(f"<td{' class=text' if not _numeric(cell) else ''}>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                for row in rows
            )
            # a wide table (the codeword ranking) scrolls in its own box instead of running off the page
            body.append(f"<div class=wide><table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table></div>")
        elif kind == "img":
            with open(block[1], "rb") as handle:
                data = base64.b64encode(handle.read()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block[2])}"><figcaption>{html.escape(block[2])}</figcaption></figure>')
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#f0f0f0}.text{text-align:left}.wide{overflow-x:auto}img{max-width:100%}figcaption{font-style:italic;font-size:13px}"
        "code{font-size:90%;background:#f4f4f4;padding:0 3px;word-break:break-all}"
    )
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>mmdist evaluation</title><style>{style}</style></head><body>{''.join(body)}</body></html>"


def _inline_code(text: str) -> str:
    """`x` (Markdown's inline code, as the blocks write paths and keys) -> <code>x</code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _numeric(cell: str) -> bool:
    """Numbers (and "-", a missing number) are right-aligned to compare down a column; words left-aligned."""
    try:
        float(cell)
        return True
    except ValueError:
        return cell == "-"


def write_report(metrics: dict, artifacts: dict, history: list[dict], run_dir: str) -> dict[str, str]:
    """Write report.md, report.html and plots/*.png into `run_dir`; returns their paths."""
    blocks = build_blocks(metrics, artifacts, history, os.path.join(run_dir, "plots"))
    paths = {"markdown": os.path.join(run_dir, "report.md"), "html": os.path.join(run_dir, "report.html")}
    with open(paths["markdown"], "w") as handle:
        handle.write(render_markdown(blocks, run_dir))
    with open(paths["html"], "w") as handle:
        handle.write(render_html(blocks))
    return paths
