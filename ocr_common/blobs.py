"""The blob store: where documents (and what is made from them) live, outside the database.

One setting chooses the backend, ``OCR_BLOB_URL``: ``file:PATH`` (a local directory, the
default ``file:./data/blobs``; ``file:///srv/blobs`` for an absolute one) or
``s3://BUCKET/PREFIX`` (any S3-compatible store, through boto3: the endpoint and credentials
come from the usual AWS variables, ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).

Keys are ours, never a client's: ``jobs/<job id>/document`` for a job's document, and
``jobs/<job id>/<name>`` for what is derived from it (``pages/3.png``), so that a job's files
are one prefix, deleted with the job. ``JobFiles`` is that layout; the backends only store
bytes under keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from .errors import SettingsError

JOBS_PREFIX = "jobs/"
DOCUMENT = "document"
# S3's DeleteObjects and ListObjectsV2 take and give at most this many keys a call.
S3_BATCH = 1000
# Bucket names as S3 allows them (3-63 lower-case letters, digits, dots and hyphens).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# A key of ours: characters that mean the same on every backend and in every file system.
_KEY = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


class BlobMissing(Exception):
    """No blob under that key (never stored, or deleted)."""


class BlobStoreError(Exception):
    """The store did not answer as it should (unreachable, refused, misconfigured): trying
    again later may work, and nothing may be concluded about the blob."""


@dataclass(frozen=True)
class StoredBlob:
    key: str
    size: int
    modified: datetime  # naive UTC, as the database's timestamps


class BlobStore(Protocol):
    """Bytes under keys. Every method may raise ``BlobStoreError``."""

    def describe(self) -> str:
        """Where it is, for messages and logs (no credentials)."""
        ...

    def check(self) -> None:
        """Raise ``BlobStoreError`` with the reason unless blobs can be stored now."""
        ...

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes:
        """The blob's bytes; ``BlobMissing`` when there is none."""
        ...

    def delete(self, keys: Sequence[str]) -> None:
        """Delete these blobs; keys with no blob are no error."""
        ...

    def list(self, prefix: str, *, after: str | None = None, limit: int) -> list[StoredBlob]:
        """Up to ``limit`` blobs whose key starts with ``prefix``, in key order, after the key
        ``after``."""
        ...


def _check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise ValueError(f"not a blob key of ours: {key!r}")
    return key


class FileStore:
    """Blobs as files under one directory (a volume both services mount, on one host),
    written to a temporary file, flushed, then renamed: whole or none, and crash-safe."""

    def __init__(self, root: Path):
        self.root = root

    def describe(self) -> str:
        return f"the directory {self.root}"

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".check-"):
                pass
        except OSError as exc:
            raise BlobStoreError(f"cannot write to {self.root}: {exc.strerror}") from None

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".put-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            _fsync_directory(path.parent)
        except OSError as exc:
            raise BlobStoreError(f"cannot store {key} in {self.root}: {exc}") from None

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(key) from None
        except OSError as exc:
            raise BlobStoreError(f"cannot read {key} from {self.root}: {exc}") from None

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            path = self._path(key)
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise BlobStoreError(f"cannot delete {key} from {self.root}: {exc}") from None
            # Empty folders go with their last file (a job's folder, then nothing above it).
            for folder in path.parents:
                if folder == self.root or self.root not in folder.parents:
                    break
                try:
                    folder.rmdir()
                except OSError:
                    break

    def list(self, prefix: str, *, after: str | None = None, limit: int) -> list[StoredBlob]:
        found: list[StoredBlob] = []
        for key in self._keys(prefix, after):
            try:
                stat = self._path(key).stat()
            except FileNotFoundError:
                continue  # deleted while we looked
            modified = datetime.fromtimestamp(stat.st_mtime, UTC).replace(tzinfo=None)
            found.append(StoredBlob(key, stat.st_size, modified))
            if len(found) == limit:
                break
        return found

    def _keys(self, prefix: str, after: str | None) -> Iterator[str]:
        """Keys under ``prefix``, in key order (files in name order, depth first), past
        ``after``; temporary files of puts in flight are not blobs."""

        def walk(folder: Path, key_prefix: str) -> Iterator[str]:
            try:
                entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
            except (FileNotFoundError, NotADirectoryError):
                return
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                key = key_prefix + entry.name
                # Whole folders before ``after`` are skipped without being read.
                if after is not None and key < after and not after.startswith(key + "/"):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    yield from walk(Path(entry.path), key + "/")
                elif (after is None or key > after) and key.startswith(prefix):
                    yield key

        folder, _, _ = prefix.rpartition("/")
        yield from walk(self.root / folder if folder else self.root, f"{folder}/" if folder else "")


