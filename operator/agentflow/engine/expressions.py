"""CEL for ``when``, ``repeat.until`` and ``accept``: parsing, checking and evaluating under a
budget.

The variables each kind sees, and their types, are declared in :mod:`agentflow.api.celenv`
(which also builds the values they have at runtime): ``when`` sees ``steps`` (the step's
upstream steps by name), ``inputs`` and ``workflow`` (name, namespace); ``until`` and
``accept`` see ``result`` as well.  Each step is ``{phase, summary, status, metrics,
artifacts, iteration}``; ``metrics`` has only the counters the step reported (test with
``has(steps.a.metrics.errors)``) and ``extra``, the report's other metrics by name.
:func:`check_expression` type-checks an expression against its kind's environment
(:func:`type_check`), so a wrong field or input or a comparison of a string with an int is an
error before anything runs.  Step names with a ``-`` must be written ``steps["my-step"]``:
in CEL ``steps.my-step`` is a subtraction.

Expressions come from Workflow authors, so nothing here trusts their text:

- The checks judge the *parsed* expression.  The CEL library exposes no syntax tree, so
  :func:`parse` is a small CEL parser of its own (the cel-spec grammar, every string-literal
  form), which fails closed: whatever it cannot classify is rejected, and so is an expression
  whose identifiers differ from those the CEL library sees in it.
- Comprehension macros (``all``, ``exists``, ``map``, ...) multiply their cost when they nest,
  so more than :data:`MAX_MACRO_NESTING` levels are rejected.
- Evaluation runs in a worker process (:class:`_Evaluator`): the library holds the GIL while it
  evaluates, so a thread could not be stopped and would stall the operator's event loop.  An
  evaluation that takes longer than :data:`EVALUATION_BUDGET_SECONDS` is stopped by killing the
  worker, and fails with a message saying so.  A planning pass spends at most
  :data:`PASS_BUDGET_SECONDS` on all its ``when`` conditions together (:class:`PassBudget`),
  and answers are remembered, so no Workflow holds the event loop for longer, however many
  costly conditions it has.  Static bounds alone could not do this: one ``matches`` with a
  large regular expression takes a tenth of a second, with no macro at all.
- Many Workflows could still add up, each spending its pass's budget on every pass.  The
  operator's passes therefore draw their budget from their namespace's CEL time
  (:class:`CelTime`), which refills at a fraction of real time: a namespace's Workflows share
  what one tenant may cost the event loop, and wait for more, saying so, when it is spent.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import cel

from agentflow.api.celenv import (
    BOOL,
    BYTES,
    DOUBLE,
    DYN,
    INT,
    METRICS,
    NULL,
    STRING,
    UINT,
    VARIABLES,
    CelType,
    describe_fields,
    environment,
    list_of,
    map_of,
)
from agentflow.api.celenv import ExpressionKind as ExpressionKind
from agentflow.api.celenv import result_view as result_view
from agentflow.api.celenv import step_view as step_view

WHEN_VARIABLES = frozenset(VARIABLES[ExpressionKind.WHEN])
UNTIL_VARIABLES = frozenset(VARIABLES[ExpressionKind.UNTIL])
ACCEPT_VARIABLES = frozenset(VARIABLES[ExpressionKind.ACCEPT])

# Comprehension macros nest multiplicatively: with expressions capped at 1,024 characters, two
# levels stay within a few hundred thousand iterations; three already reach 10^8 (minutes).
MAX_MACRO_NESTING = 2
# How deeply parentheses, lists, calls and conditionals may nest.  Real conditions need a
# handful; the bound keeps the parser's recursion (and the library's) small.
MAX_SYNTAX_NESTING = 32
# The wall-clock time one evaluation may take before the worker is killed.  A condition over the
# largest inputs the schema admits evaluates in well under a millisecond; this is what a hostile
# one can cost the operator, once, before its step fails.
EVALUATION_BUDGET_SECONDS = 0.5
# What one planning pass may spend on CEL in all (see PassBudget).
PASS_BUDGET_SECONDS = 1.0
# The operator's CEL time (see CelTime): the share of real time one namespace's passes may
# spend on CEL, the share all namespaces together may, and what an idle namespace saves up.
NAMESPACE_CEL_SHARE = 0.1
TOTAL_CEL_SHARE = 0.5
CEL_SAVINGS_SECONDS = 2.0
# How soon a pass whose CEL waits for its namespace's time looks again, at least and at most
# (the refill rate changes with the number of namespaces spending).
CEL_RETRY_SECONDS = (1.0, 30.0)
# Address space of the worker: a comprehension that builds huge lists dies there, not in the
# operator's memory (the chart limits the operator's pod to 512 MiB).  The largest context the
# schema admits (256 steps, each with a 2,000-character summary and 100 paths of 1 KiB: 26 MB
# of JSON) evaluates within it.
WORKER_MEMORY_BYTES = 256 * 1024 * 1024

COMPREHENSION_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
# Names other CEL implementations define as comprehension macros; the library treats them as
# plain functions, but counting them too keeps the nesting bound safe whichever it is.
_MACRO_NAMES = COMPREHENSION_MACROS | {"transformList", "transformMap", "transformMapEntry"}


class ExpressionError(ValueError):
    """A CEL expression that does not compile or evaluate; the message says why."""


# --------------------------------------------------------------------------------------------
# Lexing: the token grammar of cel-spec's langdef.md
# --------------------------------------------------------------------------------------------

_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789")
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
_OCTAL = frozenset("01234567")
_WHITESPACE = frozenset("\t\n\f\r ")
_STRING_PREFIXES = frozenset({"r", "R", "b", "B", "rb", "rB", "Rb", "RB", "br", "bR", "Br", "BR"})
_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", "?": "?", '"': '"', "'": "'", "`": "`",
}  # fmt: skip
_PUNCTUATION = ("==", "!=", "<=", ">=", "&&", "||", *"<>+-*/%!?:.,()[]{}")


@dataclass(frozen=True)
class Token:
    kind: str  # "ident", "int", "uint", "double", "string", "bytes", or the punctuation itself
    text: str
    start: int
    end: int
    value: str | None = None  # a string literal's decoded value


def tokenize(expression: str) -> list[Token]:
    """The tokens of ``expression``; raises ExpressionError on anything CEL does not define."""
    tokens: list[Token] = []
    i, n = 0, len(expression)
    while i < n:
        ch = expression[i]
        if ch in _WHITESPACE:
            i += 1
        elif expression.startswith("//", i):
            end = expression.find("\n", i)
            i = n if end < 0 else end + 1
        elif ch in _IDENT_START:
            j = i + 1
            while j < n and expression[j] in _IDENT_CHARS:
                j += 1
            word = expression[i:j]
            if word in _STRING_PREFIXES and j < n and expression[j] in "\"'":
                token = _string(expression, i, j, raw="r" in word.lower())
                kind = "bytes" if "b" in word.lower() else "string"
                tokens.append(Token(kind, expression[i : token.end], i, token.end, token.value))
                i = token.end
                continue
            tokens.append(Token("ident", word, i, j))
            i = j
        elif ch in "\"'":
            token = _string(expression, i, i, raw=False)
            tokens.append(token)
            i = token.end
        elif ch in _DIGITS or (ch == "." and i + 1 < n and expression[i + 1] in _DIGITS):
            token = _number(expression, i)
            tokens.append(token)
            i = token.end
        else:
            for p in _PUNCTUATION:
                if expression.startswith(p, i):
                    tokens.append(Token(p, p, i, i + len(p)))
                    i += len(p)
                    break
            else:
                raise ExpressionError(f"unexpected character {ch!r} at column {i + 1}")
    tokens.append(Token("eof", "", n, n))
    return tokens


def _string(expression: str, start: int, quote_at: int, *, raw: bool) -> Token:
    """The string literal whose opening quote is at ``quote_at`` (after any r/b prefix)."""
    q = expression[quote_at]
    delimiter = q * 3 if expression.startswith(q * 3, quote_at) else q
    i, n = quote_at + len(delimiter), len(expression)
    chars: list[str] = []
    while True:
        if i >= n:
            raise ExpressionError(f"unterminated string starting at column {start + 1}")
        if expression.startswith(delimiter, i):
            end = i + len(delimiter)
            return Token("string", expression[start:end], start, end, "".join(chars))
        ch = expression[i]
        if ch in "\r\n" and len(delimiter) == 1:
            raise ExpressionError(f"newline in the string starting at column {start + 1}")
        if ch != "\\" or raw:
            chars.append(ch)
            i += 1
            continue
        escape = expression[i + 1 : i + 2]
        if escape in _SIMPLE_ESCAPES:
            chars.append(_SIMPLE_ESCAPES[escape])
            i += 2
            continue
        width = {"x": 2, "X": 2, "u": 4, "U": 8}.get(escape)
        digits = expression[i + 2 : i + 2 + width] if width else ""
        if width and len(digits) == width and set(digits) <= _HEX:
            code = int(digits, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ExpressionError(f"invalid code point escape at column {i + 1}")
            chars.append(chr(code))
            i += 2 + width
            continue
        octal = expression[i + 1 : i + 4]
        if len(octal) == 3 and octal[0] in "0123" and set(octal) <= _OCTAL:
            chars.append(chr(int(octal, 8)))
            i += 4
            continue
        raise ExpressionError(f"invalid escape sequence at column {i + 1}")


def _number(expression: str, start: int) -> Token:
    n = len(expression)
    i = start
    kind = "int"
    if expression.startswith(("0x", "0X"), i):
        i += 2
        j = i
        while i < n and expression[i] in _HEX:
            i += 1
        if i == j:
            raise ExpressionError(f"malformed number at column {start + 1}")
    else:
        while i < n and expression[i] in _DIGITS:
            i += 1
        if i + 1 < n and expression[i] == "." and expression[i + 1] in _DIGITS:
            kind = "double"
            i += 1
            while i < n and expression[i] in _DIGITS:
                i += 1
        if i < n and expression[i] in "eE":
            j = i + 1
            if j < n and expression[j] in "+-":
                j += 1
            if j < n and expression[j] in _DIGITS:
                kind = "double"
                i = j
                while i < n and expression[i] in _DIGITS:
                    i += 1
    if kind == "int" and i < n and expression[i] in "uU":
        kind = "uint"
        i += 1
    if i < n and expression[i] in _IDENT_CHARS:  # 1x, 0x1g, 1e
        raise ExpressionError(f"malformed number at column {start + 1}")
    return Token(kind, expression[start:i], start, i)


# --------------------------------------------------------------------------------------------
# Parsing: the expression grammar of cel-spec's langdef.md
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One node of the syntax tree.

    ``kind`` is ``ident`` (``name``), ``literal`` (``token``), ``select`` (``args[0].name``),
    ``index`` (``args[0][args[1]]``), ``call`` (``name``; ``target`` for ``x.f(...)``),
    ``list``, ``map`` (keys and values alternate) or ``operator`` (``name``: ``_&&_``, ...).
    """

    kind: str
    name: str = ""
    args: tuple[Node, ...] = ()
    target: Node | None = None
    token: Token | None = None


