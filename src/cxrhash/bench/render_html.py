"""The bench report's blocks as one self-contained HTML page (``report.html``).

Figures are embedded as base64 data URIs, so the page has no external references
and can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from cxrhash.bench.document import Block, Cell, Code, Facts, Heading, Image, Table, Text

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0.3em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th.label, td.label { text-align: left; }
th { background: #f3f3f3; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
img { max-width: 100%; }
"""


def render_html(blocks: list[Block], title: str, out_dir: Path) -> str:
    """One self-contained page; ``out_dir`` holds the PNGs the image blocks name."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
    ]
    out += [_block(b, out_dir) for b in blocks]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _block(b: Block, out_dir: Path) -> str:
    esc = html.escape
    if isinstance(b, Heading):
        return f"<h{b.level}>{esc(b.text)}</h{b.level}>"
    if isinstance(b, Text):
        return f"<p>{esc(b.text)}</p>"
    if isinstance(b, Code):
        return f"<pre><code>{esc(b.text)}</code></pre>"
    if isinstance(b, Facts):
        items = "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in b.items)
        return f"<ul>{items}</ul>"
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Image):
        data = base64.b64encode((out_dir / b.file).read_bytes()).decode("ascii")
        return f'<p><img src="data:image/png;base64,{data}" alt="{esc(b.alt)}"></p>'
    return _notes(b.markdown)


def _table(b: Table) -> str:
    """A captioned table; the first ``label_columns`` columns left-aligned."""
    esc = html.escape
    n = b.label_columns
    head = "".join(
        f'<th class="label">{esc(h)}</th>' if i < n else f"<th>{esc(h)}</th>"
        for i, h in enumerate(b.header)
    )
    body = "".join(
        "<tr>" + "".join(_cell(c, i < n) for i, c in enumerate(row)) + "</tr>" for row in b.rows
    )
    return (
        f"<table><caption>{esc(b.caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _cell(cell: Cell, label: bool) -> str:
    text = html.escape(cell.text)
    if cell.bold:
        text = f"<b>{text}</b>"
    if cell.italic:
        text = f"<i>{text}</i>"
    return f'<td class="label">{text}</td>' if label else f"<td>{text}</td>"


def _notes(text: str) -> str:
    """Notes through the ``markdown`` package when installed, else as preformatted text."""
    try:
        import markdown
    except ImportError:
        return f"<pre>{html.escape(text)}</pre>"
    return str(markdown.markdown(text, extensions=["tables"]))
