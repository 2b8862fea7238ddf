"""The SQLite schema, as numbered migrations (``PRAGMA user_version`` is the version)."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE packages (
        package_id  TEXT PRIMARY KEY,          -- sha256 of the bytes; the file's name
        document_id TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('edoc', 'status')),
        sender      TEXT NOT NULL,
        recipients  TEXT NOT NULL,             -- JSON list
        size        INTEGER NOT NULL,
        from_peer   TEXT,                      -- NULL: submitted here
        state       TEXT NOT NULL,
        reason      TEXT,
        created_at  REAL NOT NULL,
        since       REAL NOT NULL,             -- start of the age count (reset by requeue)
        updated_at  REAL NOT NULL
    );
    CREATE INDEX packages_document ON packages (document_id);
    CREATE INDEX packages_state ON packages (state, since);

    CREATE TABLE transfers (
        transfer_id      TEXT PRIMARY KEY,
        package_id       TEXT NOT NULL REFERENCES packages (package_id),
        next_hop         TEXT NOT NULL,
        recipients       TEXT NOT NULL,
        state            TEXT NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        created_at       REAL NOT NULL,
        since            REAL NOT NULL,
        next_attempt_at  REAL NOT NULL,
        lease_token      TEXT,
        lease_expires_at REAL,
        last_error       TEXT,
        updated_at       REAL NOT NULL
    );
    CREATE INDEX transfers_due ON transfers (state, next_attempt_at);
    CREATE INDEX transfers_lease ON transfers (state, lease_expires_at);
    CREATE INDEX transfers_package ON transfers (package_id);

    CREATE TABLE received (
        transfer_id TEXT PRIMARY KEY,
        sha256      TEXT NOT NULL,
        from_peer   TEXT NOT NULL,
        package_id  TEXT NOT NULL REFERENCES packages (package_id),
        received_at REAL NOT NULL,
        duplicates  INTEGER NOT NULL DEFAULT 0
    );

    CREATE TABLE conflicts (
        id            INTEGER PRIMARY KEY,
        transfer_id   TEXT NOT NULL,
        from_peer     TEXT NOT NULL,
        stored_sha256 TEXT NOT NULL,
        other_sha256  TEXT NOT NULL,
        quarantined   TEXT NOT NULL,
        at            REAL NOT NULL
    );

    CREATE TABLE inbox (
        entry_id   INTEGER PRIMARY KEY,
        package_id TEXT NOT NULL REFERENCES packages (package_id),
        recipient  TEXT NOT NULL,
        state      TEXT NOT NULL,
        added_at   REAL NOT NULL,
        UNIQUE (package_id, recipient)
    );

    CREATE TABLE receipts (
        id          INTEGER PRIMARY KEY,
        document_id TEXT NOT NULL,
        level       TEXT NOT NULL CHECK (level IN ('hop', 'status', 'retrieval')),
        code        TEXT NOT NULL,
        by          TEXT NOT NULL,
        at          REAL NOT NULL,
        detail      TEXT NOT NULL
    );
    CREATE INDEX receipts_document ON receipts (document_id);

    CREATE TABLE journal (
        seq        INTEGER PRIMARY KEY,
        at         REAL NOT NULL,
        entity     TEXT NOT NULL,
        entity_id  TEXT NOT NULL,
        from_state TEXT,
        to_state   TEXT NOT NULL,
        detail     TEXT NOT NULL,
        prev_hash  TEXT NOT NULL,
        hash       TEXT NOT NULL
    );

    CREATE TABLE journal_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  INTEGER NOT NULL,
        hash TEXT NOT NULL
    );
    INSERT INTO journal_head (id, seq, hash) VALUES (1, 0, printf('%064d', 0));
    """,
    """
    -- Small packages live in their row (NULL: in their file under packages/).
    ALTER TABLE packages ADD COLUMN data BLOB;
    -- Taking the next transfer for one neighbour walks this index, not the whole history.
    CREATE INDEX transfers_hop_due ON transfers (next_hop, state, next_attempt_at);
    """,
)
