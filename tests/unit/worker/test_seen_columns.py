"""The columnar seen index and rule 2, held to the one-event-at-a-time definition.

``_first_sightings`` decides a whole chunk with numpy; ``reference`` below is
rule 2 as the worker used to apply it, one event at a time with a dict. Random
chunks (ids repeated inside the chunk and across earlier sightings, sightings
old and recent, of this message and of others, events before the window,
records folded before) must get the same decisions, counters, block rows and
index from both.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from processors.worker.fold import DEDUP_WINDOW_S, FoldStats, _first_sightings
from processors.worker.seen import (
    ROW,
    Seen,
    SeenIds,
    block_key,
    block_rows,
    decode_block,
    encode_block,
    encode_rows,
    id_halves,
)

NOW_S = 1_800_000_000.0
PARTITION = 2
FIRST_HOUR = 500_000

Mark = tuple[int, int, int, float]


def reference(
    events: list[tuple[bytes, int, int, int]],
    index: dict[bytes, Mark],
    replay_below: int,
) -> tuple[list[bool], FoldStats, list[tuple[bytes, Mark]]]:
    out = FoldStats()
    keep: list[bool] = []
    entries: list[tuple[bytes, Mark]] = []
    for eid, offset, line, hour in events:
        keep.append(False)
        if hour < FIRST_HOUR:
            out.outside_window += 1
            continue
        prior = index.get(eid)
        if prior is not None and NOW_S - prior[3] <= DEDUP_WINDOW_S:
            if (prior[0], prior[1], prior[2]) != (PARTITION, offset, line):
                if offset < replay_below:
                    out.replayed += 1
                else:
                    out.duplicates += 1
                continue
            mark = prior
        else:
            mark = (PARTITION, offset, line, NOW_S)
            index[eid] = mark
        keep[-1] = True
        entries.append((eid, mark))
    return keep, out, entries


def _scenario(rng: random.Random) -> tuple[list[tuple[bytes, int, int, int]], dict[bytes, Mark]]:
    pool = [os.urandom(16) for _ in range(rng.randint(1, 40))]
    # Two ids sharing their high half: the index must tell them apart.
    twin = pool[0][:8] + os.urandom(8)
    pool.append(twin)
    index: dict[bytes, Mark] = {}
    events = []
    offset = 100
    for _ in range(rng.randint(1, 25)):
        offset += rng.randint(1, 3)
        for line in range(rng.randint(1, 8)):
            eid = rng.choice(pool)
            hour = FIRST_HOUR - 1 if rng.random() < 0.1 else FIRST_HOUR + rng.randint(0, 5)
            events.append((eid, offset, line, hour))
    for eid in rng.sample(pool, k=len(pool) // 2):
        age = rng.choice([10.0, DEDUP_WINDOW_S - 1, DEDUP_WINDOW_S + 1, 5 * DEDUP_WINDOW_S])
        own = [e for e in events if e[0] == eid]
        if own and rng.random() < 0.5:
            # Seen in one of this chunk's own messages (a redelivery).
            _, o, ln, _ = rng.choice(own)
            index[eid] = (PARTITION, o, ln, NOW_S - age)
        elif rng.random() < 0.3:
            # Seen in a message of this chunk that holds another id.
            _, o, ln, _ = rng.choice(events)
            index[eid] = (PARTITION, o, ln, NOW_S - age)
        else:
            index[eid] = (
                rng.choice([PARTITION, 7]),
                rng.randint(0, 300),
                rng.randint(0, 9),
                NOW_S - age,
            )
    return events, index


@pytest.mark.parametrize("seed", range(300))
def test_a_chunk_is_decided_as_one_event_at_a_time(seed: int) -> None:
    rng = random.Random(seed)
    events, index = _scenario(rng)
    replay_below = rng.choice([0, 103, 110, 10_000])
    ids = SeenIds()
    # Earlier sightings spread over several runs, as a worker's index is.
    items = list(index.items())
    rng.shuffle(items)
    for lo in range(0, len(items), 3):
        ids.add(items[lo : lo + 3])

    want_keep, want, want_entries = reference(events, dict(index), replay_below)
    got = FoldStats()
    keep, rows = _first_sightings(
        [e[0] for e in events],
        np.array([e[1] for e in events], dtype=np.int64),
        np.array([e[2] for e in events], dtype=np.int64),
        np.array([e[3] for e in events], dtype=np.int64),
        PARTITION,
        ids,
        got,
        first_hour=FIRST_HOUR,
        now_s=NOW_S,
        replay_below=replay_below,
    )
    assert keep.tolist() == want_keep
    assert (got.outside_window, got.duplicates, got.replayed) == (
        want.outside_window,
        want.duplicates,
        want.replayed,
    )
    block = encode_rows(rows)
    assert decode_block(block) == [(eid, Seen(*mark)) for eid, mark in want_entries]
    # The index now answers as the reference's dict does.
    after = dict(index)
    reference(events, after, replay_below)
    for eid, mark in after.items():
        assert ids.get(eid) == Seen(*mark)


def test_rows_and_blocks_are_the_same_bytes() -> None:
    entries = [(os.urandom(16), (3, 10 + i, i % 4, NOW_S - i)) for i in range(50)]
    raw = encode_block(entries)
    rows = block_rows(raw)
    assert encode_rows(rows) == raw
    assert decode_block(raw) == [(e, Seen(*m)) for e, m in entries]


def test_the_newest_sighting_wins_across_runs_and_merges() -> None:
    eid = os.urandom(16)
    ids = SeenIds()
    ids[eid] = (1, 5, 0, NOW_S - 100)
    for k in range(20):  # enough runs to merge several times
        ids.add([(os.urandom(16), (1, k, 0, NOW_S))])
    ids.add([(eid, (1, 9, 2, NOW_S - 50))])
    ids.add([(eid, (1, 7, 1, NOW_S - 70))])  # older: loses
    assert ids.get(eid) == Seen(1, 9, 2, NOW_S - 50)
    restored = SeenIds([(block_key(1, 0, 9), encode_block([(eid, (1, 9, 2, NOW_S - 50))]))])
    assert restored.get(eid) == Seen(1, 9, 2, NOW_S - 50)


def test_ids_that_share_a_high_half_are_told_apart() -> None:
    base = os.urandom(8)
    twins = [base + os.urandom(8) for _ in range(6)]
    ids = SeenIds()
    ids.add([(t, (0, i, 0, NOW_S)) for i, t in enumerate(twins)])
    for i, t in enumerate(twins):
        assert ids.get(t) == Seen(0, i, 0, NOW_S)
    assert ids.get(base + b"\x00" * 8) is None
    hi, lo = id_halves(b"".join(twins))
    assert ids.lookup(hi, lo).offset.tolist() == list(range(6))


def test_expire_drops_sightings_older_than_the_cutoff() -> None:
    old, new = os.urandom(16), os.urandom(16)
    ids = SeenIds()
    ids.add([(old, (0, 1, 0, NOW_S - 7200)), (new, (0, 2, 0, NOW_S))])
    ids.expire(NOW_S - DEDUP_WINDOW_S)
    assert ids.get(old) is None
    assert ids.get(new) == Seen(0, 2, 0, NOW_S)
    assert len(ids) == 1


def test_an_index_row_is_40_bytes() -> None:
    assert ROW.itemsize == 40


def _newest_by_lexsort(rows: np.ndarray) -> np.ndarray:
    """The definition: sorted by (hi, lo), the last of each id by (first_seen, order given)."""
    order = np.lexsort((np.arange(len(rows)), rows["first_seen"], rows["lo"], rows["hi"]))
    ranked = rows[order]
    last = np.ones(len(ranked), dtype=bool)
    last[:-1] = (ranked["hi"][1:] != ranked["hi"][:-1]) | (ranked["lo"][1:] != ranked["lo"][:-1])
    return ranked[last]


@pytest.mark.parametrize("seed", range(100))
def test_newest_each_is_the_lexsort_definition(seed: int) -> None:
    """Few high halves (many shared), repeated ids, tied ``first_seen``: one answer."""
    from processors.worker.seen import _newest_each

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    rows = np.zeros(n, dtype=ROW)
    rows["hi"] = rng.integers(0, int(rng.integers(1, 50)), n).astype(np.uint64)
    rows["lo"] = rng.integers(0, 4, n).astype(np.uint64)
    rows["offset"] = np.arange(n)
    rows["first_seen"] = NOW_S - rng.integers(0, 3, n)
    if seed % 2:  # two sorted runs one after the other, as a merge sees them
        cut = n // 2
        rows = np.concatenate([_newest_each(rows[:cut]), _newest_each(rows[cut:])])
    assert _newest_each(rows).tobytes() == _newest_by_lexsort(rows).tobytes()


@pytest.mark.parametrize("seed", range(100))
def test_merging_two_runs_is_the_sort_of_both(seed: int) -> None:
    """``_merge_runs`` (interleaving, or sorting when a high half is shared) against the sort."""
    from processors.worker.seen import _merge_runs, _newest_each

    rng = np.random.default_rng(seed)

    def run(n: int) -> np.ndarray:
        rows = np.zeros(n, dtype=ROW)
        # Wide high halves (none shared, the usual case) or few (many shared).
        top = 2**63 if seed % 3 else int(rng.integers(1, 60))
        rows["hi"] = rng.integers(0, top, n, dtype=np.uint64)
        rows["lo"] = rng.integers(0, 4, n).astype(np.uint64)
        rows["offset"] = rng.integers(0, 1000, n)
        rows["first_seen"] = NOW_S - rng.integers(0, 3, n)
        return _newest_each(rows)

    older, newer = run(int(rng.integers(1, 300))), run(int(rng.integers(1, 300)))
    merged, merged_hi = _merge_runs(
        older, np.ascontiguousarray(older["hi"]), newer, np.ascontiguousarray(newer["hi"])
    )
    want = _newest_each(np.concatenate([older, newer]))
    assert merged.tobytes() == want.tobytes()
    assert merged_hi.tolist() == want["hi"].tolist()


@pytest.mark.parametrize("seed", range(50))
def test_index_answers_as_a_dict_through_merges_and_expiry(seed: int) -> None:
    rng = random.Random(seed)
    base = [os.urandom(8) for _ in range(5)]  # shared high halves
    pool = [rng.choice(base) + os.urandom(8) for _ in range(40)] + [
        os.urandom(16) for _ in range(40)
    ]
    ids = SeenIds()
    want: dict[bytes, Mark] = {}
    for step in range(60):
        batch = []
        for _ in range(rng.randint(1, 30)):
            eid = rng.choice(pool)
            mark = (0, step, rng.randint(0, 3), NOW_S - rng.randint(0, 5000))
            batch.append((eid, mark))
        ids.add(batch)
        for eid, mark in batch:  # newest first_seen wins; a tie goes to the later
            if eid not in want or mark[3] >= want[eid][3]:
                want[eid] = mark
        if step % 17 == 16:
            cutoff = NOW_S - rng.randint(1000, 4000)
            ids.expire(cutoff)
            want = {e: m for e, m in want.items() if m[3] >= cutoff}
        probe = rng.sample(pool, 20)
        hi, lo = id_halves(b"".join(probe))
        got = ids.lookup(hi, lo)
        for k, eid in enumerate(probe):
            assert bool(got.found[k]) == (eid in want)
            if eid in want:
                assert (int(got.offset[k]), int(got.line[k]), float(got.first_seen[k])) == (
                    want[eid][1],
                    want[eid][2],
                    want[eid][3],
                )
