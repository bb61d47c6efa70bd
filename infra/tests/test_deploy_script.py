"""scripts/deploy.sh, the long-deployment script, run for real against a stubbed Azure CLI: infra/tests/fake_az/az
is put first on PATH and plays Azure Resource Manager from a scenario (deployment states, a sign-in that expires
like a federated credential does, refresh failures). Nothing reaches Azure. Intervals are seconds, not minutes:
the script's timing options are the same ones an operator uses."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "deploy.sh"
FAKE_AZ_DIR = REPO / "infra" / "tests" / "fake_az"


class Az:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.log = tmp / "az.log"
        self.state = tmp / "az.state"
        self.scenario = tmp / "scenario.json"

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def commands(self, *prefix: str) -> list[list[str]]:
        return [c["argv"] for c in self.calls() if c["argv"][: len(prefix)] == list(prefix)]


@pytest.fixture()
def az(tmp_path: Path) -> Az:
    return Az(tmp_path)


def deploy(az: Az, scenario: dict, *args: str, env: dict | None = None, timeout: int = 60):
    az.scenario.write_text(json.dumps(scenario))
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("ACTIONS_ID_TOKEN", "AZURE_", "DEPLOY_", "PATROL_"))}
    full_env = {
        **base,
        "PATH": f"{FAKE_AZ_DIR}:{os.environ['PATH']}",
        "FAKE_AZ_SCENARIO": str(az.scenario), "FAKE_AZ_STATE": str(az.state), "FAKE_AZ_LOG": str(az.log),
        "AZURE_ENV_NAME": "prod", "AZURE_LOCATION": "swedencentral",
        **(env or {}),
    }
    return subprocess.run(["bash", str(SCRIPT), "--name", "patrol-test", "--poll-interval", "0.2",
                           "--retry-delay", "0.1", *args],
                          capture_output=True, text=True, env=full_env, timeout=timeout)


def test_succeeds_and_starts_without_waiting(az):
    r = deploy(az, {"states": ["Accepted", "Running", "Running", "Succeeded"]})
    assert r.returncode == 0, r.stderr
    creates = az.commands("deployment", "sub", "create")
    assert len(creates) == 1
    argv = creates[0]
    assert "--no-wait" in argv
    assert argv[argv.index("--name") + 1] == "patrol-test"
    assert argv[argv.index("--location") + 1] == "swedencentral"
    assert argv[argv.index("--template-file") + 1] == str(REPO / "infra" / "main.bicep")
    assert len(az.commands("deployment", "sub", "show")) == 4
    assert "succeeded" in r.stderr


def test_parameters_file_is_expanded_like_azd(az):
    r = deploy(az, {"states": ["Succeeded"]}, env={"PATROL_CLIENT_ID": "11111111-2222-3333-4444-555555555555"})
    assert r.returncode == 0, r.stderr
    create = [c for c in az.calls() if c["argv"][:3] == ["deployment", "sub", "create"]][0]
    params = create["parameter_files"][0]["parameters"]
    assert params["environmentName"]["value"] == "prod"
    assert params["location"]["value"] == "swedencentral"
    assert params["ownerClientId"]["value"] == "11111111-2222-3333-4444-555555555555"
    assert params["storageSkuName"]["value"] == "Standard_LRS"  # ${VAR=default}
    assert params["instanceMemoryMB"]["value"] == 512  # a number, as the template declares
    assert params["consumerPrincipals"]["value"] == []  # an array
    assert params["additionalAppSettings"]["value"] == {}  # an object, written in the file
    assert params["schedule"]["value"] == "0 0 3 * * *"
    assert params["deployEventSubscription"]["value"] is False  # a boolean, as the template declares
    assert params["resourceGroupName"]["value"] == ""


def test_second_pass_parameter_and_missing_variables(az):
    r = deploy(az, {"states": ["Succeeded"]}, "--param", "deployEventSubscription=true")
    assert r.returncode == 0, r.stderr
    argv = az.commands("deployment", "sub", "create")[0]
    assert "deployEventSubscription=true" in argv
    r = deploy(az, {"states": ["Succeeded"]}, env={"AZURE_ENV_NAME": ""})
    assert r.returncode == 2 and "AZURE_ENV_NAME" in r.stderr
    assert len(az.commands("deployment", "sub", "create")) == 1, "nothing started with a missing variable"


def test_failure_reports_errors_and_exits_1(az):
    r = deploy(az, {"states": ["Running", "Failed"]})
    assert r.returncode == 1
    assert "the vault name is taken" in r.stderr
    assert "ended in state Failed" in r.stderr
    assert az.commands("deployment", "operation", "sub", "list")


def test_canceled_is_a_failure(az):
    r = deploy(az, {"states": ["Running", "Canceled"]})
    assert r.returncode == 1 and "Canceled" in r.stderr


def test_refused_start_exits_1(az):
    r = deploy(az, {"states": ["Succeeded"], "create_error": "InvalidTemplate: fake"})
    assert r.returncode == 1 and "refused to start" in r.stderr
    assert not az.commands("deployment", "sub", "show")


def test_long_deployment_outlives_the_token_because_sign_in_is_renewed(az):
    # The sign-in lasts 1.5 s; the deployment runs ~3 s; the script renews every second.
    scenario = {"states": ["Running"] * 10 + ["Succeeded"], "token_lifetime": 1.5}
    r = deploy(az, scenario, "--refresh-every", "1")
    assert r.returncode == 0, r.stderr
    assert len(az.commands("account", "get-access-token")) >= 3
    assert "AADSTS700024" not in r.stderr


def test_expired_sign_in_is_renewed_on_demand(az):
    # No renewal is due for an hour, but the token lasts 1.5 s: the first poll after that fails with AADSTS700024,
    # and the script signs in again at once instead of giving up.
    scenario = {"states": ["Running"] * 10 + ["Succeeded"], "token_lifetime": 1.5}
    r = deploy(az, scenario, "--refresh-every", "3600", "--max-poll-errors", "2")
    assert r.returncode == 0, r.stderr
    assert "AADSTS700024" in r.stderr, "the expiry did happen"


def test_lost_sign_in_ends_unknown_not_failed(az):
    # A credential that cannot be renewed (every token request after the first fails).
    scenario = {"states": ["Running"] * 10 + ["Succeeded"], "token_lifetime": 1.5, "fail_refresh_after": 1}
    r = deploy(az, scenario, "--refresh-every", "3600", "--max-poll-errors", "2")
    assert r.returncode == 3, r.stderr
    assert "sign-in lost" in r.stderr
    assert "outcome of deployment 'patrol-test' is unknown" in r.stderr
    assert "keeps running in Azure" in r.stderr
    assert not az.commands("deployment", "sub", "cancel"), "never cancels what it cannot see"


def test_refresh_command_is_used(az, tmp_path):
    marker = tmp_path / "relogin.count"
    r = deploy(az, {"states": ["Running"] * 8 + ["Succeeded"]}, "--refresh-every", "1",
               "--refresh-command", f"echo again >> {marker}")
    assert r.returncode == 0, r.stderr
    assert len(marker.read_text().splitlines()) >= 2  # at start and at least once while polling


def test_github_oidc_relogin_when_in_actions(az, tmp_path):
    # A fake OIDC token endpoint is not needed: curl is stubbed next to az.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    curl = bin_dir / "curl"
    curl.write_text('#!/bin/sh\necho \'{"value": "fake-oidc-jwt"}\'\n')
    curl.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{FAKE_AZ_DIR}:{os.environ['PATH']}",
           "ACTIONS_ID_TOKEN_REQUEST_URL": "https://example.invalid/token?x=1",
           "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "req", "AZURE_CLIENT_ID": "cid", "AZURE_TENANT_ID": "tid",
           "AZURE_SUBSCRIPTION_ID": "sid"}
    r = deploy(az, {"states": ["Running"] * 5 + ["Succeeded"]}, "--refresh-every", "1", env=env)
    assert r.returncode == 0, r.stderr
    logins = az.commands("login")
    assert len(logins) >= 2
    assert logins[0][logins[0].index("--federated-token") + 1] == "fake-oidc-jwt"
    assert az.commands("account", "set")
    assert "fake-oidc-jwt" not in r.stdout + r.stderr


def test_timeout_leaves_the_deployment_running_unless_asked(az):
    r = deploy(az, {"states": ["Running"]}, "--timeout", "1")
    assert r.returncode == 3 and "still Running" in r.stderr
    assert not az.commands("deployment", "sub", "cancel")
    az.state.unlink()
    r = deploy(az, {"states": ["Running"]}, "--timeout", "1", "--cancel-on-timeout")
    assert r.returncode == 3
    assert az.commands("deployment", "sub", "cancel")


def test_resource_group_scope(az):
    r = deploy(az, {"states": ["Succeeded"]}, "--resource-group", "rg-patrol", "--template",
               str(REPO / "infra" / "modules" / "eventgrid-topic.bicep"), "--param", "location=swedencentral")
    assert r.returncode == 0, r.stderr
    argv = az.commands("deployment", "group", "create")[0]
    assert argv[argv.index("--resource-group") + 1] == "rg-patrol"
    assert "--location" not in argv
    assert not any(a.startswith("@") for a in argv), "main.parameters.json belongs to main.bicep only"
    show = az.commands("deployment", "group", "show")[0]
    assert show[show.index("--resource-group") + 1] == "rg-patrol"


def test_not_signed_in_starts_nothing(az):
    r = deploy(az, {"states": ["Succeeded"], "signed_in": False})
    assert r.returncode == 2 and "az login" in r.stderr
    assert not az.commands("deployment")


def test_tokens_are_never_printed(az):
    r = deploy(az, {"states": ["Running", "Succeeded"]}, "--refresh-every", "1")
    assert r.returncode == 0
    assert "FAKE-ACCESS-TOKEN" not in r.stdout + r.stderr
    assert "valid until" in r.stderr


@pytest.mark.parametrize("args", [["--poll-interval", "soon"], ["--refresh-every", "0"], ["--timeout", "-1"],
                                  ["--name", "bad name"], ["--param", "novalue"], ["--bogus"]])
def test_usage_errors(az, args):
    r = deploy(az, {"states": ["Succeeded"]}, *args)
    assert r.returncode == 2
    assert not az.commands("deployment")


def test_interrupt_leaves_the_deployment_running(az):
    import signal
    import time

    az.scenario.write_text(json.dumps({"states": ["Running"]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "DEPLOY_", "PATROL_"))}
    env.update(PATH=f"{FAKE_AZ_DIR}:{os.environ['PATH']}", FAKE_AZ_SCENARIO=str(az.scenario),
               FAKE_AZ_STATE=str(az.state), FAKE_AZ_LOG=str(az.log), AZURE_ENV_NAME="prod",
               AZURE_LOCATION="swedencentral")
    proc = subprocess.Popen(["bash", str(SCRIPT), "--name", "patrol-test", "--poll-interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 30
    while not az.commands("deployment", "sub", "show") and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "keeps running in Azure" in err and "az deployment sub show --name patrol-test" in err
    assert not az.commands("deployment", "sub", "cancel")
