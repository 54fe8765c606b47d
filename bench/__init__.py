"""Benchmarks of taskspace: time to ready (against a devcontainer peer), concurrent launches,
and the control plane at scale. Run ``python -m bench all`` from the repository root."""
