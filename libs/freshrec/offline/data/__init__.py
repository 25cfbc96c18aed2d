"""Event sources and the replay client: MovieLens-100K, synthetic events, HTTP replay to ingest."""

from freshrec.offline.data.event_file import read_event_file
from freshrec.offline.data.http_replay import events_url, replay
from freshrec.offline.data.movielens import (
    MovieLens,
    default_data_dir,
    fetch_movielens_wheel,
    load_movielens,
    movielens_events,
    read_movielens_zip,
)
from freshrec.offline.data.replay_report import Rejection, ReplayAborted, ReplayReport
from freshrec.offline.data.synthetic import (
    SyntheticConfig,
    SyntheticWorld,
    synthetic_events,
    write_event_file,
)

__all__ = [
    "MovieLens",
    "Rejection",
    "ReplayAborted",
    "ReplayReport",
    "SyntheticConfig",
    "SyntheticWorld",
    "default_data_dir",
    "events_url",
    "fetch_movielens_wheel",
    "load_movielens",
    "movielens_events",
    "read_event_file",
    "read_movielens_zip",
    "replay",
    "synthetic_events",
    "write_event_file",
]