def _fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class S3Store:
    """Blobs as objects in an S3 bucket under a prefix (AWS S3, MinIO, Ceph RGW, SeaweedFS,
    ...), through boto3, with boto3's own endpoint, region and credentials (``AWS_*``). With an
    endpoint set, buckets are addressed by path, which every S3-compatible server answers."""

    def __init__(self, bucket: str, prefix: str = ""):
        self.bucket = bucket
        self.prefix = prefix
        self._client: Any = None
        self._client_pid = 0
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def client(self) -> Any:
        """One boto3 client per process (they are thread-safe; a fork gets its own)."""
        with self._lock:
            if self._client is None or self._client_pid != os.getpid():
                self._client = _s3_client()
                self._client_pid = os.getpid()
            return self._client

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") in ("NoSuchKey", "404") and operation == "get_object":
                raise BlobMissing(kwargs["Key"][len(self.prefix) :]) from None
            raise BlobStoreError(
                f"{self.describe()}: {operation} failed: {error.get('Code')} "
                f"{error.get('Message') or ''}".rstrip()
            ) from None
        except BotoCoreError as exc:
            raise BlobStoreError(f"{self.describe()}: {operation} failed: {exc}") from None

    def check(self) -> None:
        try:
            self._call("head_bucket")
        except BlobStoreError as exc:
            raise BlobStoreError(
                f"{exc}: the bucket {self.bucket} must exist and the credentials (AWS_ACCESS_KEY_ID"
                ", AWS_SECRET_ACCESS_KEY) must reach it at AWS_ENDPOINT_URL (AWS itself if unset)"
            ) from None

    def put(self, key: str, data: bytes) -> None:
        self._call("put_object", Key=self.prefix + _check_key(key), Body=data)

    def get(self, key: str) -> bytes:
        answer = self._call("get_object", Key=self.prefix + _check_key(key))
        from botocore.exceptions import BotoCoreError

        try:
            return bytes(answer["Body"].read())
        except BotoCoreError as exc:
            raise BlobStoreError(f"{self.describe()}: reading {key} failed: {exc}") from None

    def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), S3_BATCH):
            objects = [
                {"Key": self.prefix + _check_key(key)} for key in keys[start : start + S3_BATCH]
            ]
            answer = self._call("delete_objects", Delete={"Objects": objects, "Quiet": True})
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise BlobStoreError(
                    f"{self.describe()}: {len(errors)} of {len(objects)} deletes failed, e.g. "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message') or ''}".rstrip()
                )

    def list(self, prefix: str, *, after: str | None = None, limit: int) -> list[StoredBlob]:
        options: dict[str, Any] = {"Prefix": self.prefix + prefix, "MaxKeys": min(limit, S3_BATCH)}
        if after is not None:
            options["StartAfter"] = self.prefix + after
        answer = self._call("list_objects_v2", **options)
        found = []
        for item in answer.get("Contents") or []:
            modified = item["LastModified"].astimezone(UTC).replace(tzinfo=None)
            found.append(StoredBlob(item["Key"][len(self.prefix) :], item["Size"], modified))
        return found


def _s3_client() -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"mode": "standard", "max_attempts": 3},
        # Every API thread and engine may read or write at once.
        max_pool_connections=64,
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    # S3-compatible stores take any region name; boto3 wants one.
    region = session.region_name or ("us-east-1" if endpoint else None)
    return session.client("s3", config=config, region_name=region)


