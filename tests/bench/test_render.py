"""The bench report's text, pinned: a tiny bench whose every number is worked out by hand,
and the two renderers of the document model on their own."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from cxrhash.bench.document import Cell, Code, Facts, Heading, Image, Notes, Table, Text
from cxrhash.bench.render_html import render_html
from cxrhash.bench.render_markdown import render_markdown
from cxrhash.bench.report import write_report
from cxrhash.evaluation.evaluate import ROW_FLOAT


def _cell(
    method: str,
    seed: int,
    m_ap: float,
    share: float,
    ref: float | None = None,
    kind: str = "deep",
    variant: str = "",
) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "kind": kind,
        "method": method,
        "bits": 16,
        "seed": seed,
        "group": "ablation" if variant else "main",
        "variant": variant,
        "dataset": "phantom:x",
        "metrics": {"strict": {"mAP": m_ap, "distinct_share": share}},
        "efficiency": {"train_seconds": 10.0 + seed, "retrieval_ms_per_query": 0.25},
    }
    if ref is not None:
        cell["references"] = {"strict": {ROW_FLOAT: {"mAP": ref}}}
    return cell


CELLS = [
    _cell("attention-fusion", 0, 0.5, 0.25, ref=0.75),
    _cell("attention-fusion", 1, 0.75, 0.75, ref=0.75),
    _cell("dsh", 0, 0.5, 0.5, ref=1.0),
    _cell("lsh", 1, 0.25, 0.5, kind="shallow"),
    _cell("attention-fusion", 0, 0.25, 0.5, variant="global-only"),
]

STD = "mean ± std over seeds (std = numpy population std, ddof=0)"
# attention-fusion: mAP 0.5, 0.75; share 0.25, 0.75. The float reference averages the deep
# main cells: 0.75, 0.75 (attention-fusion) and 1.0 (dsh) → 0.833 ± 0.118. Table 3 pairs
# by seed: dsh on seed 0 (0.5 − 0.5), lsh on seed 1 (0.75 − 0.25), the float reference of
# attention-fusion's own cells (−0.25, 0). The ablation is one seed: 0.25 − 0.625 = −0.375.
EXPECTED = f"""# Tiny | bench

Command:

```
cxrhash bench --tiny
```

- **dataset(s)**: phantom:x
- **cells**: 5 (4 main, 1 ablation)
- **seeds**: 0, 1
- **bits**: 16
- **protocol**: strict: queries and database both unseen and patient-disjoint from training
- **statistics**: {STD}; (n=k) marks a figure from only k of the 2 seeds

## Table 1: retrieval quality (strict)

Table 1a. mAP, strict protocol: {STD}; distinct share = distinct database codes / database \
films (a collapsed model has few); best method per column in bold; italic rows are \
references, not methods.

| method | 16 bits | 16 bits distinct share |
|:---|---:|---:|
| attention-fusion | **0.625 ± 0.125** | 0.500 ± 0.250 |
| dsh | 0.500 ± 0.000 (n=1) | 0.500 ± 0.000 (n=1) |
| lsh | 0.250 ± 0.000 (n=1) | 0.500 ± 0.000 (n=1) |
| *float upper bound (cosine) (reference)* | *0.833 ± 0.118* | *–* |

### All metrics per code length (strict)

All metrics at 16 bits, strict protocol: {STD}; best method per column in bold; italic rows \
are references, not methods.

| method | mAP | distinct share |
|:---|---:|---:|
| attention-fusion | **0.625 ± 0.125** | 0.500 ± 0.250 |
| dsh | 0.500 ± 0.000 (n=1) | 0.500 ± 0.000 (n=1) |
| lsh | 0.250 ± 0.000 (n=1) | 0.500 ± 0.000 (n=1) |
| *float upper bound (cosine) (reference)* | *0.833 ± 0.118* | *–* |

## Table 3: where attention-fusion stands (strict)

