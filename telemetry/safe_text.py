"""Data on the operator's terminal: shown, never obeyed.

Model names, providers, query results, rejection reasons and remote answers
come from whoever sends events. Printed through rich as they are, ``[/bold]``
is taken for markup (``MarkupError``: the command fails), ``:smile:`` for an
emoji code, and ``ESC [31m`` or ``ESC ] 0;title BEL`` reach the terminal and
drive it. Everything data-derived that a command prints is a
:func:`safe_text`: a rich ``Text``, literal, never parsed for markup or emoji
codes (table cells, headers, titles, whole lines; styled parts of ours are
joined with ``Text.assemble``). Never put data inside a markup string:
escaping markup leaves emoji codes live.

``safe_text`` first applies :func:`visible`: every control character is replaced by its
Python-style escape, so it can be seen and never acts. C0 (U+0000-U+001F,
tab and newline included: one value stays one line), DEL and C1
(U+007F-U+009F) become ``\\xNN`` (ESC is ``\\x1b``); the Unicode bidi controls
(which reorder what the eye reads) and lone surrogates (which cannot be
written out as UTF-8) become ``\\uNNNN``. A backslash is left as it is, so
the visible form is for reading: ``--format json/ndjson/csv/tsv`` and
``--json`` print the data exactly.
"""

from __future__ import annotations

import re

from rich.text import Text

__all__ = ["safe_text", "visible"]

_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f"  # C0, DEL, C1
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidi marks, embeddings, isolates
    "\ud800-\udfff]"  # lone surrogates
)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(value: object) -> str:
    """``str(value)`` with every control character shown as an escape (ESC: ``\\x1b``)."""
    return _CONTROL.sub(_escaped, str(value))


def safe_text(value: object, style: str = "") -> Text:
    """Data as a rich ``Text``: no markup, no emoji codes, no control characters."""
    return Text(visible(value), style=style)
