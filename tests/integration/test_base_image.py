"""The debootstrapped base image: built without a registry, usable, and cached by content."""

from __future__ import annotations

import time
from typing import Any

import docker
import pytest

from taskspace.plugins.backends.docker.base_image import (
    BASE_IMAGE_LABEL,
    base_image_digest,
    ensure_base_image,
)

pytestmark = pytest.mark.docker


def test_base_image_runs_git(docker_client: docker.DockerClient, base_image: str) -> None:
    image = docker_client.images.get(base_image)

    repository, tag = base_image.rsplit(":", 1)
    assert repository == "taskspace/base"
    digest = image.labels[BASE_IMAGE_LABEL]
    assert tag == f"bookworm-{digest[:12]}"
    assert image.attrs["Config"]["Cmd"] == ["/bin/bash"]
    assert any(env.startswith("PATH=/usr/local/sbin:") for env in image.attrs["Config"]["Env"])
    output = docker_client.containers.run(base_image, ["git", "--version"], remove=True, network_mode="host")
    assert output.decode().startswith("git version ")
    # The image is slimmed: no package cache is shipped.
    listing = docker_client.containers.run(
        base_image,
        ["sh", "-c", "ls /var/cache/apt/archives/*.deb 2>/dev/null | wc -l"],
        remove=True,
        network_mode="host",
    )
    assert listing.strip() == b"0"


def test_existing_tag_is_reused_without_building(
    docker_client: docker.DockerClient, base_image: str, base_image_options: dict[str, Any]
) -> None:
    messages: list[str] = []

    started = time.monotonic()
    again = ensure_base_image(docker_client, log=messages.append, **base_image_options)
    elapsed = time.monotonic() - started

    assert again == base_image
    assert messages == []  # nothing was built
    assert elapsed < 2


def test_tag_follows_the_recipe() -> None:
    digest = base_image_digest("bookworm", ("git", "ca-certificates"), None)

    assert digest == base_image_digest("bookworm", ("ca-certificates", "git"), None)
    assert digest != base_image_digest("bookworm", ("git",), None)
    assert digest != base_image_digest("trixie", ("git", "ca-certificates"), None)
    assert digest != base_image_digest("bookworm", ("git", "ca-certificates"), "http://127.0.0.1:3142/debian")
