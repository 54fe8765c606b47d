"""A Debian base image built on this host with debootstrap, for engines that cannot pull.

Air-gapped installs and the test suite have a Docker engine but no registry. Workspace images
still need a ``FROM``, so the docker backend can build a minimal Debian root file system with
``debootstrap`` from a Debian mirror (an apt mirror is usually reachable where a registry is
not) and import it into the engine as an image.

The image is content-addressed: its tag is derived from everything that goes into it, so an
existing tag is reused as is and a changed recipe gets a new tag instead of a silent rebuild.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors

from taskspace.core.errors import BackendError

# Bump when the build steps change in a way that changes the image, so old tags are not reused.
RECIPE_VERSION = 1
VARIANT = "minbase"
BASE_IMAGE_LABEL = "taskspace.base-image"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_HINT = "Install debootstrap and run as root, or build FROM an image your registry serves."
_TAR_CHUNK = 1 << 20


def base_image_digest(suite: str, packages: tuple[str, ...], mirror: str | None) -> str:
    """The sha256 (hex) over everything that determines the image's content."""
    recipe = [RECIPE_VERSION, suite, VARIANT, sorted(packages), mirror]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()


def ensure_base_image(
    client: docker.DockerClient,
    *,
    repository: str = "taskspace/base",
    suite: str = "bookworm",
    packages: tuple[str, ...] = ("git", "ca-certificates"),
    mirror: str | None = None,
    lock_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> str:
    """Return ``repository:<suite>-<hash>``, building and importing the image if it is missing.

    If the tag already exists on the engine nothing else happens. Otherwise the root file
    system is built with ``debootstrap --variant=minbase`` (about half a minute with a close
    mirror) in a temporary directory that is removed afterwards, whatever the outcome.
    Processes on this host that build the same tag wait for each other on a lock file in
    ``lock_dir`` (default: the system temp dir), so debootstrap runs once.

    Raises ``BackendError`` when debootstrap is missing, when not running as root, or when
    debootstrap or the import fails.
    """
    log = log or (lambda _message: None)
    digest = base_image_digest(suite, packages, mirror)
    tag = f"{suite}-{digest[:12]}"
    ref = f"{repository}:{tag}"
    if _has_image(client, ref):
        return ref

    lock_dir = lock_dir or Path(tempfile.gettempdir())
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"taskspace-base-image-{digest[:12]}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        # Another process may have finished the build while this one waited for the lock.
        if _has_image(client, ref):
            return ref
        debootstrap = _require_debootstrap()
        rootfs = Path(tempfile.mkdtemp(prefix="taskspace-rootfs-"))
        try:
            log(f"Building {ref} with debootstrap ({suite}, {', '.join(packages)})")
            _debootstrap(debootstrap, suite, packages, mirror, rootfs)
            _slim(rootfs)
            log(f"Importing {ref} into the engine")
            _import(client, rootfs, repository, tag, digest)
        finally:
            _unmount_below(rootfs)
            shutil.rmtree(rootfs, ignore_errors=True)
    log(f"Built {ref}")
    return ref


def _has_image(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def _require_debootstrap() -> str:
    # debootstrap lives in /usr/sbin, which is not on every user's PATH.
    search_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    debootstrap = shutil.which("debootstrap", path=search_path)
    if debootstrap is None:
        raise BackendError("Cannot build the base image: debootstrap is not installed.", hint=_HINT)
    if os.geteuid() != 0:
        raise BackendError("Cannot build the base image: debootstrap needs root.", hint=_HINT)
    return debootstrap


def _debootstrap(
    debootstrap: str, suite: str, packages: tuple[str, ...], mirror: str | None, rootfs: Path
) -> None:
    argv = [debootstrap, f"--variant={VARIANT}"]
    if packages:
        argv.append(f"--include={','.join(packages)}")
    argv += [suite, str(rootfs)]
    if mirror:
        argv.append(mirror)
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-15:])
        raise BackendError(
            f"debootstrap of Debian {suite} failed (exit {result.returncode}):\n{tail}",
            hint=f"Check that the mirror ({mirror or 'debootstrap default'}) is reachable and "
            f"that the packages exist in {suite}. {_HINT}",
        )


def _slim(rootfs: Path) -> None:
    """Drop what a container does not need: downloaded packages, apt lists, device nodes."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*", "dev/*"):
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _import(client: docker.DockerClient, rootfs: Path, repository: str, tag: str, digest: str) -> None:
    changes = [
        'CMD ["/bin/bash"]',
        f"ENV PATH={DEFAULT_PATH}",
        "ENV LANG=C.UTF-8",
        f"LABEL {BASE_IMAGE_LABEL}={digest}",
    ]
    try:
        client.api.import_image(
            src=_tar_stream(rootfs), repository=repository, tag=tag, changes=changes, stream_src=True
        )
    except docker.errors.DockerException as exc:
        raise BackendError(
            f"Importing the base image {repository}:{tag} failed: {exc}",
            hint="Check that the Docker engine is running and has free disk space.",
        ) from exc
    if not _has_image(client, f"{repository}:{tag}"):
        raise BackendError(
            f"The engine accepted the import of {repository}:{tag} but does not list the image.",
            hint="Check the Docker engine's log for the import error.",
        )


def _tar_stream(rootfs: Path) -> Iterator[bytes]:
    """Yield a tar archive of ``rootfs`` (owners, modes, links kept) without writing it to disk."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for directory, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                path = Path(directory, name)
                tar.add(path, arcname=str(path.relative_to(rootfs)), recursive=False)
                if buffer.tell() >= _TAR_CHUNK:
                    yield _take(buffer)
    yield _take(buffer)


def _take(buffer: io.BytesIO) -> bytes:
    data = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return data


def _unmount_below(path: Path) -> None:
    """Unmount anything a failed debootstrap left mounted in ``path`` (``/proc``, ``/sys``).

    Removing the directory with those still mounted would reach into the host's file systems.
    """
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        targets = [line.split()[1] for line in mounts]
    for target in sorted((t for t in targets if t.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)
