"""A minimal kustomize renderer for the manifests under deploy/k8s — no kubectl needed.

It implements only the kustomization fields this repository uses, and fails loudly on any
other, so a manifest change that needs more cannot be silently mis-rendered:

* ``resources``: YAML files (multi-document) and directories holding a kustomization;
* ``patches``: from ``path`` or inline ``patch``, either a JSON 6902 operation list (needs a
  ``target``) or a strategic-merge document (targets itself by kind and name unless a
  ``target`` is given); strategic merge here means maps merge recursively, lists of maps with
  a ``name`` merge by name (containers, env, volumes …), other lists are replaced and ``null``
  deletes a key — the subset of Kubernetes' patch strategies these manifests rely on;
* ``images``: ``newName`` / ``newTag`` / ``digest`` for pod-template containers;
* ``namespace``: set on every namespaced resource.

tests/deploy/test_manifests.py checks that its output equals ``kubectl kustomize`` whenever
kubectl is installed, so the shortcut is itself tested.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml

SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "patches", "images", "namespace"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PriorityClass", "StorageClass", "PersistentVolume"}
POD_SPEC_PATHS = (("spec", "template", "spec"), ("spec", "jobTemplate", "spec", "template", "spec"))


class KustomizeError(ValueError):
    pass


def load_documents(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def render(directory: str) -> list[dict]:
    """All resources of the kustomization in `directory`, transformed."""
    kfile = os.path.join(directory, "kustomization.yaml")
    (kust,) = load_documents(kfile)
    unknown = set(kust) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(f"{kfile}: fields not supported by kustomize_lite: {sorted(unknown)}")

    resources: list[dict] = []
    for entry in kust.get("resources", []):
        path = os.path.normpath(os.path.join(directory, entry))
        if os.path.isdir(path):
            resources.extend(render(path))
        else:
            resources.extend(load_documents(path))
    resources = [copy.deepcopy(r) for r in resources]

    for spec in kust.get("patches", []):
        _apply_patch(directory, spec, resources)
    for image in kust.get("images", []):
        for res in resources:
            _set_image(res, image)
    if "namespace" in kust:
        for res in resources:
            if res["kind"] not in CLUSTER_SCOPED:
                res.setdefault("metadata", {})["namespace"] = kust["namespace"]
    return resources


def _matches(res: dict, target: dict) -> bool:
    for key in ("kind", "name", "namespace"):
        if key in target:
            value = res["kind"] if key == "kind" else res.get("metadata", {}).get(key)
            if value != target[key]:
                return False
    if "group" in target or "version" in target:
        group, _, version = res["apiVersion"].rpartition("/")
        if target.get("group", group) != group or target.get("version", version) != version:
            return False
    unknown = set(target) - {"kind", "name", "namespace", "group", "version"}
    if unknown:
        raise KustomizeError(f"patch target fields not supported: {sorted(unknown)}")
    return True


def _apply_patch(directory: str, spec: dict, resources: list[dict]) -> None:
    if "path" in spec:
        docs = load_documents(os.path.join(directory, spec["path"]))
        patch = docs[0] if len(docs) == 1 else docs
    else:
        patch = yaml.safe_load(spec["patch"])
    target = spec.get("target")

    if isinstance(patch, list):  # JSON 6902
        if not target:
            raise KustomizeError("a JSON 6902 patch needs a target")
        hits = [r for r in resources if _matches(r, target)]
        if not hits:
            raise KustomizeError(f"patch target matched nothing: {target}")
        for res in hits:
            for op in patch:
                _json6902(res, op)
        return

    if target is None:
        target = {"kind": patch["kind"], "name": patch["metadata"]["name"]}
    hits = [r for r in resources if _matches(r, target)]
    if not hits:
        raise KustomizeError(f"patch target matched nothing: {target}")
    for res in hits:
        body = copy.deepcopy(patch)
        body.get("metadata", {}).pop("name", None)  # a targeted patch keeps the target's name
        merged = strategic_merge(res, body)
        res.clear()
        res.update(merged)


def strategic_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        out = [copy.deepcopy(i) for i in base]
        index = {item["name"]: n for n, item in enumerate(out)}
        for item in patch:
            if item.get("$patch") == "delete":
                out = [i for i in out if i["name"] != item["name"]]
                index = {i["name"]: n for n, i in enumerate(out)}
            elif item["name"] in index:
                out[index[item["name"]]] = strategic_merge(out[index[item["name"]]], item)
            else:
                out.append(copy.deepcopy(item))
                index[item["name"]] = len(out) - 1
        return out
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json6902(doc: dict, op: dict) -> None:
    *parents, last = _pointer(op["path"])
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    kind = op["op"]
    if isinstance(node, list):
        if kind == "add":
            node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
        elif kind == "replace":
            node[int(last)] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del node[int(last)]
        else:
            raise KustomizeError(f"JSON 6902 op not supported: {kind}")
        return
    if kind == "add":
        node[last] = copy.deepcopy(op["value"])
    elif kind == "replace":
        if last not in node:
            raise KustomizeError(f"replace of missing path {op['path']}")
        node[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del node[last]
    else:
        raise KustomizeError(f"JSON 6902 op not supported: {kind}")


def pod_spec(res: dict) -> dict | None:
    for path in POD_SPEC_PATHS:
        node: Any = res
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            return node
    return None


def _split_image(image: str) -> tuple[str, str]:
    """('registry/name', ':tag' or '@digest' or '')."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _set_image(res: dict, image: dict) -> None:
    spec = pod_spec(res)
    if spec is None:
        return
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        name, suffix = _split_image(container["image"])
        if name != image["name"]:
            continue
        name = image.get("newName", name)
        if "digest" in image:
            suffix = "@" + image["digest"]
        elif "newTag" in image:
            suffix = ":" + str(image["newTag"])
        container["image"] = name + suffix
