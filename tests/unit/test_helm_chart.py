"""The Helm chart renders, and every object it renders is valid Kubernetes, strictly.

`helm template` renders `deploy/helm/freshrec` with the default values and with
`values-production.yaml`; the checker built from `deploy/helm/checker` decodes each object into
its `k8s.io/api` type with unknown and duplicate fields refused. Both tools are cached outside
the clone by `deploy/helm/tools.sh` (`make install`); no Kubernetes cluster is needed.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from freshrec.settings import settings_markdown
from services.ingest.settings import IngestSettings
from services.ranker.settings import RankerSettings
from services.trainer.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "freshrec"
TOOLS = ROOT / "deploy" / "helm" / "tools.sh"
FIXTURES = Path(__file__).with_name("fixtures")
PRODUCTION = CHART / "values-production.yaml"
RELEASE = "freshrec"

COMPONENTS: dict[str, tuple[str, type[BaseSettings]]] = {
    # component → (the module `freshrec stack` runs, its settings class)
    "ingest": ("services.ingest.main", IngestSettings),
    "trainer": ("services.trainer", TrainerSettings),
    "ranker": ("services.ranker.main", RankerSettings),
}

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Tools:
    helm: Path
    checker: Path
    kube_version: str


@pytest.fixture(scope="module")
def tools() -> Tools:
    proc = subprocess.run(
        ["bash", str(TOOLS), "paths"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    paths = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    found = Tools(Path(paths["helm"]), Path(paths["checker"]), paths["kube-version"])
    for tool in (found.helm, found.checker):
        if not os.access(tool, os.X_OK):
            pytest.fail(
                f"{tool} is not installed: run `make install` or `bash deploy/helm/tools.sh` "
                "(needs Go >= 1.26: https://go.dev/dl/, unpacked into /usr/local)",
                pytrace=False,
            )
    return found


def _helm(tools: Tools, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools.helm), "template", RELEASE, str(CHART), "--namespace", "freshrec",
         "--kube-version", tools.kube_version, *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _check(tools: Tools, manifests: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools.checker)], input=manifests, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def render(tools: Tools) -> Callable[..., str]:
    cache: dict[tuple[str, ...], str] = {}

    def rendered(*args: str) -> str:
        if args not in cache:
            proc = _helm(tools, *args)
            assert proc.returncode == 0, proc.stderr
            cache[args] = proc.stdout
        return cache[args]

    return rendered


VALUES = {"defaults": (), "production": ("-f", str(PRODUCTION))}


@pytest.fixture(params=list(VALUES), scope="module")
def values_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def manifests(render: Callable[..., str], values_name: str) -> str:
    return render(*VALUES[values_name])


@pytest.fixture(scope="module")
def objects(manifests: str) -> dict[tuple[str, str], Manifest]:
    found: dict[tuple[str, str], Manifest] = {}
    for doc in yaml.safe_load_all(manifests):
        if doc:
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def _workload(objects: dict[tuple[str, str], Manifest], component: str) -> Manifest:
    kind = "StatefulSet" if component == "trainer" else "Deployment"
    return objects[(kind, f"{RELEASE}-{component}")]


def _container(workload: Manifest) -> Manifest:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _env(container: Manifest) -> dict[str, Manifest]:
    return {entry["name"]: entry for entry in container.get("env", [])}


# ---- the rendered chart passes the strict check ----------------------------------------


def test_the_checker_accepts_every_rendered_object(tools: Tools, manifests: str) -> None:
    proc = _check(tools, manifests)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: ") and proc.stdout.count("\n") == 1, proc.stdout
    assert "Deployment 2" in proc.stdout and "StatefulSet 1" in proc.stdout


def test_the_expected_objects_are_rendered(objects: dict[tuple[str, str], Manifest]) -> None:
    for component in COMPONENTS:
        _workload(objects, component)
        assert ("Service", f"{RELEASE}-{component}") in objects
        assert ("PodDisruptionBudget", f"{RELEASE}-{component}") in objects
        assert ("ConfigMap", f"{RELEASE}-{component}") in objects
    hpa = objects[("HorizontalPodAutoscaler", f"{RELEASE}-ranker")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": f"{RELEASE}-ranker",
    }  # fmt: skip
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    # the HPA owns the ranker's replica count
    assert "replicas" not in _workload(objects, "ranker")["spec"]
    kinds = {kind for kind, _ in objects}
    assert "HorizontalPodAutoscaler" in kinds and "ServiceAccount" in kinds


def test_every_process_runs_its_stack_entry_point_with_probes(
    objects: dict[tuple[str, str], Manifest],
) -> None:
    for component, (module, _) in COMPONENTS.items():
        container = _container(_workload(objects, component))
        assert container["command"] == ["python", "-m", module], component
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert [p["name"] for p in container["ports"]] == ["http"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        env = _env(container)
        assert env[f"FRESHREC_{component.upper()}_HOST"]["value"] == "0.0.0.0"
        port = container["ports"][0]["containerPort"]
        assert env[f"FRESHREC_{component.upper()}_PORT"]["value"] == str(port)
        assert env["FRESHREC_API_KEYS"]["valueFrom"]["secretKeyRef"]["key"] == "api-keys"
        assert "FRESHREC_KAFKA_BOOTSTRAP" in env and "FRESHREC_REDIS_URL" in env
        assert container["envFrom"] == [{"configMapRef": {"name": f"{RELEASE}-{component}"}}]


def test_the_trainers_are_static_members_named_by_their_pods(
    objects: dict[tuple[str, str], Manifest],
) -> None:
    trainers = _workload(objects, "trainer")
    env = _env(_container(trainers))
    for name in ("FRESHREC_CONSUMER__GROUP_INSTANCE_ID", "FRESHREC_TRAINER__MEMBER"):
        assert env[name]["valueFrom"] == {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}
        }
    # a clean close commits the batch in hand: more than ingest's or the ranker's grace
    assert trainers["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
    headless = objects[("Service", trainers["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"
    assert trainers["spec"]["updateStrategy"]["type"] == "RollingUpdate"


def test_services_are_annotated_for_prometheus(
    objects: dict[tuple[str, str], Manifest],
) -> None:
    for component in COMPONENTS:
        annotations = objects[("Service", f"{RELEASE}-{component}")]["metadata"]["annotations"]
        port = _container(_workload(objects, component))["ports"][0]["containerPort"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }


def _knobs(settings: type[BaseSettings]) -> set[str]:
    return set(re.findall(r"`(FRESHREC_\w+)`", settings_markdown({"x": settings})))


def test_configuration_is_made_of_knobs_the_processes_read(
    objects: dict[tuple[str, str], Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every variable the chart sets is a knob of the process it is given to, and the values
    validate: the process would start with this configuration."""
    for component, (_, settings) in COMPONENTS.items():
        container = _container(_workload(objects, component))
        data = objects[("ConfigMap", f"{RELEASE}-{component}")]["data"]
        env = {**data, **{k: v.get("value") for k, v in _env(container).items()}}
        knobs = _knobs(settings)
        # the common map goes to every process; a key there need be read by one of them
        every = set().union(*(_knobs(s) for _, s in COMPONENTS.values()))
        for key in env:
            assert key in every, f"{component}: {key} is no freshrec setting"
        own = yaml.safe_load(PRODUCTION.read_text())[component].get("env", {})
        own |= yaml.safe_load((CHART / "values.yaml").read_text())[component].get("env", {})
        for key in own:
            assert key in knobs, f"{component}.env: {key} is not a {component} setting"
        for key in [k for k in os.environ if k.startswith("FRESHREC_")]:
            monkeypatch.delenv(key)
        # what the cluster fills in: the pod name, the Secrets' contents
        from_cluster = {
            "FRESHREC_CONSUMER__GROUP_INSTANCE_ID": "freshrec-trainer-0",
            "FRESHREC_TRAINER__MEMBER": "freshrec-trainer-0",
            "FRESHREC_API_KEYS": "a-key,another-key",
            "FRESHREC_REDIS_URL": "redis://:secret@redis:6379/0",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, from_cluster[key] if value is None else value)
        settings()  # raises on a value the process would refuse


