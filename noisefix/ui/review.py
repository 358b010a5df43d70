"""The review page: RUN/relabel/review.html (a gallery of the most suspicious images) and review.png (a contact
sheet of the first of them), so a person can look at what relabel found.

Rows come in as plain lists, most suspicious first: the image paths (relative to the image root), the given and
suggested class names, the issue score, optionally the label quality and, per row, the names of the probe
sources (layer/probe) whose own best class is the suggested one. The page is one self-contained HTML file:
thumbnails are embedded as base64 PNG data URIs, no network, no framework, a few lines of inline script that
only flag thumbnails that failed to decode. Every user string is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from noisefix.errors import DataError
from noisefix.io.atomic import write_bytes, write_text

THUMB_PX = 112  # longest side of a thumbnail in review.html (small images are enlarged, pixels kept sharp)
SHEET_PX = 96  # longest side of a thumbnail in review.png


@dataclass
class ReviewRows:
    """The rows to review, most suspicious first (R rows); every list has one entry per row."""

    paths: list[str]  # image path relative to `root`, as in labels.csv
    given: list[str]  # the given class name
    suggested: list[str]  # the suggested class name
    score: list[float]  # issue score (normalized margin, higher = more suspicious)
    quality: list[float] | None = None  # label quality in [0, 1] (probability the given label is right)
    agreed: list[list[str]] | None = None  # per row, the sources whose best class is the suggested one
    review: list[bool] | None = None  # per row, left for review: the suggestion is only the likeliest other class

    def __post_init__(self) -> None:
        n = len(self.paths)
        lists = {"given": self.given, "suggested": self.suggested, "score": self.score,
                 "quality": self.quality, "agreed": self.agreed, "review": self.review}
        for name, values in lists.items():
            if values is not None and len(values) != n:
                raise DataError(f"review rows: {name} has {len(values)} entries for {n} paths; pass one per row")

    def head(self, n: int) -> "ReviewRows":
        cut = (lambda v: None if v is None else list(v[:n]))
        return ReviewRows(list(self.paths[:n]), list(self.given[:n]), list(self.suggested[:n]),
                          [float(s) for s in self.score[:n]], cut(self.quality), cut(self.agreed), cut(self.review))


@dataclass
class ReviewFiles:
    html: Path  # review.html
    png: Path  # review.png
    shown: int  # rows on the page


def agreeing_sources(names: Sequence[str], predictions, suggested) -> list[list[str]]:
    """Per row, the names of the sources whose prediction equals the suggested class.

    names: S source names; predictions: int (S, N) best class per source and row; suggested: int (N,).
    """
    predictions, suggested = np.asarray(predictions), np.asarray(suggested)
    if predictions.shape != (len(names), len(suggested)):
        raise DataError(f"predictions must be ({len(names)}, {len(suggested)}) (sources, rows), got "
                        f"{predictions.shape}")
    hits = predictions == suggested[None, :]                                                # (S, N)
    return [[names[s] for s in np.flatnonzero(hits[:, i])] for i in range(len(suggested))]


def write_review(html_path: Path, png_path: Path, rows: ReviewRows, *, root: Path, top: int = 100,
                 sheet: int = 40, n_issues: int | None = None, n_images: int | None = None,
                 sources: Sequence[str] = (), title: str = "noisefix review") -> ReviewFiles:
    """Write the page (the first `top` rows) to `html_path` and the contact sheet (the first `sheet` of them)
    to `png_path`; image paths are relative to `root`.

    n_issues / n_images: how many labels were flagged among how many images, for the page's header;
    sources: every source the suggestions came from (shown once, and as "k of S agreed" per row).
    """
    if top < 1:
        raise DataError(f"--review must be at least 1, got {top}")
    rows = rows.head(top)
    thumbs = [load_thumbnail(Path(root) / p, THUMB_PX) for p in rows.paths]
    page = render_html(rows, [png_data_uri(t) for t in thumbs], n_issues=n_issues, n_images=n_images,
                       sources=sources, title=title)
    write_text(Path(html_path), page)
    small = [load_thumbnail(Path(root) / p, SHEET_PX) for p in rows.paths[:sheet]]
    write_bytes(Path(png_path), contact_sheet(rows.head(sheet), small, title=title))
    return ReviewFiles(html=Path(html_path), png=Path(png_path), shown=len(rows.paths))


# ---------------------------------------------------------------- thumbnails

def load_thumbnail(path: Path, size: int) -> Image.Image:
    """An RGB thumbnail whose longest side is `size`: any mode, EXIF orientation applied, small images enlarged
    by whole pixels (nearest) so an 8x8 digit stays legible; a grey placeholder when the file cannot be read."""
    if not path.is_file():
        return placeholder(size, "missing")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
            rgb = to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return placeholder(size, "unreadable")
    w, h = rgb.size
    scale = size / max(w, h)
    if scale >= 2:
        f = int(scale)
        return rgb.resize((w * f, h * f), Image.Resampling.NEAREST)
    if scale < 1:
        rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
    return rgb


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode: transparency over white, 16-bit and float images rescaled to 0..255."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = (float(np.nanmin(a)), float(np.nanmax(a))) if a.size else (0.0, 1.0)
        a = np.nan_to_num((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a))
        return Image.fromarray(np.round(255 * a).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def placeholder(size: int, text: str) -> Image.Image:
    img = Image.new("RGB", (size, size), (225, 225, 225))
    draw = ImageDraw.Draw(img)
    draw.line((0, 0, size, size), fill=(190, 190, 190), width=2)
    draw.line((0, size, size, 0), fill=(190, 190, 190), width=2)
    font = _font(11)
    w = draw.textlength(text, font=font)
    draw.text(((size - w) / 2, size / 2 - 7), text, fill=(90, 90, 90), font=font)
    return img


def png_data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")  # optimize=True: 12 % smaller, 8x slower
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------- the page

def group_pairs(rows: ReviewRows) -> list[tuple[str, str, list[int]]]:
    """(given, suggested, row indices) per pair, largest group first (ties: the pair seen first)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, pair in enumerate(zip(rows.given, rows.suggested)):
        groups.setdefault(pair, []).append(i)
    ordered = sorted(groups.items(), key=lambda kv: -len(kv[1]))  # stable: first seen wins ties
    return [(g, s, idx) for (g, s), idx in ordered]


