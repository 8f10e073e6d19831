-- Local media: one row per media ID. `size` is NULL while an ID from
-- `/create` waits for its upload.
CREATE TABLE local_media (
    media_id      TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    created_ts    INTEGER NOT NULL,
    content_type  TEXT,
    upload_name   TEXT,
    size          INTEGER,
    sha256        TEXT,
    -- Uploaded while `enable_authenticated_media` was on: not served by
    -- the legacy unauthenticated endpoints.
    authenticated INTEGER NOT NULL,
    -- Thumbnails were generated (or found impossible): do not try again.
    thumbnailed   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX local_media_pending ON local_media (user_id, created_ts) WHERE size IS NULL;

CREATE TABLE local_media_thumbnails (
    media_id     TEXT NOT NULL REFERENCES local_media (media_id) ON DELETE CASCADE,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    method       TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    PRIMARY KEY (media_id, width, height, method, content_type)
);
