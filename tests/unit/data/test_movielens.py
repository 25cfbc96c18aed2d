"""MovieLens parsing and the verified download, on small zips built here (nothing downloaded)."""

from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from freshrec.errors import DependencyUnavailable, InvalidInput
from freshrec.offline.data.movielens import (
    RECBOLE_WHEEL,
    default_data_dir,
    fetch_movielens_wheel,
    movielens_events,
    read_movielens_zip,
)

PREFIX = "recbole/dataset_example/ml-100k/"

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n"
    "186\t302\t3\t891717742\n"
    "22\t377\t1\t878887116\n"
    "244\t51\t2\t880606923\n"
    "166\t346\t1\t878887116\n"  # same second as row 2: file order must be kept
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "242\tKolya\t1996\tComedy\n"
    "302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
    "377\tHeavyweights\t1994\tChildren's Comedy\n"
    "51\tLegends of the Fall\t\tDrama Romance War Western\n"
    "346\tJackie Brown\t1997\tCrime Drama\n"
)
USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "196\t49\tM\twriter\t55105\n"
    "186\t39\tF\texecutive\t00000\n"
    "22\t25\tM\twriter\t40206\n"
    "244\t28\tM\ttechnician\t80525\n"
    "166\t47\tM\teducator\t55113\n"
)


def make_wheel(path: Path, files: dict[str, str] | None = None) -> Path:
    """A zip with the recbole wheel's layout (plus an unrelated member, as the wheel has)."""
    members = {"ml-100k.inter": INTER, "ml-100k.item": ITEM, "ml-100k.user": USER}
    members.update(files or {})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("recbole/__init__.py", "")
        for name, text in members.items():
            archive.writestr(PREFIX + name, text)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reads_ratings_sorted_by_time_with_stable_ties(tmp_path: Path) -> None:
    ml = read_movielens_zip(make_wheel(tmp_path / "w.whl"))
    assert len(ml) == 5
    assert ml.timestamps.tolist() == [878887116, 878887116, 880606923, 881250949, 891717742]
    assert ml.rows.tolist() == [2, 4, 3, 0, 1]
    assert ml.users.tolist() == [22, 166, 244, 196, 186]
    assert ml.items.tolist() == [377, 346, 51, 242, 302]
    assert ml.ratings.tolist() == [1.0, 1.0, 2.0, 3.0, 3.0]
    assert ml.users.dtype == np.int64 and ml.ratings.dtype == np.float32
    assert ml.n_users == 5 and ml.n_items == 5


def test_reads_side_information(tmp_path: Path) -> None:
    ml = read_movielens_zip(make_wheel(tmp_path / "w.whl"))
    assert ml.titles["302"] == "L.A. Confidential"
    assert ml.genres["302"] == ("Crime", "Film-Noir", "Mystery", "Thriller")
    assert ml.years["377"] == 1994
    assert "51" not in ml.years  # empty release year in the file
    assert ml.user_features["186"] == {
        "age": "39",
        "gender": "F",
        "occupation": "executive",
        "zip_code": "00000",
    }


def test_columns_are_found_by_header_name(tmp_path: Path) -> None:
    reordered = (
        "timestamp:float\trating:float\titem_id:token\tuser_id:token\n100\t5\t7\t1\n50\t4\t8\t2\n"
    )
    ml = read_movielens_zip(make_wheel(tmp_path / "w.whl", {"ml-100k.inter": reordered}))
    assert ml.users.tolist() == [2, 1]
    assert ml.items.tolist() == [8, 7]
    assert ml.ratings.tolist() == [4.0, 5.0]