_RELATIONS = ("<", "<=", ">=", ">", "==", "!=", "in")


class _Parser:
    def __init__(self, expression: str) -> None:
        self.tokens = tokenize(expression)
        self.at = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.at]

    def take(self) -> Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def accept(self, kind: str) -> bool:
        if self.peek().kind == kind:
            self.at += 1
            return True
        return False

    def expect(self, kind: str) -> Token:
        token = self.peek()
        if token.kind != kind:
            raise self.error(f"expected {kind!r}")
        self.at += 1
        return token

    def error(self, why: str) -> ExpressionError:
        token = self.peek()
        found = "the end" if token.kind == "eof" else repr(token.text)
        return ExpressionError(f"{why} at column {token.start + 1}, found {found}")

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_SYNTAX_NESTING:
            raise self.error(f"nested more than {MAX_SYNTAX_NESTING} levels deep")

    def parse(self) -> Node:
        node = self.expr()
        if self.peek().kind != "eof":
            raise self.error("unexpected token")
        return node

    def expr(self) -> Node:
        self.nested()
        condition = self.binary(0)
        if self.accept("?"):
            then = self.binary(0)
            self.expect(":")
            otherwise = self.expr()
            condition = Node("operator", "_?_:_", (condition, then, otherwise))
        self.depth -= 1
        return condition

    # Binary operators by precedence, loosest first; all associate to the left.
    _LEVELS: tuple[tuple[str, ...], ...] = (
        ("||",),
        ("&&",),
        _RELATIONS,
        ("+", "-"),
        ("*", "/", "%"),
    )

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while True:
            token = self.peek()
            op = token.text if token.kind in ("ident", *self._LEVELS[level]) else ""
            if op not in self._LEVELS[level]:
                return node
            self.take()
            node = Node("operator", f"_{op}_", (node, self.binary(level + 1)))

    def unary(self) -> Node:
        ops: list[str] = []
        while self.peek().kind in ("!", "-"):
            ops.append(self.take().kind)
        node = self.member()
        for op in reversed(ops):
            node = Node("operator", f"{op}_", (node,))
        return node

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.accept("."):
                if self.peek().kind == "?":
                    raise self.error("optional field selection is not supported")
                name = self.expect("ident").text
                if self.peek().kind == "(":
                    node = Node("call", name, self.arguments(")"), target=node)
                else:
                    node = Node("select", name, (node,))
            elif self.accept("["):
                if self.peek().kind == "?":
                    raise self.error("optional index is not supported")
                self.nested()
                index = self.expr()
                self.expect("]")
                self.depth -= 1
                node = Node("index", args=(node, index))
            elif self.peek().kind == "{":
                raise self.error("message construction is not supported")
            else:
                return node

    def arguments(self, close: str) -> tuple[Node, ...]:
        """A comma-separated list up to ``close`` (a trailing comma only in lists)."""
        self.expect({")": "(", "]": "["}[close])
        self.nested()
        items: list[Node] = []
        while not self.accept(close):
            items.append(self.expr())
            if not self.accept(","):
                self.expect(close)
                break
            if close == ")" and self.peek().kind == ")":
                raise self.error("expected an argument")
        self.depth -= 1
        return tuple(items)

    def primary(self) -> Node:
        token = self.peek()
        if token.kind == ".":
            # A name from the root scope, ".steps".  The library lists it with its dot, so the
            # variable check rejects it rather than guess what it reads.
            self.take()
            return Node("ident", "." + self.expect("ident").text)
        if token.kind == "ident":
            self.take()
            if token.text in ("true", "false", "null"):
                return Node("literal", token=token)
            if self.peek().kind == "(":
                return Node("call", token.text, self.arguments(")"))
            return Node("ident", token.text)
        if token.kind in ("int", "uint", "double", "string", "bytes"):
            self.take()
            return Node("literal", token=token)
        if token.kind == "(":
            self.take()
            node = self.expr()
            self.expect(")")
            return node
        if token.kind == "[":
            return Node("list", args=self.arguments("]"))
        if token.kind == "{":
            self.take()
            self.nested()
            entries: list[Node] = []
            while not self.accept("}"):
                entries.append(self.expr())
                self.expect(":")
                entries.append(self.expr())
                if not self.accept(","):
                    self.expect("}")
                    break
            self.depth -= 1
            return Node("map", args=tuple(entries))
        raise self.error("expected an expression")


