"""The durable journal of admitted hits (``spool=``): one SQLite file that survives a crash of
the process and that several processes (and an external sender) share safely.

The core's one module with I/O: synchronous ``sqlite3`` only, no threads, no asyncio, and no
clock reads (every call takes ``now``, Unix seconds; leases compare wall-clock times, so the
processes sharing a journal must share a machine, which a local filesystem implies).

One table of encoded hits, each with its creation time, its lane (the visitor's key) and its
claim (the owner holding it and its lease). WAL mode and
``synchronous=NORMAL``: a commit survives a crash of the process (not a power cut). The file
is created with mode 0600 (hits hold IP addresses and user ids); ``PRAGMA user_version`` holds
the schema version, so a newer release reads an older journal. The journal holds hits, never
the token: ``token_auth`` is added to each bulk body when it is sent.

- ``append`` writes many hits in one transaction, within ``max_bytes`` of encoded hits.
- ``claim`` takes, for one owner (a process), a batch of the oldest rows whose lanes no other
  owner holds, leased until ``now + lease``: one owner per lane at a time, so a visitor's
  hits leave in order whichever process sends them. Rows of a lease that expired unsettled (a
  dead or stuck process) are claimed again and counted as possible duplicates.
- ``settle`` deletes rows once Matomo's answer decided them; ``release`` hands rows back, to be
  claimed again (possibly after a delay); ``renew`` extends the owner's leases.

Errors opening the file raise ``JournalError`` at construction (corrupt, locked, read-only,
missing directory, a newer schema). Later errors never raise: the call returns what it did
(nothing), the error is counted and logged at WARNING at most once a minute.

Calls on one ``Journal`` must not overlap (the executor owning it makes them from one thread at
a time); several ``Journal`` objects, in one process or many, may share a file.
"""

from __future__ import annotations

import heapq
import logging
import os
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from matomo_tracking.wire import EncodedHit

__all__ = [
    "DEFAULT_SPOOL_MAX_BYTES",
    "SCHEMA_VERSION",
    "Appended",
    "Claim",
    "Journal",
    "JournalCounts",
    "JournalError",
    "StoredHit",
    "needs_token",
]

logger = logging.getLogger("matomo_tracking.journal")

#: The journal's schema version, kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 1
#: Default bound of a journal: 256 MiB of encoded hits.
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024
# Errors of one kind are logged at WARNING at most this often (seconds), else at DEBUG.
_WARN_INTERVAL = 60.0
# The WAL is truncated back to this size after a checkpoint.
_WAL_LIMIT = 16 * 1024 * 1024
# Parameters Matomo accepts only with a valid token_auth (matomo-tracking-api.md, 2.6); in the
# encoded JSON object a key is preceded by "{" or "," (inside a value a quote is escaped).
_TOKEN_KEYS = re.compile(rb'[{,]"(?:cip|country|region|city|lat|long)":')

_SCHEMA = """
CREATE TABLE hits (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    lane INTEGER NOT NULL,
    data BLOB NOT NULL,
    origin INTEGER NOT NULL,
    owner INTEGER,
    lease REAL
);
CREATE INDEX hits_free ON hits (id) WHERE lease IS NULL;
CREATE INDEX hits_lease ON hits (lease) WHERE lease IS NOT NULL;
CREATE TABLE totals (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    last_claim REAL
);
INSERT INTO totals VALUES (0, 0, 0, NULL);
"""
_TABLES = {"hits", "totals"}


def needs_token(data: bytes) -> bool:
    """Whether an encoded hit carries a parameter that Matomo accepts only with a valid
    ``token_auth`` (``cip``, ``country``, ``region``, ``city``, ``lat``, ``long``)."""
    return _TOKEN_KEYS.search(data) is not None


class JournalError(ValueError):
    """The journal cannot be used (raised at construction only): its message names ``spool``,
    the path and what to do."""


@dataclass(slots=True, unsafe_hash=True)
class StoredHit(EncodedHit):
    """An encoded hit read from the journal, with its row id (for ``settle``/``release``) and
    the owner that appended it (``origin``)."""

    row: int = field(kw_only=True)
    origin: int = field(kw_only=True, default=0)


