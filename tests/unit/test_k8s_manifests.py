"""deploy/k8s and deploy/kserve, validated offline.

- `kubectl kustomize` renders the cpu and gpu overlays (where kubectl is missing, only the tests that need
  the rendering skip, and say so; the base's files are still validated one by one).
- Built-in kinds pass `kubernetes-validate` in strict mode (unknown fields rejected) for the oldest and the
  newest Kubernetes it knows that we support (1.30, 1.37).
- ServiceMonitor, PrometheusRule, ClusterServingRuntime and InferenceService pass `check-jsonschema`
  against the CRD schemas in deploy/schemas (made strict, see deploy/schemas/README.md).
- What ties the objects together holds: selectors match the pod labels, probes are native gRPC on the gRPC
  port, the grace period covers preStop + the server's drain, the server accepts the args, the HPA's metric
  is one the server exports and the adapter serves, the PrometheusRule is deploy/prometheus/rules.yml.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from serving.cli import build_parser
from tests.servers import ROOT
from tests.unit.test_deploy_monitoring import exported_names

K8S = ROOT / "deploy" / "k8s"
KSERVE = ROOT / "deploy" / "kserve"
SCHEMAS = ROOT / "deploy" / "schemas"
OVERLAYS = ("cpu", "gpu")
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring.coreos.com-v1.json",
    (
        "serving.kserve.io/v1alpha1",
        "ClusterServingRuntime",
    ): "clusterservingruntime-serving.kserve.io-v1alpha1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-serving.kserve.io-v1beta1.json",
}
Object = dict[str, Any]


@functools.cache
def rendered(overlay: str) -> tuple[Object, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl is not installed: the overlays are not rendered (the base files are still validated)"
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(objects: tuple[Object, ...] | list[Object], kind: str, name: str | None = None) -> Object:
    (found,) = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


def files_objects(folder: Path) -> list[Object]:
    objects = []
    for path in sorted(folder.glob("*.yaml")):
        objects += [
            doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") != "Kustomization"
        ]
    return objects


def validate_builtin(obj: Object) -> None:
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(
                f"{obj['kind']}/{obj['metadata']['name']} on {version}: {exc.message}"
            ) from None


def check_against_crd(objects: list[Object], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema on each object with the schema of its kind; every kind must have one."""
    results = []
    for index, obj in enumerate(objects):
        schema = SCHEMAS / CRD_SCHEMAS[(obj["apiVersion"], obj["kind"])]
        document = tmp_path / f"{index}-{obj['kind']}.yaml"
        document.write_text(yaml.safe_dump(obj))
        command = [sys.executable, "-m", "check_jsonschema", "--schemafile", str(schema), str(document)]
        results.append(subprocess.run(command, capture_output=True, text=True, timeout=120))
    failed = [r for r in results if r.returncode != 0]
    return failed[0] if failed else results[0]