def test_events_are_rating_events_in_time_order(tmp_path: Path) -> None:
    ml = read_movielens_zip(make_wheel(tmp_path / "w.whl"))
    events = list(movielens_events(ml))
    assert [e["event_id"] for e in events] == [
        "ml100k-2",
        "ml100k-4",
        "ml100k-3",
        "ml100k-0",
        "ml100k-1",
    ]
    assert events[0] == {
        "event_id": "ml100k-2",
        "type": "rating",
        "user_id": "22",
        "item_id": "377",
        "request_id": None,
        "timestamp": 878887116.0,
        "value": 1.0,
        "context": None,
    }
    with_context = next(iter(movielens_events(ml, user_context=True)))
    assert with_context["context"] == {"gender": "M", "occupation": "writer", "age": 25}
    assert list(movielens_events(ml)) == events  # deterministic


def test_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    bad = "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n"
    wheel = make_wheel(tmp_path / "w.whl", {"ml-100k.inter": bad})
    with pytest.raises(InvalidInput, match=r"lacks columns \['rating'\]"):
        read_movielens_zip(wheel)


def test_missing_member_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("recbole/__init__.py", "")
    with pytest.raises(InvalidInput, match=r"ml-100k\.inter is missing"):
        read_movielens_zip(path)


def test_ragged_row_is_a_clear_error(tmp_path: Path) -> None:
    bad = INTER + "1\t2\t3\n"
    with pytest.raises(InvalidInput, match="line 7"):
        read_movielens_zip(make_wheel(tmp_path / "w.whl", {"ml-100k.inter": bad}))


def test_download_with_wrong_sha256_is_refused_and_removed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    def download(dest: Path) -> None:
        make_wheel(dest / RECBOLE_WHEEL)

    with pytest.raises(InvalidInput, match="sha256 mismatch"):
        fetch_movielens_wheel(cache, download=download)
    assert list(cache.rglob("*.whl")) == []
    assert [p.name for p in cache.iterdir()] == []  # no temporary directory left behind


def test_download_with_right_sha256_is_cached(tmp_path: Path) -> None:
    reference = make_wheel(tmp_path / "reference.whl")
    calls: list[Path] = []

    def download(dest: Path) -> None:
        calls.append(dest)
        (dest / RECBOLE_WHEEL).write_bytes(reference.read_bytes())

    cache = tmp_path / "cache"
    path = fetch_movielens_wheel(cache, expected_sha256=sha256(reference), download=download)
    assert path == cache / RECBOLE_WHEEL
    assert sha256(path) == sha256(reference)
    # the second call finds the verified file and downloads nothing
    again = fetch_movielens_wheel(cache, expected_sha256=sha256(reference), download=download)
    assert again == path
    assert len(calls) == 1


def test_corrupt_cached_file_is_fetched_again(tmp_path: Path) -> None:
    reference = make_wheel(tmp_path / "reference.whl")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / RECBOLE_WHEEL).write_bytes(b"truncated")
    calls: list[Path] = []

    def download(dest: Path) -> None:
        calls.append(dest)
        (dest / RECBOLE_WHEEL).write_bytes(reference.read_bytes())

    path = fetch_movielens_wheel(cache, expected_sha256=sha256(reference), download=download)
    assert len(calls) == 1
    assert sha256(path) == sha256(reference)


def test_download_that_yields_no_wheel_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DependencyUnavailable, match="expected one wheel"):
        fetch_movielens_wheel(tmp_path, download=lambda dest: None)


def test_pip_failure_is_dependency_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a python that cannot run pip stands in for an unreachable index
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(DependencyUnavailable, match="pip download"):
        fetch_movielens_wheel(tmp_path / "cache")


def test_data_dir_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRESHREC_DATA_DIR", raising=False)
    monkeypatch.setenv("FRESHREC_CACHE_DIR", str(tmp_path / "c"))
    assert default_data_dir() == tmp_path / "c" / "data"
    monkeypatch.setenv("FRESHREC_DATA_DIR", str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    monkeypatch.delenv("FRESHREC_DATA_DIR")
    monkeypatch.delenv("FRESHREC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_data_dir() == tmp_path / "x" / "freshrec" / "data"
