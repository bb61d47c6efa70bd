"""scripts/package.sh: the deployment zip has exactly host.json, the three function folders, patrol.toml and an
executable `handler` at its root, with Unix modes preserved, and refuses inputs that would not run on the host.
The real musl release build is not repeated here (CI time): the script's --binary option packages a stand-in
(a minimal static ELF made below, or a dynamically linked one to check the refusal)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "package.sh"
ENTRIES = {
    "host.json", "handler", "patrol.toml",
    "RotateTimer/function.json", "RotateHttp/function.json", "EventGridSecretChanged/function.json",
}
HOST_JSON = {
    "version": "2.0",
    "customHandler": {"description": {"defaultExecutablePath": "handler", "workingDirectory": "", "arguments": []},
                      "enableForwardingHttpRequest": False},
    "extensionBundle": {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"},
}
FUNCTIONS = {
    "RotateTimer": {"bindings": [{"name": "myTimer", "type": "timerTrigger", "direction": "in",
                                  "schedule": "%PATROL_SCHEDULE%"}]},
    "RotateHttp": {"bindings": [{"name": "req", "type": "httpTrigger", "direction": "in", "authLevel": "function",
                                 "methods": ["post"]}, {"name": "res", "type": "http", "direction": "out"}]},
    "EventGridSecretChanged": {"bindings": [{"name": "eventGridEvent", "type": "eventGridTrigger",
                                             "direction": "in"}]},
}


def static_elf() -> bytes:
    """A minimal static ELF64 x86-64 executable header: one PT_LOAD segment, no PT_INTERP."""
    ehdr = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, b"\0" * 7,
                       2, 62, 1, 0x400078, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, 0x80, 0x80, 0x1000)
    return ehdr + phdr + b"\xb8\x3c\x00\x00\x00\x31\xff\x0f\x05"  # exit(0)


def dynamic_elf() -> Path:
    debug = REPO / "target" / "debug" / "patrol"
    return debug if debug.is_file() else Path(os.path.realpath(sys.executable))


@pytest.fixture()
def app(tmp_path: Path) -> dict:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "host.json").write_text(json.dumps(HOST_JSON, indent=2))
    for name, doc in FUNCTIONS.items():
        (app_dir / name).mkdir()
        (app_dir / name / "function.json").write_text(json.dumps(doc))
    # things that must never be packaged
    (app_dir / "local.settings.json").write_text('{"Values": {"PATROL_SMTP_PASSWORD": "hunter2"}}')
    (app_dir / "target").mkdir()
    (app_dir / "target" / "junk").write_text("x")
    (app_dir / "RotateTimer" / "notes.txt").write_text("not a function file")
    policy = tmp_path / "patrol.toml"
    policy.write_text('[defaults]\nlifetime_days = 7\n')
    binary = tmp_path / "handler-bin"
    binary.write_bytes(static_elf())
    binary.chmod(0o644)  # the script must set the execute bit itself
    return {"dir": app_dir, "policy": policy, "binary": binary, "out": tmp_path / "out" / "app.zip", "tmp": tmp_path}


def run(*args: str | Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def package(app: dict, *extra: str | Path) -> subprocess.CompletedProcess:
    return run("--binary", app["binary"], "--policy", app["policy"], "--app-dir", app["dir"], "--out", app["out"],
               *extra)


def test_zip_layout_and_modes(app):
    r = package(app)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == app["out"]
    with zipfile.ZipFile(app["out"]) as z:
        infos = {i.filename: i for i in z.infolist()}
        assert set(infos) == ENTRIES, "exactly the package files, at the zip root, no directory entries"
        for name, info in infos.items():
            assert info.create_system == 3, f"{name}: made on Unix, so the mode is honoured"
            mode = info.external_attr >> 16
            assert stat.S_ISREG(mode), name
            expected = 0o755 if name == "handler" else 0o644
            assert stat.S_IMODE(mode) == expected, f"{name}: mode {oct(stat.S_IMODE(mode))}"
        assert z.read("handler") == static_elf()
        assert json.loads(z.read("host.json"))["customHandler"]["description"]["defaultExecutablePath"] == "handler"
        assert z.read("patrol.toml") == app["policy"].read_bytes()
        assert json.loads(z.read("EventGridSecretChanged/function.json")) == FUNCTIONS["EventGridSecretChanged"]
        assert z.testzip() is None
    check = subprocess.run(["sha256sum", "-c", app["out"].name + ".sha256"], cwd=app["out"].parent,
                           capture_output=True, text=True)
    assert check.returncode == 0 and ": OK" in check.stdout


def test_unzip_on_linux_restores_the_execute_bit(app, tmp_path):
    assert package(app).returncode == 0
    dest = tmp_path / "unzipped"
    subprocess.run(["unzip", "-q", str(app["out"]), "-d", str(dest)], check=True)
    assert os.access(dest / "handler", os.X_OK)
    assert not os.access(dest / "host.json", os.X_OK)


def test_same_inputs_same_bytes(app, tmp_path):
    assert package(app).returncode == 0
    first = hashlib.sha256(app["out"].read_bytes()).hexdigest()
    os.utime(app["policy"], (1_700_000_000, 1_700_000_000))  # a different mtime must not matter
    assert package(app).returncode == 0
    assert hashlib.sha256(app["out"].read_bytes()).hexdigest() == first


def test_missing_policy_fails_clearly(app):
    app["policy"].unlink()
    r = package(app)
    assert r.returncode == 1
    assert "policy file not found" in r.stderr and str(app["policy"]) in r.stderr
    assert not app["out"].exists()


def test_default_policy_is_patrol_toml_at_the_repo_root(app):
    r = run("--binary", app["binary"], "--app-dir", app["dir"], "--out", app["out"])
    if (REPO / "patrol.toml").is_file():
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == 1 and str(REPO / "patrol.toml") in r.stderr


def test_invalid_policy_toml_is_refused(app):
    app["policy"].write_text("[defaults\nlifetime_days = ")
    r = package(app)
    assert r.returncode == 1 and "not valid TOML" in r.stderr


def test_host_json_must_name_the_handler(app):
    doc = dict(HOST_JSON, customHandler={"description": {"defaultExecutablePath": "patrol"}})
    (app["dir"] / "host.json").write_text(json.dumps(doc))
    r = package(app)
    assert r.returncode == 1 and "defaultExecutablePath" in r.stderr and "'patrol'" in r.stderr


def test_function_folders_are_checked(app):
    shutil.rmtree(app["dir"] / "RotateHttp")
    r = package(app)
    assert r.returncode == 1 and "RotateHttp/function.json" in r.stderr
    (app["dir"] / "RotateHttp").mkdir()
    (app["dir"] / "RotateHttp" / "function.json").write_text(json.dumps(FUNCTIONS["RotateTimer"]))
    r = package(app)
    assert r.returncode == 1 and "no httpTrigger binding" in r.stderr


def test_trigger_binding_names_follow_the_handlers_function_table(app):
    """The binding names come from FUNCTIONS in src/handler/functions.rs (the key the handler reads)."""
    renamed = json.loads(json.dumps(FUNCTIONS["RotateTimer"]))
    renamed["bindings"][0]["name"] = "timer"
    (app["dir"] / "RotateTimer" / "function.json").write_text(json.dumps(renamed))
    r = package(app)
    assert r.returncode == 1 and "must be named 'myTimer'" in r.stderr, r.stderr


def test_non_elf_binary_is_refused(app):
    app["binary"].write_text("#!/bin/sh\necho hi\n")
    r = package(app)
    assert r.returncode == 1 and "not an ELF executable" in r.stderr


def test_dynamically_linked_binary_needs_explicit_consent(app):
    app["binary"] = dynamic_elf()
    r = package(app)
    assert r.returncode == 1 and "dynamically linked" in r.stderr and "x86_64-unknown-linux-musl" in r.stderr
    r = package(app, "--allow-dynamic")
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(app["out"]) as z:
        assert z.getinfo("handler").external_attr >> 16 & 0o777 == 0o755
        assert z.getinfo("handler").file_size == app["binary"].stat().st_size


def test_stage_directory_for_azd(app, tmp_path):
    stage = tmp_path / "dist" / "app"
    assert package(app, "--stage", stage).returncode == 0
    files = {p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file()}
    assert files == ENTRIES
    assert os.access(stage / "handler", os.X_OK)
    assert package(app, "--stage", stage).returncode == 0, "re-staging over its own output works"
    (stage / "precious.txt").write_text("not ours")
    r = package(app, "--stage", stage)
    assert r.returncode == 1 and "precious.txt" in r.stderr
    assert (stage / "precious.txt").exists()


def test_unknown_argument_is_a_usage_error(app):
    r = run("--frobnicate")
    assert r.returncode == 2 and "unknown argument" in r.stderr


@pytest.mark.skipif(not (REPO / "host.json").is_file(), reason="host.json and the function folders are not merged yet")
def test_packages_the_repository_host_files(app):
    r = run("--binary", app["binary"], "--policy", app["policy"], "--out", app["out"])
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(app["out"]) as z:
        assert set(z.namelist()) == ENTRIES


# ---- the production build holds only the handler ----------------------------------------------------------------

def cargo_tree(*features: str) -> set[str]:
    """The crates a `patrol` build links (normal dependencies only), by name."""
    cargo = shutil.which("cargo")
    assert cargo, "cargo is needed for this test"
    r = subprocess.run([cargo, "tree", "--locked", "-p", "patrol", "-e", "normal", "--prefix", "none", *features],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return {line.split()[0] for line in r.stdout.splitlines() if line.strip()}


def test_the_production_build_links_no_emulator_and_no_second_crypto_library():
    production = cargo_tree("--no-default-features")
    demo = cargo_tree()
    # the demo build (cargo run -- demo, the tests) has the emulator and rcgen's ring; the package has neither
    assert {"patrol-emulator", "rcgen", "ring"} <= demo, "the check below would prove nothing"
    assert not {"patrol-emulator", "rcgen", "ring"} & production, sorted({"patrol-emulator", "rcgen", "ring"} & production)
    assert "aws-lc-rs" in production, "rustls' crypto provider in production is aws-lc-rs"
    # dependencies patrol does not use are not declared
    manifest = (REPO / "Cargo.toml").read_text()
    deps = manifest[manifest.index("[dependencies]"):manifest.index("[features]")]
    for unused in ("anyhow", "tower-http"):
        assert f"\n{unused}" not in deps, f"{unused} is declared but patrol does not use it"


def test_package_script_builds_without_default_features():
    text = SCRIPT.read_text()
    build = [line for line in text.splitlines() if "&& cargo build" in line and not line.lstrip().startswith("#")]
    assert build and all("--no-default-features" in line for line in build), build
