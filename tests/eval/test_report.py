"""The HTML rendering of the report (mmdist/eval/report.py): paths and keys as code, words and numbers
aligned as they are read (words left, numbers right, column by column)."""

from __future__ import annotations

import re

from mmdist.eval.report import _table, render_html, render_markdown


def test_inline_code_and_column_alignment(tmp_path):
    blocks = [
        ("p", "Checkpoint `/runs/a<b>/ckpt`; 64 clips."),
        _table(["code", "top_label", "precision"], [[12, "shake cup", 61.5], [7, "stir bowl", None]]),
    ]
    page = render_html(blocks)
    assert "<p>Checkpoint <code>/runs/a&lt;b&gt;/ckpt</code>; 64 clips.</p>" in page  # escaped, then code
    head = re.search(r"<thead>(.*)</thead>", page).group(1)
    assert head == "<tr><th>code</th><th class=text>top_label</th><th>precision</th></tr>"
    assert "<tr><td>12</td><td class=text>shake cup</td><td>61.5</td></tr>" in page
    assert "<td>-</td>" in page  # a missing number stays in the numbers' alignment
    # Markdown keeps its own syntax
    assert "Checkpoint `/runs/a<b>/ckpt`" in render_markdown(blocks, str(tmp_path))
