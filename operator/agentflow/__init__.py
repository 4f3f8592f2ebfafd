"""agentflow: a Kubernetes operator that runs multi-step AI-agent workflows as Jobs."""

__version__ = "0.1.0"
