"""The bench report's blocks as Markdown (``report.md``; figures linked beside it)."""

from __future__ import annotations

from cxrhash.bench.document import Block, Cell, Code, Facts, Heading, Image, Table, Text


def render_markdown(blocks: list[Block]) -> str:
    """The blocks as one Markdown document, a blank line between blocks."""
    return "\n\n".join(_block(b) for b in blocks) + "\n"


def _block(b: Block) -> str:
    if isinstance(b, Heading):
        return "#" * b.level + " " + b.text
    if isinstance(b, Text):
        return b.text
    if isinstance(b, Code):
        return "```\n" + b.text + "\n```"
    if isinstance(b, Facts):
        return "\n".join(f"- **{k}**: {v}" for k, v in b.items)
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Image):
        return f"![{b.alt}]({b.file})"
    return b.markdown.strip()


def _table(b: Table) -> str:
    """Caption, header, alignment row (label columns left, numbers right), then the rows."""
    lines = [
        b.caption,
        "",
        "| " + " | ".join(h.replace("|", "\\|") for h in b.header) + " |",
        "|" + ":---|" * b.label_columns + "---:|" * (len(b.header) - b.label_columns),
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in b.rows]
    return "\n".join(lines)


def _cell(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|")
    if cell.bold:
        text = f"**{text}**"
    if cell.italic:
        text = f"*{text}*"
    return text