def render_html(rows: ReviewRows, images: Sequence[str], *, n_issues: int | None, n_images: int | None,
                sources: Sequence[str], title: str) -> str:
    """The whole review.html as a string (`images`: one data URI per row)."""
    e = _esc
    groups = group_pairs(rows)
    n = len(rows.paths)
    of = f" of {n_issues:,} flagged labels" if n_issues is not None else ""
    among = f" among {n_images:,} images" if n_images is not None else ""
    head = (f"<h1>{e(title)}</h1>\n<p class=lead>The <b id=n-shown>{n}</b> most suspicious images{of}{among}, "
            f"in <b id=n-groups>{len(groups)}</b> groups by given &rarr; suggested class. Within a group, most "
            "suspicious first. The full ranked list is labels.csv beside this page.</p>\n")
    if sources:
        head += "<p class=lead>Suggestions from: " + ", ".join(f"<code>{e(s)}</code>" for s in sources) + "</p>\n"
    head += "<p id=broken class=warn hidden></p>\n"
    body = [head, _summary(groups, n), "<main class=groups>\n"]
    for gi, (given, suggested, idx) in enumerate(groups):
        cards = "".join(_card(rows, i, images[i], len(sources)) for i in idx)
        body.append(f"<section id=pair-{gi}><h2><span class=given>{e(given)}</span> &rarr; "
                    f"<span class=sugg>{e(suggested)}</span> <small>({len(idx)})</small></h2>\n"
                    f"<div class=grid>{cards}</div></section>\n")
    body.append("</main>\n")
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>\n<title>{e(title)}</title>\n"
            f"<meta name=viewport content='width=device-width, initial-scale=1'>\n"
            f"<style>{_CSS}figure.item img{{width:{THUMB_PX}px;height:{THUMB_PX}px}}</style></head>\n"
            f"<body data-rows={n} data-groups={len(groups)}>\n{''.join(body)}<script>{_JS}</script>\n"
            "</body></html>\n")


MATRIX_MAX = 16  # the confusion summary is a given x suggested matrix up to this many classes, else a list


def _summary(groups, n: int) -> str:
    """The confusion summary: counts per given -> suggested pair, each linking to its group."""
    names = {g for g, _, _ in groups} | {s for _, s, _ in groups}
    body = _summary_matrix(groups) if len(names) <= MATRIX_MAX else _summary_list(groups)
    return (f"<h2 class=summary-title>Confusions among the shown images (given &rarr; suggested)</h2>\n{body}"
            f"<p class=total>total: <b id=n-total>{n}</b> images in {len(groups)} pairs</p>\n")


