"""The Docker backend (default)."""

from taskspace.plugins.backends.docker.backend import DockerBackend, DockerBackendConfig

__all__ = ["DockerBackend", "DockerBackendConfig"]
