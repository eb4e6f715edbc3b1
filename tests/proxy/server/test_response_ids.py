"""Response and item ids: 24 random bytes each, read from the OS in batches."""

from __future__ import annotations

import os

from llmroute_proxy.dialects.responses.encoder import IdSource


def test_ids_are_24_random_bytes_in_hex_behind_their_prefix() -> None:
    ids = IdSource()
    made = [ids.new("resp") for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(i.startswith("resp_") and len(i) == 5 + 48 and int(i[5:], 16) >= 0 for i in made)


def test_one_read_of_the_os_randomness_serves_many_ids_and_no_byte_is_used_twice() -> None:
    reads: list[bytes] = []

    def read(n: int) -> bytes:
        reads.append(os.urandom(n))
        return reads[-1]

    ids = IdSource(read)
    made = [ids.new("msg")[4:] for _ in range(400)]
    assert len(reads) == 3  # 170 ids of 24 bytes per 4 KiB read
    used = "".join(made)
    pools = "".join(pool[:170 * 24].hex() for pool in reads)
    assert used == pools[:len(used)]
