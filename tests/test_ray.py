"""Studies on a real Ray cluster (two nodes on this machine): the same runs and accuracies
as the serial executor, declared resources (a fake logical GPU shared by two runs),
retries with attempts in the manifest, a SIGKILLed driver (and a SIGKILLed whole cluster)
resumed, a private Ray on this machine without --address, progress lines, and one-line
errors for bad options."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil  # dev extra, as Ray itself: these tests must run, never skip
import pytest
import ray  # noqa: F401
import yaml
from typer.testing import CliRunner

from prunebench.cli import app
from prunebench.store import RunStore
from prunebench.studies import run_studies

PRUNEBENCH = Path(sys.executable).with_name("prunebench")
RAY = Path(sys.executable).with_name("ray")

BASE = {
    "data": {"name": "synthetic", "batch_size": 64, "val_size": 128},
    "model": {"name": "mlp", "kwargs": {"depth": 3, "width": 16}},
    "pretrain": {"epochs": 2, "lr": "0:0.1"},
    "prune": {"method": "l1", "layers": 0.5},
    "retrain": {"epochs": 2, "lr": "0:0.01"},
}


def _study(tmp: Path, name: str, rows: list[dict], values: list[float], **base: dict) -> Path:
    spec = {"name": name, "title": name, "presets": {"cpu": {
        "base": {**BASE, **base}, "columns": {"key": "prune.layers", "values": values},
        "rows": rows, "seeds": 1}}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ours(tmp: str) -> list[psutil.Process]:
    """Every process of the cluster: its command line names the cluster's temp dir."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(tmp in part for part in p.info["cmdline"] or ()) and p.pid != os.getpid():
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@contextlib.contextmanager
def _ray_cluster(second_node: bool = True) -> Iterator[tuple[str, str]]:
    """``(address, temp dir)`` of a cluster started with ``ray start`` in a private temp
    dir: a head node (1 CPU; 2 CPUs alone) and, with ``second_node``, a node with 2 CPUs
    and one fake logical GPU; every process of it ended on exit."""
    tmp = tempfile.mkdtemp(prefix="pbray")  # short: Ray's socket paths must stay short
    port = _free_port()
    env = _env()
    common = ["--disable-usage-stats"]
    addr = f"127.0.0.1:{port}"
    try:
        subprocess.run([str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1",
                        "--port", str(port), "--num-cpus", "1" if second_node else "2",
                        "--num-gpus", "0", "--resources", '{"head": 1}', "--temp-dir", tmp,
                        "--include-dashboard", "false", *common],
                       env=env, check=True, capture_output=True, timeout=120)
        if second_node:
            subprocess.run([str(RAY), "start", "--address", addr, "--node-ip-address",
                            "127.0.0.1", "--num-cpus", "2", "--num-gpus", "1",
                            "--resources", '{"second": 1}', *common],
                           env=env, check=True, capture_output=True, timeout=120)
        _wait_for_nodes(addr, 2 if second_node else 1, env)
        yield addr, tmp
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"ray start failed: {exc.stdout.decode()[-1500:]}"
                    f"{exc.stderr.decode()[-1500:]}")
    finally:
        _end(_ours(tmp))
        assert not _ours(tmp), "Ray processes left running"


def _end(procs: list[psutil.Process], *, hard: bool = False) -> None:
    """Terminate (or, ``hard``, SIGKILL) ``procs`` and wait for them."""
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill() if hard else p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=3)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=10)


def _wait_for_nodes(addr: str, n: int, env: dict[str, str], timeout: float = 60) -> None:
    """``ray start`` returns before a joining node is registered: a study started at once
    could see one node only (on a busy machine it did)."""
    probe = ("import sys, time, ray\n"
             f"ray.init(address={addr!r}, log_to_driver=False, configure_logging=False)\n"
             f"end = time.time() + {timeout}\n"
             f"while sum(x['Alive'] for x in ray.nodes()) < {n} and time.time() < end:\n"
             "    time.sleep(0.5)\n"
             f"sys.exit(0 if sum(x['Alive'] for x in ray.nodes()) >= {n} else 1)\n")
    res = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, timeout=timeout + 60)
    assert res.returncode == 0, f"the cluster never had {n} nodes: {res.stderr[-1500:]}"


