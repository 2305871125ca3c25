"""What ``deploy/`` holds is checked offline: alert rules (promtool, with their unit tests), the
dashboard's queries, the Kubernetes manifests (against the bundled Kubernetes schemas) and the
container recipe's structure. ``tests/e2e/test_observability.py`` holds the dashboard and the
rules to what the running servers export too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from batch_server.metrics import BatchMetrics
from conductor_server.metrics import ConductorMetrics
from mesh.app import runtime_metrics
from mesh.events.metrics import ConsumerMetrics
from mesh.grpc.health import LIVENESS, HealthMetrics, HealthReporter
from mesh.grpc.metrics import RpcMetrics
from mesh.postgres.outbox import OutboxMetrics
from tests.support.promql import exported_names, metric_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to run on
PROMETHEUS_OWN = {"up"}


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make deploy-tools` (scripts/install_promtool.sh)"
    return found


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "huleedu-mesh.json").read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def _manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((KUBERNETES / name).read_text()) if d]
    return docs


def _of(kind: str) -> list[dict[str, Any]]:
    return [d for d in _manifests() if d["kind"] == kind]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


async def _probe() -> None:
    return None


def exported_by_the_servers() -> set[str]:
    """Every metric name the two servers' registries hold (both modes), built as they build it."""
    registry = CollectorRegistry()
    ConductorMetrics(registry)
    BatchMetrics(registry)
    ConsumerMetrics(registry)
    OutboxMetrics(registry)
    RpcMetrics(registry).method("svc", "Method").finish("OK", 0.001)
    HealthMetrics(HealthReporter(["svc"], {"postgres": _probe}), registry)
    runtime_metrics(registry)
    return exported_names(generate_latest(registry).decode())


# --- Prometheus ---------------------------------------------------------------------------


def test_the_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    promtool = _promtool()
    checked = subprocess.run(
        [promtool, "check", "rules", "alerts.yaml"],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yaml"],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test_and_a_severity() -> None:
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yaml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    for rule in _rules():
        assert rule["alert"] in tested, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_the_dashboard_and_the_alerts_read_only_metrics_the_servers_export() -> None:
    exported = exported_by_the_servers() | PROMETHEUS_OWN
    exprs = _dashboard_exprs() + [rule["expr"] for rule in _rules()]
    read = set().union(*(metric_names(expr) for expr in exprs))
    assert read, "no metric names found"
    assert read <= exported, sorted(read - exported)


def test_the_dashboard_covers_what_the_issue_asks_for() -> None:
    read = set().union(*(metric_names(e) for e in _dashboard_exprs()))
    for name in (
        "mesh_consumer_lag",
        "mesh_outbox_oldest_event_age_seconds",
        "mesh_consumer_dead_lettered_total",
        "mesh_consumer_replayed_total",
        "batch_step_transition_seconds_bucket",
        "conductor_step_completion_seconds_bucket",
        "batch_run_duration_seconds_count",
        "batch_steps_timed_out_total",
        "process_cpu_seconds_total",
        "grpc_server_handled_total",
        "mesh_backend_up",
    ):
        assert name in read, name


# --- Kubernetes ---------------------------------------------------------------------------


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    manifests = _manifests()
    assert {d["kind"] for d in manifests} >= {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Secret",
    }
    for doc in manifests:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_the_kustomization_names_files_that_exist_and_the_image_the_deployments_run() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        assert (KUBERNETES / name).is_file(), name
    [image] = kustomization["images"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert image["newTag"] == pyproject["project"]["version"]
    for deployment in _of("Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == image["name"]


def test_the_drain_fits_in_the_termination_grace_period() -> None:
    for deployment in _of("Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        [container] = spec["containers"]
        env = _env(container)
        drain, grace = float(env["DRAIN_SECONDS"]), float(env["SHUTDOWN_GRACE_SECONDS"])
        readiness = container["readinessProbe"]
        # the endpoints drop the pod within one failed readiness probe, well inside the drain
        assert readiness["periodSeconds"] * readiness["failureThreshold"] < drain
        # docs/operations.md: drain + grace + about 20 s for the consumer, relay and backends
        assert spec["terminationGracePeriodSeconds"] >= drain + grace + 20


def test_probes_are_grpc_health_readiness_overall_and_liveness_its_own() -> None:
    for deployment in _of("Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        [grpc_port] = [p["containerPort"] for p in container["ports"] if p["name"] == "grpc"]
        env = _env(container)
        assert any(env.get(k) == str(grpc_port) for k in env if k.endswith("GRPC_PORT"))
        assert container["readinessProbe"]["grpc"] == {"port": grpc_port, "service": ""}
        assert container["livenessProbe"]["grpc"] == {"port": grpc_port, "service": LIVENESS}
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]["memory"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_each_deployment_has_a_disruption_budget_an_autoscaler_and_a_service() -> None:
    for deployment in _of("Deployment"):
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        [pdb] = [p for p in _of("PodDisruptionBudget") if p["metadata"]["name"] == name]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        [hpa] = [h for h in _of("HorizontalPodAutoscaler") if h["metadata"]["name"] == name]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
        [service] = [s for s in _of("Service") if s["metadata"]["name"] == name]
        assert service["spec"]["selector"].items() <= labels.items()


def test_referenced_secrets_and_config_maps_are_defined() -> None:
    secrets = {s["metadata"]["name"]: s for s in _of("Secret")}
    maps = {c["metadata"]["name"] for c in _of("ConfigMap")}
    text = json.dumps(_of("Deployment"))
    for name in re.findall(r'"(?:secretName|name)": "(huleedu-[a-z-]+)"', text):
        assert name in secrets or name in maps, name


def test_the_pipelines_config_map_is_the_shipped_definitions() -> None:
    [config] = [c for c in _of("ConfigMap") if c["metadata"]["name"] == "huleedu-pipelines"]
    shipped = (ROOT / "pipelines" / "pipelines.yaml").read_text()
    assert config["data"]["pipelines.yaml"] == shipped
    [conductor] = [d for d in _of("Deployment") if d["metadata"]["name"] == "conductor"]
    [container] = conductor["spec"]["template"]["spec"]["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "pipelines"]
    assert _env(container)["PIPELINES_PATH"] == f"{mount['mountPath']}/pipelines.yaml"


# --- the container recipe -------------------------------------------------------------------


def test_the_container_recipe_is_multi_stage_slim_and_not_root() -> None:
    text = (DEPLOY / "container" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE)
    assert len(stages) >= 2
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    final = text[text.rindex("\nFROM ") :]
    users = re.findall(r"^USER\s+(\S+)", final, re.MULTILINE)
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    for source in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), path
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    [command] = re.findall(r'^CMD \["([^"]+)"\]', text, re.MULTILINE)
    assert command in scripts
    for deployment in _of("Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"][0] in scripts
        user = deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        assert str(user) == users[-1].split(":")[0]
