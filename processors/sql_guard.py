"""What read-only SQL may do, decided on ClickHouse's own parse of the query.

A ``readonly=1`` session already refuses writes, DDL, ``SET`` and table
functions that open files, URLs or other servers. It does not refuse
everything a reader must not do: the scalar ``file()`` function reads any file
the process can, ``INTO OUTFILE`` writes one, ``USE`` changes the session for
every later query, ``KILL QUERY`` stops the writer's inserts, and chDB's
``python()`` table function reads objects of the host process. So every
read-only query is first parsed by the engine (``EXPLAIN AST``, which parses
and does not run) and its tree is checked here against an allow-list:

- statements: SELECT (with UNION/INTERSECT/EXCEPT), EXPLAIN of one, DESCRIBE,
  SHOW, EXISTS;
- tables: ``telemetry.*``, ``system.*``, or a bare name (the session's
  database is ``telemetry``; a bare name may also be a WITH alias);
- table functions: generators only (``numbers``, ``values``, ...), no I/O;
- no ``file``/``joinGet``/``dictGet*`` functions, no ``INTO OUTFILE``, no
  ``SETTINGS`` (the session's bounds on time and memory stay as set).

Checking the engine's tree rather than our own parse of the text means there
is no second parser for a query to fool. This module is pure: it reads the
lines ``EXPLAIN AST`` returned.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "ALLOWED_DATABASES",
    "ALLOWED_TABLE_FUNCTIONS",
    "ReadOnlyViolation",
    "check_ast",
]

ALLOWED_DATABASES = frozenset({"telemetry", "system"})
#: Table functions that generate rows and touch nothing outside the query.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "numbers",
        "numbers_mt",
        "zeros",
        "zeros_mt",
        "values",
        "generaterandom",
        "generateseries",
        "generate_series",
        "primes",
        "view",
    }
)
#: Scalar functions that read files or tables named by a string (bypassing the table check).
_DENIED_FUNCTIONS = frozenset({"file", "joinget", "joingetornull"})
_STATEMENTS = frozenset(
    {
        "SelectWithUnionQuery",
        "DescribeQuery",
        "ShowTables",
        "ShowColumns",
        "ShowCreateTableQuery",
        "ExistsTableQuery",
        "ShowProcesslistQuery",
        "Explain",
    }
)
#: Children a SELECT's top node may have besides its selects: FORMAT (an Identifier).
_SELECT_CHILDREN = frozenset({"ExpressionList", "Identifier"})
_LINE = re.compile(r"( *)([A-Za-z_][A-Za-z0-9_]*)(?: (.*))?")


class ReadOnlyViolation(ValueError):
    """The query does something read-only SQL does not allow; the message says what."""


def _refuse(what: str) -> ReadOnlyViolation:
    return ReadOnlyViolation(f"read-only SQL: {what}")


def _check_table(name: str) -> None:
    parts = name.split(".")
    if len(parts) == 1:
        return  # the session's database (telemetry), or a WITH alias
    if len(parts) == 2 and parts[0] in ALLOWED_DATABASES:
        return
    raise _refuse(f"table {name} is outside the telemetry and system databases")


def _check_function(name: str, parent: str | None) -> None:
    lower = name.lower()
    if lower in _DENIED_FUNCTIONS or lower.startswith("dict"):
        raise _refuse(f"function {name}() is not allowed (it reads outside the query)")
    if parent == "TableExpression" and lower not in ALLOWED_TABLE_FUNCTIONS:
        allowed = ", ".join(sorted(ALLOWED_TABLE_FUNCTIONS))
        raise _refuse(f"table function {name}() is not allowed (only {allowed})")


def check_ast(lines: Sequence[str]) -> None:
    """Raise ``ReadOnlyViolation`` unless the parsed query is an allowed read.

    ``lines`` are the rows of ``EXPLAIN AST <query>``: one node per line,
    indented one space per level. A line that does not have that shape (an
    identifier with a line break in it) makes the tree unreadable, and an
    unreadable tree is refused.
    """
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        m = _LINE.fullmatch(line)
        if m is None:
            raise _refuse("the query could not be checked (an identifier with a line break?)")
        depth, kind, rest = len(m[1]), m[2], m[3] or ""
        if (number == 0) != (depth == 0) or depth > len(stack):
            raise _refuse("the query could not be checked (one statement at a time)")
        del stack[depth:]
        parent = stack[-1][1] if stack else None
        if depth == 0 and kind not in _STATEMENTS:
            raise _refuse(f"{kind} is not a read (only SELECT, EXPLAIN, DESCRIBE, SHOW, EXISTS)")
        if parent == "Explain" and kind not in _STATEMENTS | {"Identifier"}:
            raise _refuse(f"EXPLAIN of {kind} is not allowed")
        if kind in ("Set", "SetQuery"):
            raise _refuse("SETTINGS and SET are not allowed (the session's limits are fixed)")
        if parent == "SelectWithUnionQuery" and kind not in _SELECT_CHILDREN:
            raise _refuse("INTO OUTFILE is not allowed")
        if kind == "TableIdentifier":
            _check_table(rest.split(" (alias ", 1)[0].strip())
        elif kind == "Function":
            _check_function(rest.split(" ", 1)[0], parent)
        stack.append((depth, kind))
    if not stack:
        raise _refuse("empty query")