def _natural(name: str) -> tuple:
    return (0, int(name), "") if name.isdigit() else (1, 0, name.lower())


def _summary_matrix(groups) -> str:
    """Rows: given classes, columns: suggested ones; a cell counts the shown images of that pair (darker =
    more) and links to their group."""
    e = _esc
    given = sorted({g for g, _, _ in groups}, key=_natural)
    suggested = sorted({s for _, s, _ in groups}, key=_natural)
    cells = {(g, s): (gi, len(idx)) for gi, (g, s, idx) in enumerate(groups)}
    top = max(c for _, c in cells.values())
    lines = ["<tr><th class=corner>given &darr; suggested &rarr;</th>"
             + "".join(f"<th class=sugg>{e(s)}</th>" for s in suggested) + "<th>total</th></tr>"]
    for g in given:
        tds = []
        for s in suggested:
            if (g, s) not in cells:
                tds.append("<td></td>")
                continue
            gi, c = cells[g, s]
            alpha = 0.12 + 0.78 * c / top
            ink = " class=dark" if alpha > 0.5 else ""
            tds.append(f"<td style='background:rgba(176,42,42,{alpha:.2f})'{ink}><a href='#pair-{gi}' "
                       f"data-count={c} title='{e(g)} \u2192 {e(s)}: {c}'>{c}</a></td>")
        total = sum(cells[g, s][1] for s in suggested if (g, s) in cells)
        lines.append(f"<tr><th class=given>{e(g)}</th>{''.join(tds)}<td class=tot>{total}</td></tr>")
    return f"<table class=matrix>{''.join(lines)}</table>\n"


def _summary_list(groups) -> str:
    """One entry per given -> suggested pair (count, bar, link), in flowing columns."""
    e = _esc
    top = max((len(idx) for _, _, idx in groups), default=1)
    items = []
    for gi, (given, suggested, idx) in enumerate(groups):
        pair = f"<span class=given>{e(given)}</span> &rarr; <span class=sugg>{e(suggested)}</span>"
        items.append(f"<li><a href='#pair-{gi}' title='{e(given)} \u2192 {e(suggested)}'>{pair}</a> "
                     f"<b class=count data-count={len(idx)}>{len(idx)}</b>"
                     f"<span class=bar style='width:{6 * len(idx) / top:.2f}em'></span></li>")
    return f"<ol class=pairs>{''.join(items)}</ol>\n"


def _card(rows: ReviewRows, i: int, uri: str, n_sources: int) -> str:
    e = _esc
    stats = f"#{i + 1} &middot; score {rows.score[i]:.3f}"
    if rows.quality is not None:
        stats += f"<br>label quality {quality_text(rows.quality[i])}"
    agreed = ""
    if rows.agreed is not None:
        names = rows.agreed[i]
        count = f"{len(names)} of {n_sources}" if n_sources else str(len(names))
        chips = "".join(f"<span class=chip>{e(s)}</span>" for s in names) or "<span class=none>none</span>"
        agreed = f"<div class=agreed>agreed ({count}): {chips}</div>"
    review = (" <span class=rev title='no strong suggestion: the likeliest other class'>review</span>"
              if rows.review is not None and rows.review[i] else "")
    return (f"<figure class=item data-rank={i + 1}><img src='{uri}' alt='{e(rows.paths[i])}' "
            f"title='{e(rows.paths[i])}'><figcaption>"
            f"<div class=path>{e(rows.paths[i])}</div><div class=pair><span class=given>{e(rows.given[i])}</span>"
            f" &rarr; <span class=sugg>{e(rows.suggested[i])}</span>{review}</div><div class=stats>{stats}</div>"
            f"{agreed}</figcaption></figure>")


