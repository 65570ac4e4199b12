"""PNG figures of the evaluation report (matplotlib, Agg backend: no display needed).

Each function draws one figure into `path` and returns the path, or None when there is nothing to draw.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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
    roc.legend(loc="lower right", fontsize=8)
    pr.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def heatmaps_figure(heatmap: dict, label_names: list[str], path: str) -> str | None:
    """P(label | codeword) per modality on shared rows and columns (CMCM Fig. 3)."""
    matrices = heatmap["matrices"]
    if not len(heatmap["codes"]):
        return None
    rows = [label_names[i] for i in heatmap["labels"]]
    height = 0.16 * len(rows) * len(matrices) + 1.2 * len(matrices)
    fig, axes = plt.subplots(len(matrices), 1, figsize=(max(7, 0.09 * len(heatmap["codes"]) + 3), height), squeeze=False)
    colours = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")  # grey: codewords this modality never used
    for ax, (m, matrix) in zip(axes[:, 0], matrices.items()):
        image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap=colours, vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(rows)), rows, fontsize=6)
        ax.set_xticks([])
        ax.set_title(f"P(label | codeword), {m} inputs (grey: codeword unused by {m})", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.02)
    axes[-1, 0].set_xlabel(f"the {len(heatmap['codes'])} codewords used most (ordered by top label)")
    return _save(fig, path)


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
    ax.legend(fontsize=8)
    return _save(fig, path)


def training_curves_figure(history: list[dict], path: str) -> str | None:
    """Loss terms, in-batch R@1 and (when the run validated) held-out `val_` figures over steps."""
    if not history:
        return None
    names = sorted({name for entry in history for name in entry})
    panels = [
        ("training losses", [n for n in names if n == "loss" or n.startswith("loss_")]),
        ("in-batch R@1 (fraction)", [n for n in names if n.startswith("r1_")]),
        ("held-out validation (R@k %, AUC)", [n for n in names if n.startswith("val_") and n != "val_clips"]),
    ]
    panels = [(title, series) for title, series in panels if series]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels):
        areas = ax.twinx() if any("auc" in name for name in series) else None  # AUCs in [0, 1], recalls in %
        for index, name in enumerate(series):
            points = [(entry["step"], entry[name]) for entry in history if name in entry]
            target = areas if areas is not None and "auc" in name else ax
            target.plot(*zip(*points), marker=".", color=f"C{index}", label=name)
        ax.set(xlabel="step", title=title)
        handles = [h for a in (ax, areas) if a is not None for h in a.get_legend_handles_labels()[0]]
        ax.legend(handles=handles, fontsize=7)
        if areas is not None:
            areas.set_ylabel("AUC", fontsize=8)
    return _save(fig, path)


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
        space.set_title(f"code {code}: where in the video frame", fontsize=8)
        space.set_xticks([])
        space.set_yticks([])
        for m in ("video", "audio"):  # the modalities with a time axis
            frequency = maps[code].get(m)
            if frequency is None or not frequency.any():
                continue
            profile = frequency.reshape(frequency.shape[0], -1).sum(axis=1)  # [time]: occurrences per clip
            time.plot((np.arange(len(profile)) + 0.5) / len(profile), profile, marker=".", label=m, color=MODALITY_COLOURS[m])
        time.set_xlim(0, 1)
        time.set_xlabel("time in clip (fraction)", fontsize=8)
        time.set_title(f"code {code}: when it fires (occurrences per clip)", fontsize=8)
        if time.get_legend_handles_labels()[0]:
            time.legend(fontsize=7)
    return _save(fig, path)
