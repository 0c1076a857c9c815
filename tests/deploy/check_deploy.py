"""Checks the deployment files against the code, the schemas and each other.

Run by services/imerg-ingest/tests/deploy.rs (the venv python of scripts/setup.sh):

    check_deploy.py --root REPO --bin IMERG_INGEST_BINARY --metrics NAME,NAME,...

What it checks (every failure is collected and printed; exit 1 if any, 0 with "OK" last):
- deploy/: every YAML parses; each kustomization lists exactly the manifests beside it; base and
  overlays are built (a kustomize subset: resources, namespace, labels, images, configMapGenerator,
  strategic-merge patches; anything else is an error) and every object is validated: Kubernetes
  kinds with kubernetes-validate (strict), KEDA and Prometheus Operator kinds with the schemas in
  tests/deploy/schemas/;
- the wiring: roles, peer addresses, Services, ports, probes, grace period, resources, security
  context, the Secret's keys, every IMERG_* variable known to the binary and every value accepted
  by it (the binary parses the environment of each Deployment), KEDA targets and triggers (the
  listener on the SQS queue, prometheus triggers on exported metrics, the committer never, no
  `replicas` where KEDA owns the count), the worker Service headless (the committer balances over
  its pods), PDBs;
- alerts: `promtool check rules` and `promtool test rules` (tests/deploy/alerts_test.yaml), every
  metric exported by the service (--metrics) or a listed external metric, a runbook section each;
- the Grafana dashboard: every query parses (promtool) and names exported or external metrics;
- deploy/infra: cfn-lint; every bucket versioned, with a rule expiring noncurrent versions;
- IAM (every build but the base, whose role ARNs are placeholders): each pod's service account
  names a role of the stack (the annotation's role name against each role's RoleName, with
  ${AWS::Region} as any region) whose trust names that service account and nothing else; pods
  that parse granules without writing (roles within listener,worker) get no s3:PutObject or
  s3:DeleteObject; writers (committer, native, the rechunk Job) get read, write and delete; only
  listeners consume the queue; KEDA's role reads queue attributes and nothing else;
- the Dockerfile: toolchain = rust-toolchain.toml, build packages = scripts/setup.sh, runtime
  packages provide every shared library of the binary (ldd + dpkg), non-root, no secrets,
  Cargo.lock + --locked, .dockerignore keeps the sources, hadolint.
Tools (promtool, hadolint, cfn-lint, ldd, dpkg-query) missing = failure, never a skip.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.30"
SECRET_NAME = "imerg-ingest-tokens"
SECRET_KEYS = {"earthdata-token", "operator-token", "internal-token"}
HTTP_PORT = 9464
GRPC_PORT = 50051
# Metrics that are not the service's: CloudWatch exporter (SQS), kube-state-metrics, Prometheus.
EXTERNAL_METRICS = {
    "aws_sqs_approximate_number_of_messages_visible_average": "CloudWatch exporter: SQS queue depth",
    "aws_sqs_approximate_age_of_oldest_message_maximum": "CloudWatch exporter: SQS message age",
    "kube_deployment_status_replicas_available": "kube-state-metrics: replicas of a Deployment",
    "up": "Prometheus: scrape target up",
}
# serve's settings that the manifests leave unset on purpose.
UNSET_ON_PURPOSE = {
    "IMERG_EARTHDATA_TOKEN": "the token is a file from the Secret (IMERG_EARTHDATA_TOKEN_FILE)",
    "IMERG_OPERATOR_TOKEN": "the token is a file from the Secret (IMERG_OPERATOR_TOKEN_FILE)",
    "IMERG_INTERNAL_TOKEN": "the token is a file from the Secret (IMERG_INTERNAL_TOKEN_FILE)",
    "IMERG_INSECURE_NO_AUTH": "every role that serves gRPC has its tokens from the Secret",
    "IMERG_TLS_CERT_FILE": "TLS on gRPC is optional (docs/operations.md): mount a certificate to turn it on",
    "IMERG_TLS_KEY_FILE": "TLS on gRPC is optional (docs/operations.md): mount a certificate to turn it on",
    "IMERG_TLS_CA_FILE": "TLS on gRPC is optional (docs/operations.md): mount a certificate to turn it on",
    "IMERG_REPO_ENDPOINT": "AWS S3 itself; only for S3-compatible stores",
    "IMERG_SOURCE_ENDPOINT": "AWS S3 itself; only for S3-compatible stores",
    "IMERG_SQS_ENDPOINT": "AWS SQS itself; only for a local SQS-compatible server",
    "IMERG_SOURCE_ANONYMOUS": "NASA's bucket needs the Earthdata credentials",
    "IMERG_PRODUCT_PROFILE": "the built-in profile (IMERG_PRODUCT) is used",
    "IMERG_CONFIG": "settings come from the ConfigMap's variables, not a TOML file",
    "IMERG_NATIVE_KEEP_MANTISSA_BITS": "the native store is lossless by default",
    "EARTHDATA_USERNAME": "the deployment gives a token file; a login is for laptops",
    "EARTHDATA_PASSWORD": "the deployment gives a token file; a login is for laptops",
    "NETRC": "the deployment gives a token file; a .netrc is for laptops",
    "IMERG_EARTHDATA_LOGIN_URL": "Earthdata Login itself (only with a username and password)",
}
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources", "images", "patches",
                    "configMapGenerator"}
# The HDF5 runtime library package of each Debian release the image may be built on (the package
# libhdf5-dev depends on there).
HDF5_RUNTIME = {"bookworm": "libhdf5-103-1", "trixie": "libhdf5-310"}


def host_release() -> str | None:
    """This machine's Debian codename (VERSION_CODENAME in /etc/os-release)."""
    try:
        m = re.search(r"^VERSION_CODENAME=\"?(\w+)", Path("/etc/os-release").read_text(), re.M)
    except OSError:
        return None
    return m.group(1) if m else None


# IAM: what each kind of pod needs or must not have (checked on the stack's roles).
REPO_WRITE = ("s3:PutObject", "s3:DeleteObject")
REPO_READ = ("s3:GetObject", "s3:ListBucket")
SQS_CONSUME = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility")
KEDA_ACTIONS = {"sqs:getqueueattributes", "sqs:getqueueurl"}
# ${AWS::Region} in a RoleName: any region name (us-west-2, us-gov-west-1, cn-north-1...).
REGION_RX = r"[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d+"
ROLE_ARN_RX = re.compile(r"arn:aws[\w-]*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*([\w+=,.@-]+)")


# Lists merged by key in a strategic-merge patch (the ones these manifests patch or may patch).
MERGE_KEYS = {"containers": "name", "env": "name", "volumes": "name", "volumeMounts": "mountPath",
              "ports": "containerPort"}


