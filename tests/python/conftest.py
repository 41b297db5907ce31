"""Start the real `ferryman` binary for the Python suites, on SQLite and on PostgreSQL.

Each test gets a fresh gateway: a temporary directory, a fresh database (a SQLite file, or a
uniquely named PostgreSQL database that is dropped afterwards), and port 0.
"""

import os
import pathlib
import queue
import shutil
import subprocess
import tempfile
import threading
import uuid

import httpx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MASTER_KEY = "sk-python-master-key-0123456789"
PG_BASE = os.environ.get("FERRYMAN_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432")

CONFIG = """
model_list:
  - model_name: demo
    litellm_params:
      model: mock/demo
      input_cost_per_token: 0.00000015
      output_cost_per_token: 0.0000006
    model_info:
      id: demo-mock-1
general_settings:
  master_key: {master_key}
  database_url: "{database_url}"
"""


def ferryman_bin():
    path = os.environ.get("FERRYMAN_BIN")
    if path:
        return path
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(pathlib.Path(target) / "debug" / "ferryman")


def buf_curl(*args):
    """`buf curl` (from the npm tools) with `args`; its output, once it succeeded."""
    buf = str(ROOT / "node_modules" / ".bin" / "buf")
    out = subprocess.run([buf, "curl", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def psql(sql):
    subprocess.run(
        ["psql", f"{PG_BASE}/postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql],
        check=True,
        capture_output=True,
    )


class Gateway:
    def __init__(self, backend, extra_config=""):
        self.backend = backend
        self.dir = tempfile.mkdtemp(prefix="ferryman-py-")
        self.pg_name = None
        if backend == "postgres":
            self.pg_name = f"ferryman_test_{uuid.uuid4().hex}"
            psql(f"CREATE DATABASE {self.pg_name}")
            database_url = f"{PG_BASE}/{self.pg_name}"
        else:
            database_url = f"sqlite://{self.dir}/ferryman.db"
        config = pathlib.Path(self.dir) / "config.yaml"
        config.write_text(CONFIG.format(master_key=MASTER_KEY, database_url=database_url) + extra_config)
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "FERRYMAN_MASTER_KEY")}
        env["NO_COLOR"] = "1"
        self.proc = subprocess.Popen(
            [ferryman_bin(), "serve", "--host", "127.0.0.1", "--port", "0", "--config", str(config)],
            cwd=self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = []
        found = queue.Queue()

        def drain():
            for line in self.proc.stderr:
                self.log.append(line)
                if "listening on " in line:
                    found.put(line.split("listening on ", 1)[1].split()[0])

        threading.Thread(target=drain, daemon=True).start()
        try:
            self.addr = found.get(timeout=60)
        except queue.Empty:
            self.close()
            raise RuntimeError("ferryman did not start:\n" + "".join(self.log))
        self.url = f"http://{self.addr}"

    def create_key(self, **fields):
        r = httpx.post(f"{self.url}/key/generate", headers={"Authorization": f"Bearer {MASTER_KEY}"}, json=fields)
        r.raise_for_status()
        return r.json()

    def spend_logs(self, query, want, timeout=10.0):
        import time

        deadline = time.monotonic() + timeout
        while True:
            r = httpx.get(f"{self.url}/spend/logs", params=query, headers={"Authorization": f"Bearer {MASTER_KEY}"})
            r.raise_for_status()
            rows = r.json()
            if len(rows) >= want or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.pg_name:
            psql(f"DROP DATABASE IF EXISTS {self.pg_name} WITH (FORCE)")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def gateway(request):
    gw = Gateway(request.param)
    try:
        yield gw
    finally:
        gw.close()


@pytest.fixture
def sqlite_gateway():
    gw = Gateway("sqlite")
    try:
        yield gw
    finally:
        gw.close()
