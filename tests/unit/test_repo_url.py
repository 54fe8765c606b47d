"""Repository URL validation: what is accepted, what is refused and why, and the parsed parts."""

from __future__ import annotations

import pytest

from taskspace.core.errors import InvalidInput
from taskspace.core.repo_url import MAX_URL_LENGTH, RepoUrl, RepoUrlPolicy, is_loopback, parse_repo_url

POLICY = RepoUrlPolicy(http_hosts=("git.internal",), file_roots=("/srv/git",))
DEFAULT_HINT = "Use an https:// or ssh:// URL"


def refused(raw, policy: RepoUrlPolicy | None = POLICY) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_repo_url(raw, policy)
    return caught.value


# --------------------------------------------------------------------------------------------
# Refused, each with the reason and a hint


@pytest.mark.parametrize(
    ("raw", "reason", "hint"),
    [
        # git remote helpers run commands
        ("ext::sh -c touch% /tmp/pwned", "git remote helpers", DEFAULT_HINT),
        ("ext::sh%20-c%20id", "git remote helpers", DEFAULT_HINT),
        ("fd::3", "git remote helpers", DEFAULT_HINT),
        ("fd::3,4/repo", "git remote helpers", DEFAULT_HINT),
        ("transport::address", "git remote helpers", DEFAULT_HINT),
        ("git+ssh::host", "git remote helpers", DEFAULT_HINT),
        ("EXT::whatever", "git remote helpers", DEFAULT_HINT),
        # options
        ("-oProxyCommand=touch%20/tmp/x", "starts with '-'", DEFAULT_HINT),
        ("--upload-pack=touch%20/tmp/x", "starts with '-'", DEFAULT_HINT),
        ("--upload-pack=touch /tmp/x", "starts with '-'", DEFAULT_HINT),
        ("-oProxyCommand=x\n", "starts with '-'", DEFAULT_HINT),
        ("-", "starts with '-'", DEFAULT_HINT),
        ("user@-oProxyCommand=x:org/repo", "it is not a URL", DEFAULT_HINT),
        ("https://-h.example.com/a/b.git", "'-h.example.com' is not a valid host name", DEFAULT_HINT),
        # credentials
        ("https://user:pass@github.com/org/repo.git", "it contains credentials", "taskspace token add"),
        ("https://user@github.com/org/repo.git", "it contains credentials", "taskspace token add"),
        ("https://:pass@github.com/org/repo.git", "it contains credentials", "taskspace token add"),
        ("https://ghp_abc123@github.com/org/repo.git", "it contains credentials", "taskspace token add"),
        ("http://user:pw@127.0.0.1:8080/org/repo.git", "it contains credentials", "taskspace token add"),
        ("ssh://git:secret@github.com/org/repo.git", "it contains a password", DEFAULT_HINT),
        # unencrypted transports
        ("git://github.com/org/repo.git", "git:// is unauthenticated and unencrypted", DEFAULT_HINT),
        ("GIT://github.com/org/repo.git", "git:// is unauthenticated", DEFAULT_HINT),
        ("http://github.com/org/repo.git", "plain http sends tokens unencrypted", "TASKSPACE_ALLOWED_HTTP_HOSTS"),
        ("http://10.0.0.5/org/repo.git", "plain http", "TASKSPACE_ALLOWED_HTTP_HOSTS"),
        ("http://0x7f000001/org/repo.git", "plain http", "TASKSPACE_ALLOWED_HTTP_HOSTS"),
        ("http://[::ffff:127.0.0.1]/org/repo.git", "plain http", "TASKSPACE_ALLOWED_HTTP_HOSTS"),
        ("http://git.internal.evil.com/org/repo.git", "plain http", "TASKSPACE_ALLOWED_HTTP_HOSTS"),
        ("ftp://github.com/org/repo.git", "the scheme 'ftp' is not supported", DEFAULT_HINT),
        ("rsync://github.com/org/repo.git", "the scheme 'rsync' is not supported", DEFAULT_HINT),
        # file://
        ("file:///etc/repo.git", "file:// repositories are not enabled for this path", "TASKSPACE_ALLOWED_FILE_ROOTS"),
        ("file:///srv/gitx/repo.git", "not enabled for this path", "TASKSPACE_ALLOWED_FILE_ROOTS"),
        ("file:///srv/repo.git", "not enabled for this path", "TASKSPACE_ALLOWED_FILE_ROOTS"),
        ("file://host/srv/git/repo.git", "a file:// URL cannot name a host", DEFAULT_HINT),
        ("file://127.0.0.1/srv/git/repo.git", "cannot name a host", DEFAULT_HINT),
        ("file:///srv/git/../../etc/repo.git", "its path contains '.' or '..'", DEFAULT_HINT),
        ("file:///srv/git/./repo.git", "its path contains '.' or '..'", DEFAULT_HINT),
        ("file:///", "it names no repository", DEFAULT_HINT),
        # paths
        ("https://github.com/org/../repo.git", "its path contains '.' or '..'", DEFAULT_HINT),
        ("https://github.com/../../repo.git", "its path contains '.' or '..'", DEFAULT_HINT),
        ("git@github.com:../repo.git", "its path contains '.' or '..'", DEFAULT_HINT),
        ("ssh://git@github.com/org/./repo.git", "its path contains '.' or '..'", DEFAULT_HINT),
        ("https://github.com/", "it names no repository", DEFAULT_HINT),
        ("https://github.com", "it names no repository", DEFAULT_HINT),
        ("git@github.com:/", "it names no repository", DEFAULT_HINT),
        # query strings and fragments
        ("https://github.com/org/repo.git?ref=main", "query string or fragment", DEFAULT_HINT),
        ("https://github.com/org/repo.git#main", "query string or fragment", DEFAULT_HINT),
        ("file:///srv/git/repo.git?x=1", "query string or fragment", DEFAULT_HINT),
        # whitespace, control characters
        (" https://github.com/org/repo.git", "spaces or control characters", DEFAULT_HINT),
        ("https://github.com/org/repo.git\n", "spaces or control characters", DEFAULT_HINT),
        ("https://github.com/org/repo.git\n--upload-pack=x", "spaces or control characters", DEFAULT_HINT),
        ("https://github.com/org/re po.git", "spaces or control characters", DEFAULT_HINT),
        ("https://github.com/org/repo\x00.git", "spaces or control characters", DEFAULT_HINT),
        ("https://github.com/org/repo\t.git", "spaces or control characters", DEFAULT_HINT),
        ("https://github.com/org/repo\x7f.git", "spaces or control characters", DEFAULT_HINT),
        ("https://github.com/org/repo\u00a0.git", "spaces or control characters", DEFAULT_HINT),
        ("https://github.com/org/repo\u2028.git", "spaces or control characters", DEFAULT_HINT),
        # empty
        ("", "it is empty", DEFAULT_HINT),
        ("   ", "it is empty", DEFAULT_HINT),
        ("\n", "it is empty", DEFAULT_HINT),
        # hosts
        ("https://bücher.example/org/repo.git", "'bücher.example' is not a valid host name", DEFAULT_HINT),
        ("https://gitһub.com/org/repo.git", "is not a valid host name", DEFAULT_HINT),  # Cyrillic һ
        ("https://git_hub.com/org/repo.git", "'git_hub.com' is not a valid host name", DEFAULT_HINT),
        ("https://github.com./org/repo.git", "is not a valid host name", DEFAULT_HINT),
        ("https://" + "a" * 64 + ".com/org/repo.git", "is not a valid host name", DEFAULT_HINT),
        ("https:///org/repo.git", "it has no host", DEFAULT_HINT),
        ("https://github.com:99999/org/repo.git", "it cannot be parsed", DEFAULT_HINT),
        ("https://github.com:port/org/repo.git", "it cannot be parsed", DEFAULT_HINT),
        ("https://[::1/org/repo.git", "it cannot be parsed", DEFAULT_HINT),
        # not URLs at all, and scp-like edge cases
        ("/srv/git/repo.git", "it is not a URL", DEFAULT_HINT),
        ("../../etc/passwd", "it is not a URL", DEFAULT_HINT),
        ("./repo", "it is not a URL", DEFAULT_HINT),
        ("repo.git", "it is not a URL", DEFAULT_HINT),
        ("git@github.com:", "it is not a URL", DEFAULT_HINT),
        ("git@:org/repo.git", "it is not a URL", DEFAULT_HINT),
        ("git@git_hub.com:org/repo.git", "it is not a URL", DEFAULT_HINT),
        ("GitHub.Com:org/repo:x", "its last path component 'repo:x' cannot be a directory name", DEFAULT_HINT),
        ("C:\\repos\\api", "its last path component '\\\\repos\\\\api' cannot be a directory name", DEFAULT_HINT),
        # names that cannot be a directory under /workspace
        ("https://github.com/org/.git", "its last path component '.git' cannot be a directory name", DEFAULT_HINT),
        ("https://github.com/org/-repo.git", "a path component starts with '-'", DEFAULT_HINT),
        ("https://github.com/org/.hidden", "'.hidden' cannot be a directory name", DEFAULT_HINT),
        ("https://github.com/org/%2e%2e", "'%2e%2e' cannot be a directory name", DEFAULT_HINT),
        ("https://github.com/org/repo%0a", "'repo%0a' cannot be a directory name", DEFAULT_HINT),
        ("https://github.com/org/" + "r" * 101, "cannot be a directory name", DEFAULT_HINT),
        ("git@github.com:org/ré po.git", "spaces or control characters", DEFAULT_HINT),
        ("git@github.com:org/répo.git", "'répo.git' cannot be a directory name", DEFAULT_HINT),
        # overlong
        ("https://github.com/" + "a/" * MAX_URL_LENGTH + "repo.git", "longer than 2048 characters", DEFAULT_HINT),
    ],
)
def test_refused_urls_say_why_and_what_to_do(raw, reason, hint):
    error = refused(raw)

    assert error.message.startswith("Repository URL ")
    assert "is not accepted" in error.message
    assert reason in error.message
    assert hint in error.hint
    assert error.field == "url"


