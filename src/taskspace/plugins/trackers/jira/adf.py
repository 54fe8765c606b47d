"""Atlassian Document Format (Jira Cloud's rich text) to Markdown.

Covered: paragraphs, headings, bullet and ordered lists (nested), code blocks, block quotes and
panels (as quotes), rules, tables (GitHub-flavoured), hard breaks, and the text marks bold,
italic, strike-through, inline code and links; mentions, emoji, dates, status lozenges and
smart links become their text or URL. Any other node becomes the text it contains, so nothing
a person wrote disappears; media (images, files) have no text and are left out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

_BLOCK_SEPARATOR = "\n\n"


def adf_to_markdown(document: Any) -> str:
    """Markdown for an ADF document (``{"type": "doc", "content": [...]}``); "" for anything else."""
    if not isinstance(document, dict):
        return ""
    return _blocks(_children(document)).strip()


def _children(node: dict[str, Any]) -> list[dict[str, Any]]:
    content = node.get("content")
    return [c for c in content if isinstance(c, dict)] if isinstance(content, list) else []


def _attrs(node: dict[str, Any]) -> dict[str, Any]:
    attrs = node.get("attrs")
    return attrs if isinstance(attrs, dict) else {}


def _blocks(nodes: list[dict[str, Any]]) -> str:
    rendered = (_block(node) for node in nodes)
    return _BLOCK_SEPARATOR.join(text for text in rendered if text.strip())


def _block(node: dict[str, Any]) -> str:
    kind = node.get("type")
    if kind == "paragraph":
        return _inline(_children(node))
    if kind == "heading":
        level = _attrs(node).get("level")
        level = level if isinstance(level, int) and 1 <= level <= 6 else 1
        return "#" * level + " " + _inline(_children(node))
    if kind == "bulletList":
        return _list(node, ordered=False)
    if kind == "orderedList":
        return _list(node, ordered=True)
    if kind == "codeBlock":
        language = _attrs(node).get("language")
        code = "".join(c.get("text", "") for c in _children(node) if isinstance(c.get("text"), str))
        fence = "````" if "```" in code else "```"
        return f"{fence}{language if isinstance(language, str) else ''}\n{code}\n{fence}"
    if kind in ("blockquote", "panel"):
        return _quote(_blocks(_children(node)))
    if kind == "rule":
        return "---"
    if kind == "table":
        return _table(node)
    if kind in ("mediaSingle", "mediaGroup", "media"):
        return ""
    children = _children(node)
    if children and all(_is_inline(c) for c in children):
        return _inline(children)
    if children:
        return _blocks(children)
    return _inline([node])


def _is_inline(node: dict[str, Any]) -> bool:
    return node.get("type") in {"text", "hardBreak", "mention", "emoji", "inlineCard", "date", "status"}


def _list(node: dict[str, Any], *, ordered: bool) -> str:
    start = _attrs(node).get("order", 1) if ordered else 1
    number = start if isinstance(start, int) else 1
    lines: list[str] = []
    for item in _children(node):
        marker = f"{number}. " if ordered else "- "
        number += 1
        body = _item_body(item)
        indent = " " * len(marker)
        first, *rest = body.split("\n") if body else [""]
        lines.append(marker + first)
        lines.extend(indent + line if line else "" for line in rest)
    return "\n".join(lines)


def _item_body(item: dict[str, Any]) -> str:
    # A list item's paragraphs and nested lists, kept tight: nested lists follow directly.
    parts = []
    for child in _children(item):
        text = _block(child)
        if text.strip():
            parts.append(text)
    return "\n".join(parts)


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.split("\n"))


def _table(node: dict[str, Any]) -> str:
    rows = []
    for row in _children(node):
        cells = [_blocks(_children(cell)).replace("\n", " ").replace("|", "\\|") for cell in _children(row)]
        rows.append(cells)
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * width]
    lines.extend("| " + " | ".join(r) + " |" for r in rows[1:])
    return "\n".join(lines)


def _inline(nodes: list[dict[str, Any]]) -> str:
    return "".join(_inline_node(node) for node in nodes)


def _inline_node(node: dict[str, Any]) -> str:
    kind = node.get("type")
    attrs = _attrs(node)
    if kind == "text":
        return _marked(node.get("text") if isinstance(node.get("text"), str) else "", node.get("marks"))
    if kind == "hardBreak":
        return "\\\n"
    if kind in ("mention", "emoji", "status"):
        for key in ("text", "shortName"):
            if isinstance(attrs.get(key), str):
                return attrs[key]
        return ""
    if kind in ("inlineCard", "blockCard", "embedCard"):
        url = attrs.get("url")
        return f"<{url}>" if isinstance(url, str) and url else ""
    if kind == "date":
        return _date(attrs.get("timestamp"))
    children = _children(node)
    if children:
        return _inline(children)
    return node.get("text") if isinstance(node.get("text"), str) else ""


def _marked(text: str, marks: Any) -> str:
    if not text or not isinstance(marks, list):
        return text
    kinds = {m.get("type"): _attrs(m) for m in marks if isinstance(m, dict)}
    if "code" in kinds:
        tick = "``" if "`" in text else "`"
        text = f"{tick}{text}{tick}"
    # Markdown emphasis cannot start or end on a space: keep surrounding spaces outside it.
    core = text.strip()
    lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()):]
    if core:
        if "em" in kinds:
            core = f"*{core}*"
        if "strong" in kinds:
            core = f"**{core}**"
        if "strike" in kinds:
            core = f"~~{core}~~"
        href = kinds.get("link", {}).get("href")
        if "link" in kinds and isinstance(href, str) and href:
            core = f"[{core}]({href})"
    return lead + core + trail


def _date(timestamp: Any) -> str:
    try:
        millis = int(timestamp)
    except (TypeError, ValueError):
        return ""
    return datetime.fromtimestamp(millis / 1000, tz=UTC).date().isoformat()
