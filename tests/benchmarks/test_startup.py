"""Start-up phases from Ray's task timeline (mmdist/benchmarks/startup.py), on hand-made events."""

from mmdist.benchmarks.startup import phases_from_timeline


def event(cat: str, begin: float, end: float) -> dict:
    return {"ph": "X", "cat": cat, "ts": begin * 1e6, "dur": (end - begin) * 1e6}


EVENTS = [
    event("task::TrainController.__init__", 10, 11),
    event("task::RayTrainWorker.__init__", 12, 12.5),
    event("task::RayTrainWorker.__init__", 12.2, 12.6),  # the second worker: the first one counts
    event("task::RayTrainWorker.run_train_fn", 14, 16),
    event("task::DatasetManager.get_dataset_shard", 18, 18.1),
    event("task::DropLedger.counts", 20.5, 21),  # step 1's report
    event("task::SynchronizationActor.broadcast_from_rank_zero", 22, 23),  # step 3's
    event("task::_fetch_parquet_file_info", 6, 6.5),
    {"ph": "i", "cat": "task::RayTrainWorker.__init__", "ts": 0.0},  # not a span: ignored
]


def test_phases_are_the_gaps_between_the_events():
    phases = phases_from_timeline(EVENTS, fit_start=5, fit_end=26)
    assert phases == {
        "driver_setup": 5, "train_controller": 2, "worker_actors": 2, "worker_imports": 2, "deepspeed_init": 2,
        "first_batch": 3, "steps": 2, "fit_teardown": 3, "dataset_planning": 0.5, "merged": [],
    }


def test_a_lost_event_hands_its_phase_to_the_next():
    events = [e for e in EVENTS if e["cat"] != "task::DatasetManager.get_dataset_shard"]
    phases = phases_from_timeline(events, fit_start=5, fit_end=26)
    assert phases["deepspeed_init"] is None and phases["first_batch"] == 5 and phases["merged"] == ["deepspeed_init"]
    assert sum(v for k, v in phases.items() if k not in ("merged", "dataset_planning") and v is not None) == 21