def parse(expression: str) -> Node:
    """The syntax tree of ``expression``; raises ExpressionError when it is not CEL we know."""
    return _Parser(expression).parse()


@dataclass
class Analysis:
    """What the checks need to know about a parsed expression."""

    macro_nesting: int = 0
    free: set[str] = field(default_factory=set)  # variables read from the context
    # Every identifier read, bound ones too: what the library's ``Program.variables()`` lists.
    identifiers: set[str] = field(default_factory=set)
    steps: set[str] = field(default_factory=set)  # step names read as steps.x or steps["x"]
    # True when ``steps`` is read other than as steps.x or steps["x"] (a range, steps[k]):
    # then the expression may see every step, not only those it names.
    all_steps: bool = False


def analyze(node: Node) -> Analysis:
    """Macro nesting, variables and step references of a syntax tree."""
    found = Analysis()
    _walk(node, frozenset(), 0, found)
    return found


def _walk(root: Node, bound: frozenset[str], depth: int, found: Analysis) -> None:
    # A loop over a stack, not recursion: a chain of binary operators (``a + a + ...``, each a
    # node whose first operand is the rest) is as deep as it is long, and the parser's nesting
    # bound does not count it.
    pending = [(root, bound, depth)]
    while pending:
        node, bound, depth = pending.pop()
        found.macro_nesting = max(found.macro_nesting, depth)
        if node.kind == "ident":
            found.identifiers.add(node.name)
            if node.name not in bound:
                found.free.add(node.name)
                found.all_steps |= node.name == "steps"
            continue
        if node.kind in ("select", "index"):
            operand, key = node.args[0], node.args[-1].token
            if operand.kind == "ident" and operand.name == "steps" and "steps" not in bound:
                name = node.name if node.kind == "select" else None
                if key is not None and key.kind == "string":
                    name = key.value
                if name is not None:
                    found.identifiers.add("steps")
                    found.free.add("steps")
                    found.steps.add(name)
                    continue
        if node.kind == "call" and node.name in _MACRO_NAMES:
            # The receiver is evaluated once; the arguments once per element (or entry).
            if node.target is not None:
                pending.append((node.target, bound, depth))
            args = node.args
            if node.target is not None and args and args[0].kind == "ident":
                bound = bound | {args[0].name}
                args = args[1:]
            pending.extend((arg, bound, depth + 1) for arg in args)
            continue
        if node.target is not None:
            pending.append((node.target, bound, depth))
        pending.extend((arg, bound, depth) for arg in node.args)