class Checker:
    def __init__(self, root: Path, binary: Path, metrics: set[str]):
        self.root = root
        self.deploy = root / "deploy"
        self.binary = binary
        self.metrics = metrics
        self.errors: list[str] = []
        self.notes: list[str] = []
        bindir = Path(sys.executable).parent
        self.tools = {
            "hadolint": bindir / "hadolint",
            "cfn-lint": bindir / "cfn-lint",
            "promtool": shutil.which("promtool"),
            "ldd": shutil.which("ldd"),
            "dpkg-query": shutil.which("dpkg-query"),
        }

    # ---------------------------------------------------------------- helpers
    def fail(self, msg: str) -> None:
        self.errors.append(msg)

    def tool(self, name: str) -> str | None:
        t = self.tools.get(name)
        if not t or not Path(t).exists():
            self.fail(f"tool {name} is not installed (scripts/setup.sh installs it); check not run")
            return None
        return str(t)

    def run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, **kw)

    def rel(self, p: Path) -> str:
        return str(p.relative_to(self.root))

    # ---------------------------------------------------------------- YAML + kustomize
    def load_docs(self, path: Path) -> list[dict]:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            self.fail(f"{self.rel(path)}: not valid YAML: {e}")
            return []
        for d in docs:
            if not isinstance(d, dict):
                self.fail(f"{self.rel(path)}: a document is not a mapping")
        return [d for d in docs if isinstance(d, dict)]

    def parse_all_yaml(self) -> None:
        files = sorted(p for p in self.deploy.rglob("*") if p.suffix in (".yaml", ".yml"))
        if not files:
            self.fail("deploy/ holds no YAML")
        for p in files:
            self.load_docs(p)

    def build(self, kdir: Path) -> list[dict]:
        """The objects `kustomize build kdir` would print, for the subset of kustomize used here."""
        kfile = kdir / "kustomization.yaml"
        docs = self.load_docs(kfile)
        if len(docs) != 1:
            self.fail(f"{self.rel(kfile)}: expected one document")
            return []
        k = docs[0]
        unknown = set(k) - KUSTOMIZE_FIELDS
        if unknown:
            self.fail(f"{self.rel(kfile)}: fields this check cannot build: {sorted(unknown)}")
        listed: set[Path] = set()
        objs: list[dict] = []
        for r in k.get("resources", []):
            p = (kdir / r).resolve()
            if p.is_dir():
                objs += self.build(p)
            elif p.is_file():
                listed.add(p)
                objs += copy.deepcopy(self.load_docs(p))
            else:
                self.fail(f"{self.rel(kfile)}: resource {r} does not exist")
        for g in k.get("configMapGenerator", []):
            data = {}
            for f in g.get("files", []):
                p = kdir / f
                if not p.is_file():
                    self.fail(f"{self.rel(kfile)}: generator file {f} does not exist")
                    continue
                listed.add(p.resolve())
                data[p.name] = p.read_text()
            opts = g.get("options", {})
            if not opts.get("disableNameSuffixHash"):
                self.fail(f"{self.rel(kfile)}: generator {g['name']}: name hash not modelled here")
            objs.append({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": g["name"], "labels": dict(opts.get("labels", {}))},
                         "data": data})
        for patch in k.get("patches", []):
            if set(patch) != {"path"}:
                self.fail(f"{self.rel(kfile)}: only `patches: - path:` (strategic merge) is modelled")
                continue
            p = kdir / patch["path"]
            if not p.is_file():
                self.fail(f"{self.rel(kfile)}: patch {patch['path']} does not exist")
                continue
            listed.add(p.resolve())
            for pd in self.load_docs(p):
                target = [o for o in objs if o.get("kind") == pd.get("kind")
                          and o["metadata"].get("name") == pd["metadata"].get("name")]
                if len(target) != 1:
                    self.fail(f"{self.rel(p)}: patch matches {len(target)} objects")
                    continue
                merge(target[0], pd)
        for o in objs:
            md = o.setdefault("metadata", {})
            if "namespace" in k and o.get("kind") not in CLUSTER_SCOPED:
                md["namespace"] = k["namespace"]
            for lab in k.get("labels", []):
                if lab.get("includeSelectors"):
                    self.fail(f"{self.rel(kfile)}: labels with selectors not modelled")
                md.setdefault("labels", {}).update(lab.get("pairs", {}))
                # includeTemplates: kustomize labels the pod templates of workloads too.
                tmpl = o.get("spec", {}).get("template")
                if lab.get("includeTemplates") and isinstance(tmpl, dict):
                    tmpl.setdefault("metadata", {}).setdefault("labels", {}).update(
                        lab.get("pairs", {}))
            for img in k.get("images", []):
                for c in pod_containers(o):
                    name, _, _ = c.get("image", "").partition(":")
                    if name == img["name"]:
                        c["image"] = f"{img.get('newName', name)}:{img.get('newTag', 'latest')}"
        # Every manifest beside the kustomization is used, and nothing else.
        here = {p.resolve() for p in kdir.iterdir() if p.suffix in (".yaml", ".yml")
                and p.name != "kustomization.yaml"}
        for p in sorted(here - listed):
            self.fail(f"{self.rel(p)}: not listed in {self.rel(kfile)}")
        for sub in kdir.iterdir():
            if sub.is_dir() and (sub / "kustomization.yaml").exists() is False:
                for p in sub.rglob("*.yaml"):
                    if p.resolve() not in listed:
                        self.fail(f"{self.rel(p)}: not listed in {self.rel(kfile)}")
        return objs

    # ---------------------------------------------------------------- schemas
    def validate(self, objs: list[dict], where: str) -> None:
        schemas_dir = Path(__file__).parent / "schemas"
        seen = set()
        for o in objs:
            key = (o.get("apiVersion"), o.get("kind"))
            name = f"{where}: {o.get('kind')}/{o.get('metadata', {}).get('name')}"
            if (key[1], o["metadata"].get("name")) in seen:
                self.fail(f"{name}: defined twice")
            seen.add((key[1], o["metadata"].get("name")))
            if key in CRD_SCHEMAS:
                schema = json.loads((schemas_dir / CRD_SCHEMAS[key]).read_text())
                for e in jsonschema.Draft7Validator(schema).iter_errors(o):
                    self.fail(f"{name}: {'/'.join(map(str, e.path))}: {e.message}")
                continue
            try:
                kubernetes_validate.validate(o, K8S_VERSION, strict=True)
            except kubernetes_validate.utils.ValidationError as e:
                self.fail(f"{name}: {'/'.join(map(str, e.path))}: {e.message}")
            except Exception as e:  # unknown kind / version
                self.fail(f"{name}: cannot validate: {e}")

    # ---------------------------------------------------------------- wiring
    def known_env(self) -> tuple[set[str], set[str]]:
        """(every IMERG_* variable the binary reads, those of `serve` and the global options).
        `serve`'s options are the service library's configuration type (crates/imerg-service)."""
        pat = re.compile(r'env\s*=\s*"([A-Z0-9_]+)"')
        every, serve = set(), set()
        files = [(p, p.name in ("serve.rs", "product.rs", "main.rs"))
                 for p in (self.root / "services/imerg-ingest/src").rglob("*.rs")]
        files.append((self.root / "crates/imerg-service/src/config.rs", True))
        for p, of_serve in files:
            names = set(pat.findall(p.read_text()))
            every |= names
            if of_serve:
                serve |= names
        if not serve:
            self.fail("no env = \"...\" found in services/imerg-ingest/src (did the flags move?)")
        return every, serve

    def check_wiring(self, objs: list[dict], where: str) -> None:
        by_kind: dict[str, dict[str, dict]] = {}
        for o in objs:
            by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
        deps = by_kind.get("Deployment", {})
        cms = by_kind.get("ConfigMap", {})
        svcs = by_kind.get("Service", {})
        cm = cms.get("imerg-ingest", {}).get("data", {})
        if not cm:
            self.fail(f"{where}: ConfigMap imerg-ingest missing or empty")
        every_env, serve_env = self.known_env()
        for k, v in cm.items():
            if not isinstance(v, str):
                self.fail(f"{where}: ConfigMap key {k}: value must be a string, is {v!r}")
            if "TOKEN" in k and not k.endswith("_FILE"):
                self.fail(f"{where}: ConfigMap key {k}: secrets never go in a ConfigMap")
        set_anywhere = set(cm)
        for name in ("imerg-committer", "imerg-listener", "imerg-worker"):
            if name not in deps:
                self.fail(f"{where}: Deployment {name} missing")
        shutdown_grace = parse_duration(cm.get("IMERG_SHUTDOWN_GRACE", "30s"))
        scaled_targets = {so["spec"]["scaleTargetRef"]["name"]
                          for so in by_kind.get("ScaledObject", {}).values()}
        scaled_targets |= {h["spec"]["scaleTargetRef"]["name"]
                           for h in by_kind.get("HorizontalPodAutoscaler", {}).values()}
        sas = by_kind.get("ServiceAccount", {})
        for dname, d in deps.items():
            tag = f"{where}: Deployment {dname}"
            spec = d["spec"]
            pod = spec["template"]["spec"]
            labels = spec["template"]["metadata"].get("labels", {})
            if spec["selector"].get("matchLabels", {}).items() - labels.items():
                self.fail(f"{tag}: selector does not match the pod labels")
            sa = pod.get("serviceAccountName")
            if sa not in sas:
                self.fail(f"{tag}: service account {sa} is not defined")
            elif not sas[sa]["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "").startswith("arn:aws:iam::"):
                self.fail(f"{tag}: service account {sa} has no eks.amazonaws.com/role-arn")
            psc = pod.get("securityContext", {})
            if not psc.get("runAsNonRoot") or psc.get("runAsUser", 0) == 0:
                self.fail(f"{tag}: must run as non-root (runAsNonRoot, runAsUser != 0)")
            if pod.get("terminationGracePeriodSeconds", 30) <= 2 * shutdown_grace:
                self.fail(f"{tag}: terminationGracePeriodSeconds must exceed 2 x IMERG_SHUTDOWN_GRACE "
                          f"({shutdown_grace:.0f} s): shutdown waits that long for work, then the commit")
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for v in volumes.values():
                if "secret" in v:
                    if v["secret"].get("secretName") != SECRET_NAME:
                        self.fail(f"{tag}: secret volume {v['name']} is not {SECRET_NAME}")
                    for it in v["secret"].get("items", []):
                        if it["key"] not in SECRET_KEYS:
                            self.fail(f"{tag}: unknown key {it['key']} of {SECRET_NAME}")
            containers = pod["containers"]
            if len(containers) != 1:
                self.fail(f"{tag}: expected one container")
            c = containers[0]
            if c.get("image", "").split(":")[0].split("/")[-1] != "imerg-ingest":
                self.fail(f"{tag}: image {c.get('image')} is not imerg-ingest")
            if c.get("args") != ["serve"]:
                self.fail(f"{tag}: args must be [serve]")
            csc = c.get("securityContext", {})
            if csc.get("allowPrivilegeEscalation") is not False or not csc.get("readOnlyRootFilesystem"):
                self.fail(f"{tag}: allowPrivilegeEscalation false and readOnlyRootFilesystem expected")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if ports.get("http-metrics") != HTTP_PORT:
                self.fail(f"{tag}: port http-metrics must be {HTTP_PORT}")
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                g = c.get(probe, {}).get("httpGet", {})
                if g.get("path") != path or g.get("port") not in ("http-metrics", HTTP_PORT):
                    self.fail(f"{tag}: {probe} must GET {path} on port {HTTP_PORT}")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                if "memory" not in res.get(part, {}):
                    self.fail(f"{tag}: resources.{part}.memory missing")
                for k, q in res.get(part, {}).items():
                    if not re.fullmatch(r"\d+(\.\d+)?(m|k|M|G|Ki|Mi|Gi)?", str(q)):
                        self.fail(f"{tag}: resources.{part}.{k}: {q!r} is not a quantity")
            # The environment the process gets.
            env: dict[str, str] = {}
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef", {}).get("name")
                if ref not in cms:
                    self.fail(f"{tag}: envFrom ConfigMap {ref} is not defined")
                else:
                    env.update(cms[ref].get("data", {}))
            explicit = set()
            for e in c.get("env", []):
                explicit.add(e["name"])
                if "value" in e:
                    env[e["name"]] = e["value"]
                elif "configMapKeyRef" in e.get("valueFrom", {}):
                    r = e["valueFrom"]["configMapKeyRef"]
                    if r["key"] not in cms.get(r["name"], {}).get("data", {}):
                        self.fail(f"{tag}: {e['name']} refers to a missing ConfigMap key {r}")
                    env[e["name"]] = cms.get(r["name"], {}).get("data", {}).get(r["key"], "")
                else:
                    self.fail(f"{tag}: {e['name']}: only value and configMapKeyRef are used here")
            set_anywhere |= set(env)
            for k in env:
                if k.startswith("IMERG_") and k not in every_env:
                    self.fail(f"{tag}: {k} is not a variable imerg-ingest reads")
                if k in ("IMERG_EARTHDATA_TOKEN", "IMERG_OPERATOR_TOKEN"):
                    self.fail(f"{tag}: {k} as a value: use the _FILE form with the Secret")
            for k in ("IMERG_GRPC_ADDR", "IMERG_HTTP_ADDR"):
                if not env.get(k, "").startswith("0.0.0.0:"):
                    self.fail(f"{tag}: {k} must listen on 0.0.0.0 in a pod, is {env.get(k)!r}")
            if env.get("IMERG_HTTP_ADDR", "").rsplit(":", 1)[-1] != str(HTTP_PORT):
                self.fail(f"{tag}: IMERG_HTTP_ADDR port is not {HTTP_PORT}")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            for k, v in env.items():
                if k.endswith("_TOKEN_FILE"):
                    d_, _, f = v.rpartition("/")
                    vol = volumes.get(mounts.get(d_, ""), {})
                    items = {i["path"] for i in vol.get("secret", {}).get("items", [])}
                    if f not in items:
                        self.fail(f"{tag}: {k}={v} is not a file of a mounted {SECRET_NAME} volume")
            roles = set(env.get("IMERG_ROLES", "all").split(","))
            if not roles <= {"listener", "worker", "committer", "api", "native"}:
                self.fail(f"{tag}: IMERG_ROLES={env.get('IMERG_ROLES')}: list the roles, not all")
            if (roles & {"listener", "api"}) and "committer" not in roles:
                self.check_peer(tag, env.get("IMERG_COMMITTER_ADDR"), svcs, deps, "committer")
            if (roles & {"listener", "api"}) and "worker" not in roles:
                self.check_peer(tag, env.get("IMERG_WORKER_ADDR"), svcs, deps, "worker")
            if "listener" in roles and not env.get("IMERG_SQS_QUEUE_URL", "").startswith("https://sqs."):
                self.fail(f"{tag}: the listener needs IMERG_SQS_QUEUE_URL")
            if "native" in roles:
                if not env.get("IMERG_NATIVE_REPO", "").startswith("s3://"):
                    self.fail(f"{tag}: the native role needs IMERG_NATIVE_REPO (s3://...)")
                if env.get("IMERG_NATIVE_REPO") == env.get("IMERG_REPO"):
                    self.fail(f"{tag}: IMERG_NATIVE_REPO must not be the virtual repository")
                if spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate":
                    self.fail(f"{tag}: the native writer needs replicas 1 and strategy Recreate")
                if dname in scaled_targets:
                    self.fail(f"{tag}: the native writer must never be autoscaled")
            if "committer" in roles:
                if spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate":
                    self.fail(f"{tag}: the committer needs replicas 1 and strategy Recreate")
                if dname in scaled_targets:
                    self.fail(f"{tag}: the committer must never be autoscaled")
            elif dname in scaled_targets and "replicas" in spec:
                self.fail(f"{tag}: KEDA owns the replica count; leave `replicas` out of the manifest")
            self.check_env_with_binary(tag, env)
            # KEDA reads queueURLFromEnv from the container's own env list.
            for so in by_kind.get("ScaledObject", {}).values():
                if so["spec"]["scaleTargetRef"]["name"] == dname:
                    for t in so["spec"]["triggers"]:
                        v = t["metadata"].get("queueURLFromEnv")
                        if v and v not in explicit:
                            self.fail(f"{tag}: KEDA reads {v} from the container's env, declare it there")
            if not any(pdb["spec"].get("selector", {}).get("matchLabels", {}).items() <= labels.items()
                       for pdb in by_kind.get("PodDisruptionBudget", {}).values()):
                self.fail(f"{tag}: no PodDisruptionBudget selects it")
        missing = serve_env - set_anywhere - set(UNSET_ON_PURPOSE) - {"IMERG_SERVER"}
        if missing:
            self.fail(f"{where}: settings neither set nor listed as unset on purpose: {sorted(missing)}")
        # Services select pods and name their ports.
        for sname, s in svcs.items():
            sel = s["spec"].get("selector", {})
            target = [d for d in deps.values()
                      if sel.items() <= d["spec"]["template"]["metadata"].get("labels", {}).items()]
            if not target:
                self.fail(f"{where}: Service {sname} selects no Deployment")
            for p in s["spec"]["ports"]:
                for d in target:
                    names = {cp["name"] for c in pod_containers(d) for cp in c.get("ports", [])}
                    if p.get("targetPort") not in names:
                        self.fail(f"{where}: Service {sname} port {p['name']}: targetPort not in {d['metadata']['name']}")
        # KEDA.
        tas = by_kind.get("TriggerAuthentication", {})
        queries: list[str] = []
        for soname, so in by_kind.get("ScaledObject", {}).items():
            sp = so["spec"]
            tag = f"{where}: ScaledObject {soname}"
            target = deps.get(sp["scaleTargetRef"]["name"])
            if target is None:
                self.fail(f"{tag}: target {sp['scaleTargetRef']['name']} is not a Deployment here")
            lo, hi = sp.get("minReplicaCount", 0), sp.get("maxReplicaCount", 100)
            if not (0 <= lo <= hi <= 50) or "maxReplicaCount" not in sp or "cooldownPeriod" not in sp:
                self.fail(f"{tag}: set minReplicaCount <= maxReplicaCount <= 50 and cooldownPeriod")
            for t in sp["triggers"]:
                md = t["metadata"]
                if t["type"] == "aws-sqs-queue":
                    if target is not None and "listener" not in deployment_roles(target):
                        self.fail(f"{tag}: aws-sqs-queue scales {target['metadata']['name']}, which "
                                  f"does not run the listener role (only listeners take notifications)")
                    if not (md.get("queueURL") or md.get("queueURLFromEnv")) or not md.get("awsRegion"):
                        self.fail(f"{tag}: aws-sqs-queue needs queueURL(FromEnv) and awsRegion")
                    if not md.get("queueLength", "").isdigit():
                        self.fail(f"{tag}: queueLength must be a whole number (as a string)")
                    ta = tas.get(t.get("authenticationRef", {}).get("name"))
                    if not ta or ta["spec"].get("podIdentity", {}).get("provider") != "aws":
                        self.fail(f"{tag}: needs a TriggerAuthentication with podIdentity provider aws")
                elif t["type"] == "prometheus":
                    if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d+)?(/\S*)?", md.get("serverAddress", "")):
                        self.fail(f"{tag}: prometheus needs serverAddress http(s)://host[:port], "
                                  f"is {md.get('serverAddress')!r}")
                    query = md.get("query", "")
                    if not query.strip():
                        self.fail(f"{tag}: prometheus needs a query")
                    else:
                        self.check_metric_names(f"{tag}: query", query)
                        queries.append(query)
                    for k in ("threshold", "activationThreshold"):
                        if (k in md or k == "threshold") and not is_number(md.get(k)):
                            self.fail(f"{tag}: prometheus {k} must be a number (as a string), is {md.get(k)!r}")
                    if "threshold" in md and is_number(md["threshold"]) and float(md["threshold"]) <= 0:
                        self.fail(f"{tag}: prometheus threshold must be above 0")
                    if md.get("ignoreNullValues", "true") not in ("true", "false"):
                        self.fail(f"{tag}: ignoreNullValues must be \"true\" or \"false\"")
                else:
                    self.fail(f"{tag}: trigger {t['type']}: expected aws-sqs-queue or prometheus")
        self.check_queries_parse(where, queries)
        # KEDA rejects a second ScaledObject (or an HPA) on a Deployment it already scales.
        targets = [o["spec"]["scaleTargetRef"]["name"] for kind in ("ScaledObject", "HorizontalPodAutoscaler")
                   for o in by_kind.get(kind, {}).values()]
        for n in sorted({n for n in targets if targets.count(n) > 1}):
            self.fail(f"{where}: Deployment {n} is the target of {targets.count(n)} autoscalers; "
                      f"put every trigger in one ScaledObject")
        # Every listener is scaled on the queue.
        listeners = [n for n, d in deps.items() if "listener" in deployment_roles(d)]
        for n in listeners:
            if not any(so["spec"]["scaleTargetRef"]["name"] == n
                       and any(t["type"] == "aws-sqs-queue" for t in so["spec"]["triggers"])
                       for so in by_kind.get("ScaledObject", {}).values()):
                self.fail(f"{where}: Deployment {n} runs the listener but no ScaledObject scales it "
                          f"on the queue (aws-sqs-queue)")
        if "ScaledObject" not in by_kind:
            self.fail(f"{where}: no ScaledObject: the listener must scale on the queue")
        # ServiceMonitor finds the Services' metrics ports.
        for smname, sm in by_kind.get("ServiceMonitor", {}).items():
            sel = sm["spec"]["selector"].get("matchLabels", {})
            hit = [s for s in svcs.values() if sel.items() <= s["metadata"].get("labels", {}).items()]
            for dname in deps:
                if not any(s["spec"].get("selector", {}).items() <= deps[dname]["spec"]["template"]["metadata"]["labels"].items() for s in hit):
                    self.fail(f"{where}: ServiceMonitor {smname} does not scrape {dname}")
            for ep in sm["spec"]["endpoints"]:
                for s in hit:
                    if ep.get("port") not in {p["name"] for p in s["spec"]["ports"]}:
                        self.fail(f"{where}: ServiceMonitor {smname}: Service {s['metadata']['name']} has no port {ep.get('port')}")

    def check_peer(self, tag, addr, svcs, deps, role):
        m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", addr or "")
        if not m:
            self.fail(f"{tag}: IMERG_{role.upper()}_ADDR must be http://SERVICE:PORT, is {addr!r}")
            return
        s = svcs.get(m.group(1))
        if not s or int(m.group(2)) not in {p["port"] for p in s["spec"]["ports"]}:
            self.fail(f"{tag}: {addr}: no such Service port")
            return
        # The worker client balances over every address the name resolves to: a headless Service
        # gives every ready pod; a virtual IP would pin all calls to one pod.
        if role == "worker" and s["spec"].get("clusterIP") != "None":
            self.fail(f"{tag}: {addr}: Service {m.group(1)} must be headless (clusterIP: None) so "
                      f"the name resolves to every worker pod")
        for d in deps.values():
            if s["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items():
                for c in pod_containers(d):
                    roles = {e.get("value") for e in c.get("env", []) if e["name"] == "IMERG_ROLES"}
                    if not any(role in (r or "").split(",") for r in roles):
                        self.fail(f"{tag}: {addr} reaches {d['metadata']['name']}, which does not run {role}")

    def check_env_with_binary(self, tag: str, env: dict[str, str]) -> None:
        """The binary parses every value: clap rejects a bad number or duration (exit 2); a
        configuration it accepts reaches the role check, which a deliberately unknown role fails
        (exit 2, a setup error, with that message and no other error)."""
        with tempfile.TemporaryDirectory() as tmp:
            run_env = {"PATH": os.environ.get("PATH", ""), "HOME": tmp}
            for k, v in env.items():
                run_env[k] = v
                if k.endswith("_TOKEN_FILE"):
                    f = Path(tmp) / k
                    f.write_text("deploy-check-token\n")
                    run_env[k] = str(f)
            run_env["IMERG_ROLES"] = "deploy-check-role"
            run_env["IMERG_DATA_DIR"] = tmp
            r = self.run([str(self.binary), "serve"], env=run_env, timeout=60)
            errors = [l for l in r.stderr.splitlines() if l.startswith("error")]
            if r.returncode != 2 or len(errors) != 1 or 'unknown role "deploy-check-role"' not in errors[0]:
                self.fail(f"{tag}: imerg-ingest does not accept this environment "
                          f"(exit {r.returncode}): {r.stderr.strip()[-600:]}")

    # ---------------------------------------------------------------- alerts + dashboard
    def metric_names(self, expr: str) -> set[str]:
        e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        e = re.sub(r"\{[^}]*\}", "", e)
        e = re.sub(r"\[[^\]]*\]", "", e)
        e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
        e = re.sub(r"\$\{?\w+\}?", "", e)
        keywords = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                    "group_left", "group_right", "inf", "nan"}
        names = set()
        for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
            if m.group(2) or m.group(1).lower() in keywords:
                continue
            names.add(m.group(1))
        return names

    def check_metric_names(self, where: str, expr: str) -> None:
        exported = set(self.metrics)
        for n in self.metric_names(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", n)
            if n in exported or base in exported or n in EXTERNAL_METRICS:
                continue
            self.fail(f"{where}: metric {n} is neither exported by imerg-ingest nor a listed external metric")

    def check_queries_parse(self, where: str, queries: list[str]) -> None:
        if not queries:
            return
        promtool = self.tool("promtool")
        if not promtool:
            return
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "keda_queries.yaml"
            f.write_text(yaml.safe_dump({"groups": [{"name": "keda", "rules": [
                {"record": f"keda:query_{i}", "expr": q} for i, q in enumerate(queries)]}]}))
            r = self.run([promtool, "check", "rules", str(f)])
            if r.returncode != 0:
                self.fail(f"{where}: KEDA prometheus queries do not parse (promtool): {r.stdout}{r.stderr}")

    def check_rules(self, objs: list[dict]) -> None:
        rules = [o for o in objs if o["kind"] == "PrometheusRule"]
        if not rules:
            self.fail("no PrometheusRule")
            return
        runbook = (self.root / "docs/operations.md")
        anchors = set()
        if runbook.exists():
            for line in runbook.read_text().splitlines():
                if line.startswith("#"):
                    anchors.add(re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-"))
        else:
            self.fail("docs/operations.md (the runbook) is missing")
        alerts = set()
        for pr in rules:
            for g in pr["spec"]["groups"]:
                for r in g["rules"]:
                    where = f"PrometheusRule {pr['metadata']['name']}: {r.get('alert') or r.get('record')}"
                    self.check_metric_names(where, str(r["expr"]))
                    if "alert" in r:
                        alerts.add(r["alert"])
                        if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                            self.fail(f"{where}: severity label critical|warning|info missing")
                        url = r.get("annotations", {}).get("runbook_url", "")
                        anchor = url.partition("#")[2]
                        if not url.startswith("docs/operations.md#") or anchor not in anchors:
                            self.fail(f"{where}: runbook_url {url!r} is not a section of docs/operations.md")
        for required in ("ImergIngestLagHigh", "ImergDeadLetterQueueNotEmpty", "ImergCommitFailures",
                         "ImergSecondWriterDetected", "ImergCredentialsExpiringSoon",
                         "ImergManifestOverLimit"):
            if required not in alerts:
                self.fail(f"alert {required} missing")
        promtool = self.tool("promtool")
        if not promtool:
            return
        with tempfile.TemporaryDirectory() as tmp:
            rules_file = Path(tmp) / "rules.yaml"
            rules_file.write_text(yaml.safe_dump({"groups": [g for pr in rules for g in pr["spec"]["groups"]]}))
            r = self.run([promtool, "check", "rules", str(rules_file)])
            if r.returncode != 0:
                self.fail(f"promtool check rules: {r.stdout}{r.stderr}")
            test = Path(__file__).parent / "alerts_test.yaml"
            shutil.copy(test, Path(tmp) / "alerts_test.yaml")
            r = self.run([promtool, "test", "rules", "alerts_test.yaml"], cwd=tmp)
            if r.returncode != 0:
                self.fail(f"promtool test rules: {r.stdout}{r.stderr}")
            self.notes.append("promtool check rules + test rules: passed")

    def check_dashboard(self, objs: list[dict]) -> None:
        cms = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard")]
        if not cms:
            self.fail("no Grafana dashboard ConfigMap (label grafana_dashboard)")
            return
        exprs = []
        covered = set()
        for cm in cms:
            for fname, text in cm["data"].items():
                try:
                    dash = json.loads(text)
                except json.JSONDecodeError as e:
                    self.fail(f"dashboard {fname}: not JSON: {e}")
                    continue
                ids = [p["id"] for p in dash.get("panels", [])]
                if len(ids) != len(set(ids)):
                    self.fail(f"dashboard {fname}: panel ids repeat")
                for p in dash.get("panels", []):
                    for t in p.get("targets", []):
                        where = f"dashboard {fname}: panel {p.get('title')!r}"
                        self.check_metric_names(where, t["expr"])
                        covered |= {re.sub(r"_(bucket|sum|count)$", "", n) for n in self.metric_names(t["expr"])}
                        exprs.append(t["expr"])
        for want in ("imerg_ingest_lag_seconds", "imerg_granules_committed_total",
                     "imerg_granules_rejected_total", "imerg_commit_seconds", "imerg_batch_granules",
                     "imerg_backfill_granules", "imerg_largest_manifest_bytes",
                     "imerg_sqs_message_lag_seconds"):
            if want not in covered:
                self.fail(f"dashboard: no panel shows {want}")
        promtool = self.tool("promtool")
        if not promtool:
            return
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "dashboard_queries.yaml"
            subst = [re.sub(r"\$__(rate_)?interval", "5m", e) for e in exprs]
            f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
                {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(subst)]}]}))
            r = self.run([promtool, "check", "rules", str(f)])
            if r.returncode != 0:
                self.fail(f"dashboard queries do not parse (promtool): {r.stdout}{r.stderr}")

    # ---------------------------------------------------------------- infra
    def check_infra(self) -> None:
        templates = sorted((self.deploy / "infra").glob("*.cfn.yaml"))
        if not templates:
            self.fail("deploy/infra has no CloudFormation template")
        lint = self.tool("cfn-lint")
        for t in templates:
            docs = self.load_docs(t)
            res = docs[0].get("Resources", {}) if docs else {}
            queues = [r for r in res.values() if r.get("Type") == "AWS::SQS::Queue"]
            if not any("RedrivePolicy" in q.get("Properties", {}) for q in queues):
                self.fail(f"{self.rel(t)}: no queue with a RedrivePolicy (dead-letter queue)")
            self.check_buckets(t, res)
            if lint:
                r = self.run([lint, str(t)])
                if r.returncode != 0:
                    self.fail(f"cfn-lint {self.rel(t)}: {r.stdout}{r.stderr}")

    def check_buckets(self, t: Path, res: dict) -> None:
        """Every bucket of the stack holds repositories: versioned, so an overwrite or delete can
        be undone, with a lifecycle rule that expires the noncurrent versions."""
        for lid, r in res.items():
            if r.get("Type") != "AWS::S3::Bucket":
                continue
            props = r.get("Properties", {})
            if props.get("VersioningConfiguration", {}).get("Status") != "Enabled":
                self.fail(f"{self.rel(t)}: bucket {lid}: VersioningConfiguration Status Enabled "
                          f"missing (an overwrite or delete of the repository is then permanent)")
            rules = props.get("LifecycleConfiguration", {}).get("Rules", [])
            if not any(ru.get("Status") == "Enabled"
                       and isinstance(ru.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays"), int)
                       for ru in rules):
                self.fail(f"{self.rel(t)}: bucket {lid}: no enabled lifecycle rule with "
                          f"NoncurrentVersionExpiration NoncurrentDays (old versions kept forever)")

    # ---------------------------------------------------------------- IAM
    def stack_roles(self) -> dict[str, dict]:
        """The IAM roles of deploy/infra's templates: logical id -> {pattern (a regex of its
        RoleName, None without one), statements (every Allow/Deny statement of its policies),
        opaque (a managed policy this check cannot read), trust (the assume-role document, raw),
        defaults (the template's parameter defaults, for the trust's ${...})}."""
        roles: dict[str, dict] = {}
        for t in sorted((self.deploy / "infra").glob("*.cfn.yaml")):
            docs = self.load_docs(t)
            if not docs:
                continue
            params = docs[0].get("Parameters", {}) or {}
            res = docs[0].get("Resources", {}) or {}
            # Policies attached from outside the role (AWS::IAM::Policy / ManagedPolicy).
            attached: dict[str, list] = {}
            for lid, r in res.items():
                if r.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                    for ref in r.get("Properties", {}).get("Roles", []):
                        if isinstance(ref, dict) and "Ref" in ref:
                            attached.setdefault(ref["Ref"], []).append(r["Properties"].get("PolicyDocument"))
            for lid, r in res.items():
                if r.get("Type") != "AWS::IAM::Role":
                    continue
                props = r.get("Properties", {})
                docs_ = [pol.get("PolicyDocument") for pol in props.get("Policies", [])]
                docs_ += attached.get(lid, [])
                opaque = False
                for arn in props.get("ManagedPolicyArns", []):
                    target = res.get(arn.get("Ref"), {}) if isinstance(arn, dict) else {}
                    if target.get("Type") == "AWS::IAM::ManagedPolicy":
                        docs_.append(target["Properties"].get("PolicyDocument"))
                    else:
                        opaque = True
                statements = []
                for d in docs_:
                    d = cfn_json(d, {})
                    if not isinstance(d, dict):
                        self.fail(f"{self.rel(t)}: role {lid}: a policy document this check cannot read")
                        opaque = True
                        continue
                    st = d.get("Statement", [])
                    statements += st if isinstance(st, list) else [st]
                roles[lid] = {"pattern": role_name_pattern(props.get("RoleName"), params),
                              "statements": statements, "opaque": opaque,
                              "trust": props.get("AssumeRolePolicyDocument"),
                              "defaults": {k: str(v["Default"]) for k, v in params.items()
                                           if isinstance(v, dict) and v.get("Default") not in (None, "")}}
        return roles

    def role_of(self, tag: str, arn: str, roles: dict[str, dict]) -> str | None:
        """The stack role an ARN names (by RoleName), or None after a failure message."""
        m = ROLE_ARN_RX.fullmatch(arn or "")
        if not m:
            self.fail(f"{tag}: {arn!r} is not an IAM role ARN")
            return None
        hits = [lid for lid, r in roles.items() if r["pattern"] and re.fullmatch(r["pattern"], m.group(1))]
        if len(hits) != 1:
            self.fail(f"{tag}: role {m.group(1)} matches {len(hits)} roles of deploy/infra "
                      f"({', '.join(hits) or 'none'}; a role needs a RoleName to be named)")
            return None
        return hits[0]

    def check_iam(self, objs: list[dict], where: str, roles: dict[str, dict]) -> None:
        by_kind: dict[str, dict[str, dict]] = {}
        for o in objs:
            by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
        sas = by_kind.get("ServiceAccount", {})
        deps = by_kind.get("Deployment", {})
        # (tag, pod spec, writer | reader | other, runs the listener, opens the repository)
        pods = []
        for dname, d in deps.items():
            r = deployment_roles(d)
            kind = ("writer" if r & {"committer", "native"} else
                    "reader" if r and r <= {"listener", "worker"} else "other")
            pods.append((f"{where}: Deployment {dname}", d["spec"]["template"]["spec"], kind,
                         "listener" in r, bool(r & {"listener", "api", "committer", "native"})))
        for jname, j in by_kind.get("Job", {}).items():
            pod = j["spec"]["template"]["spec"]
            rechunk = any((c.get("args") or [None])[0] == "rechunk" for c in pod.get("containers", []))
            pods.append((f"{where}: Job {jname}", pod, "writer" if rechunk else "other", False, rechunk))
        pod_roles: dict[str, set[tuple[str, str]]] = {}
        for tag, pod, kind, listener, uses_repo in pods:
            sa = pod.get("serviceAccountName")
            if sa not in sas:
                self.fail(f"{tag}: service account {sa} is not defined")
                continue
            ns = sas[sa]["metadata"].get("namespace", "default")
            arn = sas[sa]["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
            lid = self.role_of(f"{tag}: service account {sa}", arn, roles)
            if lid is None:
                continue
            role = roles[lid]
            pod_roles.setdefault(lid, set()).add((ns, sa))
            tag = f"{tag} (service account {sa}, role {lid})"
            if kind == "reader":
                for a in REPO_WRITE:
                    if grants(role, a, unknown=True):
                        self.fail(f"{tag}: parses untrusted granules and never writes the repository, "
                                  f"but its role allows {a}")
            if kind == "writer":
                for a in REPO_READ + REPO_WRITE:
                    if not grants(role, a, unknown=False):
                        self.fail(f"{tag}: writes a repository, but its role does not allow {a}")
            elif uses_repo:
                for a in REPO_READ:
                    if not grants(role, a, unknown=False):
                        self.fail(f"{tag}: opens the repository, but its role does not allow {a}")
            for a in SQS_CONSUME:
                if listener and not grants(role, a, unknown=False):
                    self.fail(f"{tag}: runs the listener, but its role does not allow {a}")
                if not listener and grants(role, a, unknown=True):
                    self.fail(f"{tag}: runs no listener, but its role allows {a}")
        # Each pod role is assumed by its own service accounts' web identity, nobody else.
        for lid, accounts in sorted(pod_roles.items()):
            want, subs, others = set(), set(), []
            for ns, sa in accounts:
                want.add(f"system:serviceaccount:{ns}:{sa}")
                s_, o_ = trust_of(roles[lid], ns)
                subs |= s_
                others += [o for o in o_ if o not in others]
            if want - subs:
                self.fail(f"{where}: role {lid}: its trust does not name {sorted(want - subs)}")
            if subs - want or others:
                self.fail(f"{where}: role {lid}: its trust also admits {sorted(subs - want) + others} "
                          f"(only {sorted(want)} should assume it)")
        # KEDA's role: queue attributes only.
        for taname, ta in by_kind.get("TriggerAuthentication", {}).items():
            pi = ta["spec"].get("podIdentity", {})
            if pi.get("provider") not in ("aws", "aws-eks"):
                continue
            tag = f"{where}: TriggerAuthentication {taname}"
            if pi.get("roleArn"):
                lid = self.role_of(tag, pi["roleArn"], roles)
            elif pi.get("identityOwner") == "workload":
                lid = None
                for so in by_kind.get("ScaledObject", {}).values():
                    if any(t.get("authenticationRef", {}).get("name") == taname for t in so["spec"]["triggers"]):
                        d = deps.get(so["spec"]["scaleTargetRef"]["name"], {})
                        sa = sas.get(d.get("spec", {}).get("template", {}).get("spec", {}).get("serviceAccountName"), {})
                        lid = self.role_of(tag, sa.get("metadata", {}).get("annotations", {}).get(
                            "eks.amazonaws.com/role-arn", ""), roles)
            else:
                self.notes.append(f"{tag}: KEDA uses its operator's own role, not checked here")
                continue
            if lid is None:
                continue
            role = roles[lid]
            extra = sorted({a for st in role["statements"] if st.get("Effect") == "Allow"
                            for a in (["NotAction"] if "NotAction" in st else as_list(st.get("Action")))
                            if a.lower() not in KEDA_ACTIONS} | ({"a managed policy"} if role["opaque"] else set()))
            if extra:
                self.fail(f"{tag}: KEDA's role {lid} allows more than reading the queue's "
                          f"attributes: {extra}")
            if not grants(role, "sqs:GetQueueAttributes", unknown=False):
                self.fail(f"{tag}: KEDA's role {lid} does not allow sqs:GetQueueAttributes")
            if not trust_of(role, "")[1]:
                self.fail(f"{tag}: KEDA's role {lid} does not trust an AWS principal (the KEDA "
                          f"operator's role assumes it)")

    # ---------------------------------------------------------------- Dockerfile
    def check_dockerfile(self) -> None:
        df = self.root / "Dockerfile"
        if not df.exists():
            self.fail("Dockerfile missing")
            return
        text = df.read_text()
        logical = re.sub(r"\\\n", " ", text)
        lines = [l.strip() for l in logical.splitlines() if l.strip() and not l.strip().startswith("#")]
        stages: list[list[str]] = []
        for l in lines:
            if l.upper().startswith("FROM "):
                stages.append([])
            if stages:
                stages[-1].append(l)
        if len(stages) < 2:
            self.fail("Dockerfile: expected a build stage and a runtime stage")
            return
        args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
        channel = tomllib.loads((self.root / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
        if args.get("RUST_VERSION") != channel:
            self.fail(f"Dockerfile: RUST_VERSION {args.get('RUST_VERSION')} != rust-toolchain.toml {channel}")
        build, runtime = stages[0], stages[-1]
        if not re.match(r"FROM rust:\$\{RUST_VERSION\}-\$\{DEBIAN_RELEASE\}", build[0]):
            self.fail("Dockerfile: build stage must be FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE}")
        release = args.get("DEBIAN_RELEASE")
        if not re.match(r"FROM debian:\$\{DEBIAN_RELEASE\}-slim", runtime[0]) or release not in HDF5_RUNTIME:
            self.fail(f"Dockerfile: runtime stage must be FROM debian:${{DEBIAN_RELEASE}}-slim, one of {sorted(HDF5_RUNTIME)}")
            return

        def apt(stage):
            pk = []
            for l in stage:
                for m in re.finditer(r"apt-get install ([^&;]*)", l):
                    pk += [w for w in m.group(1).split() if not w.startswith("-")]
            return set(pk)

        setup = (self.root / "scripts/setup.sh").read_text()
        m = re.search(r"for pkg in ([^;]+); do", setup)
        setup_pkgs = set(m.group(1).split()) if m else set()
        if not setup_pkgs or apt(build) != setup_pkgs:
            self.fail(f"Dockerfile: build-stage packages {sorted(apt(build))} != scripts/setup.sh {sorted(setup_pkgs)}")
        body = " ".join(build)
        if "cargo build --release --locked -p imerg-ingest" not in body:
            self.fail("Dockerfile: build must run `cargo build --release --locked -p imerg-ingest`")
        if not re.search(r"COPY (\. \.|.*Cargo\.lock)", body):
            self.fail("Dockerfile: Cargo.lock is not copied into the build")
        users = [l.split()[1] for l in runtime if l.upper().startswith("USER ")]
        if not users or users[-1].split(":")[0] in ("root", "0"):
            self.fail("Dockerfile: the runtime stage must end as a non-root USER")
        for l in lines:
            if re.match(r"(ENV|ARG) ", l, re.I) and re.search(r"(TOKEN|SECRET|PASSWORD|ACCESS_KEY)\w*=", l, re.I):
                self.fail(f"Dockerfile: secret-like value baked in: {l}")
        if not any(l.upper().startswith("HEALTHCHECK") for l in runtime):
            self.fail("Dockerfile: no HEALTHCHECK (document the probes)")
        if not any(re.search(r"COPY --from=\S+ .*imerg-ingest", l) for l in runtime):
            self.fail("Dockerfile: runtime stage does not copy the binary from the build stage")
        if HDF5_RUNTIME[release] not in apt(runtime):
            self.fail(f"Dockerfile: the runtime stage must install {HDF5_RUNTIME[release]}, {release}'s HDF5 library")
        self.check_runtime_libs(apt(runtime), release)
        self.check_dockerignore()
        hadolint = self.tool("hadolint")
        if hadolint:
            r = self.run([hadolint, str(df)])
            if r.returncode != 0:
                self.fail(f"hadolint: {r.stdout}{r.stderr}")
            else:
                self.notes.append("hadolint: no findings")

    def check_runtime_libs(self, runtime_pkgs: set[str], release: str) -> None:
        ldd, dq = self.tool("ldd"), self.tool("dpkg-query")
        if not ldd or not dq:
            return
        # The binary checked is this machine's build: when the image is another Debian release,
        # check the image's packages under this release's names (only HDF5's differs by name;
        # the other libraries come in through its dependencies and the slim base).
        host = host_release()
        if host != release and host in HDF5_RUNTIME:
            runtime_pkgs = {HDF5_RUNTIME[host] if p == HDF5_RUNTIME[release] else p for p in runtime_pkgs}
            self.notes.append(f"runtime libraries checked on {host} for a {release} image "
                              f"({HDF5_RUNTIME[release]} as {HDF5_RUNTIME[host]})")
        r = self.run([ldd, str(self.binary)])
        libs = re.findall(r"=>\s+(/\S+)", r.stdout)
        if r.returncode != 0 or not libs:
            self.fail(f"ldd {self.binary}: {r.stdout}{r.stderr}")
            return
        # Packages of a debian slim image: Essential and Priority required (debootstrap minbase).
        r = self.run([dq, "-W", "-f", "${Package}\t${Essential}\t${Priority}\t${db:Status-Status}\n"])
        base = {p for p, ess, prio, st in (l.split("\t") for l in r.stdout.splitlines())
                if st == "installed" and (ess == "yes" or prio == "required")}
        closure = self.dep_closure(dq, runtime_pkgs) | self.dep_closure(dq, base)
        for lib in libs:
            real = os.path.realpath(lib)
            owner = None
            for cand in (lib, real, real.replace("/usr/lib/", "/lib/"), real.replace("/lib/", "/usr/lib/", 1)):
                r = self.run([dq, "-S", cand])
                if r.returncode == 0:
                    owner = r.stdout.split(":")[0]
                    break
            if owner is None:
                self.fail(f"runtime library {lib}: no Debian package owns it")
            elif owner not in closure:
                self.fail(f"runtime library {lib} (package {owner}) is not brought by the runtime "
                          f"packages {sorted(runtime_pkgs)} nor in debian slim")
        self.notes.append(f"runtime packages cover the {len(libs)} shared libraries ldd lists")

    def dep_closure(self, dq: str, pkgs: set[str]) -> set[str]:
        """The packages and everything they depend on (first alternative of each dependency)."""
        closure, todo = set(), list(pkgs)
        while todo:
            p = todo.pop()
            if p in closure:
                continue
            closure.add(p)
            r = self.run([dq, "-W", "-f", "${Depends}, ${Pre-Depends}", p])
            if r.returncode != 0:
                self.fail(f"package {p} is not installed here, so its dependencies cannot be checked")
                continue
            for alt in r.stdout.split(","):
                names = [a.strip().split()[0].split(":")[0] for a in alt.split("|") if a.strip()]
                todo += names[:1]
        return closure

    def check_dockerignore(self) -> None:
        p = self.root / ".dockerignore"
        if not p.exists():
            self.fail(".dockerignore missing")
            return
        pats = [l.strip() for l in p.read_text().splitlines() if l.strip() and not l.startswith("#")]

        def rx(pat):
            out = ""
            i = 0
            while i < len(pat):
                if pat.startswith("**/", i):
                    out += "(?:.*/)?"
                    i += 3
                elif pat.startswith("**", i):
                    out += ".*"
                    i += 2
                elif pat[i] == "*":
                    out += "[^/]*"
                    i += 1
                elif pat[i] == "?":
                    out += "[^/]"
                    i += 1
                else:
                    out += re.escape(pat[i])
                    i += 1
            return re.compile(out + "(?:/.*)?$")

        rules = [(rx(x.lstrip("!").strip("/")), x.startswith("!")) for x in pats]
        files = self.run(["git", "ls-files"], cwd=self.root).stdout.split()
        members = tomllib.loads((self.root / "Cargo.toml").read_text())["workspace"]["members"]
        needed = [f for f in files if f in ("Cargo.toml", "Cargo.lock", "rust-toolchain.toml")
                  or f.startswith("proto/")
                  or (any(f.startswith(m + "/") for m in members) and f.endswith((".rs", ".toml", ".proto")))]
        if "Cargo.lock" not in needed:
            self.fail("Cargo.lock is not tracked")
        for f in needed:
            excluded = False
            for r, neg in rules:
                if r.match(f):
                    excluded = not neg
            if excluded:
                self.fail(f".dockerignore excludes {f}, which the build needs")

    # ---------------------------------------------------------------- main
    def check(self) -> None:
        self.parse_all_yaml()
        builds = {}
        for kfile in sorted(self.deploy.rglob("kustomization.yaml")):
            where = self.rel(kfile.parent)
            objs = self.build(kfile.parent)
            builds[where] = objs
            self.validate(objs, where)
            self.check_wiring(objs, where)
        if "deploy/base" not in builds or not any(w.startswith("deploy/overlays/") for w in builds):
            self.fail("expected deploy/base and at least one deploy/overlays/*")
        overlay = next((o for w, o in builds.items() if w.startswith("deploy/overlays/")), [])
        self.check_rules(overlay)
        self.check_dashboard(overlay)
        self.check_infra()
        roles = self.stack_roles()
        for where, objs in builds.items():
            if where != "deploy/base":
                self.check_iam(objs, where, roles)
        self.check_dockerfile()


def cfn_sub(v, subst: dict[str, str]):
    """A CloudFormation string value (plain, Fn::Sub, Ref) as text: ${Name} from subst, any other
    ${...} and Ref as <Name>; None for anything else."""
    if isinstance(v, dict) and "Fn::Sub" in v:
        body = v["Fn::Sub"]
        text, local = (body[0], body[1]) if isinstance(body, list) else (body, {})
        return re.sub(r"\$\{([^}!]+)\}",
                      lambda m: subst.get(m.group(1), f"<{m.group(1)}>") if m.group(1) not in local
                      else f"<{m.group(1)}>", text)
    if isinstance(v, dict) and "Ref" in v:
        return subst.get(v["Ref"], f"<{v['Ref']}>")
    return v if isinstance(v, str) else None


def cfn_json(v, subst: dict[str, str]):
    """A policy document: a mapping (strings inside resolved as cfn_sub does), or a Fn::Sub JSON
    string."""
    if isinstance(v, dict) and "Fn::Sub" in v:
        try:
            return json.loads(cfn_sub(v, subst))
        except (json.JSONDecodeError, TypeError):
            return None
    if isinstance(v, dict) and len(v) == 1 and next(iter(v)).startswith(("Ref", "Fn::")):
        return cfn_sub(v, subst)
    if isinstance(v, dict):
        return {k: cfn_json(x, subst) for k, x in v.items()}
    if isinstance(v, list):
        return [cfn_json(x, subst) for x in v]
    return v


def role_name_pattern(name, params: dict) -> str | None:
    """A regex of the names a RoleName can take: ${AWS::Region} any region, ${AWS::AccountId} any
    account, a parameter its default (or any name without one)."""
    if isinstance(name, str):
        return re.escape(name)
    if isinstance(name, dict) and "Ref" in name:
        d = params.get(name["Ref"], {}).get("Default")
        return re.escape(d) if d else None
    if not (isinstance(name, dict) and isinstance(name.get("Fn::Sub"), str)):
        return None
    out = []
    for i, part in enumerate(re.split(r"\$\{([^}]+)\}", name["Fn::Sub"])):
        if i % 2 == 0:
            out.append(re.escape(part))
        elif part == "AWS::Region":
            out.append(REGION_RX)
        elif part == "AWS::AccountId":
            out.append(r"\d{12}")
        elif params.get(part, {}).get("Default"):
            out.append(re.escape(str(params[part]["Default"])))
        else:
            out.append(r"[\w+=,.@-]+")
    return "".join(out)


def as_list(v) -> list:
    return v if isinstance(v, list) else [v] if v is not None else []


def grants(role: dict, action: str, unknown: bool) -> bool:
    """Whether an Allow statement of the role matches the action (wildcards, NotAction); a
    managed policy the check cannot read answers `unknown`."""
    for st in role["statements"]:
        if st.get("Effect") != "Allow":
            continue
        if "NotAction" in st:
            if not any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in as_list(st["NotAction"])):
                return True
            continue
        if any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in as_list(st.get("Action"))):
            return True
    return unknown if role["opaque"] else False


def trust_of(role: dict, namespace: str) -> tuple[set[str], list[str]]:
    """(the service-account subjects a role's trust policy admits with web identity, with
    ${Namespace} as given and other parameters at their defaults; every other principal it
    admits)."""
    d = cfn_json(role["trust"], {**role["defaults"], "Namespace": namespace})
    subs: set[str] = set()
    others: list[str] = []
    for st in as_list(d.get("Statement") if isinstance(d, dict) else None):
        if not isinstance(st, dict) or st.get("Effect") != "Allow":
            continue
        pr = st.get("Principal", {})
        if not isinstance(pr, dict):
            others.append(str(pr))
            continue
        for kind, v in pr.items():
            if kind != "Federated":
                others += [f"{kind}:{x}" for x in as_list(v)]
        if "Federated" in pr:
            found = [x for op in ("StringEquals", "StringLike")
                     for k, x in st.get("Condition", {}).get(op, {}).items() if k.endswith(":sub")]
            if not found:
                others.append(f"Federated:{pr['Federated']} (any subject)")
            for x in found:
                for sub in as_list(x):
                    subs.add(sub)
    return subs, others


def parse_duration(s: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    for n, u in re.findall(r"(\d+)(ms|s|m|h|d)", s):
        total += int(n) * units[u]
    return total


def is_number(v) -> bool:
    try:
        float(v)
        return isinstance(v, str)
    except (TypeError, ValueError):
        return False


def deployment_roles(d: dict) -> set[str]:
    """The roles IMERG_ROLES gives a Deployment's container (set in its own env list)."""
    roles = set()
    for c in pod_containers(d):
        for e in c.get("env", []):
            if e["name"] == "IMERG_ROLES":
                roles |= set((e.get("value") or "").split(","))
    return roles


def pod_containers(o: dict) -> list[dict]:
    return o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []) if o.get("kind") == "Deployment" else []


def merge(base: dict, patch: dict) -> None:
    """Strategic merge for the fields used here: maps recursively, lists of named items by key."""
    for k, v in patch.items():
        if v is None:
            base.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        elif isinstance(v, list) and k in MERGE_KEYS and isinstance(base.get(k), list):
            key = MERGE_KEYS[k]
            for item in v:
                same = [b for b in base[k] if b.get(key) == item.get(key)]
                if same:
                    merge(same[0], item)
                else:
                    base[k].append(item)
        else:
            base[k] = copy.deepcopy(v)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--bin", type=Path, required=True)
    ap.add_argument("--metrics", required=True, help="comma-separated exported metric names")
    a = ap.parse_args()
    metrics = {m for m in a.metrics.split(",") if m}
    if not metrics:
        print("no metric names given", file=sys.stderr)
        return 2
    c = Checker(a.root.resolve(), a.bin, metrics)
    c.check()
    for n in c.notes:
        print(f"note: {n}")
    for e in c.errors:
        print(f"FAIL: {e}")
    if c.errors:
        print(f"{len(c.errors)} problems")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
