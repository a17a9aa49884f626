"""The durable journal on real SQLite files: creation and validation, append/claim/settle,
lanes and leases, bounds, errors that never raise, and several real processes sharing one
file."""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from matomo_tracking.journal import (
    DEFAULT_SPOOL_MAX_BYTES,
    SCHEMA_VERSION,
    Appended,
    Claim,
    Journal,
    JournalError,
    needs_token,
)
from matomo_tracking.request import ResponseView, request_from_asgi
from matomo_tracking.wire import EncodedHit, encode_hit
from tests.core.builders import PEER, TOKEN, FixedRandom, builder, scope
from tests.core.journal_worker import hit, number_of

ROOT = Path(__file__).resolve().parents[2]
BIG = 1 << 30
A, B = 1, 2  # two owners (processes)


def numbers(claim: Claim | None) -> list[int]:
    assert claim is not None
    return [number_of(h.data) for h in claim.hits]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "spool.sqlite3"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    j = Journal(path)
    yield j
    j.close()


def fill(journal: Journal, count: int, lanes: int = 1, start: int = 0) -> None:
    stored = journal.append(A, 10.0, spare=[hit(n, n % lanes) for n in range(start, start + count)])
    assert (stored.stored, stored.full, stored.failed) == (count, 0, 0)


# -- the file ---------------------------------------------------------------------------------


def test_the_file_and_its_wal_are_private_to_the_user(journal: Journal, path: Path) -> None:
    fill(journal, 3)

    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["spool.sqlite3", "spool.sqlite3-shm", "spool.sqlite3-wal"]
    for name in files:
        assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name


def test_the_file_is_a_wal_database_with_its_schema_version(journal: Journal, path: Path) -> None:
    fill(journal, 1)

    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
    other.close()


def test_committed_hits_are_there_for_the_next_journal_on_the_file(path: Path) -> None:
    first = Journal(path)
    fill(first, 5)
    first.close()

    second = Journal(path)
    assert numbers(second.claim(A, 20.0, lease=60, max_hits=100, max_bytes=BIG)) == [0, 1, 2, 3, 4]
    counts = second.counts(20.0)
    assert counts is not None
    assert (counts.rows, counts.last_claim) == (5, 20.0)
    assert second.leased(20.0) == 5
    second.close()


def test_the_journal_holds_hits_never_the_token(journal: Journal, path: Path) -> None:
    hits = builder(token_auth=TOKEN).build(
        request_from_asgi(scope("/p")), ResponseView(status=200), None, now=10.0, rng=FixedRandom()
    )
    encoded = [encode_hit(h) for h in hits]
    assert needs_token(encoded[0].data)  # a token config sends cip

    journal.append(A, 10.0, spare=encoded)
    claim = journal.claim(A, 11.0, lease=60, max_hits=10, max_bytes=BIG)
    assert claim is not None
    journal.release(A, claim.rows, 12.0)

    assert journal.needing_token(12.0, max_age=3600) == len(encoded)
    assert TOKEN not in str(path)
    for file in path.parent.iterdir():
        assert TOKEN.encode() not in file.read_bytes(), file.name
    assert PEER.encode() in b"".join(f.read_bytes() for f in path.parent.iterdir())


# -- construction errors ----------------------------------------------------------------------


def test_a_missing_directory_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=r"spool=.*directory .*nowhere.* does not exist"):
        Journal(tmp_path / "nowhere" / "spool.sqlite3")
    assert not (tmp_path / "nowhere").exists()


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="it is a directory"):
        Journal(tmp_path)


def test_a_corrupt_file_is_refused_and_left_alone(path: Path) -> None:
    path.write_bytes(b"\x00garbage" * 1000)

    with pytest.raises(JournalError, match=r"spool=.*corrupt or not an SQLite database"):
        Journal(path)
    assert path.read_bytes() == b"\x00garbage" * 1000


def test_a_truncated_journal_is_refused(path: Path) -> None:
    j = Journal(path)
    fill(j, 200)
    j.close()
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xff" * (len(data) - 100))

    with pytest.raises(JournalError, match="corrupt"):
        Journal(path)