# ---- the values files say what the docs say ---------------------------------------------


def test_the_default_values_run_one_of_each(render: Callable[..., str]) -> None:
    docs = [d for d in yaml.safe_load_all(render(*VALUES["defaults"])) if d]
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert _workload(objects, "trainer")["spec"]["replicas"] == 1
    assert _workload(objects, "ingest")["spec"]["replicas"] == 1
    secret = objects[("Secret", f"{RELEASE}-api-keys")]
    assert len(secret["data"]["api-keys"]) >= 40, "a random key is generated when none is given"


def test_production_values_scale_out_and_use_existing_secrets(
    render: Callable[..., str],
) -> None:
    docs = [d for d in yaml.safe_load_all(render(*VALUES["production"])) if d]
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert not [d for d in docs if d["kind"] == "Secret"]
    assert _workload(objects, "ingest")["spec"]["replicas"] >= 3
    assert _workload(objects, "trainer")["spec"]["replicas"] == 3
    assert objects[("HorizontalPodAutoscaler", f"{RELEASE}-ranker")]["spec"]["minReplicas"] >= 3
    for component in COMPONENTS:
        spec = _workload(objects, component)["spec"]["template"]["spec"]
        assert spec["affinity"]["podAntiAffinity"], component
        env = _env(_container(_workload(objects, component)))
        secret_ref = env["FRESHREC_API_KEYS"]["valueFrom"]["secretKeyRef"]
        assert secret_ref["name"] == "freshrec-api-keys"
        assert env["FRESHREC_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "freshrec-redis"


def test_given_keys_become_the_secret(render: Callable[..., str]) -> None:
    docs = [d for d in yaml.safe_load_all(render("--set", "apiKeys.keys={k1,k2}")) if d]
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert secret["data"]["api-keys"] == "azEsazI="  # base64("k1,k2")


def test_the_chart_refuses_a_setting_it_owns(tools: Tools) -> None:
    proc = _helm(tools, "--set", "env.FRESHREC_API_KEYS=plain-text")
    assert proc.returncode != 0
    assert "FRESHREC_API_KEYS is set by the chart" in proc.stderr


# ---- a wrong field in a values file fails the check, naming the object ------------------


@pytest.mark.parametrize(
    ("fixture", "culprit", "field"),
    [
        (
            "helm-wrong-field.yaml",
            f"Deployment/{RELEASE}-ranker",
            "spec.template.spec.containers[0].resources.limitz",
        ),
        (
            "helm-misspelt-probe.yaml",
            f"StatefulSet/{RELEASE}-trainer",
            "spec.template.spec.containers[0].readinessProbe.periodSecond",
        ),
    ],
)
def test_a_wrong_field_in_a_values_file_fails_the_check(
    tools: Tools, render: Callable[..., str], fixture: str, culprit: str, field: str
) -> None:
    proc = _check(tools, render("-f", str(FIXTURES / fixture)))
    assert proc.returncode == 1, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("checker:")]
    assert lines == [f'{culprit}: unknown field "{field}" (freshrec/templates/{_file(culprit)})']


