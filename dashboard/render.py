"""Small HTML renderings the pages show with st.html. Pure string building: every token is escaped."""

from __future__ import annotations

import html
import re

from hemorrhage_core.charts import MODIFIED, ORIGINAL

# Control tokens as tokenizers spell them: <|im_end|>, <|endoftext|>, </s>, <eos>, <end_of_turn>, [SEP], ...
# Shown raw they read as text the model wrote; drawn as a small marked pill, they read as what they are.
_SPECIAL = re.compile(
    r"<\|[^<>|\s]{1,40}\|>|</?s>|<(?:bos|eos|pad|unk|mask|start_of_turn|end_of_turn)>|\[(?:CLS|SEP|PAD|UNK|MASK)\]"
)
_PILL = (
    "<span title='special token {raw}' style='font-size: 0.72em; padding: 0 0.35em; margin: 0 0.1em; "
    "border: 1px dashed currentColor; border-radius: 0.6em; opacity: 0.7'>{name}</span>"
)


def token_html(token: str) -> str:
    """A token as HTML: its text escaped, any control token in it drawn as a marked pill ("im_end")."""
    out, last = [], 0
    for m in _SPECIAL.finditer(token):
        out.append(html.escape(token[last : m.start()]))
        raw = m.group(0)
        name = raw.strip("<>|[]/") or raw
        out.append(_PILL.format(raw=html.escape(raw, quote=True), name=html.escape(name)))
        last = m.end()
    out.append(html.escape(token[last:]))
    return "".join(out)


_STYLE = (
    "font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.9rem; line-height: 1.6;"
    " white-space: pre-wrap; word-break: break-word; padding: 0.6rem 0.8rem; border-radius: 0.5rem;"
    " border-left: 4px solid {color};"
)


def _token_spans(tokens: list[str], first: int | None, color: str) -> str:
    """Tokens as text; from the first divergence on, dimmed, the divergent token itself boxed in `color`."""
    out = []
    for i, tok in enumerate(tokens):
        text = token_html(tok)
        if first is None or i < first:
            out.append(text)
        elif i == first:
            out.append(
                f"<mark title='first divergent token (step {i})' style='background: {color}33; color: inherit;"
                f" outline: 2px solid {color}; border-radius: 3px; padding: 0 1px'>{text or '∅'}</mark>"
            )
        else:
            out.append(f"<span style='opacity: 0.75'>{text}</span>")
    return "".join(out)


def side_by_side_html(
    prompt: str, base_tokens: list[str], mod_tokens: list[str], first: int | None, mod_label: str
) -> str:
    """Two columns: the original's continuation (blue rule) and the modified one's (red rule), the prompt in
    bold, the first token at which they differ highlighted in both."""
    p = f"<b>{token_html(prompt)}</b>"
    note = (
        f"identical for all {len(base_tokens)} generated tokens"
        if first is None
        else f"first divergence at generated token {first + 1} of {len(base_tokens)}"
    )
    cols = []
    for title, tokens, color in (("original", base_tokens, ORIGINAL), (mod_label, mod_tokens, MODIFIED)):
        cols.append(
            f"<div style='flex: 1; min-width: 18rem'><div style='font-weight: 600; color: {color};"
            f' margin-bottom: 0.3rem\'>{html.escape(title)}</div><div style="{_STYLE.format(color=color)}">'
            f"{p}{_token_spans(tokens, first, color)}</div></div>"
        )
    return (
        f"<div style='display: flex; gap: 1rem; flex-wrap: wrap'>{''.join(cols)}</div>"
        f"<div style='opacity: 0.7; font-size: 0.85rem; margin-top: 0.4rem'>{note}</div>"
    )
