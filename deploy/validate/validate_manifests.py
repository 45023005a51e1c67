#!/usr/bin/env python3
"""Renders prfaas kustomizations and validates every object offline.

  validate_manifests.py --crds DIR [--require-cluster] KUSTOMIZATION_DIR|MANIFEST.yaml ...

For each target:
  1. A kustomization directory is rendered with `kubectl kustomize` (origin annotations on, so
     each object names the file it came from); a plain YAML file is read as is.
  2. Built-in kinds are validated with kubernetes-models (validate-k8s.js, Node).
  3. Custom resources are validated against the openAPIV3Schema of the CRDs under --crds
     (python3-jsonschema); `x-kubernetes-*` extensions and CEL rules are not evaluated.
  4. Unknown fields (typos such as `imagee:`) are reported: for CRs against their CRD schema, for
     pod templates of built-in workloads against the PodTemplateSpec schema that the
     LeaderWorkerSet CRD embeds (kubernetes-models itself is not strict).
  5. prfaas rules: probes on /health, worker grace period = drain deadline + 15 s, liveness
     outlasting the drain, GPU requests equal to limits, every volumeMount backed by a volume,
     each worker flag exactly once (overlays patch args by index), and with --require-cluster a
     real prfaas.io/cluster label on every worker pod.
An object whose apiVersion/kind neither kubernetes-models nor a CRD knows is an error.

Every problem is printed as `FILE: Kind/name: field.path: message`; the exit status is 1 when
there is any, 2 on a usage or environment error (missing CRD directory, node, kubernetes-models),
77 (skipped) when kubectl is absent and a kustomization has to be rendered.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ORIGIN = "config.kubernetes.io/origin"
DRAIN_MARGIN_SECONDS = 15
SKIP = 77  # exit status CTest reports as "skipped" (SKIP_RETURN_CODE)
# libyaml's loader when present: the CRDs are megabytes of YAML, ten times faster to parse.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def yaml_load(text):
    return yaml.load(text, Loader=LOADER)
WORKER_FLAGS = ("--role", "--cluster", "--cluster-kind", "--model", "--config", "--grpc-port",
                "--http-port", "--transport-port")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class Problems:
    def __init__(self):
        self.items = []

    def add(self, where, obj, path, message):
        ident = f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"
        self.items.append(f"{where}: {ident}: {path or '(root)'}: {message}")


def die(message):
    print(f"validate_manifests: {message}", file=sys.stderr)
    sys.exit(2)


# ---- CRDs --------------------------------------------------------------------------------------

def load_crds(crd_dir):
    """Maps (apiVersion, kind) to the version's openAPIV3Schema for every CRD under crd_dir."""
    if not os.path.isdir(crd_dir):
        die(f"CRD schema directory not found: {crd_dir} (expected the shared data checkout "
            f"beside the repository, ../shared/data/crds)")
    schemas = {}
    for root, _, files in os.walk(crd_dir):
        for name in sorted(files):
            if not name.endswith((".yaml", ".yml")):
                continue
            with open(os.path.join(root, name)) as f:
                for doc in yaml.load_all(Loader=LOADER, stream=f):
                    if not doc or doc.get("kind") != "CustomResourceDefinition":
                        continue
                    spec = doc["spec"]
                    for version in spec.get("versions", []):
                        schema = (version.get("schema") or {}).get("openAPIV3Schema")
                        if schema:
                            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                            schemas[key] = schema
    if not schemas:
        die(f"no CustomResourceDefinition found under {crd_dir}")
    return schemas


def json_path(parts):
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + str(p))
    return out


def schema_errors(schema, obj):
    validator = jsonschema.Draft7Validator(schema)
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        path = list(err.absolute_path)
        if err.validator == "required":
            missing = re.match(r"'([^']+)' is a required property", err.message)
            if missing:
                path.append(missing.group(1))
        yield json_path(path), err.message


def unknown_fields(schema, obj, path=()):
    """Fields of obj that a structural schema does not declare (what the API server would prune)."""
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                yield from unknown_fields(props[key], value, path + (key,))
            elif isinstance(extra, dict):
                yield from unknown_fields(extra, value, path + (key,))
            elif props is not None and extra is not True:
                yield json_path(path + (key,))
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            yield from unknown_fields(schema["items"], item, path + (i,))


def pod_template_schema(crds):
    lws = crds.get(("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"))
    if not lws:
        return None
    return lws["properties"]["spec"]["properties"]["leaderWorkerTemplate"]["properties"]["workerTemplate"]


