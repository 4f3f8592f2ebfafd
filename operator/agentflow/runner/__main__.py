"""``python -m agentflow.runner``."""

from agentflow.runner.main import main

raise SystemExit(main())
