"""Reading a retriever config, or using the interface, does not load FAISS."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import sys
import {module}
assert "faiss" not in sys.modules, "importing {module} loaded FAISS"
from freshrec.retrieval import build_retriever, FlatConfig
build_retriever(FlatConfig(), 4)
assert "faiss" in sys.modules
"""


@pytest.mark.parametrize(
    "module", ["freshrec.retrieval.config", "freshrec.retrieval", "freshrec.ranking.recommender"]
)
def test_faiss_is_loaded_only_when_a_faiss_retriever_is_built(module: str) -> None:
    # A fresh interpreter: this one has loaded FAISS already through other tests.
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(module=module)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
