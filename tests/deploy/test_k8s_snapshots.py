"""Workers that store event snapshots write them to a volume of their own (the root filesystem is
read-only): snapshots.dir of every config a pod runs is a writable, size-bounded mounted volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# Secrets holding whole shard configs, and where their example files live (as in test_k8s.py).
SHARD_SECRETS = {
    "vbw-rtsp-shards": "components/rtsp-shards/shards",
    "vbw-ingest-shards": "overlays/edge-ingest/shards",
}


def _configs(deploy, docs, pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The vbw configs a pod's mounted ConfigMaps and shard Secrets hold."""
    out = []
    for v in pod.get("volumes", []):
        if "configMap" in v:
            cm = deploy.one(docs, "ConfigMap", v["configMap"]["name"])
            out += [yaml.safe_load(t) for k, t in cm["data"].items() if k.endswith(".yaml")]
        elif "secret" in v and v["secret"]["secretName"] in SHARD_SECRETS:
            folder: Path = deploy.k8s / SHARD_SECRETS[v["secret"]["secretName"]]
            out += [yaml.safe_load(p.read_text()) for p in sorted(folder.glob("shard-*.yaml"))]
    return [c for c in out if isinstance(c, dict) and "sources" in c]


def test_snapshot_dirs_are_writable_bounded_volumes(deploy, overlay: str) -> None:
    docs = deploy.render(overlay)
    seen = 0
    for w in deploy.workloads(docs):
        name = f"{w['kind']}/{w['metadata']['name']}"
        pod = w["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {t["metadata"]["name"]: t for t in w["spec"].get("volumeClaimTemplates", [])}
        worker = next((c for c in pod["containers"] if c["name"] in ("worker", "ingest")), None)
        if worker is None:  # the search index (`vbw index`) saves no snapshots
            continue
        mounts = {m["mountPath"].rstrip("/"): m for m in worker.get("volumeMounts", [])}
        for cfg in _configs(deploy, docs, pod):
            snaps = cfg.get("snapshots") or {}
            if not snaps.get("enabled"):
                continue
            seen += 1
            d = str(snaps["dir"]).rstrip("/")
            assert d.startswith("/"), f"{name}: snapshots.dir {d} must be absolute in a pod"
            mount = mounts.get(d)
            assert mount is not None, f"{name}: snapshots.dir {d} is not a mounted volume"
            assert not mount.get("readOnly"), f"{name}: {d} is mounted read-only"
            vol = mount["name"]
            if vol in claims:
                assert claims[vol]["spec"]["resources"]["requests"]["storage"], name
            else:
                assert "emptyDir" in volumes[vol] or "persistentVolumeClaim" in volumes[vol], name
                if "emptyDir" in volumes[vol]:  # a full node disk would evict every pod on it
                    assert volumes[vol]["emptyDir"].get("sizeLimit"), f"{name}: {vol} has no sizeLimit"
            bounded = snaps.get("max_count", 10000) is not None or snaps.get("max_age_s", 1.0) is not None
            assert bounded, f"{name}: a snapshot store without retention fills its volume"
    if overlay != "edge-ingest":  # ingest pods publish frames; they save no snapshots
        assert seen, f"overlays/{overlay}: no worker config stores snapshots"