def _node_ids(addr: str) -> set[str]:
    probe = ("import json, ray\n"
             f"ray.init(address={addr!r}, log_to_driver=False, configure_logging=False)\n"
             "print(json.dumps([x['NodeID'] for x in ray.nodes() if x['Alive']]))\n")
    res = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-1500:]
    return set(json.loads(res.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The tests' shared two-node cluster (see :func:`_ray_cluster`)."""
    with _ray_cluster() as (addr, _):
        yield addr


def _study_cmd(study: Path, out: Path, addr: str, *extra: str) -> list[str]:
    return [str(PRUNEBENCH), "study", str(study), "--out", str(out), "--preset", "cpu",
            "--backend", "ray", "--address", addr, "--stack", "1", "--no-report", *extra]


def _env() -> dict[str, str]:
    # token auth off explicitly: Ray turns it on when ~/.ray/auth_token exists (any earlier
    # local ray.init() writes one), and then a second node fails to join
    return {**os.environ, "PRUNEBENCH_LEASE_TIMEOUT": "5", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled"}


def _manifest(out: Path, name: str) -> dict:
    return json.loads((out / "studies" / f"{name}-cpu.json").read_text())


def _accs(out: Path, manifest: dict) -> dict[str, float]:
    ids = [c["run"] for c in manifest["cells"]] + list(manifest["dense_runs"].values())
    return {rid: json.loads((out / rid / "result.json").read_text())["test_acc"]
            for rid in ids}


LINE = re.compile(r"^\[(\d+)/(\d+)\] (done|failed|diverged) ([0-9a-f]{12}) (.+?)  .*"
                  r"\((\d+) running, (\d+) failed, ETA [^)]+\)$")


def test_ray_study_matches_serial(cluster: str, tmp_path: Path) -> None:
    rows = [{"label": "LR 0.01", "set": {}}, {"label": "LR 0.001",
                                             "set": {"retrain.lr": "0:0.001"}}]
    study = _study(tmp_path, "ray-same", rows, [0.3, 0.6])  # 4 cells + 1 dense run
    serial = run_studies(study, tmp_path / "serial", preset="cpu", stack=1)[0]
    assert serial["complete"]

    out = tmp_path / "ray"
    proc = subprocess.run(_study_cmd(study, out, cluster, "--gpus-per-run", "0"),
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = _manifest(out, "ray-same")
    assert manifest["complete"] and manifest["execution"]["backend"] == "ray"
    # the same run ids and the same final accuracies as the serial executor
    assert [c["run"] for c in manifest["cells"]] == [c["run"] for c in serial["cells"]]
    assert _accs(out, manifest) == _accs(tmp_path / "serial", serial)
    assert all(c["attempts"] == 1 and c["status"] == "done" for c in manifest["cells"])
    # every run says where it ran: a node of this cluster, no GPU (gpus-per-run 0), the CPU
    # (which node is Ray's choice: SPREAD is best effort, so the test does not insist on
    # both; the shared-GPU test below pins runs to the GPU node by their resources)
    places = [c["placement"] for c in manifest["cells"]]
    assert {p["node_id"] for p in places} <= _node_ids(cluster)
    assert all(p["gpu_ids"] == [] and p["device"] == "cpu" for p in places)
    log = [json.loads(x) for x in (out / manifest["cells"][0]["run"] / "placement.jsonl")
           .read_text().splitlines()]
    assert [x["attempt"] for x in log] == [1] and log[0]["status"] == "done"
    # the driver indexed the runs the workers wrote
    assert sorted(r["id"] for r in RunStore(out).list_runs()) == sorted(_accs(out, manifest))
    # stdout piped: one progress line per finished run, in done order, on stderr
    lines = [ln for ln in proc.stderr.splitlines() if LINE.match(ln)]
    assert [int(LINE.match(ln).group(1)) for ln in lines] == [1, 2, 3, 4, 5], proc.stderr
    assert {LINE.match(ln).group(2) for ln in lines} == {"5"}
    labels = {LINE.match(ln).group(5) for ln in lines}
    assert "LR 0.01 / 0.3" in labels and "dense reference, seed 0" in labels
    assert re.search(r"test \d+\.\d\d%", lines[0])
    assert "(0 running, 0 failed, ETA 0s)" in lines[-1]
    assert not re.search(r"(pretrain|retrain) epoch \d", proc.stdout)  # stdout: results

    # a second start: everything is finished, nothing is sent to the cluster or rewritten
    before = {rid: (out / rid / "result.json").stat().st_mtime_ns for rid in _accs(out,
                                                                                 manifest)}
    again = subprocess.run(_study_cmd(study, out, cluster), env=_env(), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("(finished before)") == 5
    assert {rid: (out / rid / "result.json").stat().st_mtime_ns for rid in before} == before


PLUGIN = '''
import os
import signal
import time
from pathlib import Path

from prunebench.pruning import register_criterion

MARK = Path({mark!r})


@register_criterion("ray_flaky")
def ray_flaky(module, ctx):
    """Fails on its first call (a worker that crashed once); slow (runs overlap)."""
    time.sleep(2)
    if not MARK.exists():
        MARK.write_text("failed once")
        raise RuntimeError("flaky criterion failed on purpose")
    return module.weight.detach().flatten(1).abs().sum(dim=1)


@register_criterion("ray_crash")
def ray_crash(module, ctx):
    """Kills its own worker process on the first call (a worker that died)."""
    crash = MARK.with_suffix(".crash")
    if not crash.exists():
        crash.write_text("died once")
        os.kill(os.getpid(), signal.SIGKILL)
    return module.weight.detach().flatten(1).abs().sum(dim=1)


@register_criterion("ray_broken")
def ray_broken(module, ctx):
    """Always fails, slowly."""
    time.sleep(2)
    raise RuntimeError("broken criterion fails every time")
'''


def test_ray_retries_plugins_and_a_shared_gpu(cluster: str, tmp_path: Path) -> None:
    plugin = tmp_path / "ray_plugin.py"
    plugin.write_text(PLUGIN.format(mark=str(tmp_path / "flaky.mark")))
    rows = [{"label": "ok", "set": {}},
            {"label": "flaky", "set": {"prune.method": "ray_flaky"}},
            {"label": "broken", "set": {"prune.method": "ray_broken"}},
            {"label": "diverges", "set": {"retrain.lr": "0:1e12"}},
            {"label": "worker dies", "set": {"prune.method": "ray_crash"}}]
    study = _study(tmp_path, "ray-retry", rows, [0.5])
    out = tmp_path / "runs"
    proc = subprocess.run(
        _study_cmd(study, out, cluster, "--retries", "1", "--gpus-per-run", "0.5",
                   "--cpus-per-run", "0.5", "--plugins", str(plugin)),
        env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 4, proc.stderr[-3000:]  # a cell stayed failed
    manifest = _manifest(out, "ray-retry")
    cells = {c["row"]: c for c in manifest["cells"]}
    assert (cells["ok"]["status"], cells["ok"]["attempts"]) == ("done", 1)
    assert (cells["flaky"]["status"], cells["flaky"]["attempts"]) == ("done", 2)
    assert (cells["broken"]["status"], cells["broken"]["attempts"]) == ("failed", 2)
    assert (cells["diverges"]["status"], cells["diverges"]["attempts"]) == ("diverged", 2)
    dies = cells["worker dies"]
    assert (dies["status"], dies["attempts"]) == ("done", 2)
    bad = {b["run"]: b for b in manifest["not_done"]}
    assert set(bad) == {cells["broken"]["run"], cells["diverges"]["run"]}
    assert bad[cells["broken"]["run"]]["attempts"] == 2
    assert "broken criterion fails every time" in bad[cells["broken"]["run"]]["error"]
    # the retried run re-ran: its folder holds the second attempt's done result
    flaky = out / cells["flaky"]["run"]
    assert json.loads((flaky / "result.json").read_text())["status"] == "done"
    attempts = [json.loads(x) for x in (flaky / "placement.jsonl").read_text().splitlines()]
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, "failed"), (2, "done")]
    # each run had half of the (logical) GPU of the second node: Ray's GPU 0, made the
    # only visible one; the device resolved on the task (no CUDA here: the CPU)
    places = [c["placement"] for c in manifest["cells"]]
    assert all(p["gpu_ids"] == ["0"] and p["cuda_visible_devices"] == "0" for p in places)
    assert len({p["node_id"] for p in places}) == 1
    spans = sorted((p["started"], p["started"] + p["seconds"]) for c in manifest["cells"]
                   for p in map(json.loads, (out / c["run"] / "placement.jsonl").read_text()
                                .splitlines()))
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)), \
        f"no two runs shared the GPU at once: {spans}"
    # progress: retries are announced, the failures counted, the attempts shown
    err = proc.stderr
    assert "flaky" in err and "on attempt 1 of 2" in err and "retrying" in err
    lines = [ln for ln in err.splitlines() if LINE.match(ln)]
    assert len(lines) == 6 and LINE.match(lines[-1]).group(7) == "2"
    assert re.search(r"worker dies / 0\.5\) failed on attempt 1 of 2: \w*(Worker|Crash|Died)",
                     err), err
    failed = [ln for ln in lines if LINE.match(ln).group(3) == "failed"]
    assert len(failed) == 1 and "after 2 attempts" in failed[0]
    assert "incomplete: 2 of 6 runs did not finish" in " ".join(err.split())


def _runs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if len(p.name) == 12 and p.is_dir()) \
        if out.is_dir() else []


def _kill_part_way(study: Path, out: Path, address: str, kill: Any) -> dict[str, tuple]:
    """Start the study on ``address``; once a run is done while another has started, call
    ``kill(driver)``; return the runs finished then (mtime and bytes of result.json)."""
    proc = subprocess.Popen(_study_cmd(study, out, address), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    t0 = time.monotonic()
    try:
        while True:
            runs = _runs(out)
            done = [r for r in runs if (r / "result.json").is_file()]
            if done and len(done) < len(runs):
                break
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() - t0 < 240, "no run finished while another ran"
            time.sleep(0.05)
    finally:
        kill(proc)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    # the runs done at the kill (a task Ray stops as its driver dies may still record its
    # run ``failed``: that one is not finished, and runs again)
    return {r.name: ((r / "result.json").stat().st_mtime_ns, (r / "result.json").read_bytes())
            for r in _runs(out) if (r / "result.json").is_file()
            and json.loads((r / "result.json").read_text())["status"] == "done"}


def _resumed_exactly(study: Path, out: Path, address: str, name: str,
                     finished: dict[str, tuple]) -> None:
    """Start the study again: it completes with exactly its runs, each once, the runs
    finished before untouched, no lease left."""
    again = subprocess.run(_study_cmd(study, out, address), env=_env(), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = _manifest(out, name)
    expected = {c["run"] for c in manifest["cells"]} | set(manifest["dense_runs"].values())
    assert len(expected) == 5 and manifest["complete"]
    assert finished and set(finished) < expected  # the kill came part-way
    assert {r.name for r in _runs(out)} == expected  # exactly these runs, each once
    assert sorted(r["id"] for r in RunStore(out).list_runs()) == sorted(expected)
    for rid in expected:
        assert json.loads((out / rid / "result.json").read_text())["status"] == "done"
        keys = [(m["phase"], m["epoch"]) for m in map(json.loads, (
            out / rid / "metrics.jsonl").read_text().splitlines())]
        assert len(keys) == len(set(keys)), f"run {rid} repeats epochs"
    for rid, (mtime, data) in finished.items():  # finished runs untouched
        assert (out / rid / "result.json").stat().st_mtime_ns == mtime
        assert (out / rid / "result.json").read_bytes() == data
    assert not list(out.rglob("*.lease"))


KILL_ROWS = [{"label": "a", "set": {}}, {"label": "b", "set": {"retrain.lr": "0:0.001"}}]


def test_ray_driver_killed_then_resumed(cluster: str, tmp_path: Path) -> None:
    study = _study(tmp_path, "ray-kill", KILL_ROWS, [0.3, 0.6],
                   retrain={"epochs": 12, "lr": "0:0.01"})
    out = tmp_path / "runs"
    finished = _kill_part_way(study, out, cluster,
                              lambda driver: os.killpg(driver.pid, signal.SIGKILL))
    _resumed_exactly(study, out, cluster, "ray-kill", finished)


def test_ray_whole_cluster_killed_then_resumed_on_a_new_one(tmp_path: Path) -> None:
    """Every process of the cluster SIGKILLed mid-study (workers, raylets, the head), the
    driver with it; a new cluster finishes the study with exactly its runs."""
    study = _study(tmp_path, "ray-crash", KILL_ROWS, [0.3, 0.6],
                   retrain={"epochs": 12, "lr": "0:0.01"})
    out = tmp_path / "runs"
    with _ray_cluster(second_node=False) as (addr, tmp):
        finished = _kill_part_way(study, out, addr,
                                  lambda driver: _end(_ours(tmp), hard=True))
    with _ray_cluster(second_node=False) as (addr, _):
        _resumed_exactly(study, out, addr, "ray-crash", finished)


def test_ray_on_this_machine_without_an_address(tmp_path: Path) -> None:
    """``--backend ray`` without ``--address`` starts a private Ray on this machine
    (``ray.init()``), runs the study there with the serial executor's results, and leaves
    no Ray process behind when the driver exits."""
    study = _study(tmp_path, "ray-local", [{"label": "LR 0.01", "set": {}}], [0.3, 0.6])
    serial = run_studies(study, tmp_path / "serial", preset="cpu", stack=1)[0]
    tmp = tempfile.mkdtemp(prefix="pbrl")  # Ray's temp dir: short socket paths
    out = tmp_path / "ray"
    cmd = [str(PRUNEBENCH), "study", str(study), "--out", str(out), "--preset", "cpu",
           "--backend", "ray", "--workers", "2", "--stack", "1", "--no-report"]
    try:
        proc = subprocess.run(cmd, env={**_env(), "RAY_TMPDIR": tmp, "RAY_ADDRESS": ""},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        manifest = _manifest(out, "ray-local")
        assert manifest["complete"] and manifest["execution"]["backend"] == "ray"
        assert [c["run"] for c in manifest["cells"]] == [c["run"] for c in serial["cells"]]
        assert _accs(out, manifest) == _accs(tmp_path / "serial", serial)
        assert len({c["placement"]["node_id"] for c in manifest["cells"]}) == 1
        assert any(Path(tmp).glob("*/session_*")), "Ray did not start in its temp dir"
        assert not _ours(tmp), "the driver's local Ray outlived it"
    finally:
        _end(_ours(tmp))
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("backend", ["serial", "process"])
def test_retries_on_every_backend(tmp_path: Path, backend: str) -> None:
    """The same retry loop serves the local backends; plugins the driver loaded (as
    ``--plugins`` does) reach spawned workers."""
    import io

    from prunebench.cli import LineReporter
    from prunebench.recipe import load_plugins

    name = f"{backend}_flaky"
    plugin = tmp_path / f"{name}.py"
    plugin.write_text(PLUGIN.replace("time.sleep(2)", "").replace("ray_flaky", name)
                      .replace("ray_broken", f"{backend}_broken")
                      .replace("ray_crash", f"{backend}_crash")
                      .format(mark=str(tmp_path / "flaky.mark")))
    load_plugins([str(plugin)])
    rows = [{"label": "ok", "set": {}}, {"label": "flaky", "set": {"prune.method": name}}]
    study = _study(tmp_path, f"retry-{backend}", rows, [0.5])
    stream = io.StringIO()
    manifest = run_studies(study, tmp_path / "runs", preset="cpu", stack=1, retries=1,
                           backend=backend, workers=2 if backend == "process" else 1,
                           reporter=LineReporter(stream))[0]
    assert manifest["complete"]
    assert [(c["row"], c["status"], c["attempts"]) for c in manifest["cells"]] == [
        ("ok", "done", 1), ("flaky", "done", 2)]
    text = stream.getvalue()
    assert "on attempt 1 of 2: RuntimeError: flaky criterion failed on purpose; retrying" \
        in text
    if backend == "serial":  # the serial lines (epochs, then the run), retried once
        assert re.findall(r"^\[(\d)/3\] .*  run [0-9a-f]{12} done", text, re.M) == [
            "1", "2", "3"]
    else:  # one line per finished run, in the order they finished
        lines = [LINE.match(ln) for ln in text.splitlines() if LINE.match(ln)]
        assert [(m.group(1), m.group(3)) for m in lines] == [("1", "done"), ("2", "done"),
                                                             ("3", "done")]
        assert [m.group(0) for m in lines if "after 2 attempts" in m.group(0)] == [
            m.group(0) for m in lines if m.group(5) == "flaky / 0.5"]
    assert text.count("retrying") == 1


@pytest.mark.parametrize(("args", "words"), [
    (["--retries", "-1"], ["retries", "-1", ">= 0"]),
    (["--backend", "ray", "--gpus-per-run", "-0.5"], ["gpus-per-run", "-0.5", ">= 0"]),
    (["--backend", "ray", "--cpus-per-run", "0"], ["cpus-per-run", "> 0"]),
    (["--gpus-per-run", "0.5"], ["gpus-per-run", "needs backend ray"]),
    (["--backend", "ray", "--address", "nowhere"], ["'nowhere'", "HOST:PORT"]),
    (["--backend", "ray", "--address", "PORT"], ["no Ray cluster answers"]),
])
def test_bad_options_one_line_exit_2(tmp_path: Path, args: list[str], words: list[str]
                                     ) -> None:
    study = _study(tmp_path, "ray-bad", [{"label": "a", "set": {}}], [0.5])
    args = [f"127.0.0.1:{_free_port()}" if a == "PORT" else a for a in args]
    out = tmp_path / "runs"
    res = CliRunner().invoke(app, ["study", str(study), "--out", str(out), "--no-report",
                                   *args])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert not out.exists()  # nothing written


def test_progress_lines_and_display_for_parallel_backends() -> None:
    """``end_cell(result, RunProgress)``: piped, one line per finished run; on a terminal,
    the counts in the one live display and a line for a run that did not finish."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from prunebench.cli import LineReporter, RichReporter
    from prunebench.studies.executor import RunProgress

    ok = SimpleNamespace(id="a" * 12, status="done", result={"test_acc": 91.234})
    bad = SimpleNamespace(id="b" * 12, status="failed", result={"error": "RuntimeError: x"})
    stream = io.StringIO()
    rep = LineReporter(stream)
    rep.begin(40, "study s (cpu)")
    rep.end_cell(ok, RunProgress("LR 0.01 / PR 0.5 / seed 1", 1, 12, 40, 3, 1, 250.4))
    rep.end_cell(bad, RunProgress("LR 0.1 / PR 0.9 / seed 0", 3, 13, 40, 2, 2, None))
    rep.end_cell(ok, RunProgress("dense reference, seed 0", 0, 14, 40, 2, 2, 3725))
    assert stream.getvalue().splitlines() == [
        "study s (cpu): 40 runs",
        f"[12/40] done {ok.id} LR 0.01 / PR 0.5 / seed 1  test 91.23%  (3 running, 1 failed, "
        "ETA 4m10s)",
        f"[13/40] failed {bad.id} LR 0.1 / PR 0.9 / seed 0  after 3 attempts: RuntimeError: x"
        "  (2 running, 2 failed, ETA ?)",
        f"[14/40] done {ok.id} dense reference, seed 0  test 91.23%  (finished before)  "
        "(2 running, 2 failed, ETA 1h02m)",
    ]
    out = io.StringIO()
    rich = RichReporter(Console(file=out, force_terminal=True, width=200))
    rich.begin(40, "study s (cpu)")
    rich.end_cell(ok, RunProgress("row / col", 1, 1, 40, 3, 0, 60))
    rich.end_cell(bad, RunProgress("row2 / col", 2, 2, 40, 2, 1, 60))
    task = rich.progress.tasks[0]
    assert len(rich.progress.tasks) == 1 and task.completed == 2
    assert "2 running, 1 failed" in task.fields["info"]
    rich.close()
    assert f"run {bad.id} (row2 / col) failed after 2 attempts: RuntimeError: x" in \
        out.getvalue()
