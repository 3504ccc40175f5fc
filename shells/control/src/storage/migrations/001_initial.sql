-- Migration 1: the core's records (users, nodes, pre-auth keys, API keys, check
-- approvals), every policy text ever set, the audit log, and the shell's local passwords.
-- Unsigned 64-bit values of the core are stored as INTEGER (i64): ids are counters, and
-- times beyond i64 (year 292 billion) are clamped.

CREATE TABLE users (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE nodes (
    id            INTEGER PRIMARY KEY,
    machine_key   BLOB NOT NULL,
    node_key      BLOB NOT NULL,
    user_id       INTEGER NOT NULL,
    name          TEXT NOT NULL,
    tags          TEXT NOT NULL,  -- JSON list of strings
    addresses     TEXT NOT NULL,  -- JSON list of IP addresses
    endpoints     TEXT NOT NULL,  -- JSON list of socket addresses
    ssh_host_keys TEXT NOT NULL,  -- JSON list of OpenSSH public key lines
    ssh           INTEGER NOT NULL,
    key_expiry    INTEGER,        -- unix seconds; NULL: never
    ephemeral     INTEGER NOT NULL
);

CREATE TABLE auth_keys (
    id        INTEGER PRIMARY KEY,
    user_id   INTEGER NOT NULL,
    hash      BLOB NOT NULL,      -- SHA-256 of the secret
    reusable  INTEGER NOT NULL,
    ephemeral INTEGER NOT NULL,
    tags      TEXT NOT NULL,      -- JSON list of strings
    expires   INTEGER NOT NULL,
    used      INTEGER NOT NULL,
    revoked   INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id      INTEGER PRIMARY KEY,
    hash    BLOB NOT NULL,        -- SHA-256 of the secret
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    revoked INTEGER NOT NULL
);

-- Every policy set, in order; the current policy is the last row (none: the default).
CREATE TABLE policy_history (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    unix INTEGER NOT NULL,
    text TEXT NOT NULL
);

CREATE TABLE approvals (
    src           INTEGER NOT NULL,
    dst           INTEGER NOT NULL,
    local_user    TEXT NOT NULL,
    authenticated INTEGER NOT NULL,
    expires       INTEGER NOT NULL,
    rule          TEXT NOT NULL,
    PRIMARY KEY (src, dst, local_user)
);

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    unix   INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);

-- Shell state (not the core's): argon2 hashes (PHC strings) of local login passwords.
CREATE TABLE passwords (
    user_id INTEGER PRIMARY KEY,
    hash    TEXT NOT NULL
);
