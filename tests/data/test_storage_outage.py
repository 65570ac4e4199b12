"""The object store goes away mid-epoch (issue 12, item 1).

The pipeline (mmdist.data.pipeline.build_dataset, as training builds it: shuffled shards, random
crops) reads its shards from the real moto server through `OutageProxy`, a TCP front that the test
closes (connections refused, open ones reset) and opens again on the same port. Clip ids come with
each batch (keep_metadata) and are counted in the test process, where the epoch is consumed.
"""

import collections
import threading
import time

import pyarrow as pa
import pytest
import ray
from omegaconf import OmegaConf

from mmdist.data.pipeline import build_dataset, new_stats_name
from mmdist.data.schema import CLIP_SCHEMA
from mmdist.data.storage import list_shards, read_shard, write_shard
from tests.conftest import CONFIG_DIR, FAKE_CREDENTIALS, REGION
from tests.data.outage_proxy import OutageProxy

SHARDS, CLIPS_PER_SHARD = 16, 2  # small shards: a read task starts every few tenths of a second
OUTAGE_S = 3.0  # shorter than the default budget (storage.retries 4, backoff_s 0.5: 7.5 s of back-off)
# The AWS variables of the driver and of Ray's workers (which do not see a monkeypatched environment).
AWS_ENV = {**FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def outage_ray():
    with pytest.MonkeyPatch.context() as patch:
        for key, value in AWS_ENV.items():
            patch.setenv(key, value)
        for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
            patch.delenv(key, raising=False)
        ray.init(address="local", num_cpus=4, include_dashboard=False, runtime_env={"env_vars": AWS_ENV})
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield
        ray.shutdown()


@pytest.fixture(scope="module")
def s3_world(outage_ray, synthetic_dir, s3_server):
    """SHARDS shards of CLIPS_PER_SHARD clips on the moto server (the 24 synthetic clips, cycled, fresh ids)."""
    import pyarrow.fs as pafs

    local = pafs.LocalFileSystem()
    source = [row for path in list_shards(synthetic_dir) for row in read_shard(path, local).to_pylist()]
    url = f"s3://{s3_server.create_bucket()}/world"
    ids = []
    for shard in range(SHARDS):
        rows = [dict(source[(shard * CLIPS_PER_SHARD + i) % len(source)], clip_id=f"clip-{shard:02d}-{i}")
                for i in range(CLIPS_PER_SHARD)]
        ids += [row["clip_id"] for row in rows]
        table = pa.Table.from_pylist(rows, schema=CLIP_SCHEMA)
        write_shard(table, f"{url}/part-{shard:02d}.parquet", s3_server.endpoint_url, retries=0)
    return url, ids


@pytest.fixture
def proxy(s3_server):
    front = OutageProxy(s3_server.port)
    yield front
    front.close()


def storage_cfg(endpoint_url: str, **overrides) -> dict:
    """configs/storage/default.yaml with the proxy as endpoint."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "storage" / "default.yaml"))
    return {**cfg, "endpoint_url": endpoint_url, **overrides}


def exactly_once(seen: collections.Counter, expected: list[str]) -> dict:
    """{"missing": [...], "repeated": {id: count}, "unknown": [...]}; all empty when each expected id was seen once."""
    return {
        "missing": sorted(set(expected) - set(seen)),
        "repeated": {clip: n for clip, n in sorted(seen.items()) if n > 1},
        "unknown": sorted(set(seen) - set(expected)),
    }


def test_the_exactly_once_check_sees_repeated_and_missing_clips():
    ids = ["a", "b", "c"]
    assert exactly_once(collections.Counter(["a", "b", "c"]), ids) == {"missing": [], "repeated": {}, "unknown": []}
    assert exactly_once(collections.Counter(["a", "a", "c", "x"]), ids) == {
        "missing": ["b"], "repeated": {"a": 2}, "unknown": ["x"]}


def epoch(dataset, on_first_batch) -> tuple[collections.Counter, float]:
    """Consume one epoch as the train loop does (fixed-size batches); clip ids counted. Returns (ids, seconds)."""
    seen, start = collections.Counter(), time.monotonic()
    for number, batch in enumerate(dataset.iter_batches(batch_size=4, batch_format="numpy")):
        seen.update(batch["clip_id"].tolist())
        if number == 0:
            on_first_batch()
    return seen, time.monotonic() - start


def small_decode(data_cfg: dict, url: str) -> dict:
    """One epoch per pass (training's default reads data.epochs_per_pass of them: each clip that many times)."""
    decode = {**data_cfg["decode"], "concurrency": 2, "batch_size": 2}
    return {**data_cfg, "path": url, "epochs_per_pass": 1, "decode": decode}


def test_store_down_mid_epoch_every_clip_is_seen_exactly_once(outage_ray, data_cfg, s3_world, proxy, capfd):
    url, ids = s3_world
    dataset = build_dataset(small_decode(data_cfg, url), storage_cfg(proxy.endpoint_url), train=True, seed=0,
                            stats_name=new_stats_name(), keep_metadata=True)
    marks = {}

    def outage():
        proxy.stop()
        marks["down"] = time.monotonic()
        timer = threading.Timer(OUTAGE_S, lambda: (proxy.start(), marks.setdefault("up", time.monotonic())))
        timer.start()

    seen, seconds = epoch(dataset, outage)
    assert exactly_once(seen, ids) == {"missing": [], "repeated": {}, "unknown": []}
    # The outage fell mid-epoch: shards were still to be read when the store went down, and read after it came back.
    read_before = {path for t, method, path in proxy.requests if method == "GET" and t < marks["down"]}
    read_after = {path for t, method, path in proxy.requests if method == "GET" and t > marks["up"]}
    assert read_after - read_before, (read_before, read_after)
    # ... and the readers met it: their retries (logged by mmdist.data.storage in the Ray workers) name the endpoint.
    deadline, logged = time.monotonic() + 10, ""
    while "retrying" not in logged and time.monotonic() < deadline:  # Ray forwards worker logs with a delay
        time.sleep(0.5)
        captured = capfd.readouterr()
        logged += captured.out + captured.err
    retries = [line for line in logged.splitlines() if "retrying" in line]
    assert retries and all(proxy.endpoint_url in line for line in retries), logged[-2000:]
    print(f"outage {OUTAGE_S:.1f} s; epoch of {len(ids)} clips in {seconds:.1f} s; {len(retries)} retried read(s); "
          f"shards read before / after: {len(read_before)} / {len(read_after)}")


def test_an_outage_longer_than_the_budget_fails_naming_the_shard_and_endpoint(outage_ray, data_cfg, s3_world, proxy):
    url, _ = s3_world
    # retries 1, back-off 0.2 s: the budget is well under a second; the store never comes back
    dataset = build_dataset(small_decode(data_cfg, url), storage_cfg(proxy.endpoint_url, retries=1, backoff_s=0.2),
                            train=True, seed=0, stats_name=new_stats_name(), keep_metadata=True)
    start = time.monotonic()
    with pytest.raises(Exception) as failure:
        epoch(dataset, proxy.stop)
    seconds = time.monotonic() - start
    message = str(failure.value)
    assert f"from {proxy.endpoint_url} failed after 2 attempt(s)" in message, message[-3000:]
    assert "reading shard s3://" in message or "opening s3://" in message, message[-3000:]
    assert seconds < 30, seconds
    print(f"store down for good: the epoch failed after {seconds:.1f} s")


def test_a_hung_store_ends_in_a_time_out_not_a_hang(outage_ray, data_cfg, s3_world, proxy):
    url, _ = s3_world
    cfg = storage_cfg(proxy.endpoint_url, retries=0, connect_timeout_s=1.0, request_timeout_s=2.0)
    dataset = build_dataset(small_decode(data_cfg, url), cfg, train=True, seed=0, stats_name=new_stats_name(), keep_metadata=True)
    start = time.monotonic()
    with pytest.raises(Exception) as failure:
        epoch(dataset, proxy.stall)  # connections are accepted, requests never answered
    seconds = time.monotonic() - start
    assert f"from {proxy.endpoint_url} failed after 1 attempt(s)" in str(failure.value), str(failure.value)[-3000:]
    assert seconds < 30, seconds
    print(f"store hung: the epoch failed after {seconds:.1f} s")
