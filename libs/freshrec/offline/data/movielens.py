"""MovieLens-100K, read from the copy shipped inside the `recbole==1.2.1` wheel on PyPI.

The wheel is fetched once with `pip download`, checked against a pinned sha256 and cached
outside the repository (`FRESHREC_DATA_DIR`, default `~/.cache/freshrec/data/`). The data
files are read straight from the zip; nothing is extracted.

Layout inside the wheel (RecBole atomic files: tab separated, a typed header such as
``user_id:token``)::

    recbole/dataset_example/ml-100k/ml-100k.inter   user_id item_id rating timestamp
    recbole/dataset_example/ml-100k/ml-100k.item    item_id movie_title release_year class
    recbole/dataset_example/ml-100k/ml-100k.user    user_id age gender occupation zip_code
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from freshrec.errors import DependencyUnavailable, InvalidInput
from freshrec.files import sha256_file

__all__ = [
    "RECBOLE_VERSION",
    "RECBOLE_WHEEL",
    "RECBOLE_WHEEL_SHA256",
    "MovieLens",
    "default_data_dir",
    "fetch_movielens_wheel",
    "load_movielens",
    "movielens_events",
    "read_movielens_zip",
]

logger = logging.getLogger(__name__)

RECBOLE_VERSION = "1.2.1"
RECBOLE_WHEEL = f"recbole-{RECBOLE_VERSION}-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
_MEMBER_DIR = "recbole/dataset_example/ml-100k"
_DOWNLOAD_TIMEOUT_S = 600

Downloader = Callable[[Path], None]
"""Puts the wheel file (under any name ending in `.whl`) into the given empty directory."""


@dataclass(frozen=True)
class MovieLens:
    """MovieLens-100K ratings in event-time order, with item and user side information.

    Ties in `timestamps` keep the file's row order, so the order is fully deterministic.

    Attributes:
        users: raw user ids, int64, shape (N,).
        items: raw item ids, int64, shape (N,).
        ratings: ratings 1..5, float32, shape (N,).
        timestamps: event time in unix seconds, int64, shape (N,), non-decreasing.
        rows: row number of each rating in `ml-100k.inter` (0-based, header excluded),
            int64, shape (N,); the stable key of each rating.
        titles: item id (as a string) → movie title.
        years: item id → release year, when the file has one.
        genres: item id → genres, in file order.
        user_features: user id → {"age", "gender", "occupation", "zip_code"}.
    """

    users: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]
    ratings: npt.NDArray[np.float32]
    timestamps: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int64]
    titles: dict[str, str] = field(default_factory=dict)
    years: dict[str, int] = field(default_factory=dict)
    genres: dict[str, tuple[str, ...]] = field(default_factory=dict)
    user_features: dict[str, dict[str, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @property
    def n_users(self) -> int:
        """Number of distinct users with at least one rating."""
        return int(np.unique(self.users).shape[0])

    @property
    def n_items(self) -> int:
        """Number of distinct items with at least one rating."""
        return int(np.unique(self.items).shape[0])


def default_data_dir() -> Path:
    """Where downloaded data sets are cached, outside any checkout.

    `FRESHREC_DATA_DIR` wins; then `FRESHREC_CACHE_DIR/data`; then
    `$XDG_CACHE_HOME/freshrec/data`, falling back to `~/.cache/freshrec/data`.
    """
    configured = os.environ.get("FRESHREC_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("FRESHREC_CACHE_DIR")
    if cache:
        return Path(cache).expanduser() / "data"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "freshrec" / "data"


def _pip_download(dest: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        f"recbole=={RECBOLE_VERSION}",
        "-d",
        str(dest),
    ]
    logger.info("downloading %s with pip", RECBOLE_WHEEL)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DependencyUnavailable(f"pip download of recbole=={RECBOLE_VERSION}: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise DependencyUnavailable(
            f"pip download of recbole=={RECBOLE_VERSION} failed (exit {proc.returncode}): {tail}"
        )


def fetch_movielens_wheel(
    cache_dir: Path | str | None = None,
    *,
    expected_sha256: str = RECBOLE_WHEEL_SHA256,
    download: Downloader | None = None,
) -> Path:
    """Return the cached, verified recbole wheel, downloading it first when needed.

    A cached file whose checksum is wrong is deleted and fetched again. A freshly
    downloaded file whose checksum is wrong is deleted and refused.

    Args:
        cache_dir: cache directory; `default_data_dir()` when None.
        expected_sha256: the sha256 the wheel must have.
        download: fetches the wheel into an empty directory; `pip download` when None.

    Returns:
        Path of the verified wheel inside `cache_dir`.

    Raises:
        InvalidInput: the downloaded wheel does not have `expected_sha256` (it is removed).
        DependencyUnavailable: the download failed.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_data_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / RECBOLE_WHEEL
    if target.is_file():
        actual = sha256_file(target)
        if actual == expected_sha256:
            return target
        logger.warning(
            "cached %s has sha256 %s, not %s; fetching again", target, actual, expected_sha256
        )
        target.unlink()

    fetch = download or _pip_download
    # A private temporary directory next to the target: concurrent fetches never see each
    # other's partial files, and the final rename stays on one filesystem (atomic).
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        tmp_dir = Path(tmp)
        fetch(tmp_dir)
        wheels = sorted(tmp_dir.glob("*.whl"))
        if len(wheels) != 1:
            names = [p.name for p in tmp_dir.iterdir()]
            raise DependencyUnavailable(f"expected one wheel from the download, found {names}")
        actual = sha256_file(wheels[0])
        if actual != expected_sha256:
            wheels[0].unlink()
            raise InvalidInput(
                f"sha256 mismatch for {RECBOLE_WHEEL}: got {actual}, expected "
                f"{expected_sha256}; the file was removed. The package index served a "
                "different file than the pinned one: check the index configured for pip."
            )
        os.replace(wheels[0], target)
    logger.info("cached %s (%d bytes)", target, target.stat().st_size)
    return target


