"""der-infer --ray on a real two-node Ray cluster (`ray start` twice), against local der-infer's records.

Ray listens on every interface and looks for the machine's own address, so every Ray process runs under
``unshare --net --pid`` with only loopback up: nothing leaves the namespace, and when the driver exits the
kernel kills whatever Ray left behind (a PID namespace dies with its first process). The driver is this file
run as a script (``python test_ray_infer.py CONFIG``): it starts a head and a worker node, runs each job once
(CLI jsonl, manifest -> csv, parquet, Ctrl-C, a worker node killed mid-job), stops the cluster and writes
report.json; the tests compare what it wrote with local der-infer's output. One cluster for all: starting
Ray is the slow part on 2 cores.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HEAD_PORT = 6380
# Per node: node manager, object manager, agent (listen, grpc), runtime-env agent, metrics, worker ports.
NODE_PORTS = [dict(nm=6390, om=6392, al=6394, ag=6396, re=6398, me=6400, wmin=10010, wmax=10200),
              dict(nm=6391, om=6393, al=6395, ag=6397, re=6399, me=6401, wmin=10201, wmax=10400)]
NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL"]
DRIVER_TIMEOUT = 480  # s: the whole namespace run, cluster start and stop included
IMAGES = 56  # good images; plus 2 unreadable and 1 non-UTF-8 name


# ---------------------------------------------------------------- the driver (inside the namespace)
def _ray_env(home: Path) -> dict:
    # A private HOME: Ray keeps its auth token in ~/.ray. Fast node-death detection for the kill job.
    return {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", "DER_NO_PROGRESS": "1",
            "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
            # Startup waits (agents' port files, raylet registration): generous, 2 busy cores start Python slowly.
            "RAY_agent_register_timeout_ms": "120000", "RAY_raylet_start_wait_time_s": "120"}


def _node_cmd(ray_bin: str, i: int, temp: Path, cpus: int) -> list[str]:
    p = NODE_PORTS[i]
    cmd = [ray_bin, "start", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0",
           f"--node-manager-port={p['nm']}", f"--object-manager-port={p['om']}",
           f"--dashboard-agent-listen-port={p['al']}", f"--dashboard-agent-grpc-port={p['ag']}",
           f"--runtime-env-agent-port={p['re']}", f"--metrics-export-port={p['me']}",
           f"--min-worker-port={p['wmin']}", f"--max-worker-port={p['wmax']}", "--object-store-memory=200000000",
           "--disable-usage-stats"]
    if i == 0:
        return cmd + ["--head", f"--port={HEAD_PORT}", "--include-dashboard=false", f"--temp-dir={temp}",
                      "--ray-client-server-port=10001"]
    return cmd + [f"--address=127.0.0.1:{HEAD_PORT}"]


def start_cluster(ray_bin: str, temp: Path, env: dict, cpus=(2, 2)) -> None:
    """Head and worker node; the worker starts as soon as the head's GCS answers (the head's own agents are
    still starting then: overlapping the two saves ~20 s on 2 busy cores)."""
    import socket

    head = subprocess.Popen(_node_cmd(ray_bin, 0, temp, cpus[0]), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and head.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", HEAD_PORT)) == 0:
                break
        time.sleep(0.2)
    worker = subprocess.run(_node_cmd(ray_bin, 1, temp, cpus[1]), env=env, capture_output=True, text=True,
                            timeout=180)
    _, head_err = head.communicate(timeout=180)
    for name, rc, err in (("head", head.returncode, head_err), ("worker", worker.returncode, worker.stderr)):
        if rc != 0:
            raise RuntimeError(f"ray start ({name}) failed: {err[-2000:]}")


def _node_pids(node_manager_port: int) -> list[int]:
    """One node's raylet (it names its port on its command line) and every process under it (its workers)."""
    parent, raylets = {}, []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if "raylet" in cmd and f"node_manager_port={node_manager_port}" in cmd:
            raylets.append(int(d.name))
    found, grew = set(raylets), True
    while grew:
        kids = {pid for pid, ppid in parent.items() if ppid in found} - found
        found |= kids
        grew = bool(kids)
    return sorted(found, reverse=True)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _job(report: dict, name: str, fn) -> None:
    t0 = time.perf_counter()
    try:
        report[name] = fn() or {}
    except BaseException as err:  # recorded for the test to show; the other jobs still run
        report[name] = {"failed": f"{type(err).__name__}: {err}"}
    report[name]["seconds"] = round(time.perf_counter() - t0, 2)