def _file(culprit: str) -> str:
    return culprit.split("/", 1)[1].removeprefix(f"{RELEASE}-") + ".yaml"


# ---- the checker on hand-written manifests ----------------------------------------------

GOOD = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          ports: [{name: http, containerPort: 80}]
          resources: {requests: {cpu: 100m}}
          readinessProbe: {httpGet: {path: /, port: http}}
          livenessProbe: {httpGet: {path: /, port: http}}
---
# a document with comments only, as an empty template renders
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""


def _broken(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


def test_the_checker_accepts_a_valid_stream(tools: Tools) -> None:
    proc = _check(tools, GOOD)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok: 2 objects valid (Deployment 1, Service 1)\n"


@pytest.mark.parametrize(
    ("manifests", "expected"),
    [
        pytest.param(
            _broken("resources: {requests", "resources: {limitz: {cpu: 1}, requests"),
            'Deployment/web: unknown field "spec.template.spec.containers[0].resources.limitz"',
            id="unknown-field",
        ),
        pytest.param(
            _broken("metadata: {name: web}", "metadata: {name: web}\nmetadata: {name: web}"),
            'Deployment/web: invalid YAML: yaml: unmarshal errors: line 4: key "metadata"',
            id="duplicate-field",
        ),
        pytest.param(
            _broken("  selector: {matchLabels", "  Selector: {}\n  selector: {matchLabels"),
            'Deployment/web: unknown field "spec.Selector"',
            id="case-sensitive",
        ),
        pytest.param(
            _broken("kind: Service", "kind: Servise"),
            'Servise/web: unknown kind "Servise" in apiVersion "v1"',
            id="unknown-kind",
        ),
        pytest.param(
            _broken("apiVersion: apps/v1", "apiVersion: apps/v1beta1"),
            'Deployment/web: unknown kind "Deployment" in apiVersion "apps/v1beta1"',
            id="removed-api-version",
        ),
        pytest.param(
            _broken("  selector: {matchLabels", "  replicas: two\n  selector: {matchLabels"),
            "Deployment/web: json: cannot unmarshal string into Go struct field "
            "DeploymentSpec.spec.replicas of type int32",
            id="wrong-type",
        ),
        pytest.param(
            _broken("labels: {app: web}", "labels: {app: api}"),
            "Deployment/web: selector app=web does not match the pod template's labels",
            id="selector-mismatch",
        ),
        pytest.param(
            _broken("          readinessProbe: {httpGet: {path: /, port: http}}\n", ""),
            'Deployment/web: container "web": no readinessProbe',
            id="no-readiness-probe",
        ),
        pytest.param(
            _broken("targetPort: http", "targetPort: metrics"),
            'targetPort "metrics" is not a container port of Deployment/web',
            id="service-port",
        ),
        pytest.param("", "input: no Kubernetes object found", id="empty"),
    ],
)
def test_the_checker_names_the_object_and_the_defect(
    tools: Tools, manifests: str, expected: str
) -> None:
    proc = _check(tools, manifests)
    assert proc.returncode == 1, proc.stdout
    assert expected in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_the_checker_reads_files_too(tools: Tools, tmp_path: Path) -> None:
    path = tmp_path / "rendered.yaml"
    path.write_text(GOOD)
    proc = subprocess.run(
        [str(tools.checker), str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    missing = subprocess.run(
        [str(tools.checker), str(tmp_path / "absent.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and "absent.yaml" in missing.stderr


# ---- the docs -----------------------------------------------------------------------------


def _docs() -> Iterator[tuple[str, str]]:
    for name in ("README.md", "docs/operations.md"):
        yield name, (ROOT / name).read_text()


def test_the_kubernetes_guide_is_linked_and_names_real_knobs() -> None:
    guide = (ROOT / "docs" / "kubernetes.md").read_text()
    for name, text in _docs():
        assert "kubernetes.md" in text, f"{name} does not link docs/kubernetes.md"
    documented = set(re.findall(r"`(FRESHREC_\w+)`", (ROOT / "docs/configuration.md").read_text()))
    for knob in set(re.findall(r"\bFRESHREC_[A-Z_]*[A-Z]", guide)):
        assert knob in documented, f"docs/kubernetes.md names {knob}, which no process reads"
    for path in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", guide):
        assert (ROOT / "docs" / path).resolve().exists(), f"docs/kubernetes.md links {path}"
