#!/usr/bin/python3
"""Offline checks of the tickfan Kubernetes manifests (deploy/k8s).

    deploy/k8s/validate.py [DIR]      (default: the directory of this file)

Parses every manifest with PyYAML (Debian python3-yaml) and checks what the
deployment relies on: the kinds are there, the probes are native gRPC probes
on the container's port, the grace period outlasts the drain, the PDB and the
Services select the pods, the data directory is a volume claim big enough for
the logs, image and args are consistent, resources are set, and the pod runs
non-root with a read-only root filesystem. If kubectl is on PATH, the
kustomization is also rendered with `kubectl kustomize`.

Prints one line per violation, naming the file and the field, and exits 1 if
there is any; prints "validate: OK ..." and exits 0 otherwise.
"""
import os
import re
import shutil
import subprocess
import sys

import yaml

DEFAULT_DRAIN_MS = 5000   # tickfand --drain-timeout-ms default
DEFAULT_LOG_SIZE = 64 << 20  # tickfand --log-size default
HEADER_BYTES = 4096        # per topic log file, on top of --log-size
GRACE_MARGIN_S = 5         # the grace period must exceed the drain by this much
PROCESS_MEMORY = 64 << 20  # memory for the process besides the mapped logs
DATA_DIR = "/var/lib/tickfan"
GRPC_PORT = 50051
METRICS_PORT = 9464        # /metrics (--metrics-listen), in the image's env too
UID = 10001                # the image's user (deploy/Containerfile)

errors = []


def err(where, field, msg):
    errors.append(f"{where}: {field}: {msg}")


