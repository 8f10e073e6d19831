-- Accounts, devices and the tokens that authenticate them.
CREATE TABLE users (
    user_id       TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT,
    is_admin      INTEGER NOT NULL DEFAULT 0,
    is_guest      INTEGER NOT NULL DEFAULT 0,
    user_type     TEXT,
    deactivated   INTEGER NOT NULL DEFAULT 0,
    shadow_banned INTEGER NOT NULL DEFAULT 0,
    created_ts    INTEGER NOT NULL
);

CREATE TABLE profiles (
    user_id     TEXT PRIMARY KEY NOT NULL REFERENCES users(user_id),
    displayname TEXT,
    avatar_url  TEXT
);

CREATE TABLE devices (
    user_id      TEXT NOT NULL REFERENCES users(user_id),
    device_id    TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts INTEGER,
    last_seen_ip TEXT,
    created_ts   INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as SHA-256 hashes; the token itself is never kept.
CREATE TABLE refresh_tokens (
    token_hash     TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    expires_ts     INTEGER,
    session_end_ts INTEGER,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE access_tokens (
    token_hash         TEXT PRIMARY KEY NOT NULL,
    user_id            TEXT NOT NULL,
    device_id          TEXT NOT NULL,
    expires_ts         INTEGER,
    refresh_token_hash TEXT,
    created_ts         INTEGER NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_by_device ON access_tokens(user_id, device_id);
CREATE INDEX refresh_tokens_by_device ON refresh_tokens(user_id, device_id);