# ---- rendering ---------------------------------------------------------------------------------

def render(target):
    """Returns [(origin_file, object)] for a kustomization directory or a YAML file."""
    if os.path.isdir(target):
        with tempfile.TemporaryDirectory() as tmp:
            # A wrapper kustomization turns on origin annotations without touching the overlay.
            rel = os.path.relpath(os.path.abspath(target), tmp)
            with open(os.path.join(tmp, "kustomization.yaml"), "w") as f:
                f.write("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                        f"buildMetadata: [originAnnotations]\nresources:\n  - {rel}\n")
            try:
                out = subprocess.run(["kubectl", "kustomize", tmp], capture_output=True, text=True)
            except FileNotFoundError:
                # kubectl (with its built-in kustomize) is preinstalled on the project's machines
                # and cannot come from Debian; without it, rendering is skipped, not failed.
                print("validate_manifests: kubectl not found: cannot render kustomizations (skipped)")
                sys.exit(SKIP)
            if out.returncode != 0:
                return None, f"{target}: kustomize build failed: {out.stderr.strip()}"
            docs = [d for d in yaml.load_all(Loader=LOADER, stream=out.stdout) if d]
            result = []
            for doc in docs:
                origin = target
                annotations = (doc.get("metadata") or {}).get("annotations") or {}
                if ORIGIN in annotations:
                    info = yaml_load(annotations.pop(ORIGIN)) or {}
                    src = info.get("path") or info.get("configuredIn")
                    if src:
                        origin = os.path.relpath(os.path.normpath(os.path.join(tmp, src)))
                    if not annotations:
                        doc["metadata"].pop("annotations")
                result.append((f"{origin} (in {target})" if origin != target else target, doc))
            return result, None
    try:
        with open(target) as f:
            return [(target, d) for d in yaml.load_all(Loader=LOADER, stream=f) if d], None
    except (OSError, yaml.YAMLError) as e:
        return None, f"{target}: cannot read: {e}"


# ---- built-in kinds via kubernetes-models ------------------------------------------------------

def validate_builtins(objects):
    script = os.path.join(HERE, "validate-k8s.js")
    if not os.path.isdir(os.path.join(HERE, "node_modules", "kubernetes-models")):
        die(f"kubernetes-models is not installed: run `npm install` in {HERE} (scripts/setup.sh does)")
    try:
        out = subprocess.run(["node", script], input=json.dumps(objects), capture_output=True,
                             text=True)
    except FileNotFoundError:
        die("node not found (needed for kubernetes-models)")
    if out.returncode != 0:
        die(f"validate-k8s.js failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


# ---- prfaas rules ------------------------------------------------------------------------------

def pod_templates(obj):
    """(field path, pod template) pairs of a workload object."""
    spec = obj.get("spec") or {}
    if obj.get("kind") in WORKLOAD_KINDS and isinstance(spec.get("template"), dict):
        yield "spec.template", spec["template"]
    if obj.get("kind") == "LeaderWorkerSet":
        lwt = spec.get("leaderWorkerTemplate") or {}
        for key in ("leaderTemplate", "workerTemplate"):
            if isinstance(lwt.get(key), dict):
                yield f"spec.leaderWorkerTemplate.{key}", lwt[key]


def drain_deadline(objects):
    for _, obj in objects:
        name = (obj.get("metadata") or {}).get("name", "")
        if obj.get("kind") == "ConfigMap" and name.startswith("prfaas-config"):
            config = yaml_load((obj.get("data") or {}).get("config.yaml", "")) or {}
            return (config.get("worker") or {}).get("drain_deadline_seconds")
    return None


def check_prfaas_rules(where, obj, deadline, require_cluster, problems):
    for base, template in pod_templates(obj):
        labels = (template.get("metadata") or {}).get("labels") or {}
        spec = template.get("spec") or {}
        is_worker = labels.get("app.kubernetes.io/name") == "prfaas-worker"
        volumes = {v.get("name") for v in spec.get("volumes") or []}
        for ci, c in enumerate(spec.get("containers") or []):
            cpath = f"{base}.spec.containers[{ci}]"
            for mi, mount in enumerate(c.get("volumeMounts") or []):
                if mount.get("name") not in volumes:
                    problems.add(where, obj, f"{cpath}.volumeMounts[{mi}].name",
                                 f"no volume named {mount.get('name')!r} in the pod")
            if is_worker:
                # Overlays patch args by index; a drifted index shows up as a lost or doubled flag.
                args = c.get("args") or []
                for flag in WORKER_FLAGS:
                    n = sum(1 for a in args if a == flag or str(a).startswith(flag + "="))
                    if n != 1:
                        problems.add(where, obj, f"{cpath}.args",
                                     f"{flag} appears {n} times, must appear once")
            for probe in ("readinessProbe", "livenessProbe"):
                got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
                if got != "/health":
                    problems.add(where, obj, f"{cpath}.{probe}.httpGet.path",
                                 f"must probe /health (got {got!r})")
            res = c.get("resources") or {}
            req = (res.get("requests") or {}).get("nvidia.com/gpu")
            lim = (res.get("limits") or {}).get("nvidia.com/gpu")
            if req != lim:
                problems.add(where, obj, f"{cpath}.resources.limits.nvidia.com/gpu",
                             f"GPU limit ({lim}) must equal the request ({req})")
            if is_worker and deadline is not None:
                live = c.get("livenessProbe") or {}
                tolerated = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
                if tolerated <= deadline:
                    problems.add(where, obj, f"{cpath}.livenessProbe",
                                 f"tolerates {tolerated}s of failures, not more than the drain "
                                 f"deadline ({deadline}s): a draining worker would be killed")
        if is_worker:
            grace = spec.get("terminationGracePeriodSeconds")
            if deadline is not None and grace != deadline + DRAIN_MARGIN_SECONDS:
                problems.add(where, obj, f"{base}.spec.terminationGracePeriodSeconds",
                             f"is {grace}, must be worker.drain_deadline_seconds ({deadline}) "
                             f"+ {DRAIN_MARGIN_SECONDS}")
            if require_cluster:
                for key in ("prfaas.io/cluster", "prfaas.io/cluster-kind"):
                    if labels.get(key) in (None, "", "unset"):
                        problems.add(where, obj, f"{base}.metadata.labels.{key}",
                                     "must name the cluster (set it in the overlay)")
                if labels.get("prfaas.io/cluster-kind", "pd") not in ("pd", "prfaas", "unset"):
                    problems.add(where, obj, f"{base}.metadata.labels.prfaas.io/cluster-kind",
                                 "must be pd or prfaas")


# ---- main --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--crds", required=True, help="directory of CRD YAML files (searched recursively)")
    ap.add_argument("--require-cluster", action="store_true",
                    help="worker pods must carry a real prfaas.io/cluster label (overlays)")
    ap.add_argument("targets", nargs="+", help="kustomization directories or YAML files")
    args = ap.parse_args()

    crds = load_crds(args.crds)
    pod_schema = pod_template_schema(crds)
    problems = Problems()
    rendered = []
    for target in args.targets:
        objects, error = render(target)
        if error:
            problems.items.append(error)
            continue
        if not objects:
            problems.items.append(f"{target}: renders no objects")
        rendered.append((target, objects))

    builtin_results = validate_builtins([obj for _, objs in rendered for _, obj in objs])
    i = 0
    for target, objects in rendered:
        deadline = drain_deadline(objects)
        for where, obj in objects:
            result = builtin_results[i]
            i += 1
            key = (obj.get("apiVersion"), obj.get("kind"))
            if key in crds:
                for path, message in schema_errors(crds[key], obj):
                    problems.add(where, obj, path, message)
                for path in unknown_fields(crds[key], obj):
                    problems.add(where, obj, path, "unknown field (not in the CRD schema)")
            elif result["known"]:
                for err in result["errors"]:
                    problems.add(where, obj, err["path"], err["message"])
                if pod_schema is not None:
                    for base, template in pod_templates(obj):
                        for path in unknown_fields(pod_schema, template):
                            problems.add(where, obj, f"{base}.{path}", "unknown field")
            else:
                problems.add(where, obj, "apiVersion",
                             f"no schema for {key[0]} {key[1]} (not a built-in kind, no CRD)")
            check_prfaas_rules(where, obj, deadline, args.require_cluster, problems)

    for line in problems.items:
        print(line)
    count = sum(len(objs) for _, objs in rendered)
    if problems.items:
        print(f"validate_manifests: {len(problems.items)} problem(s) in {len(args.targets)} target(s)")
        return 1
    print(f"validate_manifests: {count} object(s) in {len(args.targets)} target(s) OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
