-- The live streams /sync reads (the timeline's position is
-- events.stream_ordering). A write to a stream takes the next position by
-- bumping its row in the same transaction, so positions are handed out in
-- commit order, even across processes sharing one database.
CREATE TABLE stream_positions (
    stream   TEXT PRIMARY KEY NOT NULL,
    position BIGINT NOT NULL
);
INSERT INTO stream_positions (stream, position) VALUES
    ('account_data', 0), ('receipts', 0), ('to_device', 0),
    ('device_lists', 0), ('presence', 0);

CREATE TABLE filters (
    user_id   TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    json      TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- Global account data has room_id ''. Push rules live here as m.push_rules
-- and tags as the room's m.tag, as clients see them in /sync.
CREATE TABLE account_data (
    user_id   TEXT NOT NULL,
    room_id   TEXT NOT NULL,
    type      TEXT NOT NULL,
    content   TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_by_stream ON account_data(user_id, stream_id);

-- The latest receipt per room, type, user and thread ('' = unthreaded).
CREATE TABLE receipts (
    room_id               TEXT NOT NULL,
    receipt_type          TEXT NOT NULL,
    user_id               TEXT NOT NULL,
    thread_id             TEXT NOT NULL,
    event_id              TEXT NOT NULL,
    event_stream_ordering BIGINT NOT NULL,
    ts                    BIGINT NOT NULL,
    stream_id             BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_by_stream ON receipts(stream_id);
CREATE INDEX receipts_by_user ON receipts(user_id, room_id);

CREATE TABLE presence (
    user_id          TEXT PRIMARY KEY NOT NULL,
    state            TEXT NOT NULL,
    status_msg       TEXT,
    last_active_ts   BIGINT NOT NULL,
    stream_id        BIGINT NOT NULL
);
CREATE INDEX presence_by_stream ON presence(stream_id);

-- Send-to-device messages waiting for their device to acknowledge them.
CREATE TABLE to_device_inbox (
    stream_id BIGINT PRIMARY KEY NOT NULL,
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender    TEXT NOT NULL,
    type      TEXT NOT NULL,
    content   TEXT NOT NULL
);
CREATE INDEX to_device_by_device ON to_device_inbox(user_id, device_id, stream_id);

CREATE TABLE to_device_txns (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- Users whose devices (or, later, device keys) changed.
CREATE TABLE device_list_changes (
    stream_id BIGINT NOT NULL,
    user_id   TEXT NOT NULL
);
CREATE INDEX device_list_changes_by_stream ON device_list_changes(stream_id);

-- What the push rules decided for each local user and event: the source of
-- unread counts and of /notifications. thread_id is 'main' outside threads.
CREATE TABLE event_push_actions (
    user_id         TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id       TEXT NOT NULL,
    notify          INTEGER NOT NULL,
    highlight       INTEGER NOT NULL,
    actions         TEXT NOT NULL,
    ts              BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX push_actions_by_room ON event_push_actions(user_id, room_id, stream_ordering);
CREATE INDEX push_actions_by_stream ON event_push_actions(user_id, stream_ordering);

CREATE TABLE pushers (
    user_id             TEXT NOT NULL,
    device_id           TEXT,
    kind                TEXT NOT NULL,
    app_id              TEXT NOT NULL,
    pushkey             TEXT NOT NULL,
    app_display_name    TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag         TEXT,
    lang                TEXT NOT NULL,
    data                TEXT NOT NULL,
    created_ts          BIGINT NOT NULL,
    PRIMARY KEY (app_id, pushkey, user_id)
);

CREATE INDEX event_txns_by_event ON event_txns(event_id);
