"""Entry point for ``kopf run -m agentflow.main`` (``agentflow operator`` runs the same)."""

from agentflow import handlers  # noqa: F401  (importing registers the kopf handlers)
