"""Render the report's neutral blocks (see :mod:`medrobust.report.render`) as Markdown and as one self-contained
HTML page: inline CSS, figures embedded as base64 PNG data URIs, no script, the appendix collapsed at the end."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_CSS = """body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f2f2f2}
.warn{background:#fff4e5;border:1px solid #f0a040;border-radius:6px;padding:.6em 1em;margin:1em 0}
.answer{background:#eef6ff;border-left:4px solid #3a7bd5;padding:.6em 1em}.note{color:#555;font-size:13px}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}pre{background:#f7f7f7;padding:.8em;overflow:auto}
code{background:#f2f2f2;padding:0 3px}.scroll{overflow-x:auto}
table.verdict td,table.verdict th{font-size:13px}table.verdict .ci{color:#555;white-space:nowrap}
table.verdict .word{font-size:12px}table.verdict tr.group td{background:#fafafa;
font-style:italic;color:#444}.chip{display:inline-block;padding:0 6px;margin-right:4px;border:1px solid #ccc;
border-radius:3px}details#appendix{margin-top:2em;border-top:2px solid #ccc;padding-top:1em}
details#appendix>summary{cursor:pointer;font-size:18px}"""


def to_markdown(blocks: list[tuple]) -> str:
    """Render blocks as Markdown (figures referenced by relative file name)."""
    out = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            out.append("#" * blk[1] + " " + blk[2] + "\n")
        elif kind in ("md", "answer"):
            out.append(blk[1].strip() + "\n")
        elif kind == "warn":
            out.append("> **⚠ Warnings**\n>\n" + "\n".join(f"> - {w}" for w in blk[1]) + "\n")
        elif kind == "table":
            out.append(blk[1].markdown())
        elif kind == "img":
            out.append(f"![{blk[1]}]({blk[1]})\n")
        elif kind == "code":
            out.append("```yaml\n" + blk[1].rstrip("\n") + "\n```\n")
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape HTML, then turn ``**bold**`` and ``\\`code\\``` into tags."""
    t = html.escape(text, quote=False)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r"<a href='\2'>\1</a>", t)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<em>\1</em>", t)


def _md_html(text: str) -> str:
    """Minimal Markdown → HTML for the report's own prose: paragraphs and ``- `` bullet lists."""
    out, items, para = [], [], []
    def flush() -> None:
        if para:
            out.append("<p>" + " ".join(_inline(p) for p in para) + "</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()
    for line in text.splitlines():
        if line.startswith("- "):
            if para:
                flush()
            items.append(line[2:])
        elif not line.strip():
            flush()
        else:
            if items:
                flush()
            para.append(line.strip())
    flush()
    return "\n".join(out)


def _html_body(blocks: list[tuple], out_dir: Path) -> list[str]:
    body = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            body.append(f"<h{blk[1]}>{_inline(blk[2])}</h{blk[1]}>")
        elif kind == "md":
            body.append(_md_html(blk[1]))
        elif kind == "answer":
            body.append(f"<div class='answer'>{_md_html(blk[1])}</div>")
        elif kind == "warn":
            body.append("<div class='warn'><strong>⚠ Warnings</strong><ul>" +
                        "".join(f"<li>{_inline(w)}</li>" for w in blk[1]) + "</ul></div>")
        elif kind == "table":
            body.append(f"<div class='scroll'>{blk[1].html()}</div>")
        elif kind == "img":
            data = base64.b64encode((Path(out_dir) / blk[1]).read_bytes()).decode("ascii")
            body.append(f"<figure><img alt='{html.escape(blk[1])}' src='data:image/png;base64,{data}'>"
                        f"<figcaption class='note'>{html.escape(blk[1])}</figcaption></figure>")
        elif kind == "code":
            body.append(f"<details><summary>show</summary><pre>{html.escape(blk[1])}</pre></details>")
    return body


def to_html(blocks: list[tuple], out_dir: Path, appendix: list[tuple] = ()) -> str:
    """Render blocks as one self-contained HTML page (figures embedded as base64 PNG data URIs); the appendix's
    blocks, if any, in a collapsed section at the end (its level-1 heading as the section's summary)."""
    title = next((re.sub(r"`", "", b[2]) for b in blocks if b[0] == "h" and b[1] == 1), "medrobust report")
    body = _html_body(blocks, out_dir)
    if appendix:
        head = next((b for b in appendix if b[0] == "h" and b[1] == 1), None)
        rest = [b for b in appendix if b is not head]
        summary = _inline(head[2]) if head else "Appendix"
        body.append(f"<details id='appendix'><summary><strong>{summary}</strong> — the answer in detail, per-ε, "
                    "per-corruption and per-condition tables, every self-check, the runs and the configuration"
                    "</summary>" + "\n".join(_html_body(rest, out_dir)) + "</details>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