@dataclass(frozen=True, slots=True)
class Claim:
    """A batch claimed from the journal: its hits (oldest first), the lanes it holds and the
    lease's end. ``possible_duplicates``: hits whose earlier lease expired unsettled (another
    process may have sent them already)."""

    hits: tuple[StoredHit, ...]
    lanes: frozenset[int]
    until: float
    possible_duplicates: int = 0

    @property
    def rows(self) -> list[int]:
        """The row ids of the claimed hits."""
        return [hit.row for hit in self.hits]


@dataclass(frozen=True, slots=True)
class Appended:
    """What ``append`` did: hits ``stored`` (committed, as rows ``first_row`` onwards),
    dropped because the journal is ``full`` (``spool_max_bytes``), dropped because it could
    not be written (``failed``), and rows deleted first (``settled``; -1: the transaction
    failed)."""

    stored: int
    full: int = 0
    failed: int = 0
    first_row: int = 0
    settled: int = 0


@dataclass(frozen=True, slots=True)
class JournalCounts:
    """The journal's content: ``rows`` and ``bytes`` (encoded hits) stored, and when a batch
    was last claimed by any process (None: never)."""

    rows: int
    bytes: int
    last_claim: float | None


#: Row ids bound per statement: one statement text per operation, so that SQLite's statement
#: cache holds it once (statements with their ids written in took up to 1 MB each, 128 of
#: them cached: +200 MB after a long outage).
_CHUNK = 64
_IN = "(" + ",".join("?" * _CHUNK) + ")"
# placeholders only: nothing from outside goes into the statements' text
_TAKE = "UPDATE hits SET owner = ?, lease = ? WHERE id IN " + _IN  # noqa: S608
_DELETE = "DELETE FROM hits WHERE owner = ? AND id IN " + _IN  # noqa: S608
_GIVE_BACK = "UPDATE hits SET owner = NULL, lease = ? WHERE owner = ? AND id IN " + _IN  # noqa: S608
# owner 0 (no process draws an even number): an ended lease, claimed as possible duplicates
_GIVE_BACK_SENT = "UPDATE hits SET owner = 0, lease = ? WHERE owner = ? AND id IN " + _IN  # noqa: S608


#: New rows go in multi-row INSERTs of 64, 32, ..., 1 rows (seven statement texts, cached
#: once), not one statement per row: the sqlite3 module lets go of the GIL for every statement
#: it runs, and behind a busy event loop an executor's journal thread then waited for the GIL
#: once per hit (rounds of seconds under uvicorn, a futex wake-up per loop callback meanwhile).
_INSERTS = {
    size: "INSERT INTO hits (created, lane, data, origin, owner, lease) VALUES "  # noqa: S608
    + ",".join(["(?, ?, ?, ?, ?, ?)"] * size)
    for size in (_CHUNK >> shift for shift in range(_CHUNK.bit_length()))
}