def test_another_sqlite_database_is_refused(path: Path) -> None:
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE users (name TEXT)")
    other.commit()
    other.close()

    with pytest.raises(JournalError, match="not a matomo-middleware journal"):
        Journal(path)


def test_a_journal_of_a_newer_release_is_refused(path: Path) -> None:
    Journal(path).close()
    other = sqlite3.connect(path)
    other.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    other.commit()
    other.close()

    with pytest.raises(JournalError, match=r"newer release \(schema 2, this one reads up to 1\)"):
        Journal(path)


def test_a_locked_journal_is_refused_after_the_busy_timeout(path: Path) -> None:
    Journal(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(JournalError, match="another process holds a lock on it"):
            Journal(path, busy_timeout=0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    Journal(path, busy_timeout=0.1).close()  # free again


def test_a_name_the_filesystem_refuses_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=r"it cannot be created \(File name too long\)"):
        Journal(tmp_path / ("x" * 300))


def test_the_repr_names_the_file_and_the_bound(path: Path) -> None:
    journal = Journal(path, max_bytes=1000)
    assert repr(journal) == f"Journal({str(path)!r}, max_bytes=1000)"
    journal.close()


def test_spool_max_bytes_must_be_a_positive_int(path: Path) -> None:
    for bad in (0, -1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="spool_max_bytes="):
            Journal(path, max_bytes=bad)  # type: ignore[arg-type]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    # A directory another user can enter (pytest's tmp_path is private to this one).
    directory = Path(tempfile.mkdtemp(prefix="journal-"))
    directory.chmod(0o755)
    yield directory
    for p in directory.rglob("*"):
        p.chmod(0o700 if p.is_dir() else 0o600)
    subprocess.run(["rm", "-rf", str(directory)], check=True)


def open_as_unprivileged(path: Path) -> str:
    """Open a journal on ``path`` in a child process running as a user that file permissions
    apply to (root ignores them), and return what it printed.

    The child starts as this user and imports everything first, then (when root) becomes
    ``nobody``: the interpreter and the checkout may live where ``nobody`` cannot reach
    (CI clones into a private ``mktemp -d`` directory, pyenv under ``/root``)."""
    code = textwrap.dedent(
        f"""
        import os
        from matomo_tracking.journal import Journal, JournalError
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        try:
            Journal({str(path)!r}).close()
        except JournalError as exc:
            print(exc)
        else:
            print("opened")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def test_a_read_only_directory_is_refused(shared_dir: Path) -> None:
    directory = shared_dir / "ro"
    directory.mkdir()
    directory.chmod(0o555)

    out = open_as_unprivileged(directory / "spool.sqlite3")

    assert "is not writable" in out, out
    assert "PATH-wal" in out, out
    assert list(directory.iterdir()) == []


def test_a_read_only_file_is_refused(shared_dir: Path) -> None:
    directory = shared_dir / "rw"
    directory.mkdir()
    Journal(directory / "spool.sqlite3").close()
    directory.chmod(0o777)
    (directory / "spool.sqlite3").chmod(0o444)

    out = open_as_unprivileged(directory / "spool.sqlite3")

    assert "not readable and writable by this user" in out, out


def test_the_unprivileged_check_itself_can_open_a_journal(shared_dir: Path) -> None:
    shared_dir.chmod(0o777)
    assert open_as_unprivileged(shared_dir / "spool.sqlite3") == "opened"


# -- append, claim, settle ----------------------------------------------------------------------


def test_claims_take_the_oldest_rows_within_the_batch_bounds(journal: Journal) -> None:
    fill(journal, 10, lanes=10)

    first = journal.claim(A, 20.0, lease=60, max_hits=4, max_bytes=BIG)
    size = len(hit(4).data) + 1
    second = journal.claim(A, 20.0, lease=60, max_hits=100, max_bytes=3 * size)

    assert numbers(first) == [0, 1, 2, 3]
    assert numbers(second) == [4, 5, 6]
    assert first is not None
    assert first.until == 80.0
    assert first.possible_duplicates == 0
    assert first.lanes == frozenset({0, 1, 2, 3})


@pytest.mark.parametrize("count", [1, 63, 64, 65, 1000])
def test_an_append_runs_a_few_statements_not_one_per_hit(
    path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    # sqlite3 lets go of the GIL for every statement it runs: one per hit made an executor's
    # journal thread queue for the GIL once per hit behind a busy event loop (rounds of
    # seconds, thousands of hits each, under uvicorn); the rows go in multi-row INSERTs.
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = connect(*args, **kwargs)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(sqlite3, "connect", traced)
    journal = Journal(path)
    try:
        statements.clear()
        held = [hit(n, n % 3) for n in range(count // 2)]
        spare = [hit(n, n % 3) for n in range(count // 2, count)]
        stored = journal.append(A, 10.0, held=held, spare=spare, lease=60)
        appending = list(statements)
        claim = journal.claim(B, 100.0, lease=60, max_hits=2 * count, max_bytes=BIG)
    finally:
        journal.close()

    assert stored == Appended(count, first_row=1)
    inserts = [s for s in appending if s.startswith("INSERT")]
    assert len(inserts) <= count // 64 + 6  # whole chunks of 64, then 32, 16, ... 1
    assert len(appending) <= len(inserts) + 5  # BEGIN, the totals, the first id, COMMIT
    assert numbers(claim) == list(range(count))  # in order, ids consecutive


def test_held_hits_are_leased_to_their_writer_and_spare_ones_free_for_all(
    journal: Journal,
) -> None:
    written = journal.append(A, 10.0, held=[hit(0), hit(1, 1)], spare=[hit(2, 2), hit(3)], lease=30)
    assert written == Appended(4, first_row=1)

    # A holds rows 1 and 2 in memory: neither A nor B claims them; B skips A's lane 0
    claim_b = journal.claim(B, 11.0, lease=30, max_hits=100, max_bytes=BIG)
    assert numbers(claim_b) == [2]
    assert claim_b is not None
    assert [(h.row, h.origin) for h in claim_b.hits] == [(3, A)]
    claim_a = journal.claim(A, 11.0, lease=30, max_hits=100, max_bytes=BIG)
    assert numbers(claim_a) == [3]
    assert journal.settle(A, [1, 2], 12.0) == 2
    # A's held rows whose lease ended while A was gone: claimed as possible duplicates
    journal.append(A, 20.0, held=[hit(5, 5)], lease=5)
    late = journal.claim(B, 25.0, lease=30, max_hits=100, max_bytes=BIG)
    assert numbers(late) == [5]
    assert late is not None
    assert late.possible_duplicates == 1


def test_a_single_hit_larger_than_a_batch_goes_alone(journal: Journal) -> None:
    fill(journal, 2)

    assert numbers(journal.claim(A, 20.0, lease=60, max_hits=100, max_bytes=5)) == [0]


def test_nothing_to_claim(journal: Journal) -> None:
    assert journal.claim(A, 20.0, lease=60, max_hits=100, max_bytes=BIG) is None
    assert journal.append(A, 20.0) == Appended(0)


def test_settled_rows_are_gone_and_counted_out(journal: Journal) -> None:
    fill(journal, 6)
    claim = journal.claim(A, 20.0, lease=60, max_hits=4, max_bytes=BIG)
    assert claim is not None

    assert journal.settle(B, claim.rows, 21.0) == 0  # not B's to settle
    assert journal.settle(A, claim.rows[:1], 21.0) == 1
    assert journal.settle(A, claim.rows, 21.0) == 3
    assert journal.settle(A, claim.rows, 21.0) == 0  # twice: nothing more
    assert journal.settle(A, [], 21.0) == 0

    counts = journal.counts(21.0)
    assert counts is not None
    assert (counts.rows, counts.bytes) == (2, 2 * len(hit(4).data))
    assert journal.leased(21.0) == 0
    assert numbers(journal.claim(A, 22.0, lease=60, max_hits=100, max_bytes=BIG)) == [4, 5]


def test_a_round_settles_and_appends_in_one_transaction(journal: Journal) -> None:
    fill(journal, 3)
    claim = journal.claim(A, 20.0, lease=60, max_hits=2, max_bytes=BIG)
    assert claim is not None
    size = sum(len(h.data) for h in claim.hits)

    done = journal.append(A, 21.0, spare=[hit(7)], settle=claim.rows, settle_size=size)

    assert (done.stored, done.settled) == (1, 2)
    counts = journal.counts(21.0)
    assert counts is not None
    assert (counts.rows, counts.bytes) == (2, 2 * len(hit(0).data))


def test_a_settle_of_rows_no_longer_held_counts_the_totals_again(journal: Journal) -> None:
    fill(journal, 3)
    claim = journal.claim(A, 20.0, lease=5, max_hits=3, max_bytes=BIG)
    assert claim is not None
    other = journal.claim(B, 30.0, lease=5, max_hits=1, max_bytes=BIG)  # A's lease expired
    assert numbers(other) == [0]

    # A's answer came late: 2 of its 3 rows are still A's (size is for 3: recounted)
    assert journal.settle(A, claim.rows, 31.0, size=999) == 2
    counts = journal.counts(31.0)
    assert counts is not None
    assert (counts.rows, counts.bytes) == (1, len(hit(0).data))
    assert other is not None
    assert journal.settle(B, other.rows, 31.0, size=len(hit(0).data)) == 1
    counts = journal.counts(31.0)
    assert counts is not None
    assert (counts.rows, counts.bytes) == (0, 0)


def test_a_lane_is_held_by_one_owner_at_a_time(journal: Journal) -> None:
    # lanes 0 and 1 alternate: 0, 2, 4 ... are one visitor, 1, 3, 5 ... another
    fill(journal, 10, lanes=2)

    first = journal.claim(A, 20.0, lease=60, max_hits=3, max_bytes=BIG, lanes=[0])
    second = journal.claim(B, 20.0, lease=60, max_hits=3, max_bytes=BIG)
    third = journal.claim(B, 20.0, lease=60, max_hits=100, max_bytes=BIG)

    assert numbers(first) == [0, 2, 4]
    assert numbers(second) == [1, 3, 5]  # lane 0's rows 6 and 8 wait for A
    assert numbers(third) == [7, 9]  # B holds lane 1 already: it takes more of it
    assert journal.claim(B, 20.0, lease=60, max_hits=100, max_bytes=BIG) is None
    assert numbers(journal.claim(A, 20.0, lease=60, max_hits=1, max_bytes=BIG)) == [6]
    assert first is not None
    journal.settle(A, first.rows, 21.0)
    assert journal.claim(B, 21.0, lease=60, max_hits=100, max_bytes=BIG) is None  # A holds 6
    assert numbers(journal.claim(A, 21.0, lease=60, max_hits=100, max_bytes=BIG)) == [8]


def test_released_rows_come_back_first_in_their_lane(journal: Journal) -> None:
    fill(journal, 4)
    claim = journal.claim(A, 20.0, lease=60, max_hits=2, max_bytes=BIG)
    assert claim is not None

    assert journal.release(B, claim.rows, 21.0) == 0  # not B's to release
    assert journal.release(A, claim.rows, 21.0) == 2
    again = journal.claim(B, 21.0, lease=60, max_hits=100, max_bytes=BIG)

    assert numbers(again) == [0, 1, 2, 3]
    assert again is not None
    assert again.possible_duplicates == 0
    assert journal.release(A, claim.rows, 22.0) == 0  # A holds nothing any more
    assert journal.release(A, [], 22.0) == 0


def test_released_rows_wait_until_retry_at_and_hold_their_lane(journal: Journal) -> None:
    fill(journal, 4, lanes=2)
    claim = journal.claim(A, 20.0, lease=60, max_hits=1, max_bytes=BIG)
    assert claim is not None
    journal.release(A, claim.rows, 21.0, retry_at=30.0)

    assert numbers(journal.claim(A, 25.0, lease=60, max_hits=100, max_bytes=BIG)) == [1, 3]
    assert numbers(journal.claim(A, 30.0, lease=60, max_hits=100, max_bytes=BIG)) == [0, 2]


def test_hits_appended_as_sent_are_claimed_at_once_as_possible_duplicates(
    journal: Journal,
) -> None:
    # a process gave up on hits 1 and 2 in flight before they had rows (its last round)
    stored = journal.append(
        A, 10.0, held=[hit(0, 0)], sent=[hit(1, 0), hit(2, 0)], spare=[hit(3, 0)], lease=60
    )
    assert (stored.stored, stored.full) == (4, 0)
    assert journal.settle(A, [stored.first_row], 10.5) == 1  # hit 0 was answered
    again = journal.claim(A, 11.0, lease=10, max_hits=100, max_bytes=BIG)  # even its own

    assert numbers(again) == [1, 2, 3]  # in their order
    assert again is not None
    assert again.possible_duplicates == 2


def test_an_expired_lease_is_claimed_again_as_possible_duplicates(journal: Journal) -> None:
    fill(journal, 5)
    stale = journal.claim(A, 20.0, lease=10, max_hits=3, max_bytes=BIG)
    assert stale is not None

    assert journal.claim(B, 29.9, lease=10, max_hits=100, max_bytes=BIG) is None
    assert journal.claim(A, 30.0, lease=10, max_hits=1, max_bytes=BIG) is not None  # row 3
    fresh = journal.claim(B, 40.0, lease=10, max_hits=100, max_bytes=BIG)

    assert numbers(fresh) == [0, 1, 2, 3, 4]
    assert fresh is not None
    assert fresh.possible_duplicates == 4
    # the stale owner's answer settles nothing it no longer holds, and renews nothing
    assert journal.settle(A, stale.rows, 41.0) == 0
    assert journal.renew(A, 41.0, lease=10) == 0
    assert journal.settle(B, fresh.rows, 41.0) == 5


def test_an_owner_never_claims_its_own_rows_twice(journal: Journal) -> None:
    fill(journal, 3)
    held = journal.claim(A, 20.0, lease=10, max_hits=2, max_bytes=BIG)

    # A's lease expired while A still holds the rows (a long stall): they are still A's
    assert numbers(journal.claim(A, 35.0, lease=10, max_hits=100, max_bytes=BIG)) == [2]
    assert journal.renew(A, 35.0, lease=10) == 3
    assert journal.claim(B, 36.0, lease=10, max_hits=100, max_bytes=BIG) is None
    assert held is not None
    assert journal.settle(A, held.rows, 37.0) == 2


def test_renewing_keeps_the_leases(journal: Journal) -> None:
    fill(journal, 2)
    claim = journal.claim(A, 20.0, lease=10, max_hits=100, max_bytes=BIG)
    assert claim is not None
    assert claim.until == 30.0

    assert journal.renew(A, 28.0, lease=10) == 2
    assert journal.renew(B, 28.0, lease=10) == 0

    assert journal.claim(B, 35.0, lease=10, max_hits=100, max_bytes=BIG) is None
    assert journal.leased(37.9) == 2
    assert journal.settle(A, claim.rows, 36.0) == 2


def test_hits_of_a_batch_go_by_creation_time_keeping_a_requests_order(journal: Journal) -> None:
    # committed late by another process: hit 3 happened before hits 1 and 2
    journal.append(A, 9.0, spare=[EncodedHit(b'{"n":"1"}', 5.0), EncodedHit(b'{"n":"2"}', 5.0)])
    journal.append(A, 9.0, spare=[EncodedHit(b'{"n":"3"}', 4.0, 1)])

    assert numbers(journal.claim(A, 10.0, lease=9, max_hits=100, max_bytes=BIG)) == [3, 1, 2]


def test_a_full_journal_keeps_what_fits_and_drops_the_rest(path: Path) -> None:
    size = len(hit(0).data)
    journal = Journal(path, max_bytes=5 * size)

    assert journal.append(A, 10.0, spare=[hit(n) for n in range(3)]) == Appended(3, first_row=1)
    assert journal.append(A, 10.0, spare=[hit(n) for n in range(3, 6)]) == Appended(
        2, full=1, first_row=4
    )
    assert journal.append(A, 10.0, spare=[hit(6)]) == Appended(0, full=1)
    claim = journal.claim(A, 11.0, lease=9, max_hits=2, max_bytes=BIG)
    assert claim is not None
    journal.settle(A, claim.rows, 11.0)
    assert journal.append(A, 12.0, spare=[hit(7)]) == Appended(1, first_row=6)  # room again

    all_rows = journal.claim(A, 13.0, lease=9, max_hits=100, max_bytes=BIG)
    assert numbers(all_rows) == [2, 3, 4, 7]
    journal.close()


def test_the_default_bound_is_256_mib() -> None:
    assert DEFAULT_SPOOL_MAX_BYTES == 256 * 1024 * 1024


@pytest.mark.parametrize(
    ("data", "needed"),
    [
        (b'{"idsite":"1","cip":"192.0.2.1"}', True),
        (b'{"cip":"192.0.2.1"}', True),
        (b'{"idsite":"1","country":"fr"}', True),
        (b'{"idsite":"1","lat":"1.5","long":"2"}', True),
        (b'{"idsite":"1","city":"x"}', True),
        (b'{"idsite":"1","region":"x"}', True),
        (b'{"idsite":"1","url":"https://x/?cip=1"}', False),
        (b'{"idsite":"1","action_name":"a\\",\\"cip\\":\\"1"}', False),  # inside a value
        (b'{"idsite":"1","e_c":"cip"}', False),
        (b'{"idsite":"1","_cip":"x"}', False),
    ],
)
def test_which_hits_need_a_token(data: bytes, needed: bool) -> None:
    assert needs_token(data) is needed


def test_old_hits_and_hits_with_an_ip_need_a_token(journal: Journal) -> None:
    journal.append(
        A,
        90_000.0,
        spare=[
            EncodedHit(b'{"idsite":"1"}', 1_000.0),
            EncodedHit(b'{"idsite":"1","cip":"192.0.2.1"}', 90_000.0),
            EncodedHit(b'{"idsite":"1"}', 90_000.0),
        ],
    )

    assert journal.needing_token(90_000.0, max_age=82_800.0) == 2
    assert journal.needing_token(200_000.0, max_age=82_800.0) == 3


# -- errors after construction never raise ----------------------------------------------------


def test_a_journal_that_breaks_later_fails_counted_and_rate_limited(
    journal: Journal, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fill(journal, 2)
    vandal = sqlite3.connect(path)
    vandal.execute("DROP TABLE hits")
    vandal.execute("DROP TABLE totals")
    vandal.commit()
    vandal.close()

    with caplog.at_level(logging.DEBUG, logger="matomo_tracking.journal"):
        assert journal.append(A, 100.0, spare=[hit(9)]) == Appended(0, failed=1, settled=-1)
        assert journal.append(A, 101.0, spare=[hit(9)]) == Appended(0, failed=1, settled=-1)
        assert journal.claim(A, 102.0, lease=9, max_hits=9, max_bytes=BIG) is None
        assert journal.counts(103.0) is None
        assert journal.needing_token(103.0, max_age=1.0) == -1
        assert journal.append(A, 161.0, spare=[hit(9)]) == Appended(0, failed=1, settled=-1)

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(" failed")[0][-6:] for r in warnings] == [
        "append",
        " claim",
        "counts",
        " count",
        "append",  # a minute later
    ]
    assert journal.errors == 6
    assert journal.last_error is not None
    assert "no such table" in journal.last_error


def test_settle_release_and_renew_on_a_broken_journal_report_nothing(
    journal: Journal, path: Path
) -> None:
    fill(journal, 2)
    claim = journal.claim(A, 20.0, lease=9, max_hits=9, max_bytes=BIG)
    assert claim is not None
    vandal = sqlite3.connect(path)
    vandal.execute("DROP TABLE hits")
    vandal.commit()
    vandal.close()

    assert journal.settle(A, claim.rows, 21.0) == 0
    assert journal.release(A, claim.rows, 21.0) == 0
    assert journal.renew(A, 21.0, lease=9) == 0
    assert journal.errors == 3


def test_a_journal_locked_by_another_process_fails_the_append_not_the_caller(
    path: Path,
) -> None:
    journal = Journal(path, busy_timeout=0.1)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert journal.append(A, 10.0, spare=[hit(1)]) == Appended(0, failed=1, settled=-1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert journal.append(A, 11.0, spare=[hit(2)]) == Appended(1, first_row=1)
    assert journal.last_error is not None
    assert "locked" in journal.last_error
    journal.close()


def test_a_journal_deleted_under_a_process_does_not_raise(journal: Journal, path: Path) -> None:
    fill(journal, 2)
    for p in path.parent.iterdir():
        p.unlink()

    outcome = journal.append(A, 10.0, spare=[hit(3)])
    assert outcome.stored + outcome.failed == 1  # SQLite may still write the unlinked file


# -- several processes ------------------------------------------------------------------------


def worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.core.journal_worker", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_processes_appending_at_once_store_every_hit(path: Path) -> None:
    Journal(path).close()
    writers = [worker("append", str(path), str(i * 1000), "300", "8") for i in range(4)]
    for w in writers:
        w.communicate(timeout=60)
        assert w.returncode == 0

    journal = Journal(path)
    counts = journal.counts(0.0)
    assert counts is not None
    assert counts.rows == 1200
    claim = journal.claim(A, 0.0, lease=9, max_hits=2000, max_bytes=BIG)
    got = sorted(numbers(claim))
    assert got == sorted(n for i in range(4) for n in range(i * 1000, i * 1000 + 300))
    journal.close()


def drain(path: Path, processes: int) -> list[dict[str, Any]]:
    """Drain ``path`` with ``processes`` processes started together; what each one took."""
    go = path.with_name("go")
    drainers = [worker("drain", str(path), "30", str(go)) for _ in range(processes)]
    for d in drainers:
        assert d.stdout is not None
        assert d.stdout.readline() == "ready\n"
    go.touch()
    results = []
    for d in drainers:
        out, _ = d.communicate(timeout=120)
        assert d.returncode == 0
        results.append(json.loads(out))
    return results


def test_processes_draining_one_journal_take_each_hit_once_in_lane_order(path: Path) -> None:
    journal = Journal(path)
    fill(journal, 600, lanes=10)
    journal.close()

    results = drain(path, 3)

    claims = sorted(tuple(c) for r in results for c in r["claims"])
    taken = [n for c in claims for n in c[2]]
    assert sorted(taken) == list(range(600))  # every hit once
    assert sum(r["duplicates"] for r in results) == 0
    assert sum(1 for r in results if r["claims"]) >= 2  # the work was shared
    for lane in range(10):
        held = [c for c in claims if any(n % 10 == lane for n in c[2])]
        # one claim at a time per lane, whichever process held it, and its hits in order
        for (_, end, before), (start, _, after) in itertools.pairwise(held):
            assert end < start
            assert max(n for n in before if n % 10 == lane) < min(
                n for n in after if n % 10 == lane
            )
    reopened = Journal(path)
    counts = reopened.counts(0.0)
    assert counts is not None
    assert (counts.rows, counts.bytes) == (0, 0)
    reopened.close()


def test_the_rows_of_a_dead_process_are_delivered_by_the_next(path: Path) -> None:
    journal = Journal(path)
    fill(journal, 12)
    journal.close()

    dying = worker("claim-and-die", str(path))
    out, _ = dying.communicate(timeout=60)
    assert dying.returncode == -9
    held = json.loads(out)
    assert held == [0, 1, 2, 3, 4]

    (result,) = drain(path, 1)
    taken = [n for c in result["claims"] for n in c[2]]
    assert sorted(taken) == list(range(12))
    assert result["duplicates"] == 5  # the dead process's lease expired unsettled
    assert taken[:5] == held  # once the lease expired, its rows were first again


def test_a_forked_process_uses_its_own_connection(path: Path) -> None:
    journal = Journal(path)
    fill(journal, 4)
    pid = os.fork()
    if pid == 0:  # the child: claim and settle through the inherited object
        code = 1
        try:
            claim = journal.claim(A, 20.0, lease=60, max_hits=2, max_bytes=BIG)
            if claim is not None and journal.settle(A, claim.rows, 20.0) == 2:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    assert numbers(journal.claim(A, 21.0, lease=60, max_hits=100, max_bytes=BIG)) == [2, 3]
    journal.close()