def is_crd(obj: Object) -> bool:
    return (obj["apiVersion"], obj["kind"]) in CRD_SCHEMAS


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_every_object_validates(overlay: str, tmp_path: Path) -> None:
    objects = rendered(overlay)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "Deployment",
            "Service",
            "Service",
            "PersistentVolumeClaim",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "ServiceMonitor",
            "PrometheusRule",
        ]  # fmt: skip
    )
    for obj in objects:
        if not is_crd(obj):
            validate_builtin(obj)
    result = check_against_crd([o for o in objects if is_crd(o)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_files_validate_without_kustomize(tmp_path: Path) -> None:
    objects = files_objects(K8S / "base")
    assert len(objects) == 8
    for obj in objects:
        if not is_crd(obj):
            validate_builtin(obj)
    result = check_against_crd([o for o in objects if is_crd(o)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kserve_objects_validate_against_their_crds(tmp_path: Path) -> None:
    objects = files_objects(KSERVE)
    assert sorted(o["kind"] for o in objects) == ["ClusterServingRuntime", "InferenceService"]
    result = check_against_crd(objects, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "kind, path, value",
    [
        ("InferenceService", ("spec", "predictor", "model", "runtimeName"), "serving-runtime"),
        ("ClusterServingRuntime", ("spec", "multiModel"), "no"),
    ],
)
def test_crd_check_rejects_unknown_fields_and_values(
    kind: str, path: tuple[str, ...], value: Any, tmp_path: Path
) -> None:
    """The schema check can fail: a misspelt field and a value of the wrong type are refused."""
    obj = one(files_objects(KSERVE), kind)
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    result = check_against_crd([obj], tmp_path)
    assert result.returncode == 1, result.stdout
    assert path[-1] in result.stdout, result.stdout


def test_builtin_validation_rejects_an_unknown_field() -> None:
    deployment = one(files_objects(K8S / "base"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["sevice"] = ""
    with pytest.raises(AssertionError, match="sevice"):
        validate_builtin(deployment)


# ---------------------------------------------------------------- what ties the objects together


def container(objects: tuple[Object, ...]) -> Object:
    containers: list[Object] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return containers[0]


def serve_args(args: list[str]) -> Any:
    """The args as the server parses them (after the image's ENTRYPOINT): a misspelt flag fails here."""
    entrypoint = ["serve", "--model-repository", "/models", "--host", "0.0.0.0", "--grpc-port", "8001",
                  "--metrics-port", "8002"]  # fmt: skip
    return build_parser().parse_args([*entrypoint, *args])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_probes_shutdown_and_storage(overlay: str) -> None:
    objects = rendered(overlay)
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    main = container(objects)
    args = serve_args(main["args"])
    assert args.model_control_mode == "poll"
    grpc_port = {p["name"]: p["containerPort"] for p in main["ports"]}["grpc"]
    assert grpc_port == args.grpc_port == 8001
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["grpc"] == {"port": grpc_port}, probe  # grpc.health.v1, service "" (the server)
    sleep = main["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    unload_margin = 5
    assert pod["terminationGracePeriodSeconds"] >= int(sleep[1]) + args.grace_period + unload_margin
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert (
        mounts["models"] == "/models"
        and claims["models"] == one(objects, "PersistentVolumeClaim")["metadata"]["name"]
    )
    assert one(objects, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert main["resources"]["requests"]["cpu"] and main["resources"]["requests"]["memory"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0][
        "podAffinityTerm"
    ]
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert anti["labelSelector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_gpu_overlay_requests_a_gpu_and_cpu_does_not() -> None:
    gpu = container(rendered("gpu"))["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == 1 and gpu["requests"]["nvidia.com/gpu"] == 1
    cpu = container(rendered("cpu"))["resources"]
    assert "nvidia.com/gpu" not in {**cpu["requests"], **cpu.get("limits", {})}
    assert container(rendered("gpu"))["image"].endswith("-gpu") and container(rendered("cpu"))[
        "image"
    ].endswith("-cpu")


def test_services_pdb_and_servicemonitor_select_the_pods() -> None:
    objects = rendered("gpu")
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    headless, cluster = one(objects, "Service", "serving-headless"), one(objects, "Service", "serving")
    assert headless["spec"]["clusterIP"] == "None" and cluster["spec"]["type"] == "ClusterIP"
    for service in (headless, cluster):
        assert service["spec"]["selector"].items() <= labels.items()
        grpc = {p["name"]: p for p in service["spec"]["ports"]}["grpc"]
        assert grpc["targetPort"] == "grpc" and grpc["appProtocol"] == "kubernetes.io/h2c"
    assert one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    monitor = one(objects, "ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= cluster["metadata"]["labels"].items()
    assert not monitor["selector"]["matchLabels"].items() <= headless["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] in {p["name"] for p in cluster["spec"]["ports"]}


def test_hpa_scales_on_an_exported_metric_the_adapter_serves() -> None:
    objects = rendered("gpu")
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"]
    adapter = yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())
    served = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    for metric in hpa["metrics"]:
        name = metric["pods"]["metric"]["name"]
        assert name in served and name in exported_names(), name
    pdb = one(objects, "PodDisruptionBudget")["spec"]
    assert hpa["minReplicas"] > pdb["maxUnavailable"], "a drain must leave replicas serving"


def test_prometheusrule_is_deploy_prometheus_rules() -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    assert one(rendered("cpu"), "PrometheusRule")["spec"] == rules


def test_kserve_runtime_serves_onnx_and_pytorch_over_grpc_v2() -> None:
    objects = files_objects(KSERVE)
    runtime, service = one(objects, "ClusterServingRuntime"), one(objects, "InferenceService")
    spec = runtime["spec"]
    assert {f["name"] for f in spec["supportedModelFormats"]} == {"onnx", "pytorch"}
    assert spec["protocolVersions"] == ["grpc-v2"]
    (main,) = spec["containers"]
    assert main["name"] == "kserve-container" and main["command"] == ["serving", "serve"]
    args = build_parser().parse_args(["serve", *main["args"]])
    assert str(args.model_repository) == "/mnt/models"  # where KServe's storage initializer puts the model
    assert {p["name"]: p["containerPort"] for p in main["ports"]}["h2c"] == args.grpc_port
    assert main["readinessProbe"]["grpc"]["port"] == args.grpc_port
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in spec["supportedModelFormats"]}
    assert model["protocolVersion"] in spec["protocolVersions"]
