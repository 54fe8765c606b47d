"""A logging filter that replaces every stored secret with ``***`` should one reach a log line."""

from __future__ import annotations

import logging
import threading

MIN_SECRET = 6  # shorter values would redact ordinary words


class SecretRedactor(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self.version: tuple[int, int] = (0, 0)

    def add(self, secret: str) -> None:
        if len(secret) >= MIN_SECRET:
            with self._lock:
                self._secrets = self._secrets | {secret}

    def replace_all(self, secrets: set[str]) -> None:
        with self._lock:
            self._secrets = frozenset(s for s in secrets if len(s) >= MIN_SECRET)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = record.getMessage()
            cleaned = self.redact(message)
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self.redact(record.exc_text)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True

    def install(self) -> None:
        """On every handler of the root logger and of the server's own loggers."""
        for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
            for handler in logging.getLogger(name).handlers:
                if self not in handler.filters:
                    handler.addFilter(self)
