"""Render the report pages: a small Markdown-to-HTML converter, tables, the CSS and both pages."""

from __future__ import annotations

import html
import re

import pandas as pd

from scalelab import __version__
from scalelab.report.outcome import SectionOutcome

#: Rows of a table shown on the pages; the CSV always holds every row.
MAX_TABLE_ROWS = 60


_INLINE_CODE = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])")


def _inline_html(text: str) -> str:
    """Inline Markdown (code, links, bold, italic) to escaped HTML."""
    codes: list[str] = []

    def keep_code(match: re.Match) -> str:
        codes.append(f"<code>{html.escape(match.group(1))}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = _INLINE_CODE.sub(keep_code, text)
    text = html.escape(text, quote=False)
    text = _LINK.sub(lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITALIC.sub(r"<em>\1</em>", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], text)


def markdown_to_html(markdown: str) -> str:
    """The small Markdown subset sections use: paragraphs, lists, headings, code blocks."""
    out: list[str] = []
    lines = str(markdown).splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            i += 1
            continue
        if stripped.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            out.append(f"<pre>{html.escape(chr(10).join(block))}</pre>")
            i += 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if heading:
            level = min(len(heading.group(1)) + 2, 6)  # section titles are <h2>
            out.append(f"<h{level}>{_inline_html(heading.group(2))}</h{level}>")
            i += 1
            continue
        bullet = re.match(r"^([-*+]|\d+[.)])\s+", stripped)
        if bullet:
            ordered = bullet.group(1)[0].isdigit()
            entries: list[str] = []
            while i < len(lines) and lines[i].strip():
                s = lines[i].strip()
                m = re.match(r"^([-*+]|\d+[.)])\s+(.*)$", s)
                if m:
                    entries.append(m.group(2))
                elif entries:  # continuation line of the previous entry
                    entries[-1] += " " + s
                i += 1
            tag = "ol" if ordered else "ul"
            body = "".join(f"<li>{_inline_html(e)}</li>" for e in entries)
            out.append(f"<{tag}>{body}</{tag}>")
            continue
        para = []
        while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith("```"):
            if para and re.match(r"^([-*+]|\d+[.)])\s+|^#{1,6}\s", lines[i].strip()):
                break
            para.append(lines[i].strip())
            i += 1
        out.append(f"<p>{_inline_html(' '.join(para))}</p>")
    return "\n".join(out)


# --------------------------------------------------------------------------- tables


def _format_cell(value, float_format: str) -> str:
    try:
        if value is None or bool(pd.isna(value)):  # None, NaN, NaT and pd.NA all show as blank
            return ""
    except (TypeError, ValueError):  # array-like cell: pd.isna is elementwise
        pass
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        try:
            return float_format.format(float(value))
        except (ValueError, TypeError):
            return str(value)
    return str(value)


def _table_rows(frame: pd.DataFrame, float_format: str) -> tuple[list[str], list[list[str]]]:
    shown = frame
    keep_index = not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None
    if keep_index:
        shown = frame.reset_index()
    header = [str(c) for c in shown.columns]
    rows = [[_format_cell(v, float_format) for v in row]
            for row in shown.head(MAX_TABLE_ROWS).itertuples(index=False, name=None)]
    return header, rows


def table_markdown(frame: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    header, rows = _table_rows(frame, float_format)

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def table_html(frame: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    header, rows = _table_rows(frame, float_format)
    numeric = [pd.api.types.is_numeric_dtype(dtype) for dtype in
               (frame.reset_index() if (not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None)
                else frame).dtypes]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{html.escape(c)}</td>' if numeric[j] else f"<td>{html.escape(c)}</td>"
            for j, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# --------------------------------------------------------------------------- pages


CSS = """
:root { --fg:#1b1f24; --muted:#57606a; --line:#d0d7de; --bg:#ffffff; --soft:#f6f8fa;
        --ok:#1a7f37; --bad:#cf222e; --accent:#0072B2; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:var(--bg);
       font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1060px; margin: 0 auto; padding: 24px 20px 64px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.35em; margin-top: 2.2em; padding-bottom: 0.25em; border-bottom: 1px solid var(--line); }
h3, h4 { margin-top: 1.4em; }
a { color: var(--accent); }
.sub { color: var(--muted); margin-top: 0; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em; }
code { background: var(--soft); padding: 0.1em 0.3em; border-radius: 4px; }
pre { background: var(--soft); padding: 10px 12px; border-radius: 6px; overflow-x: auto; }
figure { margin: 1.4em 0; }
figure img { display:block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--fg); font-size: 0.93em; margin-top: 0.45em; }
figcaption .files, .tablefiles { color: var(--muted); font-size: 0.9em; }
.tablewrap { overflow-x: auto; margin: 0.6em 0 0.2em; }
table { border-collapse: collapse; font-size: 0.88em; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; white-space: nowrap; }
th { background: var(--soft); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fbfcfd; }
.caption { font-size: 0.93em; margin: 0.2em 0; }
.machine th { width: 9em; }
.status-ok { color: var(--ok); font-weight: 600; }
.status-failed { color: var(--bad); font-weight: 600; }
.error { border: 1px solid var(--bad); border-left-width: 5px; border-radius: 6px; padding: 8px 12px; background: #fff5f5; }
details summary { cursor: pointer; color: var(--muted); }
nav ol { padding-left: 1.4em; }
footer { margin-top: 3em; color: var(--muted); font-size: 0.85em; }
@media print { h2 { break-before: page; } figure { break-inside: avoid; } }
"""


def _anchor(name: str) -> str:
    return f"sec-{name.replace('_', '-')}"


def render_html(result_sections: list[SectionOutcome], machine: dict[str, str], *,
                quick: bool, seconds: float) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>scalelab report</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<h1>scalelab report</h1>",
        f'<p class="sub">What foundation models cost: simulations and kernel measurements, '
        f"built {esc(machine.get('Date', ''))}{' in quick mode (reduced sample counts)' if quick else ''}.</p>",
        "<h2 id=\"machine\" style=\"margin-top:1.2em\">Machine</h2>",
        '<div class="tablewrap"><table class="machine"><tbody>',
    ]
    for key, value in machine.items():
        parts.append(f"<tr><th>{esc(key)}</th><td>{esc(value)}</td></tr>")
    parts.append("</tbody></table></div>")
    parts.append("<nav><h3>Contents</h3><ol>")
    for s in result_sections:
        status = ('<span class="status-ok">ok</span>' if s.ok
                  else '<span class="status-failed">failed</span>')
        parts.append(f'<li><a href="#{_anchor(s.name)}">{esc(s.title)}</a> '
                     f"&middot; {status} &middot; {s.n_figures} figure(s), {s.seconds:.1f} s</li>")
    parts.append("</ol></nav>")
    for s in result_sections:
        parts.append(f'<section id="{_anchor(s.name)}"><h2>{esc(s.title)}</h2>')
        if not s.ok:
            parts.append('<div class="error">')
            parts.append(f"<p><strong>This section failed to build:</strong> <code>{esc(s.error or '')}</code></p>")
            if s.traceback:
                parts.append(f"<details><summary>Traceback</summary><pre>{esc(s.traceback)}</pre></details>")
            parts.append("</div>")
        figure_no = 0
        for item in s.items:
            if item.kind == "text":
                parts.append(markdown_to_html(item.markdown))
            elif item.kind == "figure":
                figure_no += 1
                links = [f'<a href="{esc(item.svg)}">SVG</a>', f'<a href="{esc(item.png)}">PNG</a>']
                if item.csv:
                    links.append(f'<a href="{esc(item.csv)}">data (CSV)</a>')
                parts.append(
                    f'<figure id="{esc(s.name)}-{esc(item.name)}">'
                    f'<img src="{esc(item.png)}" alt="{esc(item.caption)}">'
                    f"<figcaption><strong>{esc(s.title)}, figure {figure_no}.</strong> "
                    f"{_inline_html(item.caption)} <span class=\"files\">[{' &middot; '.join(links)}]</span>"
                    "</figcaption></figure>"
                )
            else:
                n = len(item.table)
                more = (f" Showing {MAX_TABLE_ROWS} of {n} rows; the CSV holds all."
                        if n > MAX_TABLE_ROWS else "")
                parts.append(
                    f'<p class="caption">{_inline_html(item.caption)}{esc(more)} '
                    f'<span class="tablefiles">[<a href="{esc(item.csv)}">CSV</a>]</span></p>'
                    f'<div class="tablewrap">{table_html(item.table, item.float_format)}</div>'
                )
        parts.append("</section>")
    parts.append(
        f"<footer>Generated by scalelab {esc(__version__)} in {seconds:.1f} s. "
        'The same content as Markdown: <a href="report.md">report.md</a>.</footer>'
    )
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def render_markdown(result_sections: list[SectionOutcome], machine: dict[str, str], *,
                    quick: bool, seconds: float) -> str:
    lines = ["# scalelab report", ""]
    lines.append(f"Built {machine.get('Date', '')}" + (" in quick mode (reduced sample counts)." if quick else "."))
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in machine.items()]
    lines += ["", "## Contents", ""]
    for s in result_sections:
        lines.append(f"- [{s.title}](#{_md_slug(s.title)}): {'ok' if s.ok else 'FAILED'}, "
                     f"{s.n_figures} figure(s), {s.seconds:.1f} s")
    for s in result_sections:
        lines += ["", f"## {s.title}", ""]
        if not s.ok:
            lines += [f"> **This section failed to build:** `{s.error}`", ""]
            if s.traceback:
                lines += ["<details><summary>Traceback</summary>", "", "```text",
                          s.traceback.rstrip(), "```", "", "</details>", ""]
        figure_no = 0
        for item in s.items:
            if item.kind == "text":
                lines += [item.markdown.strip(), ""]
            elif item.kind == "figure":
                figure_no += 1
                files = f"[SVG]({item.svg})" + (f" · [data (CSV)]({item.csv})" if item.csv else "")
                lines += [f"![{s.title}, figure {figure_no}]({item.png})", "",
                          f"*{s.title}, figure {figure_no}.* {item.caption} {files}", ""]
            else:
                n = len(item.table)
                more = f" Showing {MAX_TABLE_ROWS} of {n} rows; the CSV holds all." if n > MAX_TABLE_ROWS else ""
                lines += [f"{item.caption}{more} [CSV]({item.csv})", "",
                          table_markdown(item.table, item.float_format), ""]
    lines += ["", "---", f"Generated by scalelab {__version__} in {seconds:.1f} s. "
              "The same content as a page: [index.html](index.html).", ""]
    return "\n".join(lines)


def _md_slug(title: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", title.lower()).strip()
    return re.sub(r"\s", "-", slug)
