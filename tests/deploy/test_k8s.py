"""Every Kustomize overlay renders, validates offline against Kubernetes and CRD schemas, and
agrees with the worker: its configs pass `vbw validate-config` as the pod would see them, its
grace period matches the drain grace, KEDA scales the same group and topic the worker reads.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

# Debian's kubectl is 1.32; validate against the same API version, strictly (unknown fields fail).
K8S_VERSION = "1.32.0"
# KEDA and prometheus-operator kinds: their CRD schemas, from pinned npm packages (see its README.md).
CRD_VALIDATOR = Path(__file__).resolve().parent / "crd-validate" / "validate.mjs"
MODEL_DIR_IN_IMAGE = "/opt/vbw/models/vbw-motion-small"
# Secrets holding whole shard configs, and where their example files live in the repo.
SHARD_SECRETS = {
    "vbw-rtsp-shards": "components/rtsp-shards/shards",
    "vbw-ingest-shards": "overlays/edge-ingest/shards",
}
SHARD_VAR = "$(VBW_SHARD)"
# Containers that run another vbw command than the worker's, and how their config is checked.
OTHER_COMMANDS = {"ingest": ("vbw", "ingest", "-c"), "index": ("vbw", "index", "-c")}


# --- schemas -------------------------------------------------------------------------------------
def _crd_results(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per doc from crd-validate/validate.mjs: the KEDA and prometheus-operator kinds
    checked against their CRD schemas (pinned npm packages, see its README.md), others skipped."""
    node = shutil.which("node")
    if node is None or not (CRD_VALIDATOR.parent / "node_modules").is_dir():
        pytest.fail("node or tests/deploy/crd-validate/node_modules is missing: run scripts/setup.sh dev")
    out = subprocess.run(
        [node, str(CRD_VALIDATOR)], input=json.dumps(docs), capture_output=True, text=True, timeout=120
    )
    if out.returncode not in (0, 1):
        pytest.fail(f"crd-validate/validate.mjs failed ({out.returncode}):\n{out.stderr}")
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(results) == len(docs), out.stdout
    return results


