"""The error of a request the Kubernetes API server answered with an error status.

One class for the whole product: the operator's client (``agentflow.kube``) and the CLI's
(``agentflow.console``) raise it, the controller judges it (``kube.is_refusal``), and the CLI
turns it into its message and exit code (``agentflow.cli``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """The API server answered ``status``; ``message`` is its Status message, else ``reason``."""

    def __init__(self, status: int, reason: str, body: Mapping[str, Any] | None = None) -> None:
        self.status = status
        self.body: dict[str, Any] = dict(body or {})
        self.message = str(self.body.get("message") or reason)
        super().__init__(f"{status}: {self.message}")
