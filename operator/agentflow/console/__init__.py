"""The pieces behind the ``agentflow`` command line (``agentflow.cli`` wires them to typer).

- ``documents``: YAML files into documents, with file-level errors;
- ``checks``: offline validation of Workflows and AgentFallbackPolicies (``agentflow validate``);
- ``graph``: the step graph as Mermaid or Graphviz DOT (``agentflow graph``);
- ``cluster``: the CLI's small, synchronous Kubernetes API client and its errors;
- ``views``: rich tables and text for Workflows, steps, events and cache entries;
- ``watch``: the live view of running Workflows;
- ``terminal``: the Console every command writes with.
"""