def _problems(docs: list[dict[str, Any]]) -> list[str]:
    """What is wrong with each doc: CRD kinds by their CRD schema, the rest by Kubernetes' own."""
    problems = []
    for doc, crd in zip(docs, _crd_results(docs), strict=True):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if crd["result"] != "skipped":
            problems += [f"{where} {e}" for e in crd["errors"]]
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{where} .{'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:  # a CRD kind validate.mjs does not cover
            problems.append(f"{where}: {e.message}")
    return problems


def test_strict_validation_catches_mistakes(deploy) -> None:
    """The validators used below really reject a typo and a wrong type, for core and CRD kinds."""
    docs = deploy.render("cpu")
    dep = copy.deepcopy(deploy.one(docs, "Deployment", "vbw-worker"))
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    so = copy.deepcopy(deploy.one(docs, "ScaledObject"))
    so["spec"]["maxReplicaCount"] = "twelve"
    so_typo = copy.deepcopy(deploy.one(docs, "ScaledObject"))
    so_typo["spec"]["triggers"][0]["metdata"] = {}
    sm = copy.deepcopy(deploy.one(docs, "ServiceMonitor", "vbw"))
    sm["spec"]["endpoints"][0]["interval"] = 15
    sm_typo = copy.deepcopy(deploy.one(docs, "ServiceMonitor", "vbw"))
    sm_typo["spec"]["endpoints"][0]["intervall"] = "15s"
    pr = copy.deepcopy(deploy.one(docs, "PrometheusRule"))
    pr["spec"]["groups"][0]["rules"][-1]["for"] = "two minutes"
    broken = [dep, so, so_typo, sm, sm_typo, pr]
    problems = _problems(broken)
    for doc, want in zip(
        broken,
        [
            "imagePullPolicyy",
            "/spec/maxReplicaCount: must be integer",
            "/spec/triggers/0/metdata: unknown field",
            "/spec/endpoints/0/interval: must be string",
            "/spec/endpoints/0/intervall: unknown field",
            "/for: must match pattern",
        ],
        strict=True,
    ):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert any(p.startswith(where) and want in p for p in problems), (want, problems)
    assert len(problems) == len(broken), problems
    # The untouched objects pass, through the same two validators.
    assert not _problems(
        [
            deploy.one(docs, k, n)
            for k, n in (("Deployment", "vbw-worker"), ("ScaledObject", None), ("ServiceMonitor", "vbw"))
        ]
    )


def test_crd_schema_packages_pinned() -> None:
    """The CRD schema packages are pinned exactly, locked, and the versions noted in README.md."""
    package = json.loads((CRD_VALIDATOR.parent / "package.json").read_text())
    lock = json.loads((CRD_VALIDATOR.parent / "package-lock.json").read_text())
    readme = (CRD_VALIDATOR.parent / "README.md").read_text()
    assert package["dependencies"]
    for name, version in package["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name}: pin an exact version, not {version}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, f"{name}: re-lock"
        assert f"| `{name}` | {version} |" in readme, f"{name} {version} is not in crd-validate/README.md"


def test_overlay_validates_offline(deploy, overlay: str) -> None:
    docs = deploy.render(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PrometheusRule", "PodDisruptionBudget", "Service"} <= kinds, kinds
    assert deploy.workloads(docs), f"overlays/{overlay} renders no Deployment or StatefulSet"
    problems = _problems(list(docs))
    assert not problems, "\n".join(problems)


# --- the pod spec --------------------------------------------------------------------------------
def _containers(w: dict[str, Any]) -> list[dict[str, Any]]:
    return w["spec"]["template"]["spec"]["containers"]


def _probe_path(probe: dict[str, Any]) -> tuple[str, Any]:
    return probe["httpGet"]["path"], probe["httpGet"]["port"]


def test_workloads_hardened_and_probed(deploy, overlay: str) -> None:
    for w in deploy.workloads(deploy.render(overlay)):
        name = f"{w['kind']}/{w['metadata']['name']}"
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        for c in pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
        for c in _containers(w):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert ports.get("metrics") == 9108, name
            assert _probe_path(c["livenessProbe"]) == ("/healthz", "metrics"), name
            assert _probe_path(c["readinessProbe"]) == ("/readyz", "metrics"), name
            start = c["startupProbe"]
            assert _probe_path(start) == ("/readyz", "metrics"), name
            # Engine load + warm-up (TensorRT plan builds on a cold GPU pod) before liveness starts.
            budget = start["periodSeconds"] * start["failureThreshold"]
            assert budget >= (600 if "vbw-gpu" in c["image"] else 120), f"{name}: startup budget {budget}s"
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert "memory" in c["resources"]["limits"], name
            # Writable paths are volumes: /tmp always, the engine caches for engine-running pods.
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            writable = ["/tmp"] + (["/var/cache/vbw"] if c["name"] == "worker" else [])
            for path in writable:
                assert path in mounts, f"{name}: {path} is not a mounted volume"
                vol = mounts[path]
                assert vol in claims or "emptyDir" in volumes[vol] or "persistentVolumeClaim" in volumes[vol]


def test_gpu_workers_get_one_gpu_and_tensorrt(deploy, overlay: str) -> None:
    for w in deploy.workloads(deploy.render(overlay)):
        for c in _containers(w):
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if "vbw-gpu" not in c["image"]:
                assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
                continue
            assert c["resources"]["limits"]["nvidia.com/gpu"] == "1", "one worker process per GPU"
            assert c["resources"]["requests"]["nvidia.com/gpu"] == "1"
            assert env.get("VBW_ENGINE__BACKEND") == "tensorrt"
            tolerations = w["spec"]["template"]["spec"].get("tolerations", [])
            assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)


def _argv(deploy, c: dict[str, Any]) -> list[str]:
    """The process the container starts: its command, else the image's ENTRYPOINT, then args."""
    dockerfile = deploy.docker / ("Dockerfile.gpu" if "vbw-gpu" in c["image"] else "Dockerfile.cpu")
    stage = deploy.dockerfile_final_stage(dockerfile)
    return list(c.get("command", stage["entrypoint"])) + list(c.get("args", stage["cmd"]))


def test_containers_run_the_tested_command(deploy, overlay: str) -> None:
    """Workers start `vbw run -c FILE` (edge ingest: `vbw ingest -c FILE`, the search index:
    `vbw index -c FILE`), FILE on a mounted volume."""
    for w in deploy.workloads(deploy.render(overlay)):
        for c in _containers(w):
            argv = _argv(deploy, c)
            want = OTHER_COMMANDS.get(c["name"], deploy.worker_command)
            assert tuple(argv[:3]) == want and len(argv) == 4, argv
            mounts = [m["mountPath"] for m in c["volumeMounts"]]
            assert any(argv[3].startswith(m.rstrip("/") + "/") for m in mounts), argv[3]


# --- the configs, as the pod sees them ------------------------------------------------------------
def _pod_configs(deploy, docs, w) -> list[tuple[str, dict[str, str], dict[str, bytes]]]:
    """For each config the workload's pods run: (config path, env, files of the mounted volumes)."""
    c = _containers(w)[0]
    pod = w["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            env[e["name"]] = f"placeholder-{e['valueFrom']['secretKeyRef']['key']}"
    config_path = _argv(deploy, c)[3]
    shards: list[int | None] = [None]
    files: dict[str, bytes] = {}
    shard_examples: dict[int, bytes] = {}
    for m in c["volumeMounts"]:
        vol = volumes.get(m["name"], {})
        base = m["mountPath"].rstrip("/")
        if "configMap" in vol:
            cm = deploy.one(docs, "ConfigMap", vol["configMap"]["name"])
            for key, text in cm["data"].items():
                files[f"{base}/{key}"] = text.encode()
        elif "secret" in vol:
            secret = vol["secret"]["secretName"]
            if secret in SHARD_SECRETS:
                examples = deploy.k8s / SHARD_SECRETS[secret]
                for p in examples.glob("shard-*.yaml"):
                    shard_examples[int(p.stem.removeprefix("shard-"))] = p.read_bytes()
                    files[f"{base}/{p.name}"] = p.read_bytes()
            else:  # credentials: only their presence matters to validation
                for item in vol["secret"].get("items", []):
                    files[f"{base}/{item['path']}"] = b"placeholder\n"
    if SHARD_VAR in config_path:
        assert sorted(shard_examples) == list(range(w["spec"]["replicas"])), (
            f"{w['metadata']['name']}: replicas {w['spec']['replicas']} but example shards "
            f"{sorted(shard_examples)}: one shard-N.yaml per ordinal"
        )
        assert any(e.get("valueFrom", {}).get("fieldRef") for e in c["env"] if e["name"] == "VBW_SHARD")
        env["VBW_SHARD"] = "0"  # set in the pod too; the config must tolerate it
        shards = sorted(shard_examples)
    return [
        (config_path.replace(SHARD_VAR, str(n)) if n is not None else config_path, env, files) for n in shards
    ]


def _stage(tmp: Path, config_path: str, files: dict[str, bytes], env: dict[str, str]) -> tuple[Path, dict]:
    """Lay the pod's mounted files under tmp and point the config's absolute paths there."""
    roots = sorted({str(Path(p).parent) for p in files}, key=len, reverse=True)

    def reroot(text: str) -> str:
        for r in roots:
            text = re.sub(rf"(?<![\w/]){re.escape(r)}/", f"{tmp}{r}/", text)
        return text

    for p, data in files.items():
        target = tmp / p.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(reroot(data.decode()).encode() if p.endswith(".yaml") else data)
    return tmp / config_path.lstrip("/"), {k: reroot(v) for k, v in env.items()}


def _workloads_with_configs(deploy, overlay):
    docs = deploy.render(overlay)
    for w in deploy.workloads(docs):
        for config_path, env, files in _pod_configs(deploy, docs, w):
            yield w, config_path, env, files


def test_configs_pass_validate_config(deploy, overlay: str, tmp_path: Path) -> None:
    """`vbw validate-config` accepts every config, with the pod's environment and mounted files."""
    for i, (w, config_path, env, files) in enumerate(_workloads_with_configs(deploy, overlay)):
        root = tmp_path / str(i)
        path, pod_env = _stage(root, config_path, files, env)
        assert path.is_file(), f"{w['metadata']['name']}: {config_path} is not in any mounted volume"
        run_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("VBW_")} | pod_env
        check = ["validate-config", str(path)]
        if _containers(w)[0]["name"] == "index":  # the search index's settings (docs/search.md)
            check = ["index", "-c", str(path), "--check"]
        out = subprocess.run(
            [deploy.vbw_exe(), *check],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, f"{w['metadata']['name']} {config_path}:\n{out.stdout}{out.stderr}"


def test_grace_period_matches_drain_grace(deploy, overlay: str) -> None:
    """terminationGracePeriodSeconds = pipeline.shutdown_grace_s + 5 s to exit after the drain."""
    for w, config_path, _env, files in _workloads_with_configs(deploy, overlay):
        cfg = yaml.safe_load(files[config_path])
        grace = float((cfg.get("pipeline") or {}).get("shutdown_grace_s", 10.0))
        tgps = w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert tgps == grace + 5, f"{w['metadata']['name']} {config_path}: {tgps}s vs drain grace {grace}s"


def test_configs_match_the_image_and_ports(deploy, overlay: str) -> None:
    for w, config_path, env, files in _workloads_with_configs(deploy, overlay):
        cfg = yaml.safe_load(files[config_path])
        where = f"{w['metadata']['name']} {config_path}"
        if "index" in cfg:  # `vbw index`: no engine, no sources; the metrics port of the probes
            assert cfg["index"].get("metrics_port", 9108) == 9108, where
            continue
        assert cfg["engine"]["model_dir"] == MODEL_DIR_IN_IMAGE, where
        assert (cfg.get("metrics") or {}).get("port", 9108) == 9108, where
        assert "VBW_METRICS__PORT" not in env, where
        for src in cfg["sources"]:
            if src["type"] == "rtsp":
                assert "@" not in src["url"], f"{where}: example camera URLs carry no credentials"


def test_camera_shards_are_disjoint() -> None:
    for examples in SHARD_SECRETS.values():
        seen: dict[str, str] = {}
        for p in sorted((Path(__file__).resolve().parents[2] / "deploy/k8s" / examples).glob("shard-*.yaml")):
            for src in yaml.safe_load(p.read_text())["sources"]:
                assert src["id"] not in seen, f"camera {src['id']} in {seen.get(src['id'])} and {p.name}"
                seen[src["id"]] = p.name


# --- scaling, selection, secrets -----------------------------------------------------------------
def test_keda_scales_the_consumer_group_the_worker_reads(deploy, overlay: str) -> None:
    docs = deploy.render(overlay)
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    if not scaled:
        assert not any(w["kind"] == "Deployment" for w in deploy.workloads(docs)), (
            "a Kafka Deployment without autoscaling"
        )
        return
    so = deploy.one(docs, "ScaledObject")
    dep = deploy.one(docs, "Deployment", so["spec"]["scaleTargetRef"]["name"])
    assert "replicas" not in dep["spec"], "KEDA owns the replica count; `replicas` would fight it"
    [(config_path, _env, files)] = _pod_configs(deploy, docs, dep)
    cfg = yaml.safe_load(files[config_path])
    [src] = [s for s in cfg["sources"] if s["type"] == "kafka"]
    [trig] = so["spec"]["triggers"]
    meta = trig["metadata"]
    assert trig["type"] == "kafka"
    assert meta["bootstrapServers"] == ",".join(cfg["kafka"]["bootstrap_servers"])
    assert meta["consumerGroup"] == src["group_id"]
    assert meta["topic"] in src["topics"]
    # No more pods than partitions: an idle consumer would hold a GPU for nothing.
    assert meta["allowIdleConsumers"] == "false"
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
    sec = cfg["kafka"]["security"]
    assert meta["tls"] == ("enable" if sec["protocol"].endswith("SSL") else "disable")
    assert meta["sasl"] == sec["sasl_mechanism"].lower().replace("-sha-", "_sha").replace("-", "_")
    auth = deploy.one(docs, "TriggerAuthentication", trig["authenticationRef"]["name"])
    pod_secrets = {
        v["secret"]["secretName"] for v in dep["spec"]["template"]["spec"]["volumes"] if "secret" in v
    }
    assert {r["name"] for r in auth["spec"]["secretTargetRef"]} <= pod_secrets


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_services_pdbs_and_scraping_select_the_pods(deploy, overlay: str) -> None:
    docs = deploy.render(overlay)
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in deploy.workloads(docs)]
    services = [
        d
        for d in docs
        if d["kind"] == "Service" and d["metadata"]["labels"].get("app.kubernetes.io/name") == "vbw"
    ]
    for w in deploy.workloads(docs):
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert _matches(w["spec"]["selector"]["matchLabels"], labels)
        assert any(_matches(s["spec"]["selector"], labels) for s in services), w["metadata"]["name"]
        assert any(
            _matches(p["spec"]["selector"]["matchLabels"], labels)
            for p in docs
            if p["kind"] == "PodDisruptionBudget"
        ), f"{w['metadata']['name']} has no PodDisruptionBudget"
        if w["kind"] == "StatefulSet":
            assert w["spec"]["serviceName"] in {s["metadata"]["name"] for s in services}
    sm = deploy.one(docs, "ServiceMonitor", "vbw")
    job_label = sm["spec"]["jobLabel"]
    for s in services:
        assert any(_matches(s["spec"]["selector"], p) for p in pods)
        assert _matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"]), s["metadata"]["name"]
        # The alert rules select job="vbw".
        assert s["metadata"]["labels"][job_label] == "vbw"
        assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in s["spec"]["ports"]}


def test_no_literal_secrets(deploy, overlay: str) -> None:
    """Credentials come from Secrets created out of band; nothing rendered carries one."""
    docs = deploy.render(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"]
    for w in [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]:  # kafka-exporter too
        for c in _containers(w):
            for e in c.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|USERNAME|KEY", e["name"]):
                    assert "valueFrom" in e, f"{e['name']} must come from a Secret"
    for d in docs:
        if d["kind"] == "ConfigMap":
            for text in d["data"].values():
                cfg = yaml.safe_load(text)
                sec = (cfg.get("kafka") or {}).get("security") or {}
                for ref in ("password", "key_password"):
                    assert "value" not in (sec.get(ref) or {}), f"{ref} given inline in a ConfigMap"


def test_prometheusrule_in_sync(deploy) -> None:
    out = subprocess.run(
        [sys.executable, str(deploy.repo / "deploy/prometheus/sync_prometheusrule.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def test_gpu_plans_built_before_the_worker_with_its_profile(deploy, overlay: str) -> None:
    """The build-plans init container compiles exactly the plans the worker will look up: same
    model, precision, batch profile and cache directory (else the worker, which never builds in
    the serving path, would find no plan)."""
    docs = deploy.render(overlay)
    for w in deploy.workloads(docs):
        worker = _containers(w)[0]
        if "vbw-gpu" not in worker["image"]:
            continue
        [init] = [c for c in w["spec"]["template"]["spec"]["initContainers"] if c["name"] == "build-plans"]
        assert init["image"] == worker["image"]
        assert init["command"] == ["vbw", "build-engine"]
        args = dict(a.removeprefix("--").split("=", 1) for a in init["args"])
        env = {e["name"]: e.get("value") for e in worker["env"]}
        assert yaml.safe_load(env["VBW_ENGINE__OPTIONS"]) == {"build_missing": False}
        assert args["precision"] == env["VBW_ENGINE__PRECISION"]
        assert args["cache"] == "/var/cache/vbw/plans"  # the image's VBW_PLAN_CACHE
        cache_vol = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}["/var/cache/vbw"]
        assert {m["mountPath"]: m["name"] for m in init["volumeMounts"]}["/var/cache/vbw"] == cache_vol
        assert init["resources"]["limits"]["nvidia.com/gpu"] == "1"
        for config_path, _env, files in _pod_configs(deploy, docs, w):
            cfg = yaml.safe_load(files[config_path])
            opts = cfg["engine"].get("options") or {}
            want = {
                "model": cfg["engine"]["model_dir"],
                "min": str(opts.get("min_batch", 1)),
                "opt": str(opts.get("opt_batch", 8)),
                "max": str((cfg.get("batching") or {}).get("max_batch", 8)),
            }
            got = {k: args[k] for k in want}
            assert got == want, f"{w['metadata']['name']} {config_path}: build-plans {got}, worker {want}"


# --- broker-side lag ------------------------------------------------------------------------------
def _flags(args: list[str]) -> dict[str, str]:
    """--name=value and bare --name (a true boolean) arguments of a Go/kingpin program."""
    return dict([*a.removeprefix("--").split("=", 1), "true"][:2] for a in args)


def test_kafka_exporter_watches_the_workers_group(deploy, overlay: str) -> None:
    """Every overlay with Kafka workers runs kafka-exporter on the same brokers, credentials, group
    and topic, scraped under its own job, and the alert VbwConsumerLagUnattended names that group:
    the lag is seen on the broker when no worker runs to report it."""
    docs = deploy.render(overlay)
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    if not scaled:  # no Kafka workers here
        return
    exporter = deploy.one(docs, "Deployment", "kafka-exporter")
    dep = deploy.one(docs, "Deployment", scaled[0]["spec"]["scaleTargetRef"]["name"])
    [(config_path, _env, files)] = _pod_configs(deploy, docs, dep)
    cfg = yaml.safe_load(files[config_path])
    [src] = [s for s in cfg["sources"] if s["type"] == "kafka"]
    [c] = _containers(exporter)
    flags = _flags(c["args"])
    assert flags["kafka.server"] == ",".join(cfg["kafka"]["bootstrap_servers"])
    assert re.fullmatch(flags["group.filter"].strip("^$"), src["group_id"])
    assert all(re.fullmatch(flags["topic.filter"].strip("^$"), t) for t in src["topics"])
    assert flags.get("offset.show-all", "true") == "true", "the lag of a group with no member is the point"
    sec = cfg["kafka"]["security"]
    assert (flags.get("tls.enabled") == "true") == sec["protocol"].endswith("SSL")
    assert (flags.get("sasl.enabled") == "true") == sec["protocol"].startswith("SASL")
    assert flags["sasl.mechanism"] == sec["sasl_mechanism"].lower().replace("-sha-", "-sha")
    # Credentials from the workers' Secret, through the environment the kubelet expands.
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    assert flags["sasl.username"] == "$(KAFKA_USERNAME)" and env["KAFKA_USERNAME"]["key"] == "username"
    assert flags["sasl.password"] == "$(KAFKA_PASSWORD)" and env["KAFKA_PASSWORD"]["key"] == "password"
    worker_secrets = {
        v["secret"]["secretName"] for v in dep["spec"]["template"]["spec"]["volumes"] if "secret" in v
    }
    assert {r["name"] for r in env.values()} <= worker_secrets
    # Hardened like the workers (the namespace enforces the restricted Pod Security Standard).
    pod = exporter["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "memory" in c["resources"]["limits"]
    # Scraped by its own ServiceMonitor, as a job other than "vbw" (up{job="vbw"} is the workers').
    labels = exporter["spec"]["template"]["metadata"]["labels"]
    [svc] = [s for s in docs if s["kind"] == "Service" and _matches(s["spec"]["selector"], labels)]
    sm = deploy.one(docs, "ServiceMonitor", "kafka-exporter")
    assert _matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] != "vbw"
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
    assert f"--web.listen-address=:{c['ports'][0]['containerPort']}" in c["args"]
    # The alert watches this group.
    rules = yaml.safe_load((deploy.repo / "deploy/prometheus/vbw-alerts.yaml").read_text())["groups"]
    [alert] = [r for g in rules for r in g["rules"] if r.get("alert") == "VbwConsumerLagUnattended"]
    assert f'consumergroup="{src["group_id"]}"' in alert["expr"], alert["expr"]
