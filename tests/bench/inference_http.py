"""One trained model served three ways over HTTP, under the same bounded load.

    python tests/bench/inference_http.py [--seconds 10] [--rounds 3] [--work DIR] [--skip-mlserver]

A 100-tree random forest (depth 10, 20 features) is trained once by Driftline's own
trainer (scikit-learn, exported to ONNX and checked against scikit-learn) and served by:

1. ``driftline up``: the gateway's ``/v2/models/{name}/infer`` (the model registered in
   a fresh ``--home``, the built-in functions running beside it, as deployed);
2. MLServer 1.7 with its scikit-learn runtime (the reference V2 server), on the same
   fitted estimator saved with joblib. MLServer pins fastapi < 0.116 and protobuf < 7,
   so it gets a virtual environment of its own under ``--work`` (made on first use);
3. a bare FastAPI + onnxruntime endpoint of a dozen lines: the floor of what Python HTTP
   costs here.

All three run at once; each is loaded for ``--seconds`` in total, in ``--rounds`` turns
taken one server after the other (so a noisy neighbour hurts all alike; the median round
counts), by the same closed-loop generator: 8 keep-alive connections on 127.0.0.1, each
sending one single-row V2 JSON request after the other, after a one-second warm-up. The
generator is wrk where it is installed (``apt-get install wrk``: C, it leaves the cores to
the servers), else this script's asyncio client (``--generator python``). After the load,
driftline's capture counts are read from its ``/metrics``: every request captured, or how
many were dropped. ``--capture-rate 0`` measures serving alone; ``--also-gil-switch-ms MS``
adds a second driftline up with that interpreter switch interval, ``--also-env NAME=VALUE``
one with that setting (``DRIFTLINE_MONITOR_PROCESS=false``: drift-check in the gateway's
process instead of its own). CPU per request counts up's child processes too. The last line printed
is JSON: ``{"generator", "driftline_rps", "mlserver_rps", "bare_rps", "vs_mlserver",
"vs_bare", "driftline_p99_ms", "mlserver_p99_ms", ..., "captures"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
MODEL = "forest"
N_FEATURES = 20
CONCURRENCY = 8
MLSERVER = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"]

SPEC = f"""
name = "{MODEL}"
task = "regression"
target = "y"
features = [{", ".join(f'"f{i}"' for i in range(N_FEATURES))}]

[time]
column = "ts"

[estimator]
class = "sklearn.ensemble.RandomForestRegressor"
params = {{ n_estimators = 100, max_depth = 10, random_state = 0, n_jobs = 1 }}

[training]
days = 400
min_rows = 100
"""

BARE_APP = """
import numpy as np, onnxruntime as ort
from fastapi import FastAPI, Request
session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
app = FastAPI()

@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request) -> dict:
    tensor = (await request.json())["inputs"][0]
    x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    y = session.run(None, {"input": x})[0].ravel()
    return {"model_name": name, "outputs": [{"name": "predict", "shape": [len(y)], "datatype": "FP64",
                                             "data": y.astype(float).tolist()}]}
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the model ------------------------------------------------------------------------------
def train(work: Path) -> tuple[Any, Any, Any]:
    """(spec, TrainResult, fitted estimator): Driftline's trainer, keeping the estimator."""
    from driftline.functions.ml.spec import ModelSpec, validate_frame
    from driftline.functions.ml.training import SklearnTrainer
    from driftline.functions.ml.training import train as fit_and_export

    class Keeping(SklearnTrainer):
        estimator: Any = None

        def fit(self, spec: Any, x: Any, y: Any) -> Any:
            Keeping.estimator = super().fit(spec, x, y)
            return Keeping.estimator

    rng = np.random.default_rng(0)
    x = rng.normal(size=(24 * 120, N_FEATURES))
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(N_FEATURES)])
    frame["y"] = 3 * x[:, 0] - 2 * x[:, 1] + np.sin(x[:, 2] * 3) + rng.normal(0, 0.3, len(x))
    frame["ts"] = pd.date_range("2024-01-01", periods=len(x), freq="h", tz="UTC").strftime(
        "%Y-%m-%dT%H:%M:%S+00:00"
    )
    spec = ModelSpec.from_toml(SPEC)
    rows, _ = validate_frame(spec, frame)
    result = fit_and_export(spec, rows, trainer=Keeping())
    log(f"trained {result.trainer} on {result.n_rows} rows in {result.seconds:.1f}s")
    return spec, result, Keeping.estimator