def driver(config: Path) -> None:
    import ray

    from der_deploy.runtime.ray_infer import infer_ray

    cfg = json.loads(config.read_text())
    work, engine, folder = Path(cfg["work"]), cfg["engine"], cfg["folder"]
    env = _ray_env(work / "home")
    os.environ.update(env)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    report: dict = {}
    try:
        t0 = time.perf_counter()
        start_cluster(ray_bin, work / "ray", env)
        ray.init(address=f"127.0.0.1:{HEAD_PORT}", logging_level="WARNING", log_to_driver=False)
        deadline = time.monotonic() + 60
        while sum(n["Alive"] for n in ray.nodes()) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        report["nodes"] = sum(n["Alive"] for n in ray.nodes())
        report["cluster_start_s"] = round(time.perf_counter() - t0, 2)
        common = dict(batch_size=4, replicas=2)

        def cli_jsonl():  # in this process: it uses the connection made above (a new one costs ~20 s here)
            from click.testing import CliRunner

            from der_deploy.cli.infer import main

            res = CliRunner().invoke(main, ["--engine", engine, folder, "--batch-size", "4", "-o", str(work / "cli.jsonl"),
                                            "--replicas", "2", f"--ray=127.0.0.1:{HEAD_PORT}"])
            return {"rc": res.exit_code, "stderr": res.stderr[-4000:]}

        def manifest_csv():
            s = infer_ray(engine, manifest=cfg["manifest"], fmt="csv", output=work / "ray.csv", **common)
            return {"line": s.line(), "errors": s.errors, "images": s.images}

        def parquet():
            s = infer_ray(engine, [folder], fmt="parquet", output=work / "out.parquet", **common)
            return {"line": s.line(), "errors": s.errors, "images": s.images, "listing": _listing(work)}

        def interrupt():
            def stop(done, total):
                raise KeyboardInterrupt
            out = work / "interrupted" / "x.jsonl"
            out.parent.mkdir()
            try:
                infer_ray(engine, [folder], fmt="jsonl", output=out, progress=stop, **common)
            except KeyboardInterrupt:
                return {"interrupted": True, "listing": _listing(out.parent)}
            return {"interrupted": False, "listing": _listing(out.parent)}

        def kill():
            state = {}

            def killer(done, total):
                if state:
                    return
                pids = _node_pids(NODE_PORTS[1]["nm"])
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                state.update(done_at_kill=done, total=total, killed=len(pids))
            s = infer_ray(engine, [folder], fmt="jsonl", output=work / "killed.jsonl", progress=killer,
                          batch_size=1, replicas=2)
            deadline = time.monotonic() + 30  # the job may end before the head's health checks give up on the node
            while (alive := sum(n["Alive"] for n in ray.nodes())) > 1 and time.monotonic() < deadline:
                time.sleep(0.5)
            return {**state, "line": s.line(), "dropped": s.duplicates_dropped, "alive_after": alive}

        for name, fn in (("cli_jsonl", cli_jsonl), ("manifest_csv", manifest_csv), ("parquet", parquet),
                         ("interrupt", interrupt), ("kill", kill)):
            _job(report, name, fn)
    except BaseException as err:  # the cluster did not come up: the fixture fails with this line
        report["cluster_error"] = f"{type(err).__name__}: {err}"
    finally:
        ray.shutdown()
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=60)
        (work / "report.json").write_text(json.dumps(report, indent=1))


