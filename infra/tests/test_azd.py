"""azure.yaml and the azd postdeploy hook: `azd up` provisions infra/, packages with scripts/package.sh into the
directory azd deploys, and the hook runs the second provisioning pass that adds the Event Grid subscription.
The hook is run for real with a stub `azd` on PATH that records its calls."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from conftest import REPO, main

HOOK = REPO / "infra" / "hooks" / "postdeploy.sh"


def test_azure_yaml_deploys_the_package_to_the_function_app():
    doc = yaml.safe_load((REPO / "azure.yaml").read_text())
    assert doc["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    svc = doc["services"]["patrol"]
    assert svc["host"] == "function"
    assert svc["language"] == "custom" and svc["dist"] == "dist/app"
    assert "scripts/package.sh --stage dist/app" in svc["hooks"]["prepackage"]["posix"]["run"]
    assert "infra/hooks/postdeploy.sh" in doc["hooks"]["postdeploy"]["posix"]["run"]
    # azd finds the app by this tag
    site_tags = (REPO / "infra" / "modules" / "functionapp.bicep").read_text()
    assert "'azd-service-name': azdServiceName" in site_tags
    assert "azdServiceName string = 'patrol'" in site_tags


def test_gitignore_keeps_the_package_out_of_git():
    assert "/dist" in (REPO / ".gitignore").read_text().split()


def run_hook(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    log = tmp_path / "azd.log"
    stub = tmp_path / "azd"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n')
    stub.chmod(0o755)
    r = subprocess.run(["bash", str(HOOK)], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", **env})
    calls = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return r, calls


def test_postdeploy_runs_the_second_pass(tmp_path):
    r, calls = run_hook(tmp_path, EVENT_SUBSCRIPTION_DEPLOYED="false")
    assert r.returncode == 0, r.stderr
    assert calls == [["env", "set", "DEPLOY_EVENT_SUBSCRIPTION", "true"], ["provision", "--no-prompt"]]
    # the variable it sets is the one main.parameters.json reads, for the parameter main.bicep gates on
    params = json.loads((REPO / "infra" / "main.parameters.json").read_text())["parameters"]
    assert "DEPLOY_EVENT_SUBSCRIPTION" in params["deployEventSubscription"]["value"]
    assert main()["modules"]["eventSubscription"]["config"]["condition"] == "deployEventSubscription"


def test_postdeploy_does_nothing_once_deployed_or_when_skipped(tmp_path):
    r, calls = run_hook(tmp_path, EVENT_SUBSCRIPTION_DEPLOYED="true")
    assert r.returncode == 0 and calls == []
    r, calls = run_hook(tmp_path, EVENT_SUBSCRIPTION_DEPLOYED="false", SKIP_EVENT_SUBSCRIPTION="true")
    assert r.returncode == 0 and calls == []