def quality_text(q: float) -> str:
    """Label quality to 3 decimals; below 0.001 as "<0.001" (not a misleading 0.000)."""
    return "<0.001" if q < 0.0005 else f"{q:.3f}"


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:22px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h2 small{color:#777;font-weight:normal}.lead{margin:4px 0;color:#444;max-width:60em}
code{background:#eee;padding:0 3px;border-radius:3px;font-size:12px}
.warn{background:#fff3cd;border:1px solid #e0c36a;padding:6px 10px;border-radius:4px}
.given{color:#b02a2a}.sugg{color:#17703a;font-weight:600}
ol.pairs{columns:22em;column-gap:28px;list-style:none;padding:0;margin:6px 0}
ol.pairs li{break-inside:avoid;padding:1px 0;display:grid;grid-template-columns:minmax(0,1fr) 2.4em 6.5em;
align-items:center;gap:6px}
ol.pairs a{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
ol.pairs a{text-decoration:none;color:inherit}.count{text-align:right}
.bar{display:inline-block;height:9px;background:#8fb3d9;border-radius:2px;vertical-align:middle}
.total{color:#444;margin:4px 0 0}
table.matrix{border-collapse:collapse;margin:8px 0;font-size:13px}
table.matrix th,table.matrix td{border:1px solid #e2e2e2;padding:2px 7px;text-align:center;min-width:1.8em}
table.matrix th.corner{font-weight:normal;color:#777;font-size:11px}table.matrix td.tot{color:#555}
table.matrix a{color:inherit;text-decoration:none;display:block}table.matrix td.dark{color:#fff}
.rev{font-size:10px;background:#fff3cd;border:1px solid #e0c36a;border-radius:3px;padding:0 3px}
.groups{display:flex;flex-wrap:wrap;gap:0 28px;align-items:flex-start}.groups section{flex:0 1 auto;max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure.item{width:150px;box-sizing:border-box;margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;
padding:8px}
figure.item img{display:block;margin:0 auto 6px;max-width:100%;object-fit:contain;
image-rendering:pixelated}
figcaption{font-size:12px}
.path{font-family:ui-monospace,monospace;font-size:11px;color:#555;word-break:break-all}
.stats{color:#555}.agreed{color:#555;margin-top:2px}.none{color:#999}
.chip{display:inline-block;background:#eef3f8;border:1px solid #d5e0eb;border-radius:3px;padding:0 3px;
margin:1px 2px 0 0;font-size:11px;word-break:break-all}
"""

_JS = """
window.addEventListener('load',function(){var bad=0;document.querySelectorAll('figure.item img').forEach(
function(i){var ok=i.complete&&i.naturalWidth>0;i.dataset.loaded=ok?'1':'0';if(!ok)bad++;});
document.body.dataset.broken=bad;if(bad){var w=document.getElementById('broken');
w.textContent=bad+' thumbnail(s) failed to display; open the files by path.';w.hidden=false;}});
"""


# ---------------------------------------------------------------- the contact sheet

def contact_sheet(rows: ReviewRows, thumbs: Sequence[Image.Image], *, title: str, columns: int = 8) -> bytes:
    """review.png: the rows' thumbnails in a grid, each captioned "given -> suggested" and its score."""
    cell_w, cell_h, pad = SHEET_PX + 28, SHEET_PX + 58, 6
    n = len(thumbs)
    cols = max(1, min(columns, n))
    nrows = max(1, -(-n // cols))
    top = 30
    sheet = Image.new("RGB", (cols * cell_w + pad, top + nrows * cell_h + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font, bold = _font(11), _font(13, bold=True)
    draw.text((pad, 8), f"{title}: the {n} most suspicious images (given, \u2192 suggested, score)",
              fill=(30, 30, 30), font=bold)
    for i, thumb in enumerate(thumbs):
        x0, y0 = pad + (i % cols) * cell_w, top + (i // cols) * cell_h
        box_w = cell_w - pad
        sheet.paste(thumb, (x0 + (box_w - thumb.width) // 2, y0 + (SHEET_PX - thumb.height) // 2))
        ty = y0 + SHEET_PX + 3
        review = " ? (review)" if rows.review is not None and rows.review[i] else ""
        lines = [(rows.given[i], (176, 42, 42)), (f"\u2192 {rows.suggested[i]}{review}", (23, 112, 58)),
                 (f"#{i + 1}  score {rows.score[i]:.3f}", (110, 110, 110))]
        for j, (text, colour) in enumerate(lines):
            draw.text((x0, ty + 14 * j), _fit(draw, text, font, box_w), fill=colour, font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "\u2026", font=font) > width:
        text = text[:-1]
    return text + "\u2026"


def _font(size: int, *, bold: bool = False):
    """DejaVu Sans (shipped with matplotlib) at `size` px; PIL's built-in font if it cannot be found."""
    try:
        import matplotlib

        name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)
    except (OSError, ImportError):
        return ImageFont.load_default()