def size_bytes(s):
    """tickfand sizes: 64M, 512K, 1G (powers of 1024)."""
    m = re.fullmatch(r"(\d+)([KMG]?)", str(s).strip())
    if not m:
        return None
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def quantity_bytes(q):
    """Kubernetes quantities: 1Gi, 512Mi, 1G, 1000000."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q).strip())
    if not m:
        return None
    mult = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[m.group(2)]
    return int(float(m.group(1)) * mult)


def cpu_cores(q):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", str(q).strip())
    if not m:
        return None
    v = float(m.group(1))
    return v / 1000 if m.group(2) else v


def options(container):
    """tickfand options from args (--k=v or --k v) over env (TICKFAN_*)."""
    opts = {}
    env = {}
    for e in container.get("env") or []:
        env[e.get("name")] = e.get("value") if "value" in e else e.get("valueFrom")
    for name, key in (("TICKFAN_LISTEN", "listen"), ("TICKFAN_DATA_DIR", "data-dir"),
                      ("TICKFAN_LOG_SIZE", "log-size"), ("TICKFAN_DRAIN_TIMEOUT_MS", "drain-timeout-ms"),
                      ("TICKFAN_SHARDS", "shards"), ("TICKFAN_FEEDS", "feed"),
                      ("TICKFAN_TOPICS", "topic"), ("TICKFAN_METRICS_LISTEN", "metrics-listen")):
        if name in env:
            v = env[name]
            opts[key] = v.split(",") if key in ("feed", "topic") and isinstance(v, str) else v
    args = [str(a) for a in (container.get("args") or [])]
    flags = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a[2:].split("=", 1)
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                k, v = a[2:], args[i + 1]
                i += 1
            else:
                k, v = a[2:], ""
            flags.setdefault(k, []).append(v)
        i += 1
    for k, vs in flags.items():
        opts[k] = vs if k in ("feed", "topic") else vs[-1]
    return opts


def topic_count(opts):
    topics = set(opts.get("topic") or [])
    for f in opts.get("feed") or ["sim"]:
        if f == "sim":
            topics.add("sim")
        elif f.startswith("sim:"):
            topics.add(f[4:])
    return max(len(topics), 1)


def port_of(listen):
    m = re.fullmatch(r".*:(\d+)", str(listen))
    return int(m.group(1)) if m else None


def subset(sel, labels):
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())


def load(directory):
    docs = []  # (file, doc)
    kfile = os.path.join(directory, "kustomization.yaml")
    if not os.path.exists(kfile):
        err(kfile, "(file)", "missing")
        return None, docs
    with open(kfile) as f:
        kust = yaml.safe_load(f) or {}
    listed = kust.get("resources") or []
    on_disk = sorted(n for n in os.listdir(directory)
                     if n.endswith((".yaml", ".yml")) and n != "kustomization.yaml")
    for n in on_disk:
        if n not in listed:
            err(kfile, "resources", f"{n} is in {directory} but not listed")
    for n in listed:
        path = os.path.join(directory, n)
        if not os.path.exists(path):
            err(kfile, "resources", f"{n} does not exist")
            continue
        try:
            with open(path) as f:
                for d in yaml.safe_load_all(f):
                    if d is None:
                        continue
                    if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                        err(path, "kind/apiVersion", "not a Kubernetes object")
                        continue
                    docs.append((path, d))
        except yaml.YAMLError as e:
            err(path, "(yaml)", str(e).replace("\n", " "))
    return (kfile, kust), docs


def check(directory):
    k, docs = load(directory)
    if k is None:
        return
    kfile, kust = k
    by_kind = {}
    for path, d in docs:
        by_kind.setdefault(d["kind"], []).append((path, d))
    for kind in ("StatefulSet", "Service", "PodDisruptionBudget"):
        if kind not in by_kind:
            err(directory, "kind", f"no {kind}")
    if len(by_kind.get("StatefulSet", [])) != 1:
        return
    path, sts = by_kind["StatefulSet"][0]
    name = sts.get("metadata", {}).get("name", "?")
    where = f"{path}: StatefulSet/{name}"
    spec = sts.get("spec") or {}
    tmpl = spec.get("template") or {}
    pod_labels = (tmpl.get("metadata") or {}).get("labels") or {}
    pod = tmpl.get("spec") or {}

    if not isinstance(spec.get("replicas", 1), int) or spec.get("replicas", 1) < 1:
        err(where, "spec.replicas", "must be >= 1")
    if not subset((spec.get("selector") or {}).get("matchLabels"), pod_labels):
        err(where, "spec.selector.matchLabels", "does not match spec.template.metadata.labels")

    # Services: one ClusterIP with grpc port, one headless named by serviceName.
    services = by_kind.get("Service", [])
    headless = [(p, s) for p, s in services if (s.get("spec") or {}).get("clusterIP") == "None"]
    clusterip = [(p, s) for p, s in services
                 if (s.get("spec") or {}).get("clusterIP") != "None"
                 and (s.get("spec") or {}).get("type", "ClusterIP") == "ClusterIP"]
    if not headless:
        err(directory, "Service", "no headless Service (spec.clusterIP: None) for the StatefulSet")
    elif spec.get("serviceName") not in [s["metadata"].get("name") for _, s in headless]:
        err(where, "spec.serviceName",
            f"{spec.get('serviceName')!r} is not the name of a headless Service")
    if not clusterip:
        err(directory, "Service", "no ClusterIP Service")
    for p, s in services:
        sw = f"{p}: Service/{s['metadata'].get('name')}"
        ss = s.get("spec") or {}
        if not subset(ss.get("selector"), pod_labels):
            err(sw, "spec.selector", "does not match the StatefulSet's pod labels")
        grpc_ports = [pt for pt in ss.get("ports") or [] if pt.get("name") == "grpc"]
        if not grpc_ports:
            err(sw, "spec.ports", "no port named grpc")
        for pt in grpc_ports:
            if pt.get("port") != GRPC_PORT:
                err(sw, "spec.ports[grpc].port", f"{pt.get('port')}, expected {GRPC_PORT}")
            if pt.get("appProtocol") != "grpc":
                err(sw, "spec.ports[grpc].appProtocol", "must be grpc")
            if pt.get("targetPort") not in ("grpc", GRPC_PORT):
                err(sw, "spec.ports[grpc].targetPort", f"{pt.get('targetPort')!r}: use grpc or {GRPC_PORT}")

    # PodDisruptionBudget
    for p, pdb in by_kind.get("PodDisruptionBudget", []):
        pw = f"{p}: PodDisruptionBudget/{pdb['metadata'].get('name')}"
        ps = pdb.get("spec") or {}
        if not subset((ps.get("selector") or {}).get("matchLabels"), pod_labels):
            err(pw, "spec.selector.matchLabels", "does not match the StatefulSet's pod labels")
        if "minAvailable" not in ps and "maxUnavailable" not in ps:
            err(pw, "spec", "neither minAvailable nor maxUnavailable")
        ma = ps.get("minAvailable")
        if isinstance(ma, int) and ma >= spec.get("replicas", 1):
            err(pw, "spec.minAvailable", f"{ma} >= replicas {spec.get('replicas', 1)}: blocks every node drain")

    # Pod
    if pod.get("enableServiceLinks") is not False:
        err(where, "spec.template.spec.enableServiceLinks",
            "must be false (service links inject TICKFAN_* variables)")
    psc = pod.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        err(where, "spec.template.spec.securityContext.runAsNonRoot", "must be true")
    if psc.get("runAsUser") in (None, 0):
        err(where, "spec.template.spec.securityContext.runAsUser", f"set it to the image's user {UID}")
    if psc.get("fsGroup") is None:
        err(where, "spec.template.spec.securityContext.fsGroup", "set it so the data volume is writable")

    containers = pod.get("containers") or []
    mains = [c for c in containers if c.get("name") == "tickfand"]
    if len(mains) != 1:
        err(where, "spec.template.spec.containers", "expected one container named tickfand")
        return
    c = mains[0]
    cw = f"{where}: container tickfand"
    opts = options(c)

    # image
    images = {i.get("name"): i for i in kust.get("images") or []}
    img = c.get("image")
    if not img:
        err(cw, "image", "missing")
    elif img.split(":")[0].split("@")[0] not in images:
        err(cw, "image", f"{img!r} has no entry in {kfile} images (name/newName/newTag)")
    if c.get("command"):
        err(cw, "command", "must not override the image ENTRYPOINT (tickfand); use args")

    # ports and probes
    cport = [p for p in c.get("ports") or [] if p.get("name") == "grpc"]
    if not cport or cport[0].get("containerPort") != GRPC_PORT:
        err(cw, "ports", f"needs a port named grpc with containerPort {GRPC_PORT}")
    listen_port = port_of(opts.get("listen", "0.0.0.0:50051"))
    if listen_port != GRPC_PORT:
        err(cw, "args --listen", f"port {listen_port}, expected {GRPC_PORT} (the probes and Services use it)")
    # metrics: scraped from the pod, so on all addresses, on the port that is
    # declared and annotated
    metrics = opts.get("metrics-listen")
    mport = [p for p in c.get("ports") or [] if p.get("name") == "metrics"]
    if not metrics:
        err(cw, "args --metrics-listen", "not set: the pod would have no /metrics to scrape")
    else:
        if not str(metrics).startswith("0.0.0.0:"):
            err(cw, "args --metrics-listen", f"{metrics!r}: use 0.0.0.0:PORT (scraped from outside the pod)")
        if port_of(metrics) != METRICS_PORT:
            err(cw, "args --metrics-listen", f"port {port_of(metrics)}, expected {METRICS_PORT}")
        if not mport or mport[0].get("containerPort") != METRICS_PORT:
            err(cw, "ports", f"needs a port named metrics with containerPort {METRICS_PORT}")
        ann = (tmpl.get("metadata") or {}).get("annotations") or {}
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(METRICS_PORT):
            err(where, "spec.template.metadata.annotations",
                f"prometheus.io/scrape \"true\" and prometheus.io/port \"{METRICS_PORT}\" expected")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        pr = c.get(probe)
        if not pr:
            err(cw, probe, "missing")
            continue
        g = pr.get("grpc")
        if not g:
            err(cw, probe, "must be a native gRPC probe (grpc: {port: ...})")
        elif g.get("port") != GRPC_PORT:
            err(cw, f"{probe}.grpc.port", f"{g.get('port')!r}, expected {GRPC_PORT} (a number)")
        elif g.get("service") not in (None, ""):
            err(cw, f"{probe}.grpc.service", "use the server's overall status (empty service)")

    # drain vs grace period
    try:
        drain_ms = int(opts.get("drain-timeout-ms", DEFAULT_DRAIN_MS))
    except (TypeError, ValueError):
        err(cw, "args --drain-timeout-ms", f"{opts.get('drain-timeout-ms')!r} is not a number")
        drain_ms = DEFAULT_DRAIN_MS
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not isinstance(grace, int) or grace * 1000 < drain_ms + GRACE_MARGIN_S * 1000:
        err(where, "spec.template.spec.terminationGracePeriodSeconds",
            f"{grace} s must exceed --drain-timeout-ms {drain_ms} ms by at least {GRACE_MARGIN_S} s")

    # shards
    if "shards" not in opts:
        err(cw, "env TICKFAN_SHARDS",
            "set it (e.g. from limits.cpu): the default counts the node's CPUs, not the pod's")

    # data directory, volume, claim size
    data_dir = opts.get("data-dir")
    if data_dir != DATA_DIR:
        err(cw, "args --data-dir", f"{data_dir!r}, expected {DATA_DIR} (the image's volume)")
    claims = {(t.get("metadata") or {}).get("name"): t for t in spec.get("volumeClaimTemplates") or []}
    pod_vols = {v.get("name") for v in pod.get("volumes") or []}
    mounts = c.get("volumeMounts") or []
    for m in mounts:
        if m.get("name") not in claims and m.get("name") not in pod_vols:
            err(cw, f"volumeMounts[{m.get('name')}]", "no volumeClaimTemplate or volume of that name")
    for cname in claims:
        if cname not in [m.get("name") for m in mounts]:
            err(where, f"spec.volumeClaimTemplates[{cname}]", "not mounted by tickfand")
    data_mount = [m for m in mounts if m.get("mountPath") == data_dir]
    log_size = size_bytes(opts.get("log-size", "64M"))
    if log_size is None:
        err(cw, "args --log-size", f"{opts.get('log-size')!r} is not a size")
        log_size = DEFAULT_LOG_SIZE
    ntopics = topic_count(opts)
    need_disk = ntopics * (log_size + HEADER_BYTES)
    if not data_mount:
        err(cw, "volumeMounts", f"nothing is mounted at --data-dir {data_dir}")
    elif data_mount[0].get("name") not in claims:
        err(cw, f"volumeMounts[{data_mount[0].get('name')}]",
            "the data directory must be a volumeClaimTemplate (the logs must outlive the pod)")
    elif data_mount[0].get("readOnly"):
        err(cw, f"volumeMounts[{data_mount[0].get('name')}].readOnly", "the data directory must be writable")
    else:
        claim = claims[data_mount[0]["name"]]
        st = (((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
        have = quantity_bytes(st) if st else None
        if have is None:
            err(where, f"spec.volumeClaimTemplates[{data_mount[0]['name']}].spec.resources.requests.storage",
                f"{st!r} is not a quantity")
        elif have < need_disk:
            err(where, f"spec.volumeClaimTemplates[{data_mount[0]['name']}].spec.resources.requests.storage",
                f"{st} < {ntopics} topic(s) x (--log-size + 4 KiB) = {need_disk} bytes")

    # resources
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(kind) or {}):
                err(cw, f"resources.{kind}.{r}", "missing")
    need_mem = ntopics * log_size + PROCESS_MEMORY
    for kind in ("requests", "limits"):
        mem = (res.get(kind) or {}).get("memory")
        if mem is not None:
            b = quantity_bytes(mem)
            if b is None:
                err(cw, f"resources.{kind}.memory", f"{mem!r} is not a quantity")
            elif b < need_mem:
                err(cw, f"resources.{kind}.memory",
                    f"{mem} < {ntopics} topic(s) x --log-size + 64 MiB = {need_mem} bytes "
                    "(the mapped logs are charged to the pod)")
        cpu = (res.get(kind) or {}).get("cpu")
        if cpu is not None and cpu_cores(cpu) is None:
            err(cw, f"resources.{kind}.cpu", f"{cpu!r} is not a quantity")

    # container security
    sc = c.get("securityContext") or {}
    if sc.get("readOnlyRootFilesystem") is not True:
        err(cw, "securityContext.readOnlyRootFilesystem", "must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        err(cw, "securityContext.allowPrivilegeEscalation", "must be false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        err(cw, "securityContext.capabilities.drop", "must include ALL")
    if sc.get("runAsUser") == 0 or sc.get("runAsNonRoot") is False or sc.get("privileged"):
        err(cw, "securityContext", "must not run as root or privileged")


def render(directory):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return "kubectl not found: kustomize rendering not checked"
    r = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        err(os.path.join(directory, "kustomization.yaml"), "(kustomize)", r.stderr.strip())
        return "kubectl kustomize failed"
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(r.stdout) if d)
    return f"kubectl kustomize renders {len(kinds)} objects ({', '.join(kinds)})"


def main(argv):
    directory = argv[1] if len(argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    check(directory)
    note = render(directory) if not errors else ""
    if errors:
        for e in errors:
            print(f"validate: {e}")
        print(f"validate: {len(errors)} violation(s)")
        return 1
    print(f"validate: OK {directory}; {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