def open_store(url: str) -> BlobStore:
    """The store ``OCR_BLOB_URL`` names; ValueError with the fix when it names none."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"a file URL names a directory of this machine: file:///absolute/path, or "
                f"file:relative/path (not file://{parts.netloc}...)"
            )
        path = unquote(parts.path)
        if not path or parts.query or parts.fragment:
            raise ValueError("must name a directory: file:./data/blobs or file:///srv/blobs")
        return FileStore(Path(path))
    if parts.scheme == "s3":
        bucket = parts.netloc
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ValueError(
                "s3://BUCKET/PREFIX needs a bucket name of 3-63 lower-case letters, digits, "
                "dots and hyphens"
            )
        if parts.query or parts.fragment:
            raise ValueError(
                "s3://BUCKET/PREFIX takes no query: the endpoint and credentials come from "
                "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        prefix = unquote(parts.path).strip("/")
        if prefix and (not _KEY.fullmatch(prefix) or ".." in prefix.split("/")):
            raise ValueError(
                "the prefix of s3://BUCKET/PREFIX may hold letters, digits, '.', '_', '-' and "
                "'/' (no '..')"
            )
        if prefix:
            prefix += "/"
        return S3Store(bucket, prefix)
    raise ValueError("must be file:PATH (a local directory) or s3://BUCKET/PREFIX")


def job_id_of(key: str) -> str | None:
    """The job whose file ``key`` is, or None for a key outside the jobs' layout."""
    if not key.startswith(JOBS_PREFIX):
        return None
    name = key[len(JOBS_PREFIX) :].split("/", 1)[0]
    try:
        canonical = str(uuid.UUID(name))
    except ValueError:
        return None
    # Our ids are written in one spelling: another is not ours.
    return canonical if canonical == name else None


@dataclass(frozen=True)
class StoredDocument:
    """A document stored for a job not created yet: its id, key, size and SHA-256 (hex)."""

    job_id: str
    key: str
    size: int
    digest: str


class JobFiles:
    """The files of jobs in a blob store: ``jobs/<job id>/document`` and what is derived from
    it (``jobs/<job id>/<name>``), all under the job's prefix."""

    def __init__(self, store: BlobStore):
        self.store = store

    @staticmethod
    def document_key(job_id: str) -> str:
        return f"{JOBS_PREFIX}{job_id}/{DOCUMENT}"

    @staticmethod
    def prefix(job_id: str) -> str:
        return f"{JOBS_PREFIX}{job_id}/"

    def store_document(self, data: bytes, digest: str | None = None) -> StoredDocument:
        """Store a document under a new job id (create the job after this returns);
        ``digest``: its SHA-256, when the caller has it already."""
        job_id = str(uuid.uuid4())
        key = self.document_key(job_id)
        self.store.put(key, data)
        return StoredDocument(job_id, key, len(data), digest or hashlib.sha256(data).hexdigest())

    def read_document(self, key: str) -> bytes:
        return self.store.get(key)

    def store_artifact(self, job_id: str, name: str, data: bytes) -> str:
        """Keep something made from a job's document (a page image, a PDF) with the job."""
        key = self.prefix(job_id) + _check_key(name)
        self.store.put(key, data)
        return key

    def read_artifact(self, job_id: str, name: str) -> bytes:
        return self.store.get(self.prefix(job_id) + _check_key(name))

    def release_documents(self, job_ids: Iterable[str]) -> None:
        """Delete the documents of jobs that no longer need them (one call a thousand jobs on
        S3); anything else a job kept goes with the job (``remove_jobs``)."""
        self.store.delete([self.document_key(job_id) for job_id in job_ids])

    def remove_jobs(self, job_ids: Iterable[str]) -> None:
        """Delete every file of these jobs (their whole prefixes)."""
        for job_id in job_ids:
            prefix = self.prefix(job_id)
            while found := self.store.list(prefix, limit=S3_BATCH):
                self.store.delete([blob.key for blob in found])
                if len(found) < S3_BATCH:
                    break


def open_job_files(blob_url: str, startup_wait_s: float) -> JobFiles:
    """The files of jobs in the store OCR_BLOB_URL names, once it takes blobs: tried again for
    up to OCR_STARTUP_WAIT_S (a store starting beside us), then SettingsError with the reason."""
    from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

    store = open_store(blob_url)
    retrying = Retrying(
        retry=retry_if_exception_type(BlobStoreError),
        stop=stop_after_delay(startup_wait_s),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        reraise=True,
    )
    try:
        retrying(store.check)
    except BlobStoreError as exc:
        raise SettingsError(f"OCR_BLOB_URL={blob_url}: {exc}") from None
    return JobFiles(store)
