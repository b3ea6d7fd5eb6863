"""deploy/: the Kubernetes manifests validate offline against the Kubernetes
schemas (kubernetes-validate), fit together (selectors, ports, probe paths,
the autoscaler's target and metric), and the container's command line uses
flags the server has."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conftest import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
# The Prometheus Operator's resource has no schema in Kubernetes' own set.
CUSTOM = {("monitoring.coreos.com/v1", "PodMonitor")}


def manifests() -> dict[str, dict]:
    docs = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("*.yaml")), ids=lambda p: p.name)
def test_each_manifest_validates_against_the_kubernetes_schemas(path: Path):
    for doc in yaml.safe_load_all(path.read_text()):
        if (doc["apiVersion"], doc["kind"]) in CUSTOM:
            continue
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_manifests_fit_together():
    m = manifests()
    deployment, service, monitor, hpa = (
        m["Deployment"],
        m["Service"],
        m["PodMonitor"],
        m["HorizontalPodAutoscaler"],
    )
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"] for p in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    # The three probes on the server's three probe routes.
    assert container["startupProbe"]["httpGet"]["path"] == "/startupz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    # Whole cores, requests equal to limits (the pool follows the quota).
    res = container["resources"]
    assert res["requests"] == res["limits"]
    # The autoscaler scales this deployment on an exported metric, which the
    # adapter rule serves.
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    catalogue = (ROOT / "docs" / "metrics.md").read_text()
    assert f"`{metric}`" in catalogue, metric
    adapter = yaml.safe_load(m["ConfigMap"]["data"]["config.yaml"])
    assert adapter["rules"][0]["name"]["as"] == metric
    assert metric in adapter["rules"][0]["seriesQuery"]


def test_the_container_command_uses_flags_the_server_has(server_bin: Path):
    containerfile = (ROOT / "deploy" / "Containerfile").read_text()
    entrypoint = next(l for l in containerfile.splitlines() if l.startswith("ENTRYPOINT"))
    help_text = subprocess.run(
        [str(server_bin), "--help"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    for flag in ["--bind", "--models-dir", "--log-format"]:
        assert f'"{flag}"' in entrypoint
        assert flag in help_text
