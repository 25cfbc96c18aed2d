"""Event sources and the replay client: MovieLens-100K, a synthetic stream, replay into ingest."""

from freshrec.data.movielens import (
    MovieLens,
    default_data_dir,
    fetch_movielens_wheel,
    load_movielens,
    movielens_events,
    read_movielens_zip,
)
from freshrec.data.replay import (
    Rejection,
    ReplayAborted,
    ReplayReport,
    events_url,
    read_event_file,
    replay,
)
from freshrec.data.synthetic import (
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