def macro_nesting(expression: str) -> int:
    """How deeply comprehension macros (all, exists, map, ...) nest in ``expression``."""
    return analyze(parse(expression)).macro_nesting


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2048)
def _compile(expression: str) -> Any:
    return cel.compile(expression)


def compile_expression(expression: str) -> Any:
    """The compiled program (cached by expression text); raises ExpressionError."""
    try:
        return _compile(expression)
    except Exception as e:  # the bindings raise ValueError; be safe with anything else
        raise ExpressionError(_first_line(str(e))) from None


def _first_line(message: str) -> str:
    # Parser messages repeat the expression with a caret on the next lines.
    prefix = "Failed to parse expression "
    if message.startswith(prefix):
        message = message.split(": ", 1)[-1]
    return message.split("\n", 1)[0].strip()


def check_expression(
    expression: str,
    variables: ExpressionKind | frozenset[str] = ExpressionKind.WHEN,
    *,
    inputs: Collection[str] = (),
) -> tuple[list[str], set[str]]:
    """Problems with ``expression`` and the step names it reads through ``steps``.

    With an :class:`~agentflow.api.celenv.ExpressionKind`, the expression is also type-checked
    against that kind's environment (:func:`~agentflow.api.celenv.environment`), ``inputs``
    being the names of the Workflow's inputs: unknown fields, unknown inputs, operations on
    values of the wrong type and a result that is not a bool are problems.  With a set of
    variable names only the variables are checked.  The step names returned are for the caller
    to compare with the Workflow's steps (unknown, not upstream).
    """
    if isinstance(variables, ExpressionKind):
        declared = environment(variables, inputs)
        env: dict[str, CelType] | None = declared
        allowed_names = frozenset(declared)
    else:
        env, allowed_names = None, variables
    try:
        program = compile_expression(expression)
    except ExpressionError as e:
        return [f"invalid CEL: {e}"], set()
    try:
        tokens = tokenize(expression)
        tree = _Parser(expression).parse()
        found = analyze(tree)
    except ExpressionError as e:
        return [f"not accepted by the operator's CEL checker: {e}"], set()
    if _hyphenated_step(tokens):
        # Reading further would report the name's first half as an unknown step.
        return ['a step name with "-" must be written steps["name"] in CEL'], set()
    if set(program.variables()) != found.identifiers:
        # The library read the text differently from the parser: the checks below would judge
        # an expression other than the one that runs.
        return ["not accepted by the operator's CEL checker: it cannot be analysed reliably"], set()
    problems: list[str] = []
    if found.macro_nesting > MAX_MACRO_NESTING:
        problems.append(
            f"macros such as all/exists/map nest more than {MAX_MACRO_NESTING} deep "
            f"({found.macro_nesting}); the cost of evaluating it would be unbounded"
        )
    unknown = sorted(found.free - allowed_names)
    if unknown:
        allowed = ", ".join(sorted(allowed_names))
        problems.append(f"unknown variable {unknown[0]!r} (available: {allowed})")
    if env is not None and not problems:
        problems.extend(type_check(tree, env))
    return problems, found.steps


def _hyphenated_step(tokens: list[Token]) -> bool:
    """``steps.my-step``: a name, then ``-`` and more name with no space between."""
    for i in range(len(tokens) - 4):
        steps, dot, name, minus, rest = tokens[i : i + 5]
        if (
            (steps.kind, steps.text, dot.kind, name.kind, minus.kind)
            == ("ident", "steps", ".", "ident", "-")
            and name.end == minus.start
            and minus.end == rest.start
            and rest.kind in ("ident", "int")
        ):
            return True
    return False


# --------------------------------------------------------------------------------------------
# Type checking against the declared environment (agentflow.api.celenv)
# --------------------------------------------------------------------------------------------

_NUMERIC = frozenset({"int", "uint", "double"})
_LITERAL_TYPES = {
    "int": INT, "uint": UINT, "double": DOUBLE, "string": STRING, "bytes": BYTES,
}  # fmt: skip
_CONVERSIONS = {
    "int": INT, "uint": UINT, "double": DOUBLE, "string": STRING, "bytes": BYTES,
    "bool": BOOL, "dyn": DYN, "type": DYN,
}  # fmt: skip
_STRING_TESTS = frozenset({"contains", "startsWith", "endsWith", "matches"})
_ORDERED = frozenset({"_<_", "_<=_", "_>_", "_>=_"})
_ARITHMETIC = frozenset({"_-_", "_*_", "_/_", "_%_"})
# How many problems one expression reports at most (the first ones, in reading order).
_MAX_TYPE_PROBLEMS = 3


