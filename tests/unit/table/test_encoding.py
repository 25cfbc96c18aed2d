"""The row encoding has the byte layout docs/specs/table.md promises."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from freshrec.errors import ConfigError
from freshrec.table.encoding import HEADER_BYTES, decode_rows, encode_rows, row_dtype
from freshrec.table.resp import pack_command, rows_concat


def test_row_layout_offsets() -> None:
    dtype = row_dtype(3, 3)
    assert dtype.itemsize == HEADER_BYTES + 4 * 6 == 48
    (row,) = encode_rows(
        dtype,
        np.array([[1.0, 2.0, 3.0]], dtype=np.float32),
        np.array([[0.5, 0.25, 0.125]], dtype=np.float32),
        event_time=np.array([1700000000.25]),
        wall_time=np.array([1700000001.5]),
        count=np.array([7]),
    )
    assert row[0] == 1 and row[1:4] == b"\x00\x00\x00"
    assert struct.unpack_from("<I", row, 4) == (7,)
    assert struct.unpack_from("<dd", row, 8) == (1700000000.25, 1700000001.5)
    assert struct.unpack_from("<3f", row, 24) == (1.0, 2.0, 3.0)
    assert struct.unpack_from("<3f", row, 36) == (0.5, 0.25, 0.125)


def test_decode_round_trip_with_missing_rows() -> None:
    dtype = row_dtype(2, 0)
    rows = encode_rows(
        dtype,
        np.array([[1, 2], [3, 4]], dtype=np.float32),
        np.zeros((2, 0), dtype=np.float32),
        event_time=np.array([1.0, 2.0]),
        wall_time=np.array([3.0, 4.0]),
        count=np.array([2**40, 1]),  # saturates at uint32
    )
    present, rec = decode_rows(dtype, [None, rows[0], None, rows[1]])
    assert present.tolist() == [False, True, False, True]
    assert rec["vector"].tolist() == [[1, 2], [3, 4]]
    assert rec["count"].tolist() == [2**32 - 1, 1]
    with pytest.raises(ConfigError, match="dim or optimizer changed"):
        decode_rows(row_dtype(3, 0), [rows[0]])
    with pytest.raises(ConfigError, match="format version"):
        decode_rows(dtype, [b"\x02" + rows[0][1:]])


def test_resp_packing() -> None:
    assert pack_command(["SET", b"k\x00", 12, 0.5]) == (
        b"*4\r\n$3\r\nSET\r\n$2\r\nk\x00\r\n$2\r\n12\r\n$3\r\n0.5\r\n"
    )
    matrix = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    assert rows_concat(2, [b"<", matrix, b">"]) == b"<\x01\x02><\x03\x04>"
