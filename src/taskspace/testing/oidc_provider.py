"""A small but real OpenID Connect provider for tests: discovery, authorization code flow with
PKCE, client authentication, RS256-signed ID tokens and a JWKS endpoint, on 127.0.0.1.

The authorization endpoint signs in ``provider.user`` (claims the test sets) without a form:
the browser part of a login is not what the tests are about.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import RSAKey


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    nonce: str | None
    challenge: str | None
    claims: dict[str, Any]
    expires: float


@dataclass
class OidcProvider:
    client_id: str = "taskspace"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    redirect_uris: list[str] = field(default_factory=list)
    user: dict[str, Any] = field(default_factory=lambda: {"sub": "u-1", "preferred_username": "dana",
                                                           "email": "dana@example.com", "name": "Dana"})
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(4)})
        self.signing_key = self.key  # a test swaps this to sign with a key the JWKS does not publish
        self._grants: dict[str, _Grant] = {}
        self._server: ThreadingHTTPServer | None = None
        self.token_requests = 0

    @property
    def issuer(self) -> str:
        assert self._server is not None, "start the provider first"
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> Self:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                provider._get(self)

            def do_POST(self) -> None:
                provider._post(self)

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # Endpoints ---------------------------------------------------------------------------------

    def _json(self, handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        handler.wfile.write(data)

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        if url.path == "/.well-known/openid-configuration":
            self._json(handler, 200, {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "scopes_supported": ["openid", "email", "profile"],
            })
        elif url.path == "/jwks":
            self._json(handler, 200, {"keys": [self.key.as_dict(private=False)]})
        elif url.path == "/authorize":
            self._authorize(handler, {k: v[0] for k, v in parse_qs(url.query).items()})
        else:
            self._json(handler, 404, {"error": "not_found"})

    def _authorize(self, handler: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        if query.get("client_id") != self.client_id or query.get("redirect_uri") not in self.redirect_uris:
            self._json(handler, 400, {"error": "invalid_request", "error_description": "unknown client or redirect"})
            return
        if query.get("response_type") != "code" or "openid" not in query.get("scope", "").split():
            self._json(handler, 400, {"error": "invalid_request"})
            return
        code = secrets.token_urlsafe(16)
        self._grants[code] = _Grant(client_id=self.client_id, redirect_uri=query["redirect_uri"],
                                    nonce=query.get("nonce"), challenge=query.get("code_challenge"),
                                    claims=dict(self.user), expires=time.time() + 60)
        target = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query.get('state', '')})}"
        handler.send_response(302)
        handler.send_header("Location", target)
        handler.end_headers()

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        if urlsplit(handler.path).path != "/token":
            self._json(handler, 404, {"error": "not_found"})
            return
        self.token_requests += 1
        length = int(handler.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(handler.rfile.read(length).decode()).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = handler.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        if client_id != self.client_id or client_secret != self.client_secret:
            self._json(handler, 401, {"error": "invalid_client"})
            return
        grant = self._grants.pop(form.get("code", ""), None)
        if grant is None or grant.expires < time.time() or form.get("redirect_uri") != grant.redirect_uri:
            self._json(handler, 400, {"error": "invalid_grant"})
            return
        if grant.challenge:
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if digest != grant.challenge:
                self._json(handler, 400, {"error": "invalid_grant", "error_description": "PKCE check failed"})
                return
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + 300, **grant.claims}
        if grant.nonce:
            claims["nonce"] = grant.nonce
        id_token = jwt.encode({"alg": "RS256", "kid": self.signing_key.kid}, claims, self.signing_key)
        self._json(handler, 200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                                  "expires_in": 300, "id_token": id_token})