def test_a_refused_overlong_url_is_shortened_in_the_message():
    raw = "https://github.com/" + "x" * 5000

    error = refused(raw)

    assert len(error.message) < 250
    assert "..." in error.message


def test_a_non_string_is_refused_as_empty():
    assert "it is empty" in refused(None).message


# Gaps: git itself refuses these ("strange hostname/pathname blocked"), so they cannot run an
# option, but the validator promises to refuse anything git could read as an option.
@pytest.mark.parametrize(
    "raw",
    ["ssh://-oProxyCommand=x@github.com/org/repo.git", "git@github.com:-oProxyCommand=x/repo.git"],
)
def test_option_like_ssh_user_or_path_is_refused(raw):
    refused(raw)


# --------------------------------------------------------------------------------------------
# Accepted


@pytest.mark.parametrize(
    ("raw", "scheme", "host", "port", "path", "url"),
    [
        ("https://github.com/org/repo.git", "https", "github.com", None, "/org/repo.git",
         "https://github.com/org/repo.git"),
        ("https://github.com/org/repo.git/", "https", "github.com", None, "/org/repo.git",
         "https://github.com/org/repo.git"),
        ("HTTPS://GitHub.COM/Org/Repo.git", "https", "github.com", None, "/Org/Repo.git",
         "https://github.com/Org/Repo.git"),
        ("https://git.example.com:8443/team/api", "https", "git.example.com", 8443, "/team/api",
         "https://git.example.com:8443/team/api"),
        ("https://xn--bcher-kva.example/org/repo.git", "https", "xn--bcher-kva.example", None, "/org/repo.git",
         "https://xn--bcher-kva.example/org/repo.git"),
        ("https://10.1.2.3/org/repo.git", "https", "10.1.2.3", None, "/org/repo.git",
         "https://10.1.2.3/org/repo.git"),
        # plain http: loopback always, listed hosts too
        ("http://127.0.0.1:8080/org/repo.git", "http", "127.0.0.1", 8080, "/org/repo.git",
         "http://127.0.0.1:8080/org/repo.git"),
        ("http://127.9.9.9/org/repo.git", "http", "127.9.9.9", None, "/org/repo.git",
         "http://127.9.9.9/org/repo.git"),
        ("http://localhost/org/repo", "http", "localhost", None, "/org/repo", "http://localhost/org/repo"),
        ("http://LOCALHOST:3000/org/repo", "http", "localhost", 3000, "/org/repo",
         "http://localhost:3000/org/repo"),
        ("http://[::1]:9000/org/repo.git", "http", "::1", 9000, "/org/repo.git",
         "http://[::1]:9000/org/repo.git"),
        ("http://git.internal/org/repo.git", "http", "git.internal", None, "/org/repo.git",
         "http://git.internal/org/repo.git"),
        ("http://GIT.internal:81/org/repo.git", "http", "git.internal", 81, "/org/repo.git",
         "http://git.internal:81/org/repo.git"),
        # ssh and scp-like
        ("ssh://git@github.com/org/repo.git", "ssh", "github.com", None, "/org/repo.git",
         "ssh://git@github.com/org/repo.git"),
        ("ssh://git@GitHub.com:2222/org/repo.git", "ssh", "github.com", 2222, "/org/repo.git",
         "ssh://git@GitHub.com:2222/org/repo.git"),
        ("git+ssh://git@github.com/org/repo.git", "ssh", "github.com", None, "/org/repo.git",
         "ssh://git@github.com/org/repo.git"),
        ("ssh+git://github.com/org/repo", "ssh", "github.com", None, "/org/repo", "ssh://github.com/org/repo"),
        ("ssh://[::1]/org/repo.git", "ssh", "::1", None, "/org/repo.git", "ssh://[::1]/org/repo.git"),
        ("git@github.com:org/repo.git", "ssh", "github.com", None, "org/repo.git",
         "git@github.com:org/repo.git"),
        ("git@GitHub.com:org/repo.git/", "ssh", "github.com", None, "org/repo.git",
         "git@GitHub.com:org/repo.git/"),
        ("github.com:org/repo.git", "ssh", "github.com", None, "org/repo.git", "github.com:org/repo.git"),
        ("git@github.com:/srv/repo.git", "ssh", "github.com", None, "/srv/repo.git",
         "git@github.com:/srv/repo.git"),
        ("deploy.bot@git.example.com:repo", "ssh", "git.example.com", None, "repo",
         "deploy.bot@git.example.com:repo"),
        # file:// under a listed root; the URL is normalized to the path
        ("file:///srv/git/team/api.git", "file", "", None, "/srv/git/team/api.git",
         "file:///srv/git/team/api.git"),
        ("file://localhost/srv/git/api.git/", "file", "", None, "/srv/git/api.git", "file:///srv/git/api.git"),
        ("file:///srv/git//team//api", "file", "", None, "/srv/git//team//api", "file:///srv/git//team//api"),
        # an empty query is no query
        ("https://github.com/org/repo.git?", "https", "github.com", None, "/org/repo.git",
         "https://github.com/org/repo.git"),
    ],
)
def test_accepted_urls(raw, scheme, host, port, path, url):
    parsed = parse_repo_url(raw, POLICY)

    assert parsed == RepoUrl(url=url, scheme=scheme, host=host, port=port, path=path)


