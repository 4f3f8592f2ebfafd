"""The agent runner: the entrypoint of the default agent image (``python -m agentflow.runner``).

It runs one agent for one step attempt, prints the agent's full report to stdout, writes the
compact result (:func:`agentflow.report.encode_termination_message`) to the termination-message
file, and exits 0 on success and non-zero on failure.  Configuration comes from environment
variables the operator sets on the Job's container (see :mod:`agentflow.runner.config`).
"""

from agentflow.runner.main import main

__all__ = ["main"]
