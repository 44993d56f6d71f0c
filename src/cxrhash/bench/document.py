"""The bench report's document model: a flat list of blocks that every renderer walks.

Tables, figures and text are built once as blocks (``cxrhash.bench.tables``,
``cxrhash.bench.report_figures``, ``cxrhash.bench.report``) and rendered by
``cxrhash.bench.render_markdown`` and ``cxrhash.bench.render_html``, so the
Markdown and the HTML page always show the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Cell:
    """A table cell with optional emphasis."""

    text: str
    bold: bool = False
    italic: bool = False


@dataclass
class Table:
    """A captioned table; the first ``label_columns`` columns are row labels (left-aligned)."""

    caption: str
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    label_columns: int = 1


@dataclass
class Heading:
    """A section heading (level 1 = the title)."""

    level: int
    text: str


@dataclass
class Text:
    """Plain text (no markup)."""

    text: str


@dataclass
class Code:
    """A preformatted block (the bench command)."""

    text: str


@dataclass
class Facts:
    """A list of ``key: value`` lines."""

    items: list[tuple[str, str]]


@dataclass
class Image:
    """A PNG in the report folder."""

    file: str
    alt: str


@dataclass
class Notes:
    """Free Markdown written by the caller."""

    markdown: str


Block = Heading | Text | Code | Facts | Table | Image | Notes