def test_without_a_policy_only_loopback_http_and_no_file_urls_are_accepted():
    assert parse_repo_url("http://127.0.0.1/org/repo.git").scheme == "http"
    assert "plain http" in refused("http://git.internal/org/repo.git", None).message
    assert "not enabled for this path" in refused("file:///srv/git/repo.git", None).message


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("127.255.0.1", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("10.0.0.1", False), ("::", False), ("localhost.example.com", False),
     ("LOCALHOST", False), ("github.com", False), ("", False)],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


# --------------------------------------------------------------------------------------------
# allowed_hosts


GITHUB_ONLY = RepoUrlPolicy(allowed_hosts=("github.com",), file_roots=("/srv/git",))


@pytest.mark.parametrize(
    "raw",
    [
        "https://github.com/org/repo.git",
        "https://GitHub.com/org/repo.git",
        "https://github.com:8443/org/repo.git",
        "ssh://git@github.com/org/repo.git",
        "git@github.com:org/repo.git",
        "file:///srv/git/repo.git",  # file:// names no host; the roots decide
    ],
)
def test_allowed_hosts_accepts_listed_hosts(raw):
    parse_repo_url(raw, GITHUB_ONLY)


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        ("https://gitlab.com/org/repo.git", "gitlab.com"),
        ("https://github.com.evil.example/org/repo.git", "github.com.evil.example"),
        ("https://api.github.com/org/repo.git", "api.github.com"),
        ("git@gitlab.com:org/repo.git", "gitlab.com"),
        ("ssh://git@gitlab.com/org/repo.git", "gitlab.com"),
        ("http://127.0.0.1/org/repo.git", "127.0.0.1"),
    ],
)
def test_allowed_hosts_refuses_other_hosts(raw, host):
    error = refused(raw, GITHUB_ONLY)

    assert f"host {host!r} is not in the allowed list (github.com)" in error.message
    assert "TASKSPACE_ALLOWED_GIT_HOSTS" in error.hint