# ---------------------------------------------------------------- the tests (outside)
def _can_unshare() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip not found (util-linux, iproute2)"
    res = subprocess.run([*NAMESPACE, "sh", "-c", "ip link set lo up"], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        return f"cannot create a network + PID namespace here (needs root / CAP_SYS_ADMIN): {res.stderr.strip()}"
    return None


def _need_ray() -> None:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("ray[data] is not installed; pip install '.[ray]' (make test must install it)")
        pytest.skip("ray[data] is not installed; pip install '.[ray]'")


@pytest.fixture(scope="module")
def ray_images(tmp_path_factory, make_image, make_bad):
    root = tmp_path_factory.mktemp("rayimgs") / "imgs"
    for i in range(IMAGES):
        make_image(root / ("a" if i % 2 else "b") / f"img{i:03d}.{'png' if i % 3 else 'jpg'}", i,
                   size=(160 + 7 * (i % 5), 120 + 3 * (i % 4)))
    bad = [make_bad(root / "a" / "broken.jpg", "truncated"), make_bad(root / "b" / "notes.png", "text")]
    odd = root / os.fsdecode(b"caf\xe9-\\.png")  # not UTF-8, and a backslash: path_text must round-trip
    make_image(odd, 7)
    return root, bad


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, tiny_onnx, ray_images):
    _need_ray()
    reason = _can_unshare()
    if reason:
        pytest.skip(reason)
    from der_deploy.images import find_images

    root, _ = ray_images
    work = tmp_path_factory.mktemp("raywork")
    (work / "home").mkdir()
    manifest = work / "manifest.txt"
    manifest.write_bytes(b"".join(os.fsencode(p) + b"\n" for p in find_images([root])))
    config = work / "config.json"
    config.write_text(json.dumps({"work": str(work), "engine": str(tiny_onnx), "folder": str(root),
                                  "manifest": str(manifest)}))
    # sh is the namespace's process 1 (it reaps what Ray daemonizes); when the driver ends, sh ends, and the kernel
    # kills every Ray process left in the namespace.
    script = f"ip link set lo up && {sys.executable} {Path(__file__).resolve()} {config}"
    t0 = time.perf_counter()
    try:
        res = subprocess.run([*NAMESPACE, "sh", "-c", script], capture_output=True, text=True,
                             timeout=DRIVER_TIMEOUT, cwd=work)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the Ray driver did not finish in {DRIVER_TIMEOUT} s: {(err.stderr or b'')[-3000:]!r}")
    report_file = work / "report.json"
    assert report_file.exists(), f"driver exited {res.returncode} without a report: {res.stderr[-3000:]}"
    report = json.loads(report_file.read_text())
    if "cluster_error" in report:
        pytest.fail(f"the Ray test cluster failed: {report['cluster_error']}")
    report["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=1))  # timings, for -s
    return work, report


def _local(tiny_onnx, folder, fmt, tmp_path) -> str:
    from click.testing import CliRunner

    from der_deploy.cli.infer import main

    out = tmp_path / f"local.{fmt}"
    res = CliRunner().invoke(main, ["--engine", str(tiny_onnx), str(folder), "--batch-size", "4", "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out.read_text(encoding="utf-8")


def _ok(report: dict, job: str) -> dict:
    rec = report[job]
    assert "failed" not in rec, f"{job}: {rec['failed']}"
    return rec


def test_two_nodes_cli_jsonl_equals_local(cluster_run, tiny_onnx, ray_images, tmp_path):
    work, report = cluster_run
    assert report["nodes"] == 2
    rec = _ok(report, "cli_jsonl")
    assert rec["rc"] == 0, rec["stderr"]
    local = _local(tiny_onnx, ray_images[0], "jsonl", tmp_path)
    ray_out = (work / "cli.jsonl").read_text(encoding="utf-8")
    assert sorted(ray_out.splitlines()) == sorted(local.splitlines())  # byte for byte, in completion order
    assert len(local.splitlines()) == IMAGES + 3
    assert "img/s on Ray, 2 replicas" in rec["stderr"] and "on 2 nodes; 2 could not be read" in rec["stderr"]


def test_bad_files_are_error_records(cluster_run, ray_images):
    work, report = cluster_run
    root, bad = ray_images
    recs = [json.loads(line) for line in (work / "cli.jsonl").read_text(encoding="utf-8").splitlines()]
    errors = {r["path"]: r["error"] for r in recs if "error" in r}
    assert sorted(errors) == sorted(map(str, bad))
    assert all(msg.startswith(path) for path, msg in errors.items())
    stderr = report["cli_jsonl"]["stderr"]
    assert stderr.count("skipped ") == 2 and "2 of 59 images could not be read and were skipped" in stderr
    assert "caf\\xe9-\\\\.png" in {Path(r["path"]).name for r in recs}  # path_text, lossless


def test_manifest_csv_equals_local(cluster_run, tiny_onnx, ray_images, tmp_path):
    work, report = cluster_run
    rec = _ok(report, "manifest_csv")
    assert rec["images"] == IMAGES + 3 and rec["errors"] == 2
    local = _local(tiny_onnx, ray_images[0], "csv", tmp_path).splitlines()
    ray_out = (work / "ray.csv").read_text(encoding="utf-8").splitlines()
    assert ray_out[0] == local[0]  # the header
    assert sorted(ray_out[1:]) == sorted(local[1:])


def test_parquet_folder_layout(cluster_run):
    import pyarrow.parquet as pq

    work, report = cluster_run
    rec = _ok(report, "parquet")
    out = work / "out.parquet"
    assert not [n for n in rec["listing"] if ".tmp-" in n or ".old-" in n]  # renamed into place, nothing left
    names = sorted(p.name for p in out.iterdir())
    assert "_SUCCESS" in names and all(n.endswith(".parquet") for n in names if n != "_SUCCESS")
    meta = json.loads((out / "_SUCCESS").read_text())
    assert meta["images"] == IMAGES + 3 and meta["errors"] == 2
    assert sorted(meta["files"]) == [n for n in names if n != "_SUCCESS"]
    table = pq.read_table(out, columns=["index", "path", "labels", "scores", "error"])
    assert table.num_rows == IMAGES + 3 and sorted(table.column("index").to_pylist()) == list(range(IMAGES + 3))
    # the same records as jsonl: labels and scores (struct in card order), or an error
    by_path = {json.loads(line)["path"]: json.loads(line) for line in (work / "cli.jsonl").read_text().splitlines()}
    for row in table.to_pylist():
        want = by_path[row["path"]]
        if "error" in want:
            assert row["error"] == want["error"] and row["scores"] is None
        else:
            assert row["labels"] == want["labels"] and row["scores"] == want["scores"] and row["error"] is None
            assert list(row["scores"]) == list(want["scores"])


def test_ctrl_c_leaves_no_output(cluster_run):
    _, report = cluster_run
    rec = _ok(report, "interrupt")
    assert rec["interrupted"] and rec["listing"] == []  # neither x.jsonl nor a temp file


def test_worker_node_killed_mid_job(cluster_run, tiny_onnx, ray_images, tmp_path):
    work, report = cluster_run
    rec = _ok(report, "kill")
    assert rec["killed"] >= 2 and rec["done_at_kill"] < rec["total"], rec  # raylet + workers, while the job ran
    assert rec["alive_after"] == 1
    local = _local(tiny_onnx, ray_images[0], "jsonl", tmp_path)
    lines = (work / "killed.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(set(lines)) == IMAGES + 3  # nothing lost, nothing duplicated
    assert sorted(lines) == sorted(local.splitlines())


# ---------------------------------------------------------------- no cluster needed
def test_missing_ray_is_one_line(monkeypatch, tiny_model, ray_images):
    from click.testing import CliRunner

    from der_deploy.cli.infer import main
    from der_deploy.errors import BackendUnavailable
    from der_deploy.runtime.ray_infer import RAY_HINT, infer_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BackendUnavailable) as err:
        infer_ray(tiny_model.path, [ray_images[0]], fmt="jsonl")
    assert str(err.value) == RAY_HINT and "\n" not in RAY_HINT
    res = CliRunner().invoke(main, ["--engine", str(tiny_model.path), str(ray_images[0]), "--ray"])
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [f"error: {RAY_HINT}"], res.stderr


def test_replica_sizing_and_inputs(tmp_path):
    from der_deploy.errors import DerError
    from der_deploy.runtime.ray_infer import check_address, replica_count
    from der_deploy.runtime.records import list_inputs, read_manifest

    assert replica_count(2, 0, 1, 0) == 1  # Parquet: one CPU left for Ray's write tasks
    assert replica_count(2, 0, 1, 0, reserve=0) == 2  # records: the driver writes, every CPU runs a replica
    assert replica_count(16, 0, 1, 0) == 15 and replica_count(16, 0, 4, 0) == 3
    assert replica_count(64, 4, 2, 1) == 4 and replica_count(8, 8, 2, 0.5) == 3
    with pytest.raises(DerError):
        replica_count(8, 0, 1, 1)
    assert check_address(None) is None and check_address("auto") == "auto"
    assert check_address("ray://head:10001") == "ray://head:10001" and check_address("10.0.0.1:6379")
    with pytest.raises(DerError, match="--ray=ADDRESS"):
        check_address("imgs")
    text = tmp_path / "list.txt"
    text.write_bytes(b"a/x.png\n\n" + b"caf\xe9.jpg\n" + b"a/x.png\n")
    assert read_manifest(text) == ["a/x.png", os.fsdecode(b"caf\xe9.jpg"), "a/x.png"]
    files, _ = list_inputs([], text)
    assert files == [Path("a/x.png"), Path(os.fsdecode(b"caf\xe9.jpg"))]  # duplicates dropped, order kept
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": ["p/1.jpg", "p/2.jpg"], "x": [1, 2]}), tmp_path / "list.parquet")
    assert read_manifest(tmp_path / "list.parquet") == ["p/1.jpg", "p/2.jpg"]
    pq.write_table(pa.table({"file": ["p/1.jpg"]}), tmp_path / "bad.parquet")
    with pytest.raises(DerError, match="no column 'path'"):
        read_manifest(tmp_path / "bad.parquet")


if __name__ == "__main__":  # the driver, run inside the namespaces by cluster_run
    driver(Path(sys.argv[1]))
