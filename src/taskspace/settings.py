"""One validated settings object, built at start-up and passed in.

Sources, highest priority first: constructor arguments, ``TASKSPACE_*`` environment variables,
a TOML file (``TASKSPACE_CONFIG`` or ``./taskspace.toml``), defaults. Nothing reads the
environment at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from taskspace.core.repo_url import RepoUrlPolicy


class RegistryCredential(BaseModel):
    username: str
    password: SecretStr


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "taskspace"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASKSPACE_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir,
                           description="Where the database, mirrors, logs and keys live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL. Default: SQLite in the data dir. "
        "PostgreSQL: postgresql://user:pass@host/db.")
    host: str = Field("127.0.0.1", description="Address the server listens on.")
    port: int = Field(8080, ge=1, le=65535, description="Port the server listens on.")
    public_url: str | None = Field(None, description="URL people use to reach the server "
                                   "(links in the CLI and notifications). Default: http://HOST:PORT.")
    backend: str = Field("docker", description="Workspace backend (entry point in taskspace.backends).")
    docker_host: str | None = Field(None, description="Docker engine URL; default: DOCKER_HOST or the local socket.")
    workspace_network: str = Field(
        "per-workspace",
        description="Docker network for workspaces and their services: 'per-workspace' (a network "
        "each, services reachable by name), 'host', or the name of an existing network.")
    build_network: str | None = Field(
        None, description="Network mode of image builds' RUN steps (e.g. 'host'); default: the engine's.")
    secret_key: SecretStr | None = Field(
        None, description="Key-encryption keys of the token vault, '<id> <base64 32 bytes>' comma-separated, "
        "current first. Default: the key file.")
    key_file: Path | None = Field(None, description="File of the vault's keys (one a line, current first); "
                                  "created on first start. Default: DATA_DIR/secret.key.")
    registry_auth: dict[str, RegistryCredential] = Field(
        default_factory=dict, description="Container registry host → {username, password}: service credentials "
        "for pulling images and checking base images before a launch.")
    allowed_git_hosts: list[str] | None = Field(
        None, description="If set, only repositories on these hosts can be registered.")
    allowed_http_hosts: list[str] = Field(
        default_factory=list, description="Hosts that may be reached over plain http (internal git "
        "servers). Loopback hosts always may.")
    allowed_file_roots: list[Path] | None = Field(
        None, description="Folders whose repositories may be registered with file:// URLs. "
        "Default: DATA_DIR/demo only.")
    session_hours: float = Field(8.0, gt=0, description="Hours a browser session lasts without use.")
    oidc_issuer: str | None = Field(None, description="OpenID Connect issuer URL; enables single sign-on.")
    oidc_client_id: str | None = Field(None, description="OpenID Connect client id.")
    oidc_client_secret: SecretStr | None = Field(None, description="OpenID Connect client secret.")
    oidc_scopes: str = Field("openid email profile", description="Scopes asked of the identity provider.")
    oidc_username_claim: str = Field("preferred_username", description="Claim that names the user.")
    oidc_groups_claim: str = Field("groups", description="Claim that lists the user's groups.")
    oidc_role_map: dict[str, str] = Field(default_factory=dict, description="Group → role (developer, "
                                          "reviewer, admin), applied at every sign-in.")
    oidc_default_role: str = Field("developer", description="Role of a new single sign-on user without a "
                                   "mapped group.")
    trusted_proxies: list[str] = Field(default_factory=list, description="Addresses of reverse proxies whose "
                                       "X-Forwarded-For is believed (audit log source addresses).")
    reconcile_interval: float = Field(10.0, gt=0, description="Seconds between reconcile passes.")
    tracker_sync_interval: float = Field(60.0, gt=0, description="Seconds between incremental syncs of each "
                                         "external tracker (webhooks act at once).")
    orphan_grace: float = Field(600.0, ge=0, description="Seconds an unowned engine resource is "
                                "kept before it is removed.")
    lease_seconds: float = Field(30.0, gt=0, description="How long the reconciler's leadership "
                                 "lease lasts without renewal.")
    startup_timeout: float = Field(900.0, gt=0, description="Seconds the startup script and "
                                   "lifecycle commands may run.")
    build_timeout: float = Field(1800.0, gt=0, description="Seconds an image build may take.")
    workspace_pids_limit: int = Field(4096, ge=64, description="Default process limit per workspace and "
                                      "service container (a project may set its own).")
    workspace_cpus: float | None = Field(4.0, gt=0, description="Default CPUs per container (None: no limit).")
    workspace_memory: str | None = Field("8g", description="Default memory per container, e.g. 8g (None: no "
                                         "limit).")
    max_parallel_jobs: int = Field(8, ge=1, description="Workspaces the reconciler works on at once.")
    metrics_interval: float = Field(60.0, gt=0, description="Seconds between two samples of the running "
                                    "workspaces' CPU, memory and disk use (dashboard and /metrics).")
    metrics_retention_days: float = Field(14.0, gt=0, description="Days resource samples are kept.")
    activity_check_interval: float = Field(60.0, gt=0, description="Seconds between two checks of the running "
                                           "workspaces for an attached IDE (usage analytics' last activity).")
    pool_check_interval: float = Field(60.0, gt=0, description="Seconds between two checks that the spares of "
                                       "the warm pool still match their project's default branches.")
    pool_recycle_hours: float = Field(24.0, gt=0, description="Hours after which a spare of the warm pool is "
                                      "replaced by a fresh one.")
    smtp_host: str | None = Field(None, description="SMTP server that sends notification emails; None: no email.")
    smtp_port: int = Field(587, ge=1, le=65535, description="Port of the SMTP server.")
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="'starttls' (upgrade after connecting, usually port 587), 'tls' (TLS from the "
        "start, usually 465) or 'none' (a relay on a trusted network).")
    smtp_username: str | None = Field(None, description="SMTP login; None: send without logging in.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password of smtp_username.")
    smtp_from: str = Field("taskspace <taskspace@localhost>", description="From address of notification "
                           "emails, e.g. 'taskspace <taskspace@example.com>'.")
    notify_webhook_url: str | None = Field(None, description="A JSON (Slack-compatible) webhook that receives "
                                           "every notification, e.g. a team's channel.")
    notification_retries: int = Field(8, ge=0, description="Times a failed notification is retried (with "
                                      "exponential back-off) before it is given up.")
    housekeeping_interval: float = Field(300.0, gt=0, description="Seconds between housekeeping rounds "
                                         "(disk space check, retention).")
    disk_alert_percent: float = Field(90.0, ge=0, le=100, description="Admins are told when the data dir's or "
                                      "the engine's storage is fuller than this, in percent.")
    retention_days: float = Field(30.0, gt=0, description="Days build logs, events of purged workspaces, "
                                  "tracker deliveries and sent notifications are kept.")
    failpoints: str = Field("", description="Testing hook: 'step=seconds,...' pauses before steps.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get("TASKSPACE_CONFIG", "taskspace.toml")
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file))

    @field_validator("workspace_memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            from taskspace.core.sizes import parse_size

            try:
                parse_size(value)
            except Exception as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("workspace_network")
    @classmethod
    def _network(cls, value: str) -> str:
        if not value or value.startswith("-") or any(c.isspace() for c in value):
            raise ValueError("use 'per-workspace', 'host' or an existing network name")
        return value

    # Derived values -------------------------------------------------------------------------

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url or f"sqlite:///{self.data_dir / 'taskspace.db'}"
        for prefix, driver in (("postgresql://", "postgresql+asyncpg://"),
                               ("postgres://", "postgresql+asyncpg://"),
                               ("sqlite:///", "sqlite+aiosqlite:///")):
            if url.startswith(prefix):
                return driver + url[len(prefix):]
        return url

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in {"0.0.0.0", "::"} else self.host
        return f"http://{host}:{self.port}"

    @property
    def repo_url_policy(self) -> RepoUrlPolicy:
        roots = self.allowed_file_roots
        if roots is None:
            roots = [self.data_dir / "demo"]
        return RepoUrlPolicy(
            allowed_hosts=tuple(h.lower() for h in self.allowed_git_hosts) if self.allowed_git_hosts is not None else None,
            http_hosts=tuple(h.lower() for h in self.allowed_http_hosts),
            file_roots=tuple(str(Path(r).resolve()) for r in roots),
        )

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def failpoint_delays(self) -> dict[str, float]:
        delays: dict[str, float] = {}
        for item in filter(None, (p.strip() for p in self.failpoints.split(","))):
            name, _, seconds = item.partition("=")
            delays[name.strip()] = float(seconds or 0)
        return delays

    @property
    def vault_key_file(self) -> Path:
        return self.key_file or self.data_dir / "secret.key"

    @property
    def mirrors_dir(self) -> Path:
        return self.data_dir / "mirrors"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    def ensure_data_dir(self) -> None:
        """Create the data dir (private), with its mirrors and logs folders."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        # Workspace containers clone from the mirrors through a read-only bind mount, as their own
        # (often non-root) user: the mirrors folder must be traversable.
        self.mirrors_dir.mkdir(exist_ok=True)
        os.chmod(self.mirrors_dir, 0o755)
        os.chmod(self.data_dir, 0o711)
        self.logs_dir.mkdir(exist_ok=True)


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
