"""Where ``agentflow.config`` and the e2e tests find the step Job's builder and settings; the
one home of every child object the operator makes is :mod:`agentflow.children`."""

from agentflow.children import RESERVED_ENV_PREFIX, JobSettings, WorkflowRef, build_step_job

__all__ = ["RESERVED_ENV_PREFIX", "JobSettings", "WorkflowRef", "build_step_job"]