def test_an_empty_allowed_list_refuses_every_host():
    error = refused("https://github.com/org/repo.git", RepoUrlPolicy(allowed_hosts=()))

    assert "is not in the allowed list (none)" in error.message


def test_an_http_host_must_also_be_an_allowed_host():
    policy = RepoUrlPolicy(allowed_hosts=("github.com",), http_hosts=("git.internal",))

    assert "not in the allowed list" in refused("http://git.internal/org/repo.git", policy).message


# --------------------------------------------------------------------------------------------
# RepoUrl properties


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("https://github.com/org/repo.git", "repo"),
        ("https://github.com/org/repo", "repo"),
        ("https://github.com/org/repo.git/", "repo"),
        ("https://github.com/org/sub/group/api-server.git", "api-server"),
        ("https://github.com/org/my.lib.git", "my.lib"),
        ("https://github.com/org/repo.git.git", "repo.git"),
        ("git@github.com:org/repo.git", "repo"),
        ("git@github.com:repo", "repo"),
        ("file:///srv/git/team/api.git", "api"),
    ],
)
def test_name(raw, name):
    assert parse_repo_url(raw, POLICY).name == name


@pytest.mark.parametrize(
    ("raw", "host_port"),
    [
        ("https://github.com/org/repo.git", "github.com"),
        ("https://git.example.com:8443/org/repo.git", "git.example.com:8443"),
        ("http://127.0.0.1:8080/org/repo.git", "127.0.0.1:8080"),
        ("git@github.com:org/repo.git", "github.com"),
        ("ssh://git@github.com:2222/org/repo.git", "github.com:2222"),
        ("file:///srv/git/repo.git", ""),
    ],
)
def test_host_port(raw, host_port):
    assert parse_repo_url(raw, POLICY).host_port == host_port


def test_host_port_of_an_ipv6_host_is_written_as_in_the_url():
    assert parse_repo_url("http://[::1]:9000/org/repo.git").host_port == "[::1]:9000"


@pytest.mark.parametrize(
    ("raw", "uses_token"),
    [
        ("https://github.com/org/repo.git", True),
        ("http://127.0.0.1/org/repo.git", True),
        ("ssh://git@github.com/org/repo.git", False),
        ("git@github.com:org/repo.git", False),
        ("file:///srv/git/repo.git", False),
    ],
)
def test_uses_token(raw, uses_token):
    assert parse_repo_url(raw, POLICY).uses_token is uses_token
