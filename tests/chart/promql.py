"""Metric names in PromQL expressions (alert rules, dashboards), without a PromQL parser.

``metric_names_in_promql(expr)`` returns the metric names an expression selects: identifiers
that are not functions, aggregations, keywords, label names (in ``by (...)``, ``on (...)``,
``{...}`` matchers) or durations.  Grafana variables (``$namespace``, ``${datasource}``,
``$__rate_interval``) are ignored.  It is deliberately small; it covers the PromQL the project
writes and fails loudly on what it does not understand (an unbalanced bracket).
"""

from __future__ import annotations

import re

__all__ = ["metric_names_in_promql"]

# Aggregation operators and keywords; functions are recognised by the "(" that follows them.
AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
# Keywords followed by a parenthesised list of label names.
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})

TOKEN = re.compile(
    r"""
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<variable>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*)
    | (?P<number>(?:0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(?:ms|[smhdwy])?
                 (?:[0-9]+(?:ms|[smhdwy]))*)
    | (?P<identifier>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<comment>\#[^\n]*)
    | (?P<space>\s+)
    | (?P<punct>[(){}\[\],@]|[-+*/%^]|==|!=|<=|>=|=~|!~|[<>=])
    """,
    re.VERBOSE,
)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot tokenize PromQL at {pos}: {expr[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            out.append((kind, match.group()))
        pos = match.end()
    return out


def metric_names_in_promql(expr: str) -> set[str]:
    """The metric names selected by a PromQL expression."""
    tokens = _tokens(expr)
    closers = {"(": ")", "{": "}", "[": "]"}
    _check_balanced(tokens, closers)
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text in ("{", "["):
            # Label matchers or a range/subquery duration: skip to the matching bracket, but
            # keep a name given as a matcher ({__name__="x"}).
            end = _skip_group(tokens, i, closers[text])
            if text == "{":
                names |= _names_from_matchers(tokens[i + 1 : end - 1])
            i = end
            continue
        if kind == "identifier":
            lowered = text.lower()
            if lowered in LABEL_LIST_KEYWORDS:
                if following == "(":
                    i = _skip_group(tokens, i + 1, ")")
                else:
                    i += 1  # group_left without a label list
                continue
            if following == "(" or lowered in AGGREGATIONS or lowered in KEYWORDS:
                i += 1  # a function call, an aggregation or a keyword
                continue
            names.add(text)
        i += 1
    return names


def _check_balanced(tokens: list[tuple[str, str]], closers: dict[str, str]) -> None:
    stack: list[str] = []
    for kind, text in tokens:
        if kind != "punct":
            continue
        if text in closers:
            stack.append(closers[text])
        elif text in closers.values() and (not stack or stack.pop() != text):
            raise ValueError(f"unbalanced {text!r} in PromQL expression")
    if stack:
        raise ValueError(f"unclosed bracket in PromQL expression (expected {stack[-1]!r})")


def _names_from_matchers(tokens: list[tuple[str, str]]) -> set[str]:
    found: set[str] = set()
    for j in range(len(tokens) - 2):
        label, op, value = tokens[j : j + 3]
        if label[1] == "__name__" and op[1] == "=" and value[0] == "string":
            found.add(value[1][1:-1])
    return found


def _skip_group(tokens: list[tuple[str, str]], start: int, closer: str) -> int:
    """Index just after the bracket that closes the one at ``start``."""
    opener = tokens[start][1]
    depth = 0
    for j in range(start, len(tokens)):
        if tokens[j][1] == opener:
            depth += 1
        elif tokens[j][1] == closer:
            depth -= 1
            if depth == 0:
                return j + 1
    raise ValueError(f"unbalanced {opener!r} in PromQL expression")
