"""``producer.publisher.SeqSet``: the producer's confirmed seqs, as ranges."""

from __future__ import annotations

import random

from producer.publisher import SeqSet


def test_out_of_order_confirms_merge_into_ranges() -> None:
    seqs = SeqSet()
    for seq in (0, 2, 1, 5, 4, 2, 7):
        seqs.add(seq)
    assert seqs.ranges == [(0, 3), (4, 6), (7, 8)]
    assert len(seqs) == 6  # the repeated 2 counts once
    assert 4 in seqs and 3 not in seqs and 8 not in seqs and -1 not in seqs
    assert list(seqs) == [0, 1, 2, 4, 5, 7]
    seqs.add(3)
    seqs.add(6)
    assert seqs.ranges == [(0, 8)]


def test_matches_a_plain_set_on_shuffled_input() -> None:
    rng = random.Random(3)
    values = [rng.randrange(500) for _ in range(2000)]
    seqs = SeqSet()
    for v in values:
        seqs.add(v)
    assert list(seqs) == sorted(set(values))
    assert len(seqs) == len(set(values))
    assert all((v in seqs) == (v in set(values)) for v in range(-2, 502))
