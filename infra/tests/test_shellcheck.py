"""The deployment scripts pass shellcheck (installed by scripts/setup.sh)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import REPO

SCRIPTS = ["scripts/package.sh", "scripts/deploy.sh", "infra/hooks/postdeploy.sh"]


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (scripts/setup.sh installs it)")
def test_scripts_pass_shellcheck():
    r = subprocess.run(["shellcheck", *SCRIPTS], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