Table 3. attention-fusion − each other method, strict mAP: mean ± std over seeds of the \
per-seed difference (same split per seed); (a/n) = ahead on a of n seeds.

| vs | 16 bits |
|:---|---:|
| dsh | +0.000 ± 0.000 (0/1) |
| lsh | +0.500 ± 0.000 (1/1) |
| *float upper bound (cosine) (reference)* | -0.125 ± 0.125 (0/2) |

## Table 2: efficiency

Table 2. Efficiency at 16 bits, mean over seeds; – = not measured.

| method | feature ms/image | retrieval ms/query | training time (s) | peak memory (MiB) |
|:---|---:|---:|---:|---:|
| attention-fusion | – | 0.250 | 10.5 | – |
| dsh | – | 0.250 | 10.0 | – |
| lsh | – | 0.250 | 11.0 | – |

## Ablations

Attention-fusion ablation, 16 bits, strict protocol: {STD}; Δ mAP = difference of the means \
vs the full model.

| variant | mAP | distinct share | mAP@100 | nDCG@100 | ACG@100 | mAP_w | P@10 | Δ mAP |
|:---|---:|---:|---:|---:|---:|---:|---:|---:|
| full (main run) | 0.625 ± 0.125 | 0.500 ± 0.250 | – | – | – | – | – | ref |
| global-only | 0.250 ± 0.000 (n=1) | 0.500 ± 0.000 (n=1) | – | – | – | – | – | -0.375 |

## Figures

![mAP and nDCG@100 vs bits](map_vs_bits.png)

## Notes

Wall time: 1 min.
"""


def test_tiny_bench_report_markdown_is_pinned(tmp_path: Path) -> None:
    write_report(
        CELLS,
        tmp_path,
        title="Tiny | bench",
        command="cxrhash bench --tiny",
        notes="Wall time: 1 min.\n",
    )
    assert (tmp_path / "report.md").read_text() == EXPECTED
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["map_vs_bits.png"]


def test_markdown_escapes_pipes_and_marks_emphasis() -> None:
    blocks = [
        Heading(2, "Section"),
        Text("plain"),
        Code("cmd --a"),
        Facts([("k", "v")]),
        Table(
            "Caption.",
            ["method", "variant", "a|b"],
            [[Cell("x|y"), Cell("v"), Cell("1", bold=True, italic=True)]],
            label_columns=2,
        ),
        Image("f.png", "a figure"),
        Notes("\n**note**\n\n"),
    ]
    assert render_markdown(blocks) == (
        "## Section\n\nplain\n\n```\ncmd --a\n```\n\n- **k**: v\n\n"
        "Caption.\n\n| method | variant | a\\|b |\n|:---|:---|---:|\n| x\\|y | v | ***1*** |\n\n"
        "![a figure](f.png)\n\n**note**\n"
    )


def test_html_escapes_text_and_embeds_images(tmp_path: Path) -> None:
    (tmp_path / "f.png").write_bytes(b"\x89PNG-bytes")
    blocks = [
        Heading(1, "A < B"),
        Table("Cap & co", ["method", "mAP"], [[Cell("<m>", italic=True), Cell("1", bold=True)]]),
        Image("f.png", 'say "hi"'),
    ]
    page = render_html(blocks, "A < B", tmp_path)
    assert page.startswith("<!DOCTYPE html>\n") and page.endswith("</body></html>\n")
    assert "<title>A &lt; B</title>" in page and "<h1>A &lt; B</h1>" in page
    assert (
        '<table><caption>Cap &amp; co</caption><thead><tr><th class="label">method</th>'
        '<th>mAP</th></tr></thead><tbody><tr><td class="label"><i>&lt;m&gt;</i></td>'
        "<td><b>1</b></td></tr></tbody></table>"
    ) in page
    data = base64.b64encode(b"\x89PNG-bytes").decode("ascii")
    assert f'<p><img src="data:image/png;base64,{data}" alt="say &quot;hi&quot;"></p>' in page
