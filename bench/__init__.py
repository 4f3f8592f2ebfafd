"""``make bench``: agentflow's operator measured side by side with Argo Workflows.

Run ``python -m bench --help``; the results go to docs/benchmarks.json and docs/benchmarks.md.
"""