def _read_atomic(
    archive: zipfile.ZipFile, name: str, required: tuple[str, ...]
) -> list[dict[str, str]]:
    """Rows of one RecBole atomic file as dicts keyed by the header's field names."""
    member = f"{_MEMBER_DIR}/{name}"
    try:
        raw = archive.read(member)
    except KeyError as exc:
        raise InvalidInput(f"{member} is missing from {archive.filename}") from exc
    lines = raw.decode("utf-8", errors="replace").splitlines()
    if not lines:
        raise InvalidInput(f"{member} is empty")
    # Headers read `name:type`; only the name matters here, and looking columns up by name
    # keeps the reader correct if a release reorders them.
    header = [col.split(":", 1)[0].strip() for col in lines[0].split("\t")]
    missing = [col for col in required if col not in header]
    if missing:
        raise InvalidInput(f"{member} lacks columns {missing}; header is {lines[0]!r}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        values = line.split("\t")
        if len(values) != len(header):
            raise InvalidInput(
                f"{member} line {number}: {len(values)} fields, header has {len(header)}"
            )
        rows.append(dict(zip(header, values, strict=True)))
    return rows


def read_movielens_zip(path: Path | str) -> MovieLens:
    """Parse MovieLens-100K from a wheel (or any zip with the same layout), without extracting.

    Args:
        path: the zip file.

    Returns:
        The ratings sorted by time (stable), with titles, years, genres and user features.

    Raises:
        InvalidInput: a file or column is missing, or a value does not parse.
    """
    with zipfile.ZipFile(path) as archive:
        inter = _read_atomic(
            archive, "ml-100k.inter", ("user_id", "item_id", "rating", "timestamp")
        )
        item_rows = _read_atomic(archive, "ml-100k.item", ("item_id", "movie_title"))
        user_rows = _read_atomic(archive, "ml-100k.user", ("user_id",))

    n = len(inter)
    users = np.empty(n, dtype=np.int64)
    items = np.empty(n, dtype=np.int64)
    ratings = np.empty(n, dtype=np.float32)
    timestamps = np.empty(n, dtype=np.int64)
    for i, row in enumerate(inter):
        try:
            users[i] = int(row["user_id"])
            items[i] = int(row["item_id"])
            ratings[i] = float(row["rating"])
            timestamps[i] = int(float(row["timestamp"]))
        except ValueError as exc:
            raise InvalidInput(f"ml-100k.inter row {i}: {exc}") from exc
    order = np.argsort(timestamps, kind="stable")

    titles: dict[str, str] = {}
    years: dict[str, int] = {}
    genres: dict[str, tuple[str, ...]] = {}
    for row in item_rows:
        item_id = row["item_id"].strip()
        titles[item_id] = row["movie_title"].strip()
        year = row.get("release_year", "").strip()
        if year.isdigit():
            years[item_id] = int(year)
        genres[item_id] = tuple(row.get("class", "").split())

    user_features = {
        row["user_id"].strip(): {k: v.strip() for k, v in row.items() if k != "user_id"}
        for row in user_rows
    }
    return MovieLens(
        users=users[order],
        items=items[order],
        ratings=ratings[order],
        timestamps=timestamps[order],
        rows=order.astype(np.int64),
        titles=titles,
        years=years,
        genres=genres,
        user_features=user_features,
    )


def load_movielens(cache_dir: Path | str | None = None) -> MovieLens:
    """Fetch (once), verify and read MovieLens-100K.

    Args:
        cache_dir: where the recbole wheel is cached; `default_data_dir()` when None.

    Returns:
        The 100,000 ratings in event-time order with side information.
    """
    return read_movielens_zip(fetch_movielens_wheel(cache_dir))


def movielens_events(ml: MovieLens, *, user_context: bool = False) -> Iterator[dict[str, Any]]:
    """MovieLens ratings as freshrec `rating` events, in event-time order.

    Event ids are `ml100k-<row>` with the row number in `ml-100k.inter`, so replaying the
    same data twice yields the same ids.

    Args:
        ml: the data set from `load_movielens`.
        user_context: attach the user's age, gender and occupation as `context`.

    Yields:
        One event dict per rating, in the wire format of `POST /v1/events`.
    """
    for user, item, rating, ts, row in zip(
        ml.users.tolist(),
        ml.items.tolist(),
        ml.ratings.tolist(),
        ml.timestamps.tolist(),
        ml.rows.tolist(),
        strict=True,
    ):
        user_id = str(user)
        context: dict[str, str | int | float] | None = None
        if user_context:
            features = ml.user_features.get(user_id, {})
            context = {k: features[k] for k in ("gender", "occupation") if k in features}
            age = features.get("age", "")
            if age.isdigit():
                context["age"] = int(age)
        yield {
            "event_id": f"ml100k-{row}",
            "type": "rating",
            "user_id": user_id,
            "item_id": str(item),
            "request_id": None,
            "timestamp": float(ts),
            "value": float(rating),
            "context": context,
        }
