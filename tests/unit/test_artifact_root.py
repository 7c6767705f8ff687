"""The artifact root setting and the segment journal, on a directory (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from workers.journal import FileJournal, SegmentJournal, open_journal
from workers.runtime import open_root
from workers.s3 import S3Root, split_url
from workers.settings import Settings
from workers.store import LocalRoot


def test_an_s3_url_stays_a_url_and_anything_else_is_a_directory(tmp_path: Path) -> None:
    assert Settings(artifact_root="s3://bucket/some/prefix/").artifact_root == "s3://bucket/some/prefix/"
    assert split_url("s3://bucket/some/prefix/") == ("bucket", "some/prefix")
    assert split_url("s3://bucket") == ("bucket", "")
    assert Settings(artifact_root=str(tmp_path)).artifact_root == tmp_path
    root = open_root(Settings(artifact_root="s3://bucket/p", s3_endpoint_url="http://127.0.0.1:9"))
    assert isinstance(root, S3Root) and root.describe("objects/ab/cd") == "s3://bucket/p/objects/ab/cd"
    assert isinstance(open_root(Settings(artifact_root=tmp_path)), LocalRoot)


@pytest.mark.parametrize("url", ["gs://bucket/x", "s3://", "s3:///prefix", "https://host/x"])
def test_other_urls_are_refused_naming_the_setting(url: str) -> None:
    with pytest.raises(ValidationError, match="artifact_root .*use a directory or s3://BUCKET"):
        Settings(artifact_root=url)


def test_empty_s3_settings_leave_them_to_boto3() -> None:
    settings = Settings(artifact_root="s3://b", s3_endpoint_url="", s3_region="",
                        s3_access_key_id="AK", s3_secret_access_key="SK")  # type: ignore[arg-type]
    assert settings.s3_client_options() == {"aws_access_key_id": "AK", "aws_secret_access_key": "SK"}
    assert "SK" not in repr(settings)


def test_segment_journal_coalesces_appends_and_replays_them_in_order(tmp_path: Path) -> None:
    root = LocalRoot(tmp_path)
    journal = SegmentJournal(root, flush_interval=0.2)
    for i in range(200):
        journal.append([{"kind": "run", "i": i}, {"kind": "state", "i": i}])
    assert journal.flush()
    segments = root.list("journal")
    assert 1 <= len(segments) < 20 and all(e.relpath.count("/") == 2 for e in segments)
    assert [r["i"] for r in journal.replay("run")] == list(range(200))
    # A second writer's segments replay too; a line that is not JSON is skipped.
    root.write("journal/other-1-abc/000000000000.jsonl", b'{"kind":"run","i":-1}\n{"kind":"ru')
    assert sorted(r["i"] for r in SegmentJournal(root).replay("run")) == [-1, *range(200)]


def test_a_directory_root_keeps_the_appended_file_journal(tmp_path: Path) -> None:
    assert isinstance(open_journal(LocalRoot(tmp_path)), FileJournal)
    # A write in progress (temp file) is not listed as a record.
    (tmp_path / "batches").mkdir()
    (tmp_path / "batches" / ".tmp-123").write_bytes(b"{")
    (tmp_path / "batches" / "b.json").write_bytes(b"{}")
    assert [e.relpath for e in LocalRoot(tmp_path).list("batches")] == ["batches/b.json"]
