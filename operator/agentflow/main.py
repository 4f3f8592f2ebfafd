"""Entry point for ``kopf run -m agentflow.main`` (``agentflow operator`` runs the same).

Run this way there are no flags: the start-up handler builds the configuration from the
environment alone (``agentflow.config.load_config``), and a bad setting fails the start.
"""

from agentflow import handlers  # noqa: F401  (importing registers the kopf handlers)