def driftline_home(work: Path, result: Any) -> Path:
    """A fresh --home where the forest is version 1, in production."""
    from driftline.events import Codec, ModelDeployed, ModelRegistered
    from driftline.functions.ml.layout import spec_key
    from driftline.runtime.bus.embedded import EmbeddedBus
    from driftline.runtime.store import LocalStore

    home = work / "driftline-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    store = LocalStore(home / "store")
    store.put(spec_key(MODEL), SPEC.encode())
    key = f"models/{MODEL}/bench/model.onnx"
    store.put(key, result.onnx)
    registered = ModelRegistered(
        model=MODEL,
        version=1,
        run_id="bench",
        artifact_key=key,
        sha256=result.sha256,
        reference_key="",
        metrics=result.metrics,
    )
    deployed = ModelDeployed(model=MODEL, version=1, artifact_key=key, sha256=result.sha256)
    bus = EmbeddedBus(home / "bus.db", partitions=3)
    producer, codec = bus.producer(), Codec()
    for event in (registered, deployed):
        value, headers = codec.encode(event, id=str(uuid.uuid4()))
        producer.send(event.TYPE, value, key=MODEL.encode(), headers=headers)
    producer.flush()
    bus.close()
    return home


# -- the servers ----------------------------------------------------------------------------
def mlserver_venv(work: Path) -> Path:
    venv = work / "mlserver-venv"
    if not (venv / "bin" / "mlserver").exists():
        log(f"installing {' '.join(MLSERVER)} into {venv} (once)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        import sklearn

        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                *MLSERVER,
                f"scikit-learn=={sklearn.__version__}",
            ],
            check=True,
        )
    return venv


def mlserver_models(work: Path, estimator: Any, port: int) -> Path:
    import joblib

    folder = work / "mlserver-models"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / MODEL).mkdir(parents=True)
    joblib.dump(estimator, folder / MODEL / "model.joblib")
    (folder / MODEL / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "1"},
            }
        )
    )
    (folder / "settings.json").write_text(
        json.dumps(
            {
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "parallel_workers": 0,
                "host": "127.0.0.1",
            }
        )
    )
    return folder


@contextmanager
def serving(
    name: str,
    command: list[str],
    port: int,
    cwd: Path,
    env: dict[str, str] | None = None,
    ready: str = "/v2/health/ready",
) -> Iterator[subprocess.Popen[bytes]]:
    out = (cwd / f"{name}.log").open("wb")
    proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while not _answers(port, ready):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {cwd / f'{name}.log'}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