def _article(cel_type: CelType) -> str:
    text = str(cel_type)
    return f"{'an' if text[:1] in 'aeiouAEIOU' else 'a'} {text}"


def _path(node: Node) -> str:
    """How ``node`` reads in a message: ``steps.a.metrics``, ``steps["a-b"].summary``, or a
    word for an expression that is not a path."""
    parts: list[str] = []
    while True:
        if node.kind == "select":
            parts.append(f".{node.name}")
            node = node.args[0]
        elif node.kind == "index" and node.args[1].token is not None:
            parts.append(f"[{node.args[1].token.text}]")
            node = node.args[0]
        elif node.kind == "ident":
            parts.append(node.name)
            return "".join(reversed(parts))
        elif node.kind == "literal" and node.token is not None and not parts:
            return node.token.text
        else:
            return "(expression)" + "".join(reversed(parts))


def _same(a: CelType, b: CelType) -> bool:
    return a.kind == b.kind or "dyn" in (a.kind, b.kind)


def _comparable(a: CelType, b: CelType) -> bool:
    """Whether ``==`` between the two can be true: CEL says false for different types."""
    kinds = {a.kind, b.kind}
    if "dyn" in kinds or "null" in kinds or kinds <= _NUMERIC:
        return True
    if kinds <= {"map", "object"}:
        return True
    return a.kind == b.kind


def _join(types: list[CelType]) -> CelType:
    if not types:
        return DYN
    first = types[0]
    return first if all(t == first for t in types) else DYN


