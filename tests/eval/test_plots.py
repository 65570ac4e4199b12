"""The training-curves figure of the report (mmdist/eval/plots.py), drawn from a history shaped like a
validated mc3_vq run's metrics.json: what is on which panel, and no legend over a panel's curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from mmdist.eval.plots import training_curves, training_curves_figure

PAIRS = ("audio_text", "audio_video", "text_audio", "text_video", "video_audio", "video_text")


def report(step: int, validated: bool) -> dict:
    entry = {"step": step, "loss": 20.0 / step, "loss_info_nce": 18.0 / step, "loss_commitment": 0.2, "lr": 1e-3,
             "r1_audio_video": step / 100, "r1_text_video": step / 80, "clips_per_s": 50.0}
    if validated:
        entry.update({f"val_r{k}_{pair}": k * step / 10 for pair in PAIRS for k in (1, 5)})
        entry.update(val_mean_r1=step / 10, val_mean_r5=step / 2, val_clips=64.0,
                     val_discovery_roc_auc=0.6, val_discovery_roc_auc_audio_text=0.55)
    return entry


@pytest.fixture
def figure():
    history = [report(step, validated=step % 20 == 0) for step in (10, 20, 30, 40)]
    fig = training_curves(history)
    fig.canvas.draw()
    yield fig
    plt.close(fig)


def panel(fig, title_start: str):
    (ax,) = [ax for ax in fig.axes if ax.get_title().startswith(title_start)]
    return ax


def test_each_kind_of_figure_has_its_own_panel(figure):
    titles = sorted(ax.get_title() for ax in figure.axes)
    assert titles == ["held-out retrieval (%)", "held-out sounding-action discovery", "in-batch R@1 (fraction)",
                      "training losses (log scale)"]
    recall, auc = panel(figure, "held-out retrieval"), panel(figure, "held-out sounding")
    # 6 directions x (R@1, R@5) + the two means; AUCs (fractions) never share an axis with recalls (%)
    assert len(recall.get_lines()) == 2 * len(PAIRS) + 2
    assert max(max(line.get_ydata()) for line in recall.get_lines()) == pytest.approx(5 * 40 / 10)
    assert sorted(text.get_text() for text in auc.get_legend().get_texts()) == ["audio-text", "audio-video", "chance"]
    # one colour per direction: R@1 and R@5 of a direction share it, two directions never do
    colours = {}
    for line in recall.get_lines():
        colours.setdefault(line.get_color(), set()).add(line.get_linestyle())
    assert len(colours) == len(PAIRS) + 1  # + black for the means


def test_legends_sit_beside_their_panel(figure):
    renderer = figure.canvas.get_renderer()
    for ax in figure.axes:
        legend = ax.get_legend()
        assert legend is not None, ax.get_title()
        box, plot = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert box.x0 >= plot.x1, f"the legend of '{ax.get_title()}' overlaps its axes"
    # and no legend runs into the next panel or off the figure
    right = max(ax.get_legend().get_window_extent(renderer).x1 for ax in figure.axes)
    assert right <= figure.bbox.x1


def test_steps_are_whole_numbers(figure):
    for ax in figure.axes:
        ticks = [tick for tick in ax.get_xticks() if ax.get_xlim()[0] <= tick <= ax.get_xlim()[1]]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ax.get_title()


def test_history_without_figures_draws_nothing(tmp_path):
    assert training_curves_figure([{"step": 1, "lr": 0.1}], str(tmp_path / "curves.png")) is None
    assert training_curves_figure([], str(tmp_path / "curves.png")) is None
