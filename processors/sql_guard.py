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
- tables read: ``telemetry.*``, ``system.*``, or a bare name (the session's
  database is ``telemetry``; a bare name may also be a WITH alias), in FROM,
  JOIN and on the right of IN;
- table functions: generators only (``numbers``, ``values``, ...), no I/O;
- no ``file``/``joinGet``/``dictGet*`` functions, no ``INTO OUTFILE`` (on
  any statement), no ``SETTINGS`` (the session's bounds stay as set);
- a printed tree that does not add up is refused: an identifier with a line
  break prints as extra lines, so every node's stated number of children
  must match the lines below it.

``ClickHouse.check_read`` first makes sure the text is one statement (chDB
runs all of a ``;``-separated text, EXPLAIN shows only the first).

Checking the engine's tree rather than our own parse of the text means there
is no second parser for a query to fool. This module is pure: it reads the
lines ``EXPLAIN AST`` returned.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

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
#: What the top node of each allowed statement may hold besides nothing: ``INTO
#: OUTFILE`` is a Literal child and SETTINGS a Set child, so neither is listed.
_STATEMENT_CHILDREN: dict[str, frozenset[str]] = {
    "SelectWithUnionQuery": frozenset({"ExpressionList", "Identifier"}),
    "DescribeQuery": frozenset({"TableExpression", "Identifier"}),
    "ShowTables": frozenset({"Identifier"}),
    "ShowColumns": frozenset({"Identifier"}),
    "ShowCreateTableQuery": frozenset({"Identifier"}),
    "ExistsTableQuery": frozenset({"Identifier"}),
    "ShowProcesslistQuery": frozenset({"Identifier"}),
}
_STATEMENTS = frozenset({*_STATEMENT_CHILDREN, "Explain"})
#: ``x IN db.t`` names a table as a plain Identifier (its second argument).
_IN_FUNCTIONS = frozenset(
    {
        "in",
        "notin",
        "globalin",
        "globalnotin",
        "nullin",
        "notnullin",
        "globalnullin",
        "globalnotnullin",
    }
)
_LINE = re.compile(r"( *)([A-Za-z_][A-Za-z0-9_]*)(?: (.*))?")
_CHILDREN = re.compile(r"(.*?) ?\(children (\d+)\)")
_UNREADABLE = "the query could not be checked (an identifier with a line break?)"


@dataclass
class _Node:
    kind: str
    text: str
    declared: int
    children: list[_Node] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The node's name without its alias (a table, a function)."""
        return self.text.split(" (alias ", 1)[0].strip()


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


def _parse(lines: Sequence[str]) -> _Node:
    """The tree ``EXPLAIN AST`` printed, one node per line, one space of indent per level.

    An identifier with a line break in it prints as more than one line, and
    could pass for nodes of its own. Every node states how many children it
    has; a tree whose lines do not add up to those counts is refused.
    """
    root: _Node | None = None
    stack: list[_Node] = []
    for number, line in enumerate(lines):
        m = _LINE.fullmatch(line)
        if m is None:
            raise _refuse(_UNREADABLE)
        depth, kind, rest = len(m[1]), m[2], m[3] or ""
        if (number == 0) != (depth == 0) or depth > len(stack):
            raise _refuse("the query could not be checked (one statement at a time)")
        del stack[depth:]
        counted = _CHILDREN.fullmatch(rest)
        node = _Node(kind, counted[1], int(counted[2])) if counted else _Node(kind, rest, 0)
        if stack:
            stack[-1].children.append(node)
        else:
            root = node
        stack.append(node)
    if root is None:
        raise _refuse("empty query")
    pending = [root]
    while pending:
        node = pending.pop()
        if len(node.children) != node.declared:
            raise _refuse(_UNREADABLE)
        pending.extend(node.children)
    return root


def _check_statement(node: _Node) -> None:
    if node.kind not in _STATEMENTS:
        raise _refuse(f"{node.kind} is not a read (only SELECT, EXPLAIN, DESCRIBE, SHOW, EXISTS)")
    for child in node.children:
        if child.kind == "Literal":
            raise _refuse("INTO OUTFILE is not allowed")
        if node.kind == "Explain":
            if child.kind != "Identifier":
                _check_statement(child)
            continue
        if child.kind not in _STATEMENT_CHILDREN[node.kind]:
            if child.kind in ("Set", "SetQuery"):
                raise _refuse("SETTINGS and SET are not allowed (the session's limits are fixed)")
            raise _refuse(f"{child.kind} in {node.kind} is not allowed")


def _check_node(node: _Node, parent: _Node | None) -> None:
    kind = node.kind
    if kind in ("Set", "SetQuery"):
        raise _refuse("SETTINGS and SET are not allowed (the session's limits are fixed)")
    if kind == "SelectWithUnionQuery" and any(
        c.kind not in _STATEMENT_CHILDREN[kind] for c in node.children
    ):
        raise _refuse("INTO OUTFILE is not allowed")
    if kind == "TableIdentifier":
        _check_table(node.name)
    elif kind == "Function":
        name = node.name.split(" ", 1)[0]
        _check_function(name, parent.kind if parent else None)
        args = node.children[0].children if node.children else []
        if name.lower() in _IN_FUNCTIONS and len(args) > 1 and args[1].kind == "Identifier":
            _check_table(args[1].name)


def check_ast(lines: Sequence[str]) -> None:
    """Raise ``ReadOnlyViolation`` unless the parsed query is an allowed read.

    ``lines`` are the rows of ``EXPLAIN AST <query>``.
    """
    root = _parse(lines)
    _check_statement(root)
    pending: list[tuple[_Node, _Node | None]] = [(root, None)]
    while pending:
        node, parent = pending.pop()
        _check_node(node, parent)
        pending.extend((child, node) for child in node.children)
