"""Names derived from user input: slugs, ticket branches, branch names and the key validators."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from taskspace.core.errors import InvalidInput
from taskspace.core.naming import (
    MAX_BRANCH_LENGTH,
    branch_problem,
    slugify,
    ticket_branch,
    validate_branch_name,
    validate_project_key,
    validate_repo_name,
    validate_ticket_key,
    validate_token_name,
)

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def invalid(call, *args, **kwargs) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)
    return caught.value


# --------------------------------------------------------------------------------------------
# slugify


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Fix login bug", "fix-login-bug"),
        ("  Fix   the  LOGIN   bug  ", "fix-the-login-bug"),
        ("Add OAuth2 (PKCE) support!", "add-oauth2-pkce-support"),
        ("snake_case and kebab-case", "snake-case-and-kebab-case"),
        ("v1.2.3 release", "v1-2-3-release"),
        ("Café crème brûlée", "cafe-creme-brulee"),
        ("Ångström naïve façade", "angstrom-naive-facade"),
        ("ＦＵＬＬ ｗｉｄｔｈ", "full-width"),
        ("ﬁle ﬂow", "file-flow"),
        ("Straße", "strae"),  # ß has no decomposition and is dropped
        ("日本語のタイトル", ""),
        ("🚀🔥", ""),
        ("Deploy 🚀 now", "deploy-now"),
        ("", ""),
        ("   ", ""),
        ("!!! ??? ...", ""),
        ("--", ""),
        ("42", "42"),
    ],
)
def test_slugify(title, slug):
    assert slugify(title) == slug


def test_slugify_cuts_long_titles_at_a_word_boundary():
    title = " ".join(["word"] * 20)  # nine words are 44 characters, ten would be 49

    assert slugify(title) == "-".join(["word"] * 9)


def test_slugify_keeps_a_title_of_exactly_the_limit():
    title = "a" * 20 + " " + "b" * 27  # 20 + 1 + 27 = 48

    assert slugify(title) == "a" * 20 + "-" + "b" * 27


def test_slugify_drops_the_word_that_would_pass_the_limit_even_if_later_ones_fit():
    assert slugify("aaaa bbbbbbbbbb c", max_length=8) == "aaaa"


def test_slugify_truncates_a_single_overlong_first_word():
    assert slugify("x" * 100) == "x" * 48
    assert slugify("abcdefghij klm", max_length=4) == "abcd"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.integers(min_value=1, max_value=80))
def test_slugify_always_gives_a_short_clean_slug(text, max_length):
    slug = slugify(text, max_length)

    assert slug == "" or SLUG_RE.match(slug)
    assert len(slug) <= max_length


# --------------------------------------------------------------------------------------------
# ticket_branch


@pytest.mark.parametrize(
    ("key", "title", "branch"),
    [
        ("PAY-123", "Fix login bug", "PAY-123-fix-login-bug"),
        ("PAY-123", "Crème brûlée à la carte", "PAY-123-creme-brulee-a-la-carte"),
        ("PAY-123", "", "PAY-123"),
        ("PAY-123", "日本語", "PAY-123"),
        ("PAY-123", "...", "PAY-123"),
        ("OPS2-7", " ".join(["word"] * 30), "OPS2-7-" + "-".join(["word"] * 9)),
    ],
)
def test_ticket_branch(key, title, branch):
    assert ticket_branch(key, title) == branch


def test_ticket_branch_refuses_a_key_git_would_read_as_an_option():
    error = invalid(ticket_branch, "-x", "title")

    assert "starts with '-'" in error.message


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"\A[A-Z][A-Z0-9]{1,9}-[1-9][0-9]{0,8}\Z"), st.text(max_size=500))
def test_ticket_branch_of_any_title_is_valid(key, title):
    branch = ticket_branch(key, title)

    assert branch.startswith(key)
    assert branch_problem(branch) is None


# --------------------------------------------------------------------------------------------
# branch_problem / validate_branch_name


@pytest.mark.parametrize(
    "name",
    [
        "main",
        "master",
        "feature/login",
        "PAY-123-fix-login-bug",
        "release/1.2.3",
        "user@example",
        "a@b",
        "ü-branch",
        "with.dot",
        "a.b/c.d",
        "x" * MAX_BRANCH_LENGTH,
        "a/b/c/d",
        "locked.lockx",
        "heads",
        "refsx/y",
    ],
)
def test_valid_branch_names(name):
    assert branch_problem(name) is None
    assert validate_branch_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "it is empty"),
        ("x" * (MAX_BRANCH_LENGTH + 1), "longer than 200 characters"),
        ("-x", "starts with '-'"),
        ("--upload-pack=touch /tmp/p", "starts with '-'"),
        ("-", "starts with '-'"),
        ("@", "'@' alone"),
        ("a\tb", "control character"),
        ("a\nb", "control character"),
        ("a\x00b", "control character"),
        ("a\x1bb", "control character"),
        ("a\x7fb", "control character"),
        ("a b", "contains ' '"),
        ("a~1", "contains '~'"),
        ("a^", "contains '^'"),
        ("a:b", "contains ':'"),
        ("a?", "contains '?'"),
        ("a*", "contains '*'"),
        ("a[b", "contains '['"),
        ("a\\b", "contains '\\\\'"),
        ("a..b", "contains '..'"),
        ("a/../b", "contains '..'"),
        ("a@{1}", "contains '@{'"),
        ("@{-1}", "contains '@{'"),
        ("/a", "empty path component"),
        ("a/", "empty path component"),
        ("a//b", "empty path component"),
        ("a.", "ends with '.'"),
        ("a/b.", "ends with '.'"),
        (".a", "a component starts with '.'"),
        ("a/.b", "a component starts with '.'"),
        ("a.lock", "ends with '.lock'"),
        ("a/b.lock/c", "ends with '.lock'"),
        ("refs/heads/main", "full ref name or HEAD"),
        ("HEAD", "full ref name or HEAD"),
    ],
)
def test_invalid_branch_names(name, reason):
    assert reason in branch_problem(name)

    error = invalid(validate_branch_name, name, field="source_branch")
    assert reason in error.message
    assert "is not a valid branch name" in error.message
    assert error.hint
    assert error.field == "source_branch"


def test_validate_branch_name_defaults_the_field_to_branch():
    assert invalid(validate_branch_name, "a b").field == "branch"


_GIT = shutil.which("git")

# Characters git treats specially, mixed with ordinary ones, so that many generated names are
# valid and many are just barely not.
_BRANCHY = st.text(alphabet="ab-_./@{}~^:?*[\\ \t\x7fé.lockHEADrefs", max_size=40)


def _git_accepts(name: str) -> bool:
    # ``--branch`` takes the next argument literally, also when it starts with '-'.
    result = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True,
                            cwd="/", check=False)
    return result.returncode == 0


@pytest.mark.skipif(_GIT is None, reason="git is not installed")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_BRANCHY, st.text(st.characters(exclude_categories=("Cs",)), max_size=60)))
def test_branch_problem_is_none_only_for_names_git_accepts(name):
    assume("\x00" not in name)  # a NUL cannot be passed in argv; branch_problem refuses it above
    if branch_problem(name) is None:
        assert _git_accepts(name), f"{name!r} passes branch_problem but git refuses it"
    if name.startswith("-"):
        assert branch_problem(name) is not None


@pytest.mark.skipif(_GIT is None, reason="git is not installed")
@pytest.mark.parametrize("name", ["-x", "--upload-pack=x", "-"])
def test_git_refuses_leading_dash_too(name):
    assert not _git_accepts(name)
    assert branch_problem(name) is not None


# --------------------------------------------------------------------------------------------
# Key and name validators


@pytest.mark.parametrize("key", ["PAY", "AB", "A1", "OPS2", "ABCDEFGHIJ"])
def test_valid_project_keys(key):
    assert validate_project_key(key) == key


@pytest.mark.parametrize(
    "key", ["", None, "P", "pay", "Pay", "1AB", "ABCDEFGHIJK", "PA-Y", "PA Y", " PAY", "PAY ", "PAY\n", "PÄY"]
)
def test_invalid_project_keys(key):
    error = invalid(validate_project_key, key)

    assert "is not a valid project key" in error.message
    assert "2 to 10 upper-case letters" in error.hint
    assert error.field == "key"


@pytest.mark.parametrize("key", ["PAY-1", "PAY-123", "A1-999999999", "ABCDEFGHIJ-42", "ABC_2-7",
                                 "PAY-123456789012", "ABCDEFGHIJKLMNOPQRSTUVWXYZABCD-1"])
def test_valid_ticket_keys(key):
    assert validate_ticket_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", None, "PAY", "PAY-", "PAY-0", "PAY-01", "pay-1", "PAY1", "P-1", "1PAY-1", "PAY-1234567890123",
     "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDE-1", "PAY-1 ", " PAY-1", "PAY-1\n", "PAY--1", "PAY-1a", "PAY_1", "_PAY-1"],
)
def test_invalid_ticket_keys(key):
    error = invalid(validate_ticket_key, key)

    assert "is not a ticket key" in error.message
    assert "PAY-123" in error.hint
    assert error.field == "key"


@pytest.mark.parametrize("name", ["api", "API", "web-app", "web_app", "my.repo", "1st", "a", "a" * 100, "a.git.x"])
def test_valid_repo_names(name):
    assert validate_repo_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", None, ".", "..", ".hidden", "-api", "_api", "api.git", "a/b", "a b", "api\n", "a" * 101, "ä", "a:b",
     "a\\b"],
)
def test_invalid_repo_names(name):
    error = invalid(validate_repo_name, name)

    assert "cannot be used as a repository directory name" in error.message
    assert "/workspace/<name>" in error.hint
    assert error.field == "name"


@pytest.mark.parametrize("name", ["ci", "CI-token", "deploy.bot_2", "x" * 64])
def test_valid_token_names(name):
    assert validate_token_name(name) == name


@pytest.mark.parametrize("name", ["", None, "-ci", ".ci", "ci token", "ci/x", "x" * 65, "ci\n", "tök"])
def test_invalid_token_names(name):
    error = invalid(validate_token_name, name)

    assert "is not a valid token name" in error.message
    assert "64" in error.hint
    assert error.field == "name"
