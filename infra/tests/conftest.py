"""Shared helpers of the infra tests: repository paths and parsed Bicep templates (pycep-parser, a real Bicep
parser from PyPI; no Bicep compiler or Azure is reachable from CI)."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))


@functools.lru_cache(maxsize=None)
def parse_bicep_raw(path: Path) -> dict:
    """pycep's own output: from pycep-parser 0.5, `a.b.c` is a tree of `property_accessor` operators."""
    return BicepParser().parse(file_path=path)


@functools.lru_cache(maxsize=None)
def parse_bicep(path: Path) -> dict:
    """pycep's output with every `a.b.c` property access written back as the string "a.b.c" (what
    pycep-parser 0.4 returned), so the tests compare references the way the templates spell them."""
    return accessors_as_text(parse_bicep_raw(path))


def accessors_as_text(value):
    if isinstance(value, dict):
        op = value.get("operator") if len(value) == 1 else None
        if isinstance(op, dict) and op.get("type") == "property_accessor":
            left = accessors_as_text(op["operands"]["operand_1"])
            right = accessors_as_text(op["operands"]["operand_2"])
            if isinstance(left, str) and isinstance(right, str):
                return f"{left}.{right}"
            return {"operator": {"type": "property_accessor", "operands": {"operand_1": left, "operand_2": right}}}
        return {k: accessors_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [accessors_as_text(v) for v in value]
    return value


def module(name: str) -> dict:
    return parse_bicep(INFRA / "modules" / f"{name}.bicep")


def main() -> dict:
    return parse_bicep(INFRA / "main.bicep")


def props(resource: dict) -> dict:
    """The `config` of a resource, looking through an `if (…)` condition."""
    cfg = resource["config"]
    if "condition" in cfg and "config" in cfg:
        cfg = cfg["config"]
    return cfg


def conditional(value):
    """(condition, true_value, false_value) of a `cond ? a : b` expression, or None."""
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "conditional":
        ops = value["operator"]["operands"]
        return ops["condition"], ops["true_value"], ops["false_value"]
    return None


def decorators(param: dict) -> dict:
    return {d["type"]: d.get("argument") for d in param.get("decorators", [])}


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
