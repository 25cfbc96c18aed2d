"""Several trainers, one dense model: periodic model averaging through the table's backend.

Each member (`TrainerOptions.member`) shares its dense parameters at every publish
(`dense:member:<member>`, and `dense:members` naming when each member last shared), then trains
on from the average of every member's latest share, its own included, and publishes that
average. Members that have not shared for a while (stopped, scaled away) are left out. The
optimizer state stays each member's own. This is model averaging as in local SGD: the one
served model is built from all trainers' work, and the members' models stay close.
"""

from __future__ import annotations

import time

import torch

from freshrec.models.published import PUBLISHED_VERSION_KEY
from freshrec.models.serialization import decode_tensors, encode_tensors
from freshrec.table.base import TableBackend, Transaction
from freshrec.training.keys import DENSE_MEMBERS_KEY, member_dense_key

__all__ = ["average_with_members", "published_version", "stage_member_share"]


def average_with_members(
    model: torch.nn.Module, backend: TableBackend, member: str, stale_s: float
) -> int:
    """Load into `model` the average of its parameters and the other members' latest shares.

    Args:
        model: this member's dense model (changed in place).
        backend: where the shares live.
        member: this member's name (its own share is `model` itself).
        stale_s: shares older than this many seconds are left out.

    Returns:
        How many members the average covers (1: this one alone).
    """
    now = time.time()
    own = {k: v.detach().clone() for k, v in model.state_dict().items()}
    total = {k: v.to(torch.float64) for k, v in own.items()}
    count = 1
    for name, seen in backend.get_hash(DENSE_MEMBERS_KEY).items():
        if name == member or now - float(seen) > stale_s:
            continue
        blob = backend.get_blob(member_dense_key(name))
        if blob is None:
            continue
        tensors, _ = decode_tensors(blob)
        if set(tensors) != set(total) or any(tensors[k].shape != total[k].shape for k in total):
            continue  # another model layout (a rollout in progress): not averaged
        for k in total:
            total[k] += tensors[k].to(torch.float64)
        count += 1
    if count > 1:
        model.load_state_dict({k: (v / count).to(own[k].dtype) for k, v in total.items()})
    return count


def stage_member_share(model: torch.nn.Module, txn: Transaction, member: str, now: float) -> None:
    """Stage `member`'s dense parameters as its latest share."""
    params = dict(model.state_dict().items())
    txn.put_blob(member_dense_key(member), encode_tensors(params, {"member": member}))
    txn.put_hash(DENSE_MEMBERS_KEY, {member: now})


def published_version(backend: TableBackend) -> int:
    """The highest version any member published (0: none yet)."""
    raw = backend.get_hash_fields(PUBLISHED_VERSION_KEY, ["version"])[0]
    return int(raw or 0)
