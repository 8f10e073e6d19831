-- Local media: one row per media ID. `size` is NULL while an ID from
-- `/create` waits for its upload.
CREATE TABLE local_media (
    media_id      TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    created_ts    BIGINT NOT NULL,
    content_type  TEXT,
    upload_name   TEXT,
    size          BIGINT,
    sha256        TEXT,
    -- Uploaded while `enable_authenticated_media` was on: not served by
    -- the legacy unauthenticated endpoints.
    authenticated BOOLEAN NOT NULL,
    -- Thumbnails were generated (or found impossible): do not try again.
    thumbnailed   BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX local_media_pending ON local_media (user_id, created_ts) WHERE size IS NULL;

CREATE TABLE local_media_thumbnails (
    media_id     TEXT NOT NULL REFERENCES local_media (media_id) ON DELETE CASCADE,
    width        BIGINT NOT NULL,
    height       BIGINT NOT NULL,
    method       TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         BIGINT NOT NULL,
    PRIMARY KEY (media_id, width, height, method, content_type)
);
