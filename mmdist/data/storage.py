"""One place that turns a URL into a filesystem, and reads / writes clip shards (SPEC Sec. 1).

URLs: a plain path or `file://...` (local disk), `s3://bucket/prefix` (AWS S3 or any
S3-compatible store), or any other URI pyarrow understands (`gs://`, `hdfs://`).

S3 endpoint: `endpoint_url` (config key `storage.endpoint_url`) wins, else the standard
`AWS_ENDPOINT_URL` variable, else AWS itself. Credentials and region come from the AWS SDK's
default chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE and
~/.aws files, instance roles); this module never reads, stores or prints them.

Retries happen at two levels. Every S3 request made with the filesystem returned here goes
through the SDK's standard retry strategy (exponential backoff) with `retries + 1` attempts.
On top of that, the whole-operation helpers here (`write_shard`, `read_shard`, `list_shards`)
retry an operation that still failed with a transient error (network, throttling, 5xx) after
`backoff_s * 2**attempt` seconds. `retries=None` leaves both at pyarrow's default (standard
strategy, 3 attempts).

Ray Data's read tasks read through `dataset_filesystem`: the whole-operation budget applied to
every metadata call and every byte-range read of a shard (`RetryingS3Handler`; the SDK makes one
attempt per request there), rebuilt in each worker process (pyarrow does not pickle a retry
strategy), with the connect and request
time-outs of the config (`storage.connect_timeout_s`, `storage.request_timeout_s`; on Linux the
request time-out is curl's low-speed limit: a transfer with no byte for that long fails). A
read is retried in place, at its offset: the reader above never sees a failure that a retry
fixed, so no batch is repeated or lost; one that outlasts the budget fails naming the shard and
the endpoint.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time
import uuid
from typing import Callable, TypeVar
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mmdist.data.schema import validate_table

T = TypeVar("T")
log = logging.getLogger(__name__)

# Substrings of the AWS SDK's error text (as pyarrow reports it) that mark a failure worth retrying.
TRANSIENT_MARKERS = (
    "NETWORK_CONNECTION",
    "SLOW_DOWN",
    "SERVICE_UNAVAILABLE",
    "INTERNAL_FAILURE",
    "THROTTLING",
    "REQUEST_TIMEOUT",
    "REQUEST_TIME_TOO_SKEWED",
    "HTTP status 500",
    "HTTP status 502",
    "HTTP status 503",
    "HTTP status 504",
    "Connection reset",
    "Connection refused",
)


def default_endpoint(endpoint_url: str | None) -> str | None:
    """The S3 endpoint to use: the explicit one, else `AWS_ENDPOINT_URL`, else None (AWS)."""
    return endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_filesystem(
    endpoint_url: str | None, retries: int | None, timeouts: tuple[float, float] | None = None
) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem, pointed at `endpoint_url` when given (S3-compatible stores).

    `timeouts`: (connect, request) seconds (storage.connect_timeout_s, storage.request_timeout_s);
    None leaves the AWS SDK's (1 s, 3 s)."""
    options = s3_options(endpoint_url, timeouts)
    if retries is not None:
        if retries < 0:
            raise ValueError(f"storage.retries must be >= 0, got {retries}")
        options["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=retries + 1)
    return pafs.S3FileSystem(**options)


def s3_options(endpoint_url: str | None, timeouts: tuple[float, float] | None) -> dict:
    """The S3FileSystem options of this process's configuration and environment (plain values,
    picklable: a Ray worker rebuilds the filesystem from them without the driver's environment)."""
    options: dict = {"allow_bucket_creation": False}
    if timeouts is not None:
        for key, value in zip(("connect_timeout_s", "request_timeout_s"), timeouts):
            if not value > 0:
                raise ValueError(f"storage.{key} must be > 0, got {value}")
        options["connect_timeout"], options["request_timeout"] = timeouts
    endpoint = default_endpoint(endpoint_url)
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"storage.endpoint_url {endpoint!r} is not an http(s)://host[:port] URL")
        options["endpoint_override"] = parsed.netloc
        options["scheme"] = parsed.scheme
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return options


