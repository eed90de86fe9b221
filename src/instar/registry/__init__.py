"""Handlers as definitions, the registry of them, and how new jobs are built."""

from instar.registry.definitions import JobDefinition, JobOptions, Registry
from instar.registry.new_jobs import Placement, new_jobs, start_time

__all__ = ["JobDefinition", "JobOptions", "Placement", "Registry", "new_jobs", "start_time"]
