#!/usr/bin/env bash
# Validates deploy/ offline against the Kubernetes OpenAPI schemas with kubernetes-validate
# (PyPI; it ships the schemas, so no cluster and no network beyond the one-time install).
#  - every object of `kubectl kustomize deploy/`, strictly (unknown fields are errors), for the
#    oldest Kubernetes snapmend supports (1.33, kube 5's floor) and the newest the validator knows;
#  - every example in deploy/examples/ (SnapshotRepairs, SnapshotScans) against its CRD's own
#    openAPIV3Schema, strictly.
# Installs the validator into target/tools/ when missing; exits non-zero if it cannot.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
validator_version="1.37.0"
k8s_versions=(1.33.0 1.37.0)
venv="${SNAPMEND_TOOLS_DIR:-$repo/target/tools}/kubernetes-validate-$validator_version"
# Another copy of deploy/ (the tests validate deliberately broken copies).
deploy="${SNAPMEND_DEPLOY_DIR:-$repo/deploy}"

command -v python3 >/dev/null || { echo "validate-manifests: python3 is required" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "validate-manifests: kubectl is required (kustomize)" >&2; exit 1; }

# Tests run this script in parallel: one installer at a time, the others wait and reuse it.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  echo "validate-manifests: installing kubernetes-validate==$validator_version into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$validator_version"
fi
flock -u 9

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
kubectl kustomize "$deploy" > "$work/deploy.yaml"
objects=$(grep -c '^kind:' "$work/deploy.yaml" || true)
[ "$objects" -gt 0 ] || { echo "validate-manifests: kustomize rendered no objects" >&2; exit 1; }

for v in "${k8s_versions[@]}"; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$work/deploy.yaml"
  echo "validate-manifests: $objects objects of deploy/ valid against Kubernetes $v (strict)"
done

"$venv/bin/python" - "$deploy"/crd/*.yaml -- "$deploy"/examples/*.yaml <<'PY'
"""Validates the examples (SnapshotRepairs, SnapshotScans) against their CRD's schema, rejecting
fields the API server would prune."""
import sys
import jsonschema
import yaml


def strict(schema):
    """Structural schemas prune unknown fields; treat them as errors instead."""
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k in ("items", "additionalProperties") else v for k, v in schema.items()}
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    return out


split = sys.argv.index("--")
crd_paths, examples = sys.argv[1:split], sys.argv[split + 1:]
# (apiVersion, kind) -> schema, for every version of every CRD.
schemas = {}
for crd_path in crd_paths:
    with open(crd_path) as f:
        crd = yaml.safe_load(f)
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    for v in crd["spec"]["versions"]:
        schemas[(f"{group}/{v['name']}", kind)] = strict(v["schema"]["openAPIV3Schema"])
failed = 0
count = 0
for path in examples:
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if not doc:
                continue
            count += 1
            name = f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key not in schemas:
                print(f"ERROR {name}: not one of {sorted(schemas)}", file=sys.stderr)
                failed += 1
                continue
            body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
            errors = list(jsonschema.Draft7Validator(schemas[key]).iter_errors(body))
            for e in errors:
                where = ".".join(str(p) for p in e.absolute_path) or "(root)"
                print(f"ERROR {name}: {where}: {e.message}", file=sys.stderr)
            failed += bool(errors)
if count == 0:
    print("ERROR no examples found", file=sys.stderr)
    sys.exit(1)
if failed:
    print(f"validate-manifests: {failed} of {count} examples invalid", file=sys.stderr)
    sys.exit(1)
print(f"validate-manifests: {count} examples valid against their CRD schemas (strict)")
PY
