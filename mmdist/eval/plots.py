"""PNG figures of the evaluation report (matplotlib, Agg backend: no display needed).

Each function draws one figure into `path` and returns the path, or None when there is nothing to draw.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

MODALITY_COLOURS = {"video": "tab:blue", "audio": "tab:orange", "text": "tab:green", "joint": "tab:purple"}


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def discovery_curves_figure(curves: dict, metrics: dict, path: str) -> str | None:
    """ROC (left) and precision-recall (right) of each discovery pair, with chance levels."""
    if not curves:
        return None
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, curve in curves.items():
        roc.plot(curve["roc"]["fpr"], curve["roc"]["tpr"], label=f"{name} (AUC {metrics[name]['roc_auc']:.3f})")
        pr.step(curve["pr"]["recall"], curve["pr"]["precision"], where="post", label=f"{name} (AP {metrics[name]['pr_auc']:.3f})")
        pr.axhline(metrics[name]["positive_rate"], linestyle=":", color="grey")
    roc.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="Sounding-action discovery: ROC")
    pr.set(xlabel="recall", ylabel="precision", title="Precision-recall (dotted: positive rate)", ylim=(0, 1.02))
    for ax in (roc, pr):  # below the axes: inside, a legend hides the curves' corners
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False, ncol=2)
    return _save(fig, path)


def heatmaps_figure(heatmap: dict, label_names: list[str], path: str) -> str | None:
    """P(label | codeword) per modality on shared rows and columns (CMCM Fig. 3)."""
    matrices = heatmap["matrices"]
    if not len(heatmap["codes"]):
        return None
    rows = [label_names[i] for i in heatmap["labels"]]
    codes = [str(code) for code in heatmap["codes"]]
    height = 0.2 * len(rows) * len(matrices) + 1.3 * len(matrices)
    fig, axes = plt.subplots(len(matrices), 1, figsize=(max(7, 0.14 * len(codes) + 3), height), squeeze=False, layout="constrained")
    colours = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")  # grey: codewords this modality never used
    every = max(1, -(-len(codes) // 50))  # at most ~50 codeword ids under a panel, else they overlap
    for ax, (m, matrix) in zip(axes[:, 0], matrices.items()):
        image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap=colours, vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_xticks(range(0, len(codes), every), codes[::every], fontsize=6, rotation=90)
        ax.set_title(f"P(label | codeword), {m} inputs (grey: codeword unused by {m})", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.02)
    axes[-1, 0].set_xlabel(f"codeword id: the {len(codes)} codewords used most, ordered by top label")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def codebook_map_figure(codebook_map: dict, path: str) -> str | None:
    """Active codewords in 2-D, coloured by the modality that uses them most (CMCM Fig. 6)."""
    points, dominant, modalities = codebook_map["points"], codebook_map["dominant"], codebook_map["modalities"]
    if len(points) == 0:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 5))
    share = f"> {100 * codebook_map['threshold']:.0f} % of uses"
    groups = [(f"{m} ({share})", dominant == i, MODALITY_COLOURS[m]) for i, m in enumerate(modalities)]
    groups.append(("jointly used", dominant < 0, MODALITY_COLOURS["joint"]))
    for label, mask, colour in groups:
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=14, color=colour, label=f"{label}: {int(mask.sum())}")
    ax.set(title="Codebook map (active codewords)", xticks=[], yticks=[])
    # below the map: a legend inside would hide codewords wherever it sits
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, frameon=False)
    return _save(fig, path)


def training_curves_figure(history: list[dict], path: str) -> str | None:
    """The training run's reports over steps, one panel per kind of figure (those the run reported):
    losses (log scale when positive), in-batch R@1, held-out R@1 / R@5 per retrieval direction and
    held-out discovery ROC-AUC. Legends sit beside their panel, never over the curves."""
    if not history:
        return None
    fig = training_curves(history)
    if fig is None:
        return None
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves(history: list[dict]):
    """The figure of `training_curves_figure`, not yet saved; None when no report has a figure it draws."""
    names = sorted({name for entry in history for name in entry})
    panels = [
        (_loss_panel, [n for n in names if n == "loss" or n.startswith("loss_")]),
        (_in_batch_panel, [n for n in names if n.startswith("r1_")]),
        (_held_out_recall_panel, [n for n in names if n.startswith(("val_r1_", "val_r5_", "val_mean_"))]),
        (_held_out_auc_panel, [n for n in names if n.startswith("val_discovery_roc_auc")]),
    ]
    panels = [(draw, series) for draw, series in panels if series]
    if not panels:
        return None
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.3 * columns, 3.2 * rows), squeeze=False, layout="constrained")
    steps = [entry["step"] for entry in history]
    margin = 0.03 * (max(steps) - min(steps)) or 1
    for ax, (draw, series) in zip(axes.flat, panels):
        draw(ax, {name: _curve(history, name) for name in series})
        ax.set_xlim(min(steps) - margin, max(steps) + margin)  # every panel on the run's step axis
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.remove()
    return fig


def _curve(history: list[dict], name: str) -> tuple[list, list]:
    points = [(entry["step"], entry[name]) for entry in history if entry.get(name) is not None]
    return [step for step, _ in points], [value for _, value in points]


def _legend_beside(ax, **kwargs) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, **kwargs)


def _loss_panel(ax, curves: dict) -> None:
    for index, (name, (steps, values)) in enumerate(curves.items()):
        label = "total" if name == "loss" else name.removeprefix("loss_")
        ax.plot(steps, values, marker=".", color="black" if name == "loss" else f"C{index}", label=label)
    positive = all(value > 0 for _, values in curves.values() for value in values)
    if positive:  # terms differ by orders of magnitude (CMCM ~20, commitment ~0.2)
        ax.set_yscale("log")
    ax.set_title("training losses" + (" (log scale)" if positive else ""))
    _legend_beside(ax)


def _in_batch_panel(ax, curves: dict) -> None:
    for index, (name, (steps, values)) in enumerate(curves.items()):
        ax.plot(steps, values, marker=".", color=f"C{index}", label=name.removeprefix("r1_").replace("_", "-"))
    ax.set_title("in-batch R@1 (fraction)")
    _legend_beside(ax, title="pair")


def _held_out_recall_panel(ax, curves: dict) -> None:
    """One colour per retrieval direction, solid R@1 and dashed R@5; the means in black."""
    from matplotlib.lines import Line2D

    directions = sorted({name[len("val_r1_"):] for name in curves if not name.startswith("val_mean_")})
    colours = {direction: f"C{index % 10}" for index, direction in enumerate(directions)}
    handles = []
    for direction in directions:
        for k, style in (("r1", "-"), ("r5", "--")):
            if f"val_{k}_{direction}" in curves:
                ax.plot(*curves[f"val_{k}_{direction}"], linestyle=style, marker=".", color=colours[direction], linewidth=1)
        handles.append(Line2D([], [], color=colours[direction], label=direction.replace("_", " → ")))
    for k, style in (("r1", "-"), ("r5", "--")):
        if f"val_mean_{k}" in curves:
            ax.plot(*curves[f"val_mean_{k}"], linestyle=style, marker="o", color="black", linewidth=2)
    handles += [Line2D([], [], color="black", linewidth=2, label="mean"),
                Line2D([], [], color="grey", linestyle="-", label="R@1"),
                Line2D([], [], color="grey", linestyle="--", label="R@5")]
    ax.set(title="held-out retrieval (%)", ylabel="recall (%)")
    _legend_beside(ax, handles=handles)


def _held_out_auc_panel(ax, curves: dict) -> None:
    pairs = {"val_discovery_roc_auc": "audio-video"}  # the other keys name their pair
    for index, (name, (steps, values)) in enumerate(curves.items()):
        label = pairs.get(name, name.removeprefix("val_discovery_roc_auc_").replace("_", "-"))
        ax.plot(steps, values, marker=".", color=f"C{index}", label=label)
    ax.axhline(0.5, linestyle=":", color="grey", label="chance")
    ax.set(title="held-out sounding-action discovery", ylabel="ROC-AUC")
    _legend_beside(ax)


def localisation_figure(maps: dict, path: str) -> str | None:
    """For a few codewords: where in the frame (summed over time) and when (video, audio) they fire.

    Values are occurrences per clip: at a cell, the share of clips whose code there is this one."""
    if not maps:
        return None
    codes = list(maps)
    fig, axes = plt.subplots(len(codes), 2, figsize=(8.5, 2.3 * len(codes)), squeeze=False)
    for row, code in enumerate(codes):
        space, time = axes[row]
        video = maps[code].get("video")
        if video is not None:
            image = space.imshow(video.sum(axis=0), cmap="magma", vmin=0, interpolation="nearest")
            fig.colorbar(image, ax=space, fraction=0.046)
        space.set_title(f"code {code}: where in the video frame (all times)", fontsize=8)
        space.set_xticks([])
        space.set_yticks([])
        for m in ("video", "audio"):  # the modalities with a time axis
            frequency = maps[code].get(m)
            if frequency is None or not frequency.any():
                continue
            profile = frequency.reshape(frequency.shape[0], -1).sum(axis=1)  # [time]: occurrences per clip
            time.plot((np.arange(len(profile)) + 0.5) / len(profile), profile, marker=".", label=m, color=MODALITY_COLOURS[m])
        time.set_xlim(0, 1)
        time.set_ylim(bottom=0)  # from zero: a profile that hardly changes must look flat
        time.set_xlabel("time in clip (fraction)", fontsize=8)
        time.set_title(f"code {code}: when it fires (occurrences per clip)", fontsize=8)
        if time.get_legend_handles_labels()[0]:
            _legend_beside(time)
    return _save(fig, path)
