"""deploy/k8s: every manifest parses, and says what the code expects.

PyYAML is not a dependency of the package, so the manifests are read with a
small loader for the block-style YAML subset they are written in (mappings,
sequences, plain and quoted scalars, JSON-style flow lists, comments,
``---``). When PyYAML is installed, a test checks that both loaders agree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from processors.export.push import TOKEN_ENV as CATALOG_TOKEN_ENV
from schemas.settings import Settings
from telemetry.cli import app

K8S = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
EXAMPLE = "secret.example.yaml"
SECRET_NAME = "telemetry-secrets"
IMAGE = "llm-telemetry:latest"
#: Variables read outside Settings, each documented where it is read.
DOCUMENTED_EXTRA = {CATALOG_TOKEN_ENV}
#: Settings that hold credentials: only ever from the Secret.
SECRET_KEYS = {"TELEMETRY_CLICKHOUSE", "TELEMETRY_INGEST_TOKENS", CATALOG_TOKEN_ENV}


# -- a loader for the subset of YAML the manifests use ----------------------------------


@dataclass
class _Line:
    indent: int
    text: str
    where: str


_KEY = re.compile(r"^([A-Za-z0-9_.\-/]+):(?:\s+(.*))?$")


def _strip_comment(text: str) -> str:
    quote = None
    for i, c in enumerate(text):
        if c in "\"'" and quote is None:
            quote = c
        elif c == quote:
            quote = None
        elif c == "#" and quote is None and (i == 0 or text[i - 1] == " "):
            return text[:i].rstrip()
    return text.rstrip()


def _scalar(text: str, where: str) -> Any:
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'"):
        if not text.endswith("'"):
            raise ValueError(f"{where}: unterminated quote")
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        return json.loads(text)
    if text == "{}":
        return {}
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~"):
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text[0] in "&*!|>{%@`":
        raise ValueError(f"{where}: YAML feature outside the supported subset: {text!r}")
    return text


def _block(lines: list[_Line], i: int, indent: int) -> tuple[Any, int]:
    if lines[i].text.startswith("- ") or lines[i].text == "-":
        return _sequence(lines, i, indent)
    return _mapping(lines, i, indent)


def _mapping(lines: list[_Line], i: int, indent: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while i < len(lines) and lines[i].indent == indent and not lines[i].text.startswith("-"):
        line = lines[i]
        m = _KEY.match(line.text)
        if not m:
            raise ValueError(f"{line.where}: expected 'key: value', got {line.text!r}")
        key, rest = m.group(1), m.group(2)
        if key in out:
            raise ValueError(f"{line.where}: duplicate key {key!r}")
        i += 1
        if rest:
            out[key] = _scalar(rest, line.where)
        elif i < len(lines) and (
            lines[i].indent > indent
            or (lines[i].indent == indent and lines[i].text.startswith("- "))
        ):
            out[key], i = _block(lines, i, lines[i].indent)
        else:
            out[key] = None
    if i < len(lines) and lines[i].indent > indent:
        raise ValueError(f"{lines[i].where}: unexpected indentation")
    return out, i


def _sequence(lines: list[_Line], i: int, indent: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    while i < len(lines) and lines[i].indent == indent and lines[i].text.startswith("-"):
        line = lines[i]
        content = line.text[1:].strip()
        if not content:
            value, i = _block(lines, i + 1, lines[i + 1].indent)
        elif _KEY.match(content):
            lines[i] = _Line(indent + 2, content, line.where)
            value, i = _mapping(lines, i, indent + 2)
        else:
            value, i = _scalar(content, line.where), i + 1
        out.append(value)
    return out, i


def load_all(text: str, name: str) -> list[Any]:
    docs: list[Any] = []
    current: list[_Line] = []

    def close() -> None:
        if current:
            value, end = _block(current, 0, current[0].indent)
            if end != len(current):
                raise ValueError(f"{current[end].where}: could not parse")
            docs.append(value)
            current.clear()

    for n, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise ValueError(f"{name}:{n}: tab in indentation")
        if raw.strip() == "---":
            close()
            continue
        body = _strip_comment(raw)
        if body.strip():
            current.append(_Line(len(body) - len(body.lstrip()), body.strip(), f"{name}:{n}"))
    close()
    return docs


# -- the manifests ------------------------------------------------------------------------


def _files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def _docs(include_example: bool = False) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in _files():
        if path.name == "kustomization.yaml" or (path.name == EXAMPLE and not include_example):
            continue
        out.extend((path.name, d) for d in load_all(path.read_text(), path.name))
    return out


def _pod_specs() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for name, doc in _docs():
        kind = doc.get("kind")
        if kind in ("Deployment", "StatefulSet", "Job"):
            yield name, doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield (
                name,
                doc["metadata"]["name"],
                doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            )


def _containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for _, workload, spec in _pod_specs():
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield workload, spec, c


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in _docs() if d["kind"] == kind}


def test_every_file_parses_and_kustomization_lists_them() -> None:
    assert _files(), "no manifests"
    for _name, doc in _docs(include_example=True):
        assert doc["apiVersion"] and doc["kind"]
    kustomization = load_all((K8S / "kustomization.yaml").read_text(), "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    expected = {p.name for p in _files()} - {"kustomization.yaml", EXAMPLE}
    assert listed == expected
    assert EXAMPLE not in listed


def test_loader_agrees_with_pyyaml() -> None:
    yaml = pytest.importorskip("yaml")
    for path in _files():
        assert load_all(path.read_text(), path.name) == list(yaml.safe_load_all(path.read_text()))


def test_loader_refuses_what_it_does_not_understand() -> None:
    with pytest.raises(ValueError, match="subset"):
        load_all("a: &anchor x\n", "t")
    with pytest.raises(ValueError, match="duplicate"):
        load_all("a: 1\na: 2\n", "t")
    assert load_all('a:\n- x\n- y: 1\n  z: ["q"]\n', "t") == [{"a": ["x", {"y": 1, "z": ["q"]}]}]


def test_the_workloads_the_pipeline_needs() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in _docs()}
    assert ("Namespace", "telemetry") in kinds
    assert ("ConfigMap", "telemetry-config") in kinds
    assert ("Deployment", "telemetry-collector") in kinds
    assert ("Service", "telemetry-collector") in kinds
    assert ("StatefulSet", "telemetry-worker") in kinds
    assert ("Deployment", "telemetry-sink") in kinds
    assert ("CronJob", "telemetry-exporter") in kinds
    assert ("Job", "telemetry-migrate") in kinds
    assert _by_kind("StatefulSet")["telemetry-worker"]["spec"]["replicas"] == 2
    assert _by_kind("Deployment")["telemetry-sink"]["spec"]["replicas"] == 1
    for _, doc in _docs():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "telemetry", doc["metadata"]["name"]


def test_every_container_has_resources_and_the_image() -> None:
    seen = 0
    for workload, _, c in _containers():
        seen += 1
        res = c.get("resources") or {}
        assert {"cpu", "memory"} <= set(res.get("requests", {})), f"{workload}/{c['name']}"
        assert "memory" in res.get("limits", {}), f"{workload}/{c['name']}: memory limit"
        assert c["image"] == IMAGE
    assert seen >= 5


def test_collector_probes_and_port() -> None:
    collector = _by_kind("Deployment")["telemetry-collector"]
    assert collector["spec"]["replicas"] == 2
    (c,) = collector["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}

    def port(probe: dict[str, Any]) -> int:
        p = probe["httpGet"]["port"]
        return ports[p] if isinstance(p, str) else p

    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert port(c["readinessProbe"]) == port(c["livenessProbe"]) == 8080
    argv = c["command"] + c.get("args", [])
    assert argv[argv.index("--port") + 1] == "8080"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    service = _by_kind("Service")["telemetry-collector"]
    assert service["spec"]["selector"] == collector["spec"]["selector"]["matchLabels"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/app/state" in mounts  # the spool lives under TELEMETRY_DATA_DIR


def _env_names(c: dict[str, Any]) -> set[str]:
    return {e["name"] for e in c.get("env", [])}


def test_env_names_are_real_settings() -> None:
    known = {f"TELEMETRY_{name.upper()}" for name in Settings.model_fields} | DOCUMENTED_EXTRA
    config = _by_kind("ConfigMap")["telemetry-config"]["data"]
    used = set(config)
    for _, _, c in _containers():
        used |= _env_names(c)
        for source in c.get("envFrom", []):
            assert source["configMapRef"]["name"] == "telemetry-config"
    assert used, "no settings at all"
    unknown = used - known
    assert not unknown, f"not TELEMETRY_* settings the code reads: {sorted(unknown)}"
    assert all(isinstance(v, str) for v in config.values()), "ConfigMap values are strings"
    # the values are ones Settings accepts
    Settings(**{k.removeprefix("TELEMETRY_").lower(): v for k, v in config.items()})


def test_no_secret_values_outside_the_example() -> None:
    for name, doc in _docs():
        assert doc["kind"] != "Secret", f"{name}: reference the Secret by name, do not inline it"
    config = _by_kind("ConfigMap")["telemetry-config"]["data"]
    assert not SECRET_KEYS & set(config)
    for workload, _, c in _containers():
        for e in c.get("env", []):
            if e["name"] in SECRET_KEYS:
                ref = e["valueFrom"]["secretKeyRef"]
                assert ref["name"] == SECRET_NAME, workload
                assert ref["key"] == e["name"]
                assert "value" not in e
    credentials = re.compile(r"://[^/\s:@]+:[^@\s/]+@")
    for path in _files():
        if path.name != EXAMPLE:
            text = path.read_text()
            assert not credentials.search(text), f"{path.name}: a DSN with a password"
            assert not re.search(r"\b[0-9a-f]{64}\b", text), f"{path.name}: a token digest"


def test_the_example_secret_is_a_placeholder_with_the_referenced_keys() -> None:
    (secret,) = load_all((K8S / EXAMPLE).read_text(), EXAMPLE)
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == SECRET_NAME
    values = secret["stringData"]
    assert set(values) == SECRET_KEYS
    for key, value in values.items():
        assert "CHANGE-ME" in value or set(value) == {"0"}, key
    referenced = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for _, _, c in _containers()
        for e in c.get("env", [])
        if "valueFrom" in e
    }
    assert referenced <= set(values)
    assert "kubectl" in (K8S / EXAMPLE).read_text()  # says how to create the real one


def test_commands_are_real_telemetry_subcommands_and_options() -> None:
    group = typer.main.get_command(app)
    commands = getattr(group, "commands", {})
    argvs = []
    for workload, _, c in _containers():
        argv = c["command"] + c.get("args", [])
        assert argv[0] == "telemetry", workload
        sub = commands.get(argv[1])
        assert sub is not None, f"{workload}: no subcommand {argv[1]!r}"
        options = {o for p in sub.params for o in p.opts}
        for word in argv[2:]:
            if word.startswith("--"):
                assert word in options, f"{workload}: {argv[1]} has no option {word}"
        argvs.append(argv)
    assert any(a[1] == "collector" for a in argvs)
    assert any(a[1:3] == ["worker", "--sink"] for a in argvs)
    assert any(a[1] == "worker" and "--sink" not in a for a in argvs)
    assert any(a[1:3] == ["export", "--once"] for a in argvs)
    assert any(a[1] == "migrate" for a in argvs)