def resolve_filesystem(
    url: str, endpoint_url: str | None = None, *, retries: int | None = None
) -> tuple[pafs.FileSystem, str]:
    """Filesystem + the path inside it for `url` (a path, `file://`, `s3://`, other pyarrow URIs).

    Local paths come back absolute, so Ray workers with another working directory find them.
    The filesystem is what `ray.data.read_parquet(paths, filesystem=fs)` expects.
    """
    if not url:
        raise ValueError("empty storage URL")
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file"):
        path = parsed.path if scheme == "file" else url
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    if scheme in ("s3", "s3a"):
        if not parsed.netloc:
            raise ValueError(f"S3 URL {url!r} has no bucket (expected s3://bucket/prefix)")
        path = posixpath.join(parsed.netloc, parsed.path.lstrip("/")).rstrip("/")
        return s3_filesystem(endpoint_url, retries), path
    try:
        return pafs.FileSystem.from_uri(url)
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"cannot open storage URL {url!r}: {err}") from err


def join_url(base: str, *names: str) -> str:
    """`base/name/...` for a URL or a local path (no os.sep surprises in URLs)."""
    if urlparse(base).scheme in ("", "file") and "://" not in base:
        return os.path.join(base, *names)
    return "/".join([base.rstrip("/"), *names])


def parent_url(url: str) -> str:
    """The folder part of a file URL (`s3://b/x/m.jsonl` -> `s3://b/x`)."""
    if "://" not in url:
        return os.path.dirname(os.path.abspath(url))
    return url.rstrip("/").rsplit("/", 1)[0]


def is_remote(url: str) -> bool:
    """True for an object-store URL (`s3://`, `gs://`, ...); False for a local path or `file://`."""
    return "://" in url and not url.startswith("file://")


def ray_storage(url: str, endpoint_url: str | None, retries: int | None = None) -> tuple[str, pafs.FileSystem | None]:
    """(storage_path, storage_filesystem) for Ray Train's and Tune's `RunConfig`: a local folder (path or
    `file://`) as an absolute path and no filesystem (Ray's own), an object-store URL through
    `resolve_filesystem`."""
    if is_remote(url):
        filesystem, path = resolve_filesystem(url, endpoint_url, retries=retries)
        return path, filesystem
    return os.path.abspath(os.path.expanduser(url.removeprefix("file://"))), None


