"""The deploy files agree with the gate and with each other. No container engine runs here, so
this checks what can be checked: the manifests parse, the policy they ship passes `keygate check`
with its paths laid out as the Pod mounts them, and ports, probes and paths line up."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import KEYGATE

yaml = pytest.importorskip("yaml")
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
K8S = os.path.join(ROOT, "deploy", "kubernetes")


def load(name):
    with open(os.path.join(K8S, name)) as f:
        return list(yaml.safe_load_all(f))


def keygate_container():
    (deployment,) = load("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (c,) = [c for c in pod["containers"] if c["name"] == "keygate"]
    return pod, c


def test_kustomization_names_files_that_exist():
    (k,) = load("kustomization.yaml")
    for r in k["resources"]:
        assert os.path.exists(os.path.join(K8S, r)), r
    for gen in k["configMapGenerator"] + k["secretGenerator"]:
        for f in gen["files"]:
            assert os.path.exists(os.path.join(K8S, f)), f


def test_policy_passes_check_where_the_pod_mounts_it(tmp_path):
    pod, c = keygate_container()
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = c["args"][c["args"].index("--config") + 1]
    policy_mount = next(m for m in mounts.values() if config.startswith(m["mountPath"] + "/"))
    assert "configMap" in volumes[policy_mount["name"]] and policy_mount.get("readOnly")
    text = open(os.path.join(K8S, "keygate.yaml")).read()
    policy = yaml.safe_load(text)
    keys_mount = next(m for m in mounts.values() if policy["keys_file"].startswith(m["mountPath"] + "/"))
    assert "secret" in volumes[keys_mount["name"]] and keys_mount.get("readOnly"), "keys come from a read-only Secret"
    state_mount = next(m for m in mounts.values() if policy["state_dir"] == m["mountPath"])
    assert "emptyDir" in volumes[state_mount["name"]] and not state_mount.get("readOnly")
    assert policy["usage_log"] == "-"
    # The replicas share limits through Redis, and split them while it is away.
    assert policy["cluster"]["redis"].startswith("redis://") and policy["cluster"]["on_redis_down"] in ("local", "deny")
    assert policy["limits"]["replicas"] == yaml.safe_load(open(os.path.join(K8S, "deployment.yaml")))["spec"]["replicas"]
    # Lay the mounts out under tmp_path and run the same loading code as serve.
    root = str(tmp_path)
    for m in mounts.values():
        os.makedirs(root + m["mountPath"], exist_ok=True)
    shutil.copy(os.path.join(K8S, "keys.jsonl"), root + policy["keys_file"])
    moved = text
    for m in mounts.values():
        moved = moved.replace(m["mountPath"], root + m["mountPath"])
    with open(root + config, "w") as f:
        f.write(moved)
    r = subprocess.run([KEYGATE, "check", "--config", root + config], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "cluster redis://keygate-redis:6379/0" in r.stdout


def test_ports_and_probes_line_up():
    pod, c = keygate_container()
    policy = yaml.safe_load(open(os.path.join(K8S, "keygate.yaml")))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == int(policy["listen"].rsplit(":", 1)[1])
    assert ports["admin"] == int(policy["admin_listen"].rsplit(":", 1)[1])
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    app = next(x for x in pod["containers"] if x["name"] != "keygate")
    assert policy["upstream"] == f"http://127.0.0.1:{app['ports'][0]['containerPort']}"
    (svc,) = load("service.yaml")
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert pod["terminationGracePeriodSeconds"] > 30  # longer than the default shutdown_grace


def test_dockerfile_builds_from_the_repository_and_runs_unprivileged():
    text = open(os.path.join(ROOT, "deploy", "Dockerfile")).read()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert os.path.exists(os.path.join(ROOT, src)), src
    user = re.search(r"^USER (\S+)", text, re.M).group(1)
    assert user not in ("root", "0")
    # Every Debian library the binary links is installed in the runtime stage (or comes with
    # bookworm-slim itself).
    runtime = text.split("FROM debian:")[1]
    base = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libzstd1", "liblzma5", "libbz2-1.0", "libcrypt1", "libselinux1", "libpcre2-8-0"}
    for line in subprocess.run(["ldd", KEYGATE], capture_output=True, text=True).stdout.splitlines():
        m = re.search(r"=> (/\S+)", line)
        if not m:
            continue
        owner = subprocess.run(["dpkg", "-S", os.path.realpath(m.group(1))], capture_output=True, text=True)
        if owner.returncode != 0:
            owner = subprocess.run(["dpkg", "-S", m.group(1)], capture_output=True, text=True)
        if owner.returncode != 0:
            continue  # the Swift runtime, linked statically into the image's build
        package = owner.stdout.split(":")[0]
        assert package in base or re.search(r"\b" + re.escape(package) + r"\b", runtime), f"{m.group(1)} ({package}) is not in the runtime image"
    _, c = keygate_container()
    assert c["args"] == re.search(r'^CMD \[(.*)\]', text, re.M).group(1).replace('"', "").split(", ")


def test_systemd_logrotate_and_policy_agree():
    unit = open(os.path.join(ROOT, "deploy", "systemd", "keygate.service")).read()
    rotate = open(os.path.join(ROOT, "deploy", "logrotate", "keygate")).read()
    policy = yaml.safe_load(open(os.path.join(ROOT, "deploy", "keygate.yaml")))
    config = re.search(r"^ExecStart=\S+ serve --config (\S+)", unit, re.M).group(1)
    folder = os.path.dirname(config)
    writable = re.search(r"^ReadWritePaths=(.*)$", unit, re.M).group(1).split()
    assert policy["usage_log"] == rotate.split()[0], "logrotate rotates the usage log the policy writes"
    assert os.path.dirname(policy["usage_log"]) in writable
    keys_folder = os.path.dirname(os.path.join(folder, policy["keys_file"]))
    assert keys_folder in writable, "the key store's folder holds the state file and the lock"
