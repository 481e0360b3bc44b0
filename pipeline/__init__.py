"""Orchestration of the inference run: find the cases, run each through the stages, record the results."""
