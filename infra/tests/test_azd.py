"""azure.yaml and the azd postdeploy hook: `azd up` provisions infra/, packages with scripts/package.sh into the
directory azd deploys, and the hook runs the second provisioning pass that adds the Event Grid subscription.
The hooks run for real in test_trust_boundaries.py, with stub `az` and `azd` commands on PATH."""
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


def test_postdeploy_sets_the_variable_the_template_gates_on_and_never_nests_azd_provision():
    """The hook itself runs in test_trust_boundaries.py (stub az/azd); here: the variable chain."""
    hook = HOOK.read_text()
    commands = [line.strip() for line in hook.splitlines() if not line.lstrip().startswith(("#", "echo"))]
    assert not [c for c in commands if c.startswith("azd provision")], "a nested azd provision hangs in a hook"
    assert "azd env set DEPLOY_EVENT_SUBSCRIPTION true" in hook
    params = json.loads((REPO / "infra" / "main.parameters.json").read_text())["parameters"]
    assert "DEPLOY_EVENT_SUBSCRIPTION" in params["deployEventSubscription"]["value"]
    assert main()["modules"]["eventSubscription"]["config"]["condition"] == "deployEventSubscription"


def test_postdeploy_does_nothing_once_deployed_or_when_skipped(tmp_path):
    r, calls = run_hook(tmp_path, EVENT_SUBSCRIPTION_DEPLOYED="true")
    assert r.returncode == 0 and calls == []
    r, calls = run_hook(tmp_path, EVENT_SUBSCRIPTION_DEPLOYED="false", SKIP_EVENT_SUBSCRIPTION="true")
    assert r.returncode == 0 and calls == []


def test_every_azd_variable_in_the_docs_reaches_the_template():
    """`azd env set X …` in docs/deploy.md only helps if main.parameters.json (or a hook) reads X."""
    import re

    doc = (REPO / "docs" / "deploy.md").read_text()
    params = (REPO / "infra" / "main.parameters.json").read_text()
    hook = HOOK.read_text() + (REPO / "infra" / "hooks" / "preprovision.sh").read_text()
    azd_own = {"AZURE_LOCATION", "AZURE_ENV_NAME", "AZURE_SUBSCRIPTION_ID"}
    names = set(re.findall(r"azd env set ([A-Z_]+)", doc))
    assert names, "docs/deploy.md shows no azd variables"
    for name in names - azd_own:
        assert "${" + name in params or name in hook, f"docs/deploy.md sets {name}, which nothing reads"


def test_every_azd_value_the_docs_read_is_a_template_output():
    import re

    doc = (REPO / "docs" / "deploy.md").read_text()
    outputs = set(main()["outputs"])
    read = set(re.findall(r"azd env get-value ([A-Z_]+)", doc)) | set(re.findall(r"`(AZURE_[A-Z_]+)`", doc))
    read -= {"AZURE_PRINCIPAL_ID", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"} - outputs  # set by azd / the CI job
    assert read, "docs/deploy.md reads no azd values"
    assert read <= outputs, f"docs/deploy.md reads {read - outputs}, which main.bicep does not output"