def _insert(db: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert ``rows`` (in order: their ids are consecutive) with the fewest ``_INSERTS``."""
    start, size = 0, _CHUNK
    while start < len(rows):
        while start + size > len(rows):
            size //= 2
        db.execute(_INSERTS[size], [value for row in rows[start : start + size] for value in row])
        start += size


def _each(db: sqlite3.Connection, sql: str, rows: Sequence[int], *params: object) -> int:
    """Run ``sql`` (ending in ``id IN`` + ``_IN`` + ``...``) for every chunk of ``rows``,
    ``params`` bound before the ids; the rows it changed."""
    changed = 0
    for start in range(0, len(rows), _CHUNK):
        chunk = list(rows[start : start + _CHUNK])
        chunk += [chunk[-1]] * (_CHUNK - len(chunk))  # a repeated id changes nothing more
        changed += db.execute(sql, (*params, *chunk)).rowcount
    return changed


class Journal:
    """A journal file shared by the processes of one machine (see the module docstring).

    ``path``: the SQLite file, created (mode 0600) if missing; its directory must exist and be
    writable (SQLite keeps ``PATH-wal`` and ``PATH-shm`` next to it). ``max_bytes``: the most
    bytes of encoded hits it holds (``spool_max_bytes``). ``busy_timeout``: seconds to wait
    for another process's transaction before giving up.
    """

    __slots__ = (
        "_busy_timeout",
        "_db",
        "_failing",
        "_pid",
        "_warned",
        "errors",
        "last_error",
        "max_bytes",
        "path",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"spool_max_bytes={max_bytes!r} is invalid: expected a positive int")
        self.max_bytes = max_bytes
        self._busy_timeout = busy_timeout
        self.errors = 0
        self.last_error: str | None = None
        self._warned: dict[str, float] = {}
        self._failing: set[str] = set()
        self._check_path()
        self._pid = os.getpid()
        self._db = self._open()

    # -- opening ----------------------------------------------------------------------------

    def _fail(self, problem: str, fix: str) -> JournalError:
        return JournalError(f"spool={self.path!r} cannot be used: {problem}; {fix}")

    def _check_path(self) -> None:
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise self._fail(
                f"its directory {directory!r} does not exist", "create it or choose another path"
            )
        if os.path.isdir(self.path):
            raise self._fail("it is a directory", "name a file inside it")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise self._fail(
                f"its directory {directory!r} is not writable (SQLite keeps the files "
                "PATH-wal and PATH-shm next to the journal)",
                "make it writable by this user or choose another path",
            )
        try:
            # Created here with mode 0600 (SQLite would use 0644): hits hold IPs and user ids.
            # SQLite gives PATH-wal and PATH-shm the mode of the database file.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            if not os.access(self.path, os.R_OK | os.W_OK):
                raise self._fail(
                    "the file is not readable and writable by this user",
                    "fix its owner or mode (0600) or choose another path",
                ) from None
        except OSError as exc:
            raise self._fail(f"it cannot be created ({exc.strerror})", "check the path") from None

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._fail(f"SQLite cannot open it ({exc})", "check the path") from None
        try:
            self._prepare(db)
        except sqlite3.Error as exc:
            db.close()
            raise self._explain(exc) from None
        except JournalError:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise self._fail(
                f"SQLite cannot use WAL mode on it (journal_mode is {mode!r})",
                "put the journal on a local filesystem",
            )
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {
                row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if version == 0 and not tables:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise self._fail(
                    f"it was written by a newer release (schema {version}, this one reads up to "
                    f"{SCHEMA_VERSION})",
                    "upgrade matomo-middleware or give this release another file",
                )
            elif version == 0 or not tables >= _TABLES:
                raise self._fail(
                    "it is an SQLite database but not a matomo-middleware journal",
                    "give the journal a file of its own",
                )
            db.execute("SELECT rows, bytes FROM totals WHERE id = 0").fetchone()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _explain(self, exc: sqlite3.Error) -> JournalError:
        text = str(exc).lower()
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return self._fail(
                f"the file is corrupt or not an SQLite database ({exc})",
                "move it away (the hits in it are lost) or choose another path",
            )
        if "locked" in text or "busy" in text:
            return self._fail(
                f"another process holds a lock on it for more than {self._busy_timeout:g} s "
                f"({exc})",
                "stop the process that holds it (an sqlite3 shell, a backup) and try again",
            )
        return self._fail(f"SQLite failed ({exc})", "check the file and its filesystem")

    def _conn(self) -> sqlite3.Connection:
        pid = os.getpid()
        if pid != self._pid:
            # A connection must not cross a fork (gunicorn --preload): the child abandons the
            # parent's (never closing it) and opens its own.
            self._pid = pid
            self._db = self._open()
        return self._db

    # -- errors after construction -----------------------------------------------------------

    def _error(self, what: str, exc: BaseException, now: float) -> None:
        db = self._db
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self.errors += 1
        message = f"journal {self.path}: {what} failed ({type(exc).__name__}: {exc})"
        self.last_error = message
        last = self._warned.get(what)
        if last is None or now - last >= _WARN_INTERVAL or now < last:
            self._warned[what] = now
            logger.warning("matomo: %s", message)
        else:
            logger.debug("matomo: %s", message)

    # -- writing -----------------------------------------------------------------------------

    def append(
        self,
        owner: int,
        now: float,
        *,
        held: Sequence[EncodedHit] = (),
        sent: Sequence[EncodedHit] = (),
        spare: Sequence[EncodedHit] = (),
        lease: float = 0.0,
        settle: Sequence[int] = (),
        settle_size: int | None = None,
    ) -> Appended:
        """Store ``owner``'s new hits in one transaction, in order, each in the lane of its
        visitor (``EncodedHit.visitor``, the same in every process): ``held``
        ones leased to it until ``now + lease`` (it holds them in memory and delivers them),
        then ``sent`` ones, possibly processed by Matomo already (a process gave up on them in
        flight: claimed as possible duplicates), then ``spare`` ones, free for any process to
        claim. As many as fit in ``max_bytes``
        are stored (rows ``first_row``, ``first_row + 1``...), the rest dropped (``full``);
        if the journal cannot be written, nothing is stored (``failed``). The same
        transaction first deletes the rows ``settle`` (as ``settle()`` does: one commit per
        round of an executor)."""
        total = len(held) + len(sent) + len(spare)
        if not total and not settle:
            return Appended(0)
        try:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            settled = self._delete(db, owner, settle, settle_size) if settle else 0
            used = db.execute("SELECT bytes FROM totals WHERE id = 0").fetchone()[0]
            room = self.max_bytes - used
            rows = []
            size = 0
            until = now + lease
            groups = ((held, owner, until), (sent, 0, now), (spare, None, None))
            for group, claim_owner, claim_lease in groups:
                for hit in group:
                    data = hit.data
                    if size + len(data) > room:
                        break
                    size += len(data)
                    rows.append(
                        (
                            hit.created,
                            hit.visitor,
                            data,
                            owner,
                            claim_owner,
                            claim_lease,
                        )
                    )
                else:
                    continue
                break
            first = 0
            if rows:
                _insert(db, rows)
                # one transaction holds the write lock: its rows got consecutive ids
                first = db.execute("SELECT last_insert_rowid()").fetchone()[0] - len(rows) + 1
                db.execute(
                    "UPDATE totals SET rows = rows + ?, bytes = bytes + ? WHERE id = 0",
                    (len(rows), size),
                )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._error("append", exc, now)
            return Appended(0, failed=total, settled=-1)
        return Appended(len(rows), full=total - len(rows), first_row=first, settled=settled)

    def claim(
        self,
        owner: int,
        now: float,
        *,
        lease: float,
        max_hits: int,
        max_bytes: int,
        lanes: Iterable[int] | None = None,
    ) -> Claim | None:
        """Claim for ``owner`` the oldest free rows (never claimed, released, or of another
        owner's expired lease) in lanes no other owner holds, up to ``max_hits`` hits and
        ``max_bytes`` bytes (a single larger hit goes alone), leased until ``now + lease``;
        only rows of ``lanes`` if given. None when there is nothing to claim (or on an
        error). ``owner``: a number that no other process uses (a random 63-bit int)."""
        wanted = None if lanes is None else frozenset(lanes)
        try:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            busy = {
                row[0]
                for row in db.execute(
                    "SELECT lane FROM hits WHERE lease > ? AND (owner IS NULL OR owner != ?)",
                    (now, owner),
                )
            }
            # free rows: never claimed or released at once (lease NULL, in id order), and
            # rows whose lease ended (another owner's, or released to retry later)
            columns = "id, created, lane, data, owner, origin"
            ended = db.execute(
                f"SELECT {columns} FROM hits INDEXED BY hits_lease "  # noqa: S608
                "WHERE lease <= ? AND (owner IS NULL OR owner != ?)",
                (now, owner),
            ).fetchall()
            ended.sort()
            cursor = db.execute(
                f"SELECT {columns} FROM hits INDEXED BY hits_free "  # noqa: S608
                "WHERE lease IS NULL ORDER BY id"
            )
            picked: list[tuple[int, float, int, bytes, int | None, int]] = []
            size = 0
            for row in heapq.merge(ended, cursor):
                lane = row[2]
                if lane in busy or (wanted is not None and lane not in wanted):
                    continue
                if picked and size + len(row[3]) + 1 > max_bytes:
                    break
                picked.append(row)
                size += len(row[3]) + 1
                if len(picked) >= max_hits:
                    break
            cursor.close()
            if not picked:
                db.execute("COMMIT")
                return None
            until = now + lease
            _each(
                db,
                _TAKE,
                [r[0] for r in picked],
                owner,
                until,
            )
            db.execute("UPDATE totals SET last_claim = ? WHERE id = 0", (now,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._error("claim", exc, now)
            return None
        # Hits committed by several processes interleave by commit: within a batch they go
        # by creation time (a request's hits share theirs and keep their order).
        picked.sort(key=lambda r: r[1])
        return Claim(
            hits=tuple(StoredHit(r[3], r[1], r[2], row=r[0], origin=r[5]) for r in picked),
            lanes=frozenset(r[2] for r in picked),
            until=until,
            possible_duplicates=sum(1 for r in picked if r[4] is not None),
        )

    def settle(
        self, owner: int, rows: Sequence[int], now: float, *, size: int | None = None
    ) -> int:
        """Delete the ``rows`` that Matomo's answer decided, those ``owner`` still holds;
        returns how many were deleted. ``size``: their bytes of encoded hits, if the caller
        knows it (else, or if some rows were no longer held, the totals are counted again)."""
        if not rows:
            return 0
        try:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            count = self._delete(db, owner, rows, size)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._error("settle", exc, now)
            return 0
        return count

    @staticmethod
    def _delete(db: sqlite3.Connection, owner: int, rows: Sequence[int], size: int | None) -> int:
        count = _each(db, _DELETE, rows, owner)
        if size is not None and count == len(rows):
            db.execute(
                "UPDATE totals SET rows = rows - ?, bytes = bytes - ? WHERE id = 0", (count, size)
            )
        elif count:
            db.execute(
                "UPDATE totals SET (rows, bytes) = "
                "(SELECT count(*), coalesce(sum(length(data)), 0) FROM hits) WHERE id = 0"
            )
        return count

    def release(
        self,
        owner: int,
        rows: Sequence[int],
        now: float,
        *,
        retry_at: float | None = None,
        sent: bool = False,
    ) -> int:
        """Hand back the ``rows`` ``owner`` holds, to be claimed again (by any process) from
        ``retry_at`` on (at once if None); they keep their place in their lane. ``sent``:
        Matomo may have processed them (a batch in flight was given up): they are claimed
        at once as an expired lease, counted as possible duplicates. Returns how many rows
        were handed back."""
        if not rows:
            return 0
        try:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            count = _each(
                db,
                _GIVE_BACK_SENT if sent else _GIVE_BACK,
                rows,
                now if sent else retry_at,
                owner,
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._error("release", exc, now)
            return 0
        return count

    def renew(self, owner: int, now: float, *, lease: float) -> int:
        """Extend the lease of every row ``owner`` holds to ``now + lease``; returns how many
        (a row whose lease expired and that another owner claimed is no longer held)."""
        try:
            db = self._conn()
            cursor = db.execute(
                "UPDATE hits INDEXED BY hits_lease SET lease = ? "
                "WHERE lease IS NOT NULL AND owner = ?",
                (now + lease, owner),
            )
        except sqlite3.Error as exc:
            self._error("renew", exc, now)
            return 0
        return cursor.rowcount

    # -- reading -----------------------------------------------------------------------------

    def counts(self, now: float) -> JournalCounts | None:
        """Rows and bytes stored and the last claim's time (one row read); None on an
        error."""
        try:
            rows, size, last_claim = (
                self._conn()
                .execute("SELECT rows, bytes, last_claim FROM totals WHERE id = 0")
                .fetchone()
            )
        except sqlite3.Error as exc:
            self._error("counts", exc, now)
            return None
        return JournalCounts(int(rows), int(size), last_claim)

    def leased(self, now: float) -> int:
        """Rows leased at ``now`` (held by an owner, or released until a later time); -1 on
        an error."""
        try:
            found = (
                self._conn().execute("SELECT count(*) FROM hits WHERE lease > ?", (now,)).fetchone()
            )
        except sqlite3.Error as exc:
            self._error("leased", exc, now)
            return -1
        return int(found[0])

    def needing_token(self, now: float, *, max_age: float) -> int:
        """Rows Matomo accepts only with a valid ``token_auth``: hits carrying ``cip`` (or a
        location), and hits at least ``max_age`` seconds old at ``now``; -1 on an error."""
        try:
            db = self._conn()
            # read once, when a sender starts: the hits are scanned then, not when written
            db.create_function("needs_token", 1, needs_token, deterministic=True)
            found = db.execute(
                "SELECT count(*) FROM hits WHERE created <= ? OR needs_token(data)",
                (now - max_age,),
            ).fetchone()[0]
        except sqlite3.Error as exc:
            self._error("count", exc, now)
            return -1
        return int(found)

    def close(self) -> None:
        """Close the connection (committed rows stay in the file for the next process)."""
        if os.getpid() == self._pid:
            self._db.close()

    def __repr__(self) -> str:
        return f"Journal({self.path!r}, max_bytes={self.max_bytes})"
