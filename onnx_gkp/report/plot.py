"""``--plot FILE.html|.svg``: what the pass did to each Conv, at a glance.

One row per Conv in graph order: its MACs before (grey) and after (blue) on a common scale,
the chosen ``G`` and the kept fraction of input channels, or why it was left whole. Plain
SVG (wrapped in a page for ``.html``) built from the report alone: no plotting library,
and it opens in any browser.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from ..errors import GkpError
from ..io.model_file import write_atomic
from .report import Report

ROW, LABEL, BAR, NOTE = 18, 330, 420, 300
PLOT_SUFFIXES = (".html", ".htm", ".svg")


def _rows(report: Report) -> list[tuple[str, int, int, str]]:
    """(name, MACs before, MACs after, note) per Conv with known MACs, in graph order."""
    rows = []
    for layer in report.layers:
        kept = layer.kept_per_group / layer.weight_shape[1]
        note = f"G={layer.groups}, keeps {kept:.0%} of inputs"
        if layer.dead_filters:
            note += f", drops {len(layer.dead_filters)} unread filters"
        rows.append((layer.node_index, layer.node, layer.macs_before, layer.macs_after, note))
    for skip in report.skipped:
        if skip.op_type == "Conv":
            after = skip.macs if skip.macs_after is None else skip.macs_after
            rows.append((skip.node_index, skip.node, skip.macs, after, f"left whole: {skip.reason}"))
    rows.sort(key=lambda r: r[0])
    return [
        (name or f"#{index}", before, after, note)
        for index, name, before, after, note in rows
        if before is not None and after is not None
    ]


def svg(report: Report) -> str:
    rows = _rows(report)
    scale = max((before for _, before, _, _ in rows), default=1) or 1
    height = ROW * (len(rows) + 2)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL + BAR + NOTE}" height="{height}" '
        'font-family="monospace" font-size="11">',
        f'<text x="0" y="{ROW - 5}" font-weight="bold">Conv MACs before (grey) and after (blue); '
        f"{escape(report.summary().splitlines()[1])}</text>",
    ]
    for i, (name, before, after, note) in enumerate(rows, start=1):
        y = ROW * i + 4
        parts.append(f'<text x="0" y="{y + 11}">{escape(name[-48:])}</text>')
        parts.append(f'<rect x="{LABEL}" y="{y}" width="{BAR * before / scale:.1f}" height="{ROW - 6}" fill="#ccc"/>')
        parts.append(
            f'<rect x="{LABEL}" y="{y + 3}" width="{BAR * after / scale:.1f}" height="{ROW - 12}" fill="#36c"/>'
        )
        parts.append(f'<text x="{LABEL + BAR + 6}" y="{y + 11}">{escape(note[:60])}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_plot(report: Report, path: Path) -> None:
    """Write the picture as ``.svg``, or as a page around it for ``.html``."""
    picture = svg(report)
    if path.suffix.lower() == ".svg":
        write_atomic(path, picture.encode())
    elif path.suffix.lower() in PLOT_SUFFIXES:
        write_atomic(path, f"<!doctype html>\n<meta charset='utf-8'><title>onnx_gkp</title>\n{picture}".encode())
    else:
        raise GkpError(f"--plot writes .html or .svg, not {path.suffix or 'a file without suffix'}")