def _stat(pid: int | str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads, and of its live children
    (``up --replicas``' runner processes), on Linux; 0 elsewhere."""
    ticks = 0
    for other in Path("/proc").iterdir():
        if other.name.isdigit():
            fields = _stat(other.name)
            if fields and (int(other.name) == pid or int(fields[1]) == pid):
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _answers(port: int, path: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            return sock.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def captured(port: int) -> dict[str, int]:
    """driftline up's capture counts (queued, sent, dropped, failed) from its /metrics: a
    capture queue that overflowed would make "capture on" figures look better than they are."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("driftline_capture_events_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = int(float(line.rsplit(" ", 1)[1]))
    return counts


# -- the load -------------------------------------------------------------------------------
async def _connection(
    port: int,
    request: bytes,
    until: float,
    warm_until: float,
    latencies: list[float],
    errors: list[str],
    done: list[int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (started := time.perf_counter()) < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            done[0] += 1
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n")[0].decode())
            elif started >= warm_until:
                latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


def load(port: int, seconds: float, row: list[float]) -> dict[str, float]:
    """Closed loop: CONCURRENCY connections, one request at a time each, for ``seconds``."""
    body = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, N_FEATURES], "datatype": "FP32", "data": row}]}
    ).encode()
    request = (
        f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: list[str] = []
    done = [0]

    async def run() -> None:
        now = time.perf_counter()
        await asyncio.gather(
            *(
                _connection(port, request, now + 1 + seconds, now + 1, latencies, errors, done)
                for _ in range(CONCURRENCY)
            )
        )

    asyncio.run(run())
    ms = np.array(latencies) * 1000
    return {
        "rps": len(latencies) / seconds,
        "requests": done[0],
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": len(errors),
    }


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%s]]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{"requests": %%d, "duration_us": %%d, "errors": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def load_wrk(port: int, seconds: float, row: list[float], work: Path) -> dict[str, float]:
    """The same closed loop from wrk (C, one thread, CONCURRENCY connections): the load
    generator then takes a small share of the two cores, where the Python one took about
    as much as the servers it measured."""
    body = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, N_FEATURES], "datatype": "FP32", "data": row}]}
    )
    script = work / "wrk_infer.lua"
    script.write_text(WRK_SCRIPT % body)
    url = f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer"

    def wrk(duration: float) -> dict[str, float]:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{CONCURRENCY}", f"-d{duration:g}s", "-s", str(script), url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        return result

    warm = wrk(1)
    run = wrk(seconds)
    return {
        "rps": run["requests"] / (run["duration_us"] / 1e6),
        "requests": warm["requests"] + run["requests"],
        "p50_ms": run["p50_us"] / 1000,
        "p99_ms": run["p99_us"] / 1000,
        "errors": warm["errors"] + run["errors"],
    }


def up(home: Path, port: int) -> list[str]:
    """The command of a ``driftline up`` on ``home`` and ``port``."""
    return [sys.executable, "-m", "driftline.runtime.cli", "up", "--home", str(home)] + [
        "--port",
        str(port),
    ]


def _servers(args: argparse.Namespace, work: Path, result: Any, estimator: Any) -> dict[str, Any]:
    """name -> (command, port, cwd, env, ready path) of each server to start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    driftline_env = {**env, "DRIFTLINE_CAPTURE_RATE": str(args.capture_rate)}
    home = driftline_home(work, result)
    (work / "bare_app.py").write_text(BARE_APP)
    ports = {name: free_port() for name in ("driftline", "bare", "mlserver")}
    servers: dict[str, Any] = {
        "driftline": (up(home, ports["driftline"]), "/v2/health/ready", driftline_env),
        "bare": (
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bare_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["bare"]),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            "/openapi.json",
            env,
        ),
    }
    if args.also_gil_switch_ms is not None or args.also_env:
        # a second driftline up beside the first, on its own home and port, for a side by
        # side of a setting: the interpreter's switch interval, drift-check in-process...
        ports["driftline_alt"] = free_port()
        alt_env = dict(driftline_env)
        if args.also_gil_switch_ms is not None:
            alt_env["DRIFTLINE_GIL_SWITCH_MS"] = str(args.also_gil_switch_ms)
        for item in args.also_env:
            name, _, value = item.partition("=")
            alt_env[name] = value
        servers["driftline_alt"] = (
            up(driftline_home(work / "alt", result), ports["driftline_alt"]),
            "/v2/health/ready",
            alt_env,
        )
    if not args.skip_mlserver:
        venv = mlserver_venv(work)
        folder = mlserver_models(work, estimator, ports["mlserver"])
        servers["mlserver"] = (
            [str(venv / "bin" / "mlserver"), "start", str(folder)],
            f"/v2/models/{MODEL}/ready",
            None,
        )
    return {
        name: (command, ports[name], ready, env) for name, (command, ready, env) in servers.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured seconds per server (default 10)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="the seconds are split into rounds taken in turn, so a noisy neighbour "
        "hurts every server alike (default 3)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "driftline-inference-http-bench",
        help="working folder: MLServer's venv (kept for the next run), models, logs "
        "(default: driftline-inference-http-bench in the temporary folder, outside the checkout)",
    )
    parser.add_argument(
        "--skip-mlserver", action="store_true", help="measure only driftline and bare"
    )
    parser.add_argument(
        "--capture-rate",
        type=float,
        default=1.0,
        help="DRIFTLINE_CAPTURE_RATE of driftline up: the share of requests captured as "
        "score.completed for drift-check (default 1.0, as deployed)",
    )
    parser.add_argument(
        "--also-gil-switch-ms",
        type=float,
        help="also measure a second driftline up with this DRIFTLINE_GIL_SWITCH_MS "
        "(reported as alt_rps, alt_p99_ms)",
    )
    parser.add_argument(
        "--also-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="also measure a second driftline up with this setting (repeatable; alt_rps, "
        "alt_p99_ms), e.g. DRIFTLINE_MONITOR_PROCESS=false for drift-check in the "
        "gateway's process",
    )
    parser.add_argument(
        "--generator",
        choices=("wrk", "python"),
        default="wrk" if shutil.which("wrk") else "python",
        help="the load generator: wrk (apt-get install wrk; the default where it is "
        "installed) or this script's asyncio client",
    )
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    _, result, estimator = train(work)
    (work / "model.onnx").write_bytes(result.onnx)
    row = np.random.default_rng(1).normal(size=N_FEATURES).astype(np.float32).tolist()
    runs: dict[str, list[dict[str, float]]] = {}
    with ExitStack() as stack:
        servers = _servers(args, work, result, estimator)
        pids = {
            name: stack.enter_context(serving(name, command, port, work, env, ready=ready)).pid
            for name, (command, port, ready, env) in servers.items()
        }
        for i in range(args.rounds):
            for name, (_, port, _, _) in servers.items():
                cpu = cpu_seconds(pids[name])
                if args.generator == "wrk":
                    run = load_wrk(port, args.seconds / args.rounds, row, work)
                else:
                    run = load(port, args.seconds / args.rounds, row)
                # CPU per request is steadier than requests/s on a machine shared with others
                run["cpu_us"] = (cpu_seconds(pids[name]) - cpu) / max(run["requests"], 1) * 1e6
                runs.setdefault(name, []).append(run)
                log(f"round {i + 1} {name}: {run}")
        time.sleep(1.0)  # the capture thread's last batch
        captures = {
            name: captured(port)
            for name, (_, port, _, _) in servers.items()
            if name.startswith("driftline")
        }
        log(f"captures: {captures}")
    results = {
        name: {key: float(np.median([r[key] for r in rs])) for key in rs[0]}
        | {"errors": sum(r["errors"] for r in rs)}
        for name, rs in runs.items()
    }
    d, b, m = results["driftline"], results["bare"], results.get("mlserver")
    summary = {
        "generator": args.generator,
        "driftline_rps": round(d["rps"], 1),
        "mlserver_rps": round(m["rps"], 1) if m else None,
        "bare_rps": round(b["rps"], 1),
        "vs_mlserver": round(d["rps"] / m["rps"], 2) if m else None,
        "vs_bare": round(d["rps"] / b["rps"], 3),
        "driftline_p99_ms": round(d["p99_ms"], 2),
        "mlserver_p99_ms": round(m["p99_ms"], 2) if m else None,
        "bare_p99_ms": round(b["p99_ms"], 2),
        "driftline_p50_ms": round(d["p50_ms"], 2),
        **(
            {
                "alt_rps": round(results["driftline_alt"]["rps"], 1),
                "alt_p99_ms": round(results["driftline_alt"]["p99_ms"], 2),
            }
            if "driftline_alt" in results
            else {}
        ),
        "cpu_us_per_request": {name: round(r["cpu_us"]) for name, r in results.items()},
        "errors": int(sum(r["errors"] for r in results.values())),
        "captures": captures,
    }
    print(json.dumps(summary))
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
