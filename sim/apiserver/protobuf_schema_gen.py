"""Write `protobuf_schema.json`: the Kubernetes protobuf message layouts the sim's codec reads.

The layouts are facts of k8s.io/api and k8s.io/apimachinery: field numbers and wire types come from
each package's `generated.proto`; what protobuf cannot say (JSON names, `omitempty`/`omitzero`,
pointer or value, `json:",inline"` embedding, struct field order) comes from the Go struct tags in the
same package's `.go` files. Run it by hand when the Kubernetes version moves; tests and the server
only read the committed JSON (no Go, no network):

    cd "$(mktemp -d)" && go mod init x && go mod download -json k8s.io/api@VER k8s.io/apimachinery@VER
    python -m sim.apiserver.protobuf_schema_gen --api DIR_OF_k8s.io/api@VER \
        --apimachinery DIR_OF_k8s.io/apimachinery@VER

Each field is written as `[number, jsonName, type, flags]` (a fifth item, the value type, for maps),
listed in Go struct order (the JSON order); number 0 is a JSON-only key (`kind` and `apiVersion` of
an inlined TypeMeta), accepted on encode and never on the wire. Flags: `r` repeated, `m`
map<string, value>, `p` Go pointer (only sent when set), `e` omitempty, `z` omitzero, `i` inlined
into the parent's JSON.
Types: protobuf scalars, a message's full name, or one of the types whose JSON form is not a plain
object (`time`, `microtime`, `duration`, `quantity`, `intorstring`, `rawjson`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import deque
from pathlib import Path

META = "k8s.io.apimachinery.pkg.apis.meta.v1"
# Messages whose JSON form is a string, a number or embedded raw JSON; the codec handles these.
SPECIAL = {
    f"{META}.Time": "time",
    f"{META}.MicroTime": "microtime",
    f"{META}.Duration": "duration",
    f"{META}.FieldsV1": "rawjson",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "rawjson",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "intorstring",
}
SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float"}

# Group versions served over protobuf, and the top-level kinds of each (their Lists are added).
GROUP_VERSIONS = {
    "v1": "k8s.io.api.core.v1",
    "resource.k8s.io/v1": "k8s.io.api.resource.v1",
    "resource.k8s.io/v1beta1": "k8s.io.api.resource.v1beta1",
    "resource.k8s.io/v1beta2": "k8s.io.api.resource.v1beta2",
    "events.k8s.io/v1": "k8s.io.api.events.v1",
    "coordination.k8s.io/v1": "k8s.io.api.coordination.v1",
    "apps/v1": "k8s.io.api.apps.v1",
    "batch/v1": "k8s.io.api.batch.v1",
    "rbac.authorization.k8s.io/v1": "k8s.io.api.rbac.v1",
    "scheduling.k8s.io/v1": "k8s.io.api.scheduling.v1",
    "policy/v1": "k8s.io.api.policy.v1",
    "node.k8s.io/v1": "k8s.io.api.node.v1",
    "admissionregistration.k8s.io/v1": "k8s.io.api.admissionregistration.v1",
}
KINDS = {
    "v1": [
        "Pod",
        "Node",
        "Namespace",
        "Event",
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Service",
        "Endpoints",
        "PersistentVolumeClaim",
        "ResourceQuota",
        "LimitRange",
        "Binding",
    ],
    "resource.k8s.io/v1": ["ResourceSlice", "ResourceClaim", "ResourceClaimTemplate", "DeviceClass"],
    "resource.k8s.io/v1beta1": ["ResourceSlice", "ResourceClaim", "ResourceClaimTemplate", "DeviceClass"],
    "resource.k8s.io/v1beta2": [
        "ResourceSlice",
        "ResourceClaim",
        "ResourceClaimTemplate",
        "DeviceClass",
        "DeviceTaintRule",
    ],
    "events.k8s.io/v1": ["Event"],
    "coordination.k8s.io/v1": ["Lease"],
    "apps/v1": ["Deployment", "DaemonSet", "StatefulSet", "ReplicaSet"],
    "batch/v1": ["Job"],
    "rbac.authorization.k8s.io/v1": ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"],
    "scheduling.k8s.io/v1": ["PriorityClass"],
    "policy/v1": ["PodDisruptionBudget", "Eviction"],
    "node.k8s.io/v1": ["RuntimeClass"],
    "admissionregistration.k8s.io/v1": [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ],
}
# Kinds of meta/v1 that every group version carries.
META_KINDS = ["DeleteOptions", "Status", "WatchEvent", "ListOptions"]
NO_LIST = {"Binding", "Eviction"}

_PROTO_FIELD = re.compile(
    r"^\s*(optional|repeated|required)?\s*([\w.]+|map<\s*\w+\s*,\s*[\w.]+\s*>)\s+(\w+)\s*=\s*(\d+)\s*;"
)
_MAP = re.compile(r"map<\s*(\w+)\s*,\s*([\w.]+)\s*>")
_GO_FIELD = re.compile(r"^\s*(?:(\w+)\s+)?(\S+)\s+`([^`]*)`")


class SchemaError(Exception):
    pass


class Package:
    def __init__(self, name: str, roots: dict[str, Path]) -> None:
        self.name = name
        path = name.split(".")
        module = ".".join(path[:2])  # "k8s.io"
        repo = path[2]  # "api" | "apimachinery"
        folder = roots[repo].joinpath(*path[3:])
        if not folder.is_dir():
            raise SchemaError(f"no Go package folder {folder} for proto package {name} ({module})")
        self.messages = _parse_proto(folder / "generated.proto", name)
        self.structs = _parse_go(folder)


def _parse_proto(path: Path, package: str) -> dict[str, list[tuple[str, str, str, int]]]:
    """message -> [(label, type, name, number)] with types resolved to full names."""
    messages: dict[str, list[tuple[str, str, str, int]]] = {}
    current: str | None = None
    depth = 0
    for line in path.read_text().splitlines():
        line = line.split("//", 1)[0]
        if not line.strip():
            continue
        m = re.match(r"^\s*message\s+(\w+)\s*\{", line)
        if m and depth == 0:
            current, depth = m.group(1), 1
            messages[current] = []
            continue
        if current is None:
            continue
        depth += line.count("{") - line.count("}")
        if depth <= 0:
            current = None
            continue
        f = _PROTO_FIELD.match(line)
        if f and depth == 1:
            label, typ, name, number = f.group(1) or "", f.group(2), f.group(3), int(f.group(4))
            messages[current].append((label, typ, name, number))
    for fields in messages.values():
        for i, (label, typ, name, number) in enumerate(fields):
            fields[i] = (label, _resolve(typ, package, messages), name, number)
    return messages


def _resolve(typ: str, package: str, local: dict[str, object]) -> str:
    mm = _MAP.fullmatch(typ)
    if mm:
        return f"map<{mm.group(1)},{_resolve(mm.group(2), package, local)}>"
    if typ in SCALARS:
        return typ
    if "." in typ:
        return typ.lstrip(".")
    if typ in local:
        return f"{package}.{typ}"
    raise SchemaError(f"{package}: cannot resolve type {typ}")


def _parse_go(folder: Path) -> dict[str, list[dict[str, object]]]:
    """struct -> fields in order: {go, number, json, pointer, omitempty, omitzero, inline}."""
    structs: dict[str, list[dict[str, object]]] = {}
    for path in sorted(folder.glob("*.go")):
        if path.name.endswith("_test.go"):
            continue
        current: str | None = None
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("//"):
                continue
            code = line.split("//", 1)[0] if "`" not in line else line
            m = re.match(r"^type\s+(\w+)\s+struct\s*\{", code)
            if m:
                current = m.group(1)
                structs[current] = []
                if code.rstrip().endswith("}"):
                    current = None
                continue
            if current is None:
                continue
            if code.strip() == "}":
                current = None
                continue
            f = _GO_FIELD.match(code)
            if not f:
                continue
            go_name, go_type, tags = f.group(1), f.group(2), f.group(3)
            pb = re.search(r'protobuf:"([^"]*)"', tags)
            js = re.search(r'json:"([^"]*)"', tags)
            json_parts = (js.group(1) if js else "").split(",")
            parts = pb.group(1).split(",") if pb else []
            if len(parts) < 2:  # JSON only (TypeMeta, protobuf:"-"): number 0
                if go_type.endswith("TypeMeta") and "inline" in json_parts[1:]:
                    names = ["kind", "apiVersion"]
                else:
                    names = [json_parts[0] or str(go_name)] if json_parts[0] != "-" else []
                structs[current].extend({"number": 0, "json": n} for n in names)
                continue
            structs[current].append(
                {
                    "go": go_name or go_type.lstrip("*").split(".")[-1],
                    "number": int(parts[1]),
                    "json": json_parts[0],
                    "pointer": go_type.startswith("*"),
                    "omitempty": "omitempty" in json_parts[1:],
                    "omitzero": "omitzero" in json_parts[1:],
                    "inline": "inline" in json_parts[1:],
                }
            )
    return structs


def build(roots: dict[str, Path]) -> dict[str, object]:
    packages: dict[str, Package] = {}

    def package_of(full: str) -> tuple[Package, str]:
        pkg, _, msg = full.rpartition(".")
        if pkg not in packages:
            packages[pkg] = Package(pkg, roots)
        return packages[pkg], msg

    kinds: dict[str, dict[str, str]] = {}
    queue: deque[str] = deque()
    for gv, pkg in GROUP_VERSIONS.items():
        names: dict[str, str] = {}
        for kind in KINDS[gv]:
            names[kind] = f"{pkg}.{kind}"
            if kind not in NO_LIST:
                names[kind + "List"] = f"{pkg}.{kind}List"
        for kind in META_KINDS:
            names[kind] = f"{META}.{kind}"
        kinds[gv] = names
        queue.extend(names.values())

    out: dict[str, list[list[object]]] = {}
    while queue:
        full = queue.popleft()
        if full in out or full in SPECIAL:
            continue
        pkg, msg = package_of(full)
        if msg not in pkg.messages:
            raise SchemaError(f"{full}: no such message in {pkg.name}/generated.proto")
        proto = {number: (label, typ, name) for label, typ, name, number in pkg.messages[msg]}
        go_fields = pkg.structs.get(msg)
        if go_fields is None:
            raise SchemaError(f"{full}: no Go struct {msg} in {pkg.name}")
        fields: list[list[object]] = []
        seen: set[int] = set()
        for g in go_fields:
            number = int(g["number"])  # type: ignore[call-overload]
            if number == 0:
                fields.append([0, g["json"], "", ""])
                continue
            if number not in proto:
                raise SchemaError(
                    f"{full}: Go field {g['go']} has protobuf number {number}, not in the .proto"
                )
            label, typ, name = proto[number]
            seen.add(number)
            flags = ""
            value_type = None
            mm = re.fullmatch(r"map<(\w+),(.+)>", typ)
            if mm:
                if mm.group(1) != "string":
                    raise SchemaError(f"{full}.{name}: map key {mm.group(1)} is not supported")
                flags += "m"
                value_type = SPECIAL.get(mm.group(2), mm.group(2))
                typ = "map"
                if value_type not in SCALARS and value_type not in SPECIAL.values():
                    queue.append(value_type)
            else:
                if label == "repeated":
                    flags += "r"
                if typ not in SCALARS:
                    if typ in SPECIAL:
                        typ = SPECIAL[typ]
                    else:
                        queue.append(typ)
            if g["pointer"]:
                flags += "p"
            if g["omitempty"]:
                flags += "e"
            if g["omitzero"]:
                flags += "z"
            if g["inline"]:
                flags += "i"
            json_name = str(g["json"]) or ("" if g["inline"] else str(g["go"]))
            if json_name == "-":
                continue
            entry: list[object] = [number, json_name, typ, flags]
            if value_type is not None:
                entry.append(value_type)
            fields.append(entry)
        missing = sorted(set(proto) - seen)
        if missing:
            raise SchemaError(f"{full}: .proto fields {missing} have no Go struct field")
        out[full] = fields
    return {
        "note": "generated by sim/apiserver/protobuf_schema_gen.py; do not edit",
        "source": {repo: path.name for repo, path in roots.items()},
        "kinds": kinds,
        "messages": dict(sorted(out.items())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--api", required=True, type=Path, help="the k8s.io/api module folder")
    parser.add_argument(
        "--apimachinery", required=True, type=Path, help="the k8s.io/apimachinery module folder"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).with_name("protobuf_schema.json"), help="file to write"
    )
    args = parser.parse_args(argv)
    try:
        schema = build({"api": args.api, "apimachinery": args.apimachinery})
    except SchemaError as exc:
        print(f"protobuf_schema_gen: {exc}", file=sys.stderr)
        return 4
    text = json.dumps(schema, separators=(",", ":"))
    # one message per line keeps diffs readable when Kubernetes moves
    text = text.replace('],"k8s.io.', '],\n"k8s.io.')
    args.out.write_text(text + "\n")
    print(f"wrote {args.out}: {len(schema['messages'])} messages")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
