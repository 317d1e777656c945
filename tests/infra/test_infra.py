"""infra/: the compose file, the Kubernetes manifests and the Dockerfiles, checked offline.

The Compose file against the Compose spec schema vendored in check-jsonschema; the standard
Kubernetes kinds against the schemas bundled in kubernetes-validate (strict: unknown fields
fail); the custom resources (KEDA, Strimzi) against what the functions declare; and the
Dockerfiles' pip install steps against pyproject.toml.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from driftline.events.topics import EVENT_TOPICS, RUNNERS_TOPIC, dlq_topic
from driftline.functions import FUNCTIONS
from driftline.runtime.schemas import SCHEMAS_TOPIC

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SPECS = {f.spec.name: f.spec for f in FUNCTIONS}  # type: ignore[attr-defined]
KUBERNETES_VERSION = "1.31"
MAY_SCALE_TO_ZERO = {"ingest", "retrain", "register", "batch", "notify"}
"""score keeps one replica for latency; drift-check keeps its open windows in memory."""


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((INFRA / "compose.yaml").read_text())
    return data


def _manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _manifests() if d["kind"] == kind}


# -- compose ----------------------------------------------------------------------------


def test_compose_matches_the_compose_spec() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(INFRA / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_runs_kafka_in_kraft_mode_and_minio_notifies_uploads_to_kafka() -> None:
    services = _compose()["services"]
    kafka = services["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in kafka
    minio = services["minio"]["environment"]
    target = next(
        k.removeprefix("MINIO_NOTIFY_KAFKA_ENABLE_")
        for k in minio
        if k.startswith("MINIO_NOTIFY_KAFKA_ENABLE_")
    )
    assert minio[f"MINIO_NOTIFY_KAFKA_BROKERS_{target}"] == "kafka:9092"
    topic = minio[f"MINIO_NOTIFY_KAFKA_TOPIC_{target}"]
    assert services["gateway"]["environment"]["DRIFTLINE_S3_NOTIFICATION_TOPIC"] == topic
    init = " ".join(services["minio-init"]["command"])
    assert f"mc event add --ignore-existing local/driftline arn:minio:sqs::{target}:kafka" in init
    made = " ".join(services["kafka-init"]["command"])
    assert f"--topic {topic}" in made
    assert f"--topic {SCHEMAS_TOPIC} --partitions 1 --config retention.ms=-1" in made


def test_compose_has_a_gateway_a_cpu_runner_and_a_gpu_runner_with_a_device_reservation() -> None:
    services = _compose()["services"]
    for name in ("gateway", "runner-cpu", "runner-gpu"):
        assert services[name]["environment"]["DRIFTLINE_BUS"] == "kafka://kafka:9092", name
    assert services["gateway"]["command"][0] == "up"
    assert services["runner-cpu"]["environment"]["DRIFTLINE_GPUS"] == "0"
    gpu = services["runner-gpu"]
    assert gpu["build"]["dockerfile"] == "infra/Dockerfile.gpu"
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


# -- Kubernetes -------------------------------------------------------------------------


def test_standard_kubernetes_manifests_validate_strictly() -> None:
    checked = 0
    for doc in _manifests():
        if "." in doc["apiVersion"].rpartition("/")[0]:
            continue  # a custom resource (keda.sh, kafka.strimzi.io): checked below
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 10


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_every_function_has_a_deployment_and_a_lag_scaler_on_its_consumer_group() -> None:
    deployments, scalers = _kind("Deployment"), _kind("ScaledObject")
    for name, spec in SPECS.items():
        deployment = deployments[f"driftline-{name}"]
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["runner", "--functions", name]
        scaler = scalers[f"driftline-{name}"]["spec"]
        assert scaler["scaleTargetRef"]["name"] == f"driftline-{name}"
        triggers = scaler["triggers"]
        assert {t["type"] for t in triggers} == {"kafka"}
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {spec.group}
        assert {t["metadata"]["topic"] for t in triggers} == set(spec.subscribes)
        assert scaler["minReplicaCount"] == (0 if name in MAY_SCALE_TO_ZERO else 1), name
        assert scaler["maxReplicaCount"] <= _partitions(), (
            "more replicas than partitions would idle"
        )


def test_the_gpu_runner_asks_for_a_gpu_on_gpu_nodes_and_serves_the_gpu_preferred_functions() -> (
    None
):
    pod = _kind("Deployment")["driftline-runner-gpu"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert container["image"].startswith("driftline-gpu")
    served = container["args"][container["args"].index("--functions") + 1].split(",")
    assert set(served) == {n for n, s in SPECS.items() if s.gpu != "none"}
    scaler = _kind("ScaledObject")["driftline-runner-gpu"]["spec"]
    assert {t["metadata"]["consumerGroup"] for t in scaler["triggers"]} == {
        SPECS[n].group for n in served
    }


def test_topic_definitions_cover_every_topic_driftline_uses() -> None:
    topics = {d["spec"]["topicName"]: d["spec"] for d in _kind("KafkaTopic").values()}
    subscribed = {t for s in SPECS.values() for t in s.subscribes}
    control = {RUNNERS_TOPIC, SCHEMAS_TOPIC, "s3.events"}
    assert set(topics) == {*EVENT_TOPICS, *(dlq_topic(t) for t in subscribed), *control}
    kept = ("model.registered", "model.deployed", "model.rejected", SCHEMAS_TOPIC)  # histories
    for name in kept:
        assert topics[name]["config"]["retention.ms"] == "-1"
    assert topics[RUNNERS_TOPIC]["partitions"] == topics[SCHEMAS_TOPIC]["partitions"] == 1


def _partitions() -> int:
    config = _kind("ConfigMap")["driftline-config"]["data"]
    return int(config["DRIFTLINE_PARTITIONS"])


# -- Dockerfiles ------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _pip_installs(path: Path) -> list[list[str]]:
    installs = []
    for op, arg in _instructions(path):
        for command in re.split(r"&&|;", arg) if op == "RUN" else []:
            words = shlex.split(command)
            if words[:2] == ["pip", "install"] or words[1:4] == ["-m", "pip", "install"]:
                installs.append(
                    [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
                )
    return installs


def _declared() -> dict[str, Requirement]:
    project = PYPROJECT["project"]
    reqs = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    return {Requirement(r).name: Requirement(r) for r in reqs}


@pytest.mark.parametrize(
    ("dockerfile", "extras", "python"),
    [("Dockerfile", set(), "3.11"), ("Dockerfile.gpu", {"gpu"}, "3.12")],
)
def test_dockerfile_installs_what_pyproject_declares(
    dockerfile: str, extras: set[str], python: str
) -> None:
    path = INFRA / dockerfile
    installs = _pip_installs(path)
    project = [target for words in installs for target in words if target.startswith(".")]
    assert len(project) == 1, f"{dockerfile}: installs the project once ({installs})"
    wanted = set(re.findall(r"\[(.*)\]", project[0])[0].split(",")) if "[" in project[0] else set()
    assert wanted == extras and wanted <= set(PYPROJECT["project"]["optional-dependencies"])
    declared = _declared()
    for target in (t for words in installs for t in words if not t.startswith(".")):
        req = Requirement(target)
        assert req.name in declared, f"{dockerfile}: {req.name} is not declared in pyproject.toml"
        assert req.specifier == declared[req.name].specifier, (
            f"{dockerfile}: {target} vs {declared[req.name]}"
        )
    copied = {
        source.rstrip("/")
        for op, arg in _instructions(path)
        if op == "COPY"
        for source in arg.split()[:-1]
    }
    package_dirs = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
    assert {"pyproject.toml", PYPROJECT["project"]["readme"], *package_dirs} <= copied
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(python)
    entrypoint = next(arg for op, arg in _instructions(path) if op == "ENTRYPOINT")
    assert yaml.safe_load(entrypoint) == list(PYPROJECT["project"]["scripts"])


def test_the_gpu_image_has_python_and_cuda_that_fit() -> None:
    base = next(arg for op, arg in _instructions(INFRA / "Dockerfile.gpu") if op == "FROM")
    assert (
        base.startswith("nvidia/cuda:12.") and "cudnn" in base
    )  # onnxruntime-gpu: CUDA 12, cuDNN 9
    assert "ubuntu24.04" in base  # its python3 is 3.12, which the parametrised test above checks


def test_the_user_functions_example_validates_and_its_mounted_file_loads(tmp_path: Path) -> None:
    """infra/k8s/examples/user-functions.yaml: a ConfigMap with a user's file, mounted where
    DRIFTLINE_FUNCTIONS points; the file loads as a runner would load it."""
    from driftline.runtime.loader import load_functions

    docs = [d for d in yaml.safe_load_all((K8S / "examples" / "user-functions.yaml").read_text())]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    runner = pod["containers"][0]
    target = next(e["value"] for e in runner["env"] if e["name"] == "DRIFTLINE_FUNCTIONS")
    mount = runner["volumeMounts"][0]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == config["metadata"]["name"]
    folder, _, name = target.rpartition("/")
    assert folder == mount["mountPath"] and name in config["data"]
    (tmp_path / name).write_text(config["data"][name])
    selected = load_functions(str(tmp_path / name))
    assert [s.spec.name for s in selected] == ["tag"]
