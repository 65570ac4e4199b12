"""Where the extraction writes (mmdist.eval.extract.prepare_output): an earlier extraction's Parquet
files are replaced, a folder holding anything else is refused untouched, local or s3://."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from mmdist.eval.extract import prepare_output

STORAGE = {"endpoint_url": None, "retries": 0, "backoff_s": 0.0, "connect_timeout_s": 5.0, "request_timeout_s": 30.0}


def test_earlier_parquet_output_is_replaced(tmp_path):
    out = tmp_path / "embeddings"
    out.mkdir()
    pq.write_table(pa.table({"x": [1]}), out / "old.parquet")
    filesystem, path = prepare_output(str(out), STORAGE)
    assert isinstance(filesystem, pafs.LocalFileSystem) and path == str(out)
    assert list(out.iterdir()) == []
    prepare_output(str(tmp_path / "new"), STORAGE)  # a folder that does not exist yet is fine


def test_a_folder_with_other_files_is_refused_untouched(tmp_path):
    pq.write_table(pa.table({"x": [1]}), tmp_path / "old.parquet")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"notes\.txt, \.\.\.\): write embeddings to a new or empty folder"):
        prepare_output(str(tmp_path), STORAGE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "old.parquet"]


def test_s3_output(s3_env, s3_server):
    storage = dict(STORAGE, endpoint_url=s3_server.endpoint_url)
    filesystem, path = prepare_output(f"{s3_env}/embeddings", storage)
    with filesystem.open_output_stream(f"{path}/part-0.parquet") as handle:
        pq.write_table(pa.table({"x": [1]}), handle)
    prepare_output(f"{s3_env}/embeddings", storage)
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    assert [info for info in filesystem.get_file_info(selector) if info.type == pafs.FileType.File] == []