class _TypeChecker:
    """Infers the type of every node, bottom up, with a stack rather than recursion (a chain
    of binary operators is as deep as it is long)."""

    def __init__(self, env: dict[str, CelType]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.types: dict[int, CelType] = {}

    def problem(self, message: str) -> CelType:
        if message not in self.problems:
            self.problems.append(message)
        return DYN

    def check(self, root: Node) -> list[str]:
        result = self.infer(root, {})
        if result.kind not in ("bool", "dyn"):
            self.problem(f"the expression must be a bool, it is {_article(result)}")
        return self.problems[:_MAX_TYPE_PROBLEMS]

    def infer(self, root: Node, scope: dict[str, CelType]) -> CelType:
        stack: list[tuple[Node, dict[str, CelType]]] = [(root, scope)]
        while stack:
            node, scope = stack[-1]
            waiting = self.children(node, scope)
            if waiting:
                stack.extend(waiting)
                continue
            stack.pop()
            self.types[id(node)] = self.type_of(node, scope)
        return self.types[id(root)]

    def known(self, node: Node) -> CelType:
        return self.types[id(node)]

    def children(
        self, node: Node, scope: dict[str, CelType]
    ) -> list[tuple[Node, dict[str, CelType]]]:
        """The children whose types ``node`` needs and that are not known yet."""
        if node.kind == "call" and node.name == "has" and node.target is None and node.args:
            inner = node.args[0]
            operands = [inner.args[0]] if inner.kind == "select" else [inner]
        elif node.kind == "call" and node.name in _MACRO_NAMES and node.target is not None:
            if id(node.target) not in self.types:
                return [(node.target, scope)]
            args = node.args
            if args and args[0].kind == "ident":
                inner_scope = {**scope, args[0].name: self.element(node.target, node.name)}
                return [(a, inner_scope) for a in args[1:] if id(a) not in self.types]
            return [(a, scope) for a in args if id(a) not in self.types]
        else:
            operands = [*([node.target] if node.target is not None else []), *node.args]
        return [(n, scope) for n in operands if id(n) not in self.types]

    def element(self, target: Node, macro: str) -> CelType:
        """The type of a macro's variable over ``target``: list elements or map keys."""
        of = self.known(target)
        if of.kind == "list" and of.element is not None:
            return of.element
        if of.kind in ("map", "object"):
            return STRING
        if of.kind != "dyn":
            self.problem(f"{macro}() needs a list or map, {_path(target)} is {_article(of)}")
        return DYN

    def type_of(self, node: Node, scope: dict[str, CelType]) -> CelType:
        kind = node.kind
        if kind == "literal":
            assert node.token is not None
            if node.token.kind == "ident":
                return NULL if node.token.text == "null" else BOOL
            return _LITERAL_TYPES[node.token.kind]
        if kind == "ident":
            return scope.get(node.name) or self.env.get(node.name) or DYN
        if kind == "select":
            return self.field(node, self.known(node.args[0]), node.name)
        if kind == "index":
            return self.index(node)
        if kind == "list":
            return list_of(_join([self.known(a) for a in node.args]))
        if kind == "map":
            return map_of(_join([self.known(a) for a in node.args[1::2]]))
        if kind == "call":
            return self.call(node)
        return self.operator(node)

    def field(self, node: Node, of: CelType, name: str) -> CelType:
        if of.kind == "object":
            found = of.field(name)
            if found is not None:
                return found.type
            operand = _path(node.args[0])
            if of.name == "Inputs":
                declared = describe_fields(of)
                return self.problem(
                    f"unknown input {name!r} (declared in spec.arguments: {declared})"
                )
            hint = ""
            if of == METRICS:
                hint = f"; a metric of the report's extra metrics is {operand}.extra.{name}"
            return self.problem(
                f"{operand} has no field {name!r} ({of.name} fields: {describe_fields(of)}){hint}"
            )
        if of.kind == "map":
            return of.element or DYN
        if of.kind == "dyn":
            return DYN
        operand = _path(node.args[0])
        return self.problem(f"{operand} is {_article(of)}, which has no field {name!r}")

    def index(self, node: Node) -> CelType:
        operand, key = node.args
        of, key_type = self.known(operand), self.known(key)
        if of.kind == "list":
            if key_type.kind not in ("int", "uint", "dyn"):
                self.problem(
                    f"{_path(operand)} is a list: its index must be an int, not {key_type}"
                )
            return of.element or DYN
        if of.kind in ("map", "object"):
            if key_type.kind not in ("string", "dyn"):
                self.problem(f"{_path(operand)} has string keys, not {key_type}")
            if of.kind == "object" and key.token is not None and key.token.kind == "string":
                assert key.token.value is not None
                return self.field(Node("select", key.token.value, (operand,)), of, key.token.value)
            return of.element or DYN if of.kind == "map" else DYN
        if of.kind == "dyn":
            return DYN
        return self.problem(f"{_path(operand)} is {_article(of)}, which cannot be indexed")

    def call(self, node: Node) -> CelType:
        name, target, args = node.name, node.target, node.args
        if name == "has" and target is None:
            if len(args) == 1 and args[0].kind == "select":
                inner = args[0]
                self.field(inner, self.known(inner.args[0]), inner.name)
            return BOOL
        if name in _MACRO_NAMES and target is not None:
            body = self.known(args[-1]) if args else DYN
            if name in ("all", "exists", "exists_one"):
                if body.kind not in ("bool", "dyn"):
                    self.problem(f"the condition of {name}() must be a bool, it is {body}")
                return BOOL
            if name == "map":
                return list_of(body)
            if name == "filter":
                of = self.known(target)
                return of if of.kind == "list" else list_of(DYN)
            return DYN
        if name == "size":
            subject = target if target is not None else (args[0] if args else None)
            if subject is not None:
                of = self.known(subject)
                if of.kind not in ("string", "bytes", "list", "map", "object", "dyn"):
                    self.problem(f"size() needs a string, list or map; {_path(subject)} is {of}")
            return INT
        if name in _STRING_TESTS and target is not None:
            of = self.known(target)
            if of.kind not in ("string", "dyn"):
                self.problem(f"{name}() is a function of strings; {_path(target)} is {of}")
            for arg in args:
                if self.known(arg).kind not in ("string", "dyn"):
                    self.problem(f"{name}() takes a string, not {self.known(arg)}")
            return BOOL
        if name in _CONVERSIONS and target is None:
            return _CONVERSIONS[name]
        return DYN  # functions the checker does not know: the library judges them

    def operator(self, node: Node) -> CelType:
        name = node.name
        operands = [self.known(a) for a in node.args]
        if name in ("_&&_", "_||_", "!_"):
            for arg, of in zip(node.args, operands, strict=True):
                if of.kind not in ("bool", "dyn"):
                    op = name.strip("_")
                    self.problem(f"{op} needs bools; {_path(arg)} is {_article(of)}")
            return BOOL
        if name == "_?_:_":
            if operands[0].kind not in ("bool", "dyn"):
                self.problem(f"the condition of ?: must be a bool, it is {operands[0]}")
            return _join(operands[1:])
        if name == "-_":
            if operands[0].kind not in ("int", "double", "dyn"):
                self.problem(f"cannot negate {_article(operands[0])}")
            return operands[0]
        left, right = operands[0], operands[1]

        def what() -> str:
            return f"{_path(node.args[0])} ({left}) with {_path(node.args[1])} ({right})"

        if name in ("_==_", "_!=_"):
            if not _comparable(left, right):
                self.problem(f"compares {what()}: values of different types are never equal")
            return BOOL
        if name in _ORDERED:
            both = {left.kind, right.kind}
            if not (
                "dyn" in both
                or both <= _NUMERIC
                or (len(both) == 1 and both <= {"string", "bytes", "bool"})
            ):
                self.problem(f"cannot order {what()}")
            return BOOL
        if name == "_in_":
            if right.kind == "list":
                if right.element is not None and not _comparable(left, right.element):
                    self.problem(f"looks for {_article(left)} in {_path(node.args[1])}, a {right}")
            elif right.kind in ("map", "object"):
                if left.kind not in ("string", "dyn"):
                    self.problem(
                        f"looks for {_article(left)} among the string keys of {_path(node.args[1])}"
                    )
            elif right.kind != "dyn":
                self.problem(
                    f"in needs a list or map on its right, {_path(node.args[1])} is {right}"
                )
            return BOOL
        if "dyn" in (left.kind, right.kind):
            return DYN
        if name == "_+_" and left.kind == right.kind and left.kind in ("string", "bytes", "list"):
            return left if left == right else list_of(DYN)
        if name in _ARITHMETIC | {"_+_"} and left.kind == right.kind and left.kind in _NUMERIC:
            return left
        if left.kind in _NUMERIC and right.kind in _NUMERIC:
            return self.problem(
                f"arithmetic on {what()}: CEL does not convert between number types, "
                "convert one, e.g. double(x)"
            )
        return self.problem(f"cannot apply {name.strip('_')} to {what()}")


def type_check(tree: Node, env: dict[str, CelType]) -> list[str]:
    """Type problems of a parsed expression in the environment ``env`` (variable types)."""
    return _TypeChecker(env).check(tree)


# --------------------------------------------------------------------------------------------
# Evaluating under a budget
# --------------------------------------------------------------------------------------------

# The worker: one request per line (expression and context as JSON), one answer per line.  It
# imports only cel, so it starts in a fraction of a second.
_WORKER = """
import json, resource, signal, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import cel
programs = {}
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    print("go", flush=True)
    # The operator kills the worker at the budget; should the operator be gone, SIGALRM (whose
    # default action needs no Python code, so the GIL cannot hold it up) ends it soon after.
    signal.alarm(request["alarm"])
    try:
        program = programs.get(request["expression"])
        if program is None:
            if len(programs) > 1024:
                programs.clear()
            program = programs[request["expression"]] = cel.compile(request["expression"])
        value = program.execute(request["context"])
    except KeyError as e:
        answer = {"error": "no such key " + str(e)[:500]}
    except MemoryError:
        answer = {"error": "out of memory"}
    except Exception as e:
        answer = {"error": str(e)[:2000]}
    else:
        if isinstance(value, bool):
            answer = {"value": value}
        else:
            answer = {"type": type(value).__name__, "repr": repr(value)[:200]}
    signal.alarm(0)
    print(json.dumps(answer), flush=True)
"""
_WORKER_START_SECONDS = 30.0
_WORKER_READ_SECONDS = 30.0


class _TimedOut(Exception):
    pass


class _WorkerDied(Exception):
    def __init__(self, returncode: int) -> None:
        super().__init__(returncode)
        self.returncode = returncode


class _Evaluator:
    """One worker process, started on first use and again after it was killed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def evaluate(self, request: bytes, budget: float) -> dict[str, Any]:
        """The worker's answer to ``request``; raises _TimedOut after ``budget`` seconds."""
        with self._lock:
            try:
                return self._evaluate(request, budget)
            except _WorkerDied as e:
                self.stop()
                # A negative code is the signal: SIGKILL or SIGABRT when memory ran out.
                raise ExpressionError(
                    f"evaluation failed: the CEL worker stopped (exit code {e.returncode}); "
                    f"it may have needed more than {WORKER_MEMORY_BYTES >> 20} MiB"
                ) from None

    def _evaluate(self, request: bytes, budget: float) -> dict[str, Any]:
        process = self._process
        if process is None or process.poll() is not None:
            process = self._start()
        assert process.stdin is not None
        try:
            process.stdin.write(request)
            process.stdin.flush()
        except OSError:
            self.stop()
            raise ExpressionError("evaluation failed: the CEL worker stopped") from None
        # The budget is the evaluation's: reading a large context (bounded by the schema)
        # takes its own time first.
        if self._read_line(process, time.monotonic() + _WORKER_READ_SECONDS) != b"go":
            self.stop()
            raise ExpressionError("evaluation failed: the CEL worker did not answer")
        line = self._read_line(process, time.monotonic() + budget)
        if line is None:
            self.stop()
            raise _TimedOut
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _start(self) -> subprocess.Popen[bytes]:
        self.stop()
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-c", _WORKER, str(WORKER_MEMORY_BYTES)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError as e:
            raise ExpressionError(f"evaluation failed: cannot start the CEL worker: {e}") from None
        self._process = process
        if self._read_line(process, time.monotonic() + _WORKER_START_SECONDS) != b"ready":
            self.stop()
            raise ExpressionError("evaluation failed: the CEL worker did not start")
        return process

    def _read_line(self, process: subprocess.Popen[bytes], deadline: float) -> bytes | None:
        """The worker's next line, or None when it is not there by ``deadline``."""
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                process.wait()
                raise _WorkerDied(process.returncode)
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def stop(self) -> None:
        process, self._process, self._buffer = self._process, None, b""
        if process is not None:
            process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()


_EVALUATOR = _Evaluator()
atexit.register(_EVALUATOR.stop)


@functools.lru_cache(maxsize=2048)
def _analysis(expression: str) -> Analysis:
    return analyze(parse(expression))


class EvaluationDeferred(ExpressionError):
    """The planning pass has spent its CEL budget: evaluate the expression in a later pass."""


@dataclass
class PassBudget:
    """The CEL time one planning pass may still spend, across all its expressions.

    Each expression is held to :data:`EVALUATION_BUDGET_SECONDS`, but a Workflow of 256 steps
    whose conditions each take just under that would hold the event loop for minutes; the pass
    stops evaluating when this runs out, and a later pass carries on (answers are remembered).
    A budget drawn from :class:`CelTime` charges what the pass spends to its namespace.
    """

    seconds: float = PASS_BUDGET_SECONDS
    namespace: str = ""
    drawn_from: CelTime | None = None

    @property
    def spent(self) -> bool:
        return self.seconds <= 0

    def charge(self, seconds: float) -> None:
        self.seconds -= seconds
        if self.drawn_from is not None:
            self.drawn_from.charge(self.namespace, seconds)

    @property
    def retry_seconds(self) -> float:
        """How soon to plan again when this budget ran out."""
        if self.drawn_from is None:
            return CEL_RETRY_SECONDS[0]
        return self.drawn_from.seconds_until_available(self.namespace)


class CelTime:
    """The operator's CEL time: a token bucket of CEL seconds per namespace.

    Why per namespace: the namespace is the operator's unit of fairness (as for the namespace
    step-Job limit).  N Workflows whose conditions cost just under the limit of one expression,
    with inputs that change (so no answer is reused), would otherwise cost up to N pass budgets
    of event loop per round of passes, and the operator would stall for every tenant.  Here a
    namespace's Workflows together spend at most :data:`NAMESPACE_CEL_SHARE` of real time on
    CEL, after what the namespace saved while idle (:data:`CEL_SAVINGS_SECONDS`).

    Why a total: with many namespaces spending, each gets an equal part of
    :data:`TOTAL_CEL_SHARE`, so however many namespaces there are, at least half the event loop
    stays with watches, status writes and the leader Lease.  A namespace that spends little
    keeps its savings, so an occasional cheap condition never waits for the others.

    A pass is given time only once its namespace has enough for a whole expression
    (:data:`EVALUATION_BUDGET_SECONDS`): a smaller grant would cut a costly but legitimate
    expression short on every pass, and it would never be judged.  A pass may overspend (an
    ``until`` gets its whole budget, and a pass awaits between its plans while others of its
    namespace spend): the balance then goes below zero and the debt is paid before the next
    grant.  Namespaces with full savings are not kept, so deleted namespaces cost nothing.

    The evaluation itself stays on the event loop, bounded by this: taking it off would mean
    planning in threads (the planner's memo of validations assumes one pass at a time), and
    the single worker would take the evaluations one at a time anyway.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        share: float = NAMESPACE_CEL_SHARE,
        total_share: float = TOTAL_CEL_SHARE,
        savings: float = CEL_SAVINGS_SECONDS,
    ) -> None:
        self._clock = clock
        self.share = share
        self.total_share = total_share
        self.savings = savings
        self._balances: dict[str, float] = {}  # only namespaces below their full savings
        self._at = clock()

    def balance(self, namespace: str) -> float:
        """The CEL seconds ``namespace`` has now (below zero: its debt)."""
        self._refill()
        return self._balances.get(namespace, self.savings)

    def rate(self) -> float:
        """How fast each spending namespace's balance grows now, in CEL seconds per second."""
        return min(self.share, self.total_share / max(1, len(self._balances)))

    def pass_budget(self, namespace: str) -> PassBudget:
        """The budget of a pass of a Workflow in ``namespace``: none until it has a whole
        expression's worth, then up to :data:`PASS_BUDGET_SECONDS`."""
        balance = self.balance(namespace)
        seconds = min(PASS_BUDGET_SECONDS, balance) if balance >= EVALUATION_BUDGET_SECONDS else 0
        return PassBudget(seconds=seconds, namespace=namespace, drawn_from=self)

    def charge(self, namespace: str, seconds: float) -> None:
        self._balances[namespace] = self.balance(namespace) - seconds

    def seconds_until_available(self, namespace: str) -> float:
        """When ``namespace`` will next be given time, at the current rate (clamped)."""
        missing = EVALUATION_BUDGET_SECONDS - self.balance(namespace)
        low, high = CEL_RETRY_SECONDS
        return min(high, max(low, missing / self.rate()))

    def _refill(self) -> None:
        # Every spending namespace gains at the same rate; with the count constant since the
        # last call (a namespace that filled up meanwhile is counted until now), the total
        # never exceeds total_share.
        now = self._clock()
        gained, self._at = (now - self._at) * self.rate(), now
        if gained <= 0:
            return
        for namespace, balance in list(self._balances.items()):
            if balance + gained >= self.savings:
                del self._balances[namespace]
            else:
                self._balances[namespace] = balance + gained


# Answers by the digest of (expression, context): a step held back by parallelism is judged
# again on every pass, with the same inputs, and a costly condition should cost once.
_ANSWERS: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
_ANSWERS_KEPT = 4096
_ANSWERS_LOCK = threading.Lock()


def evaluate_bool(
    expression: str,
    context: dict[str, Any],
    budget: float = EVALUATION_BUDGET_SECONDS,
    pass_budget: PassBudget | None = None,
    *,
    may_defer: bool = True,
) -> bool:
    """The value of a boolean expression, evaluated within ``budget`` seconds.

    The time is charged to ``pass_budget``.  Raises ExpressionError, or EvaluationDeferred when
    ``pass_budget`` ran out first; with ``may_defer`` False (the caller cannot wait for a later
    pass and checks ``spent`` before it starts) the expression gets its whole ``budget``.
    """
    compile_expression(expression)  # a compile error reads better than the worker's
    found = _analysis(expression)
    steps = context.get("steps")
    if isinstance(steps, dict) and not found.all_steps:
        # Only what the expression names can change its value; the rest would be copied to
        # the worker for nothing (the upstream steps' results can be megabytes).
        context = {**context, "steps": {k: v for k, v in steps.items() if k in found.steps}}
    quoted, context_json = json.dumps(expression).encode(), json.dumps(context).encode()
    key = hashlib.sha256(quoted + b"\0" + context_json).digest()
    with _ANSWERS_LOCK:
        answer = _ANSWERS.get(key)
        if answer is not None:
            _ANSWERS.move_to_end(key)
    if answer is None:
        limit = budget
        if pass_budget is not None and may_defer:
            if pass_budget.spent:
                raise EvaluationDeferred("this pass has spent its time for CEL")
            limit = min(budget, pass_budget.seconds)
        started = time.monotonic()
        alarm = math.ceil(limit) + 2
        request = b'{"alarm": %d, "expression": %s, "context": %s}\n' % (
            alarm,
            quoted,
            context_json,
        )
        try:
            answer = _EVALUATOR.evaluate(request, limit)
        except _TimedOut:
            if limit < budget:
                raise EvaluationDeferred("this pass has spent its time for CEL") from None
            raise ExpressionError(
                f"evaluation took longer than {budget:g} s, the limit for one expression, "
                "and was stopped"
            ) from None
        finally:
            if pass_budget is not None:
                pass_budget.charge(time.monotonic() - started)
        with _ANSWERS_LOCK:
            _ANSWERS[key] = answer
            while len(_ANSWERS) > _ANSWERS_KEPT:
                _ANSWERS.popitem(last=False)
    if "error" in answer:
        raise ExpressionError(f"evaluation failed: {_first_line(answer['error'])}")
    if "value" not in answer:
        raise ExpressionError(f"expected a bool, got {answer['type']} {answer['repr']}")
    return bool(answer["value"])
