"""What the schema checks in .ci/run can't see: the files agree with each other and with Keel.

(.ci/run validates deploy/k8s against the Kubernetes 1.33 schemas, compose.yaml against the
Compose Specification and the Dockerfile with hadolint.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI

from tests.deploy.support import DEPLOY, DOCKERFILE, image_command, image_environment

K8S = DEPLOY / "k8s"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> dict[str, dict[str, Any]]:
    return {
        f"{doc['kind']}/{doc['metadata']['name']}": doc
        for path in K8S.glob("*.yaml")
        if path.name != "kustomization.yaml"
        for doc in _documents(path)
    }


def test_kustomization_lists_every_manifest() -> None:
    listed = set(_documents(K8S / "kustomization.yaml")[0]["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_api_probes_ask_three_questions_of_routes_keel_serves(app_shell: FastAPI) -> None:
    api = _manifests()["Deployment/keel-api"]["spec"]["template"]["spec"]
    (container,) = api["containers"]
    probes = {
        kind: container[kind]["httpGet"]["path"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes == {
        "startupProbe": "/health/startup",
        "readinessProbe": "/health/ready",
        "livenessProbe": "/health",
    }
    served = app_shell.openapi()["paths"].keys()
    assert set(probes.values()) <= served
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    # The pod outlives preStop + the app's drain (SHUTDOWN_GRACE_SECONDS in the ConfigMap).
    config = _manifests()["ConfigMap/keel-config"]["data"]
    drain = int(config["SHUTDOWN_GRACE_SECONDS"]) + 5  # gunicorn.conf.py's margin
    grace = api["terminationGracePeriodSeconds"]
    assert grace > container["lifecycle"]["preStop"]["sleep"]["seconds"] + drain


def test_every_keel_container_is_locked_down() -> None:
    for name, doc in _manifests().items():
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"requests", "limits"} <= container["resources"].keys(), name


def test_the_migration_job_checks_before_migrating() -> None:
    pod = _manifests()["Job/keel-migrate"]["spec"]["template"]["spec"]
    assert [c["command"] for c in pod["initContainers"]] == [["keel", "check"]]
    assert [c["command"] for c in pod["containers"]] == [["keel", "migrate", "upgrade"]]


def test_the_image_serves_without_migrating_as_a_non_root_user() -> None:
    assert image_command() == ["gunicorn", "--config", "deploy/gunicorn.conf.py"]
    env = image_environment()
    assert env["KEEL_AUTO_MIGRATE"] == "false"
    assert env["ENVIRONMENT"] == "production"
    runtime = DOCKERFILE.read_text().rsplit("AS runtime", 1)[1]
    assert "USER 10001" in runtime
    assert "/health" in runtime.split("HEALTHCHECK", 1)[1]
    assert "uv" not in runtime.split(), "no build tools in the runtime stage"


def test_compose_starts_each_service_after_what_it_needs() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    for name in ("api", "worker"):
        needs = services[name]["depends_on"]
        assert needs["postgres"]["condition"] == "service_healthy"
        assert needs["redis"]["condition"] == "service_healthy"
        assert needs["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "keel check" in " ".join(services["migrate"]["command"])
