-- End-to-end encryption: the keys devices publish, and the server-side
-- backup of room keys. Every key is kept as the JSON its owner signed.

-- A device's identity keys, exactly as uploaded.
CREATE TABLE device_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    json      TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys wait here until claimed (and then are deleted). `key_id` is
-- the part after `<algorithm>:`.
CREATE TABLE one_time_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    json      TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- One fallback key per device and algorithm, handed out (and marked used)
-- when no one-time key is left, until the device replaces it.
CREATE TABLE fallback_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    json      TEXT NOT NULL,
    used      BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys: `key_type` is master, self_signing or user_signing;
-- `public_key` is the unpadded base64 ed25519 key (its key ID).
CREATE TABLE cross_signing_keys (
    user_id    TEXT NOT NULL,
    key_type   TEXT NOT NULL,
    public_key TEXT NOT NULL,
    json       TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded after the key they sign (POST /keys/signatures/upload),
-- merged into that key's `signatures` when it is queried. The target is a
-- device ID or a cross-signing public key.
CREATE TABLE key_signatures (
    signer_user_id TEXT NOT NULL,
    signer_key_id  TEXT NOT NULL,
    target_user_id TEXT NOT NULL,
    target_key_id  TEXT NOT NULL,
    signature      TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- Server-side key backup: versions (the newest undeleted one is current) and
-- the encrypted room keys in each.
CREATE TABLE room_key_backup_versions (
    user_id   TEXT NOT NULL,
    version   BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    etag      BIGINT NOT NULL,
    deleted   BIGINT NOT NULL,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE room_key_backups (
    user_id             TEXT NOT NULL,
    version             BIGINT NOT NULL,
    room_id             TEXT NOT NULL,
    session_id          TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count     BIGINT NOT NULL,
    is_verified         BIGINT NOT NULL,
    json                TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
