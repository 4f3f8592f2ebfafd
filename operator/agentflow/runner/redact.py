"""Keeping the runner's secrets out of everything it prints.

The secrets are the values of the API-key variables the runner reads (``llm.KEY_VARIABLES``;
the operator fills them from a Secret).  Every error message, traceback and report the runner
itself writes, to stdout, stderr or the termination message, passes through a
:class:`Redactor`.  A key may show up in other spellings than its own: Python quotes it with
escapes in a ``repr`` (``b'sk-\\r\\n...'`` in http.client's "Invalid header value"), JSON escapes
it, and a key with a line break in it can be printed one line at a time.  Each of those
spellings is replaced too.

Redaction must come before any cut: a message cut in the middle of a key leaves a prefix that
no longer matches.  So the runner redacts a message whole and shortens it afterwards.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

REDACTED = "[redacted]"
# Fragments of a key (the lines of one with a line break in it) shorter than this are left
# alone: replacing every "ab" in a message would make it unreadable and protect nothing.
MIN_FRAGMENT_CHARS = 6
_LINE_BREAKS = re.compile(r"[\r\n]+")


def _spellings(secret: str) -> set[str]:
    forms = {secret, secret.strip()}
    forms.add(repr(secret)[1:-1])
    forms.add(json.dumps(secret)[1:-1])
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    forms.add(repr(secret.encode("utf-8", "surrogatepass"))[2:-1])
    forms.add(repr(secret.encode("latin-1", "replace"))[2:-1])
    forms.update(_LINE_BREAKS.split(secret))
    return {f.strip() for f in forms if len(f.strip()) >= MIN_FRAGMENT_CHARS or f == secret}


@dataclass(frozen=True)
class Redactor:
    """Replaces every spelling of the given secrets with ``[redacted]``."""

    spellings: tuple[str, ...] = ()

    @classmethod
    def of(cls, secrets: Iterable[str]) -> Redactor:
        forms: set[str] = set()
        for secret in secrets:
            if secret.strip():
                forms |= _spellings(secret)
        forms.discard("")
        # Longest first, so that a fragment never breaks up a longer spelling it is part of.
        return cls(tuple(sorted(forms, key=lambda f: (-len(f), f))))

    @classmethod
    def from_env(cls, env: Mapping[str, str], variables: Iterable[str]) -> Redactor:
        """The values of ``variables`` in ``env`` (those that are set) as secrets."""
        return cls.of(env[name] for name in variables if env.get(name))

    def __call__(self, text: str) -> str:
        for form in self.spellings:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def report(self, data: bytes) -> bytes:
        """A report (bytes as printed) with the secrets replaced; other bytes stay as they are.

        Replaced as bytes: a report may be hundreds of MiB (the script provider's filler), and
        is copied only when a secret is in it.
        """
        for form in self.spellings:
            encoded = form.encode("utf-8", "surrogatepass")
            if encoded in data:
                data = data.replace(encoded, REDACTED.encode())
        return data

    def print_exception(self, error: BaseException) -> None:
        """The traceback of ``error`` (chained ones included) on stderr, redacted."""
        text = "".join(traceback.format_exception(error))
        print(self(text), end="", file=sys.stderr)
