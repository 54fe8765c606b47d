"""Rules about the code base itself: layering, and documentation that stays true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from taskspace.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_imports_point_one_way() -> None:
    """core ← plugins, db, gitops ← services ← reconciler, web, cli (import-linter contracts in pyproject)."""
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower() or "0 broken" in result.stdout.lower()


def test_every_setting_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`TASKSPACE_([A-Z_]+)`", readme))
    missing = {name.upper() for name in Settings.model_fields} - documented
    assert not missing, f"settings missing from the README's configuration table: {sorted(missing)}"


def test_the_readme_opens_with_the_two_commands() -> None:
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:15])
    assert "uv run taskspace up" in first_screen
    assert "uv run pytest" in first_screen
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.rstrip().endswith("uv run pytest"), "CI runs exactly the README's test command"
