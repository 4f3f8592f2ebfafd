"""The agentflow API: pydantic models (the single source) and CRD generation."""

from agentflow.api.models import *  # noqa: F403
from agentflow.api.models import API_VERSION, GROUP, VERSION

__all__ = ["API_VERSION", "GROUP", "VERSION"]
