-- Accounts, devices and the tokens that authenticate them.
CREATE TABLE users (
    user_id       TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    is_guest      BOOLEAN NOT NULL DEFAULT FALSE,
    user_type     TEXT,
    deactivated   BOOLEAN NOT NULL DEFAULT FALSE,
    shadow_banned BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts    BIGINT NOT NULL
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
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    created_ts   BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as SHA-256 hashes; the token itself is never kept.
CREATE TABLE refresh_tokens (
    token_hash     TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    expires_ts     BIGINT,
    session_end_ts BIGINT,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE access_tokens (
    token_hash         TEXT PRIMARY KEY NOT NULL,
    user_id            TEXT NOT NULL,
    device_id          TEXT NOT NULL,
    expires_ts         BIGINT,
    refresh_token_hash TEXT,
    created_ts         BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_by_device ON access_tokens(user_id, device_id);
CREATE INDEX refresh_tokens_by_device ON refresh_tokens(user_id, device_id);