def is_transient(err: BaseException) -> bool:
    """True for the S3 failures that another attempt can fix (never for not-found / denied)."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    return isinstance(err, OSError) and any(marker in str(err) for marker in TRANSIENT_MARKERS)


def with_retries(operation: Callable[[], T], what: str, retries: int | None, backoff_s: float | None) -> T:
    """Run `operation`, retrying transient errors `retries` times, sleeping `backoff_s * 2**k`."""
    attempts = 1 if retries is None else retries + 1
    start = time.monotonic()
    for attempt in range(attempts):
        try:
            return operation()
        except OSError as err:
            if not is_transient(err) or attempt == attempts - 1:
                elapsed = time.monotonic() - start
                raise OSError(f"{what} failed after {attempt + 1} attempt(s) in {elapsed:.1f} s: {err}") from err
            sleep_s = (backoff_s or 0.0) * 2**attempt
            log.warning("%s: attempt %d of %d failed, retrying in %.2f s: %s",
                        what, attempt + 1, attempts, sleep_s, err)
            time.sleep(sleep_s)
    raise AssertionError("unreachable")


def list_shards(
    url: str, endpoint_url: str | None = None, *, retries: int | None = None, backoff_s: float | None = None
) -> list[str]:
    """Sorted paths (inside the filesystem of `url`) of the `*.parquet` files under `url`, or `url`
    itself when it is one such file."""
    fs, root = resolve_filesystem(url, endpoint_url, retries=retries)

    def scan() -> list[str]:
        if fs.get_file_info(root).type == pafs.FileType.File:
            return [root] if root.endswith(".parquet") else []
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))

    return with_retries(scan, f"listing shards under {url}", retries, backoff_s)


def require_shards(
    url: str, key: str, endpoint_url: str | None = None, *, retries: int | None = None, backoff_s: float | None = None
) -> list[str]:
    """`list_shards(url)`, or FileNotFoundError naming the config `key` when there is none: `url`
    does not exist (a missing folder, file, bucket or prefix), or holds no `*.parquet` file."""
    shards = list_shards(url, endpoint_url, retries=retries, backoff_s=backoff_s)
    if shards:
        return shards
    fs, root = resolve_filesystem(url, endpoint_url, retries=retries)
    kind = with_retries(lambda: fs.get_file_info(root).type, f"reading {url}", retries, backoff_s)
    if kind == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{key}={url!r} does not exist")
    if kind == pafs.FileType.File:
        raise FileNotFoundError(f"{key}={url!r} is a file but not a *.parquet shard")
    raise FileNotFoundError(f"{key}={url!r} holds no *.parquet shard (an empty folder, bucket or prefix)")


def write_shard(
    table: pa.Table,
    url_of_file: str,
    endpoint_url: str | None = None,
    *,
    retries: int | None = None,
    backoff_s: float | None = None,
) -> str:
    """Validate `table` against CLIP_SCHEMA and write it as one Parquet file; returns the URL.

    Local writes go to a temporary name first and are renamed, so a killed job never leaves
    a truncated shard that `list_shards` would pick up (an S3 upload is atomic by itself).
    """
    table = validate_table(table, shard=url_of_file)
    fs, path = resolve_filesystem(url_of_file, endpoint_url, retries=retries)
    local = isinstance(fs, pafs.LocalFileSystem)

    def write() -> None:
        if local:  # object stores have no folders (pyarrow would write marker objects)
            fs.create_dir(os.path.dirname(path), recursive=True)
        target = f"{path}.tmp-{uuid.uuid4().hex}" if local else path
        # No min/max statistics on the media blobs: they would copy bytes into the footer.
        pq.write_table(table, target, filesystem=fs, compression="zstd", write_statistics=["clip_id", "source_id"])
        if local:
            fs.move(target, path)

    with_retries(write, f"writing shard {url_of_file}", retries, backoff_s)
    return url_of_file


def read_shard(
    path: str, filesystem: pafs.FileSystem, *, retries: int | None = None, backoff_s: float | None = None
) -> pa.Table:
    """Read one shard (a path inside `filesystem`, as `list_shards` gives) and validate it."""

    def read() -> pa.Table:
        return pq.read_table(path, filesystem=filesystem)

    try:
        table = with_retries(read, f"reading shard {path}", retries, backoff_s)
    except pa.ArrowInvalid as err:
        raise OSError(f"shard {path} is not a readable Parquet file: {err}") from err
    return validate_table(table, shard=path)


def read_bytes(url: str, endpoint_url: str | None = None, *, retries: int | None = None) -> bytes:
    """The whole content of one file at `url` (manifests, small files)."""
    fs, path = resolve_filesystem(url, endpoint_url, retries=retries)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def write_bytes(url: str, data: bytes, endpoint_url: str | None = None, *, retries: int | None = None) -> None:
    """Write `data` as the file at `url` (summaries, small metadata files)."""
    fs, path = resolve_filesystem(url, endpoint_url, retries=retries)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def prepare_output(
    url: str, overwrite: bool, endpoint_url: str | None = None, *, retries: int | None = None,
    backoff_s: float | None = None,
) -> None:
    """Make `url` ready for new shards: refuse one that holds shards, or delete them if `overwrite`.

    Stale shards left under `url` would silently join the next dataset read from it.
    """
    existing = list_shards(url, endpoint_url, retries=retries, backoff_s=backoff_s)
    if existing and not overwrite:
        raise FileExistsError(f"{url} already holds {len(existing)} shard(s); set overwrite=true to replace them")
    fs, _ = resolve_filesystem(url, endpoint_url, retries=retries)
    for path in existing:
        fs.delete_file(path)


# ---------------------------------------------------------------- the filesystem of Ray Data's read tasks


def dataset_filesystem(url: str, storage_cfg: dict) -> pafs.FileSystem:
    """The filesystem to hand `ray.data.read_parquet` for the shards under `url`: on S3, a
    `RetryingS3Handler` with the `storage` config's retries, back-off and time-outs; else as
    `resolve_filesystem` gives it."""
    fs, _ = resolve_filesystem(url, storage_cfg["endpoint_url"], retries=storage_cfg["retries"])
    if not isinstance(fs, pafs.S3FileSystem):
        return fs
    return pafs.PyFileSystem(RetryingS3Handler(storage_cfg))


class RetryingS3Handler(pafs.FileSystemHandler):
    """An S3 filesystem whose reads retry transient errors with the configured budget (`with_retries`):
    `retries` more attempts after `backoff_s * 2**k` seconds, so an outage up to about
    `backoff_s * (2**retries - 1)` seconds is survived.

    Pickled as plain options (endpoint and region resolved in the process that built it) and
    rebuilt on first use in each process, with its retry strategy and time-outs. Reads only:
    Ray Data's read tasks need nothing else.
    """

    def __init__(self, storage_cfg: dict):
        self.timeouts = (storage_cfg["connect_timeout_s"], storage_cfg["request_timeout_s"])
        self.options = s3_options(storage_cfg["endpoint_url"], self.timeouts)
        self.retries, self.backoff_s = storage_cfg["retries"], storage_cfg["backoff_s"]
        endpoint = self.options.get("endpoint_override")
        self.endpoint = f"{self.options['scheme']}://{endpoint}" if endpoint else "AWS S3"
        self._fs: pafs.S3FileSystem | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fs": None}

    @property
    def fs(self) -> pafs.S3FileSystem:
        if self._fs is None:
            # One attempt per request: the SDK's own retries (random back-off up to 2**k s, up to 20 s)
            # would hide an outage inside one of ours and make the budget (retries+1)**2 attempts.
            strategy = pafs.AwsStandardS3RetryStrategy(max_attempts=1)
            self._fs = pafs.S3FileSystem(**self.options, retry_strategy=strategy)
        return self._fs

    def retry(self, operation: Callable[[], T], what: str) -> T:
        return with_retries(operation, f"{what} from {self.endpoint}", self.retries, self.backoff_s)

    def get_type_name(self) -> str:
        return "mmdist-retrying-s3"

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.retry(lambda: self.fs.get_file_info(paths), f"reading the file info of {paths}")

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.retry(lambda: self.fs.get_file_info(selector), f"listing s3://{selector.base_dir}")

    def open_input_file(self, path: str) -> pa.PythonFile:
        file = self.retry(lambda: self.fs.open_input_file(path), f"opening s3://{path}")
        return pa.PythonFile(RetryingFile(self, path, file), mode="r")

    def open_input_stream(self, path: str) -> pa.PythonFile:
        return self.open_input_file(path)

    def _read_only(self, *args, **kwargs):
        raise OSError("RetryingS3Handler is read-only (Ray Data's read tasks); write with mmdist.data.storage")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = _read_only
    move = copy_file = open_output_stream = open_append_stream = _read_only


class RetryingFile:
    """A seekable file object (for `pa.PythonFile`) over one S3 object: each read is one ranged GET
    at its offset, retried in place, so a retried read returns exactly the bytes asked for."""

    def __init__(self, handler: RetryingS3Handler, path: str, file: pa.NativeFile):
        self.handler, self.path, self.file = handler, path, file
        self.length, self.position, self.closed = file.size(), 0, False

    def read(self, nbytes: int = -1) -> bytes:
        remaining = self.length - self.position
        size = remaining if nbytes is None or nbytes < 0 else min(nbytes, remaining)
        if size <= 0:
            return b""
        data = self.handler.retry(lambda: self._read_at(size, self.position), f"reading shard s3://{self.path}")
        self.position += len(data)
        return data

    def _read_at(self, size: int, offset: int) -> bytes:
        if self.file is None:  # reopened after a failure
            self.file = self.handler.fs.open_input_file(self.path)
        try:
            data = self.file.read_at(size, offset)  # bytes
        except OSError:
            self.file = None
            raise
        if len(data) != size:  # a body cut short: transient, like the reset that cut it
            self.file = None
            raise OSError(f"NETWORK_CONNECTION: short read, {len(data)} of {size} bytes at offset {offset}")
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.position, 2: self.length}[whence]
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def size(self) -> int:
        return self.length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed, self.file = True, None
