"""Device targets: profiles as TOML data (targets/profiles/), `host` measured at run time, and the planner
that picks format, quant and the CPU/GPU/NPU split for a model on a target. Imports nothing of edgechat,
converters or runtimes: edgechat passes the model's shape in as plain numbers (ModelSpec)."""
from __future__ import annotations

from targets.errors import PlanError, ProfileError, TargetError
from targets.model_spec import ModelSpec
from targets.plan_types import Plan, Request
from targets.planner import plan
from targets.catalog import list_profiles, load_profile, threads_for
from targets.profile import Profile

__all__ = ["ModelSpec", "Plan", "PlanError", "Profile", "ProfileError", "Request", "TargetError", "list_profiles",
           "load_profile", "plan", "threads_for"]
