-- Rooms, their events (signed PDUs) and their state.
CREATE TABLE rooms (
    room_id      TEXT PRIMARY KEY NOT NULL,
    room_version TEXT NOT NULL,
    creator      TEXT NOT NULL,
    -- From the current m.room.join_rules, for the user directory.
    join_rule    TEXT,
    is_public    BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts   BIGINT NOT NULL
);

-- State is stored as delta-encoded groups: a group lists the entries that
-- differ from `prev_group`; a group with no `prev_group` is a full snapshot.
-- `chain_length` bounds how many groups a look-up walks.
CREATE TABLE state_groups (
    id           BIGINT PRIMARY KEY NOT NULL,
    room_id      TEXT NOT NULL REFERENCES rooms(room_id),
    prev_group   BIGINT REFERENCES state_groups(id),
    chain_length BIGINT NOT NULL
);

CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL REFERENCES state_groups(id),
    type        TEXT NOT NULL,
    state_key   TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    PRIMARY KEY (state_group, type, state_key)
);

-- Every accepted event, in the order this server accepted it. `json` is the
-- full signed PDU in canonical JSON; `state_group` is the state after it.
CREATE TABLE events (
    stream_ordering  BIGSERIAL PRIMARY KEY,
    event_id         TEXT NOT NULL UNIQUE,
    room_id          TEXT NOT NULL REFERENCES rooms(room_id),
    sender           TEXT NOT NULL,
    type             TEXT NOT NULL,
    state_key        TEXT,
    depth            BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    state_group      BIGINT NOT NULL REFERENCES state_groups(id),
    redacted_by      TEXT,
    json             TEXT NOT NULL
);
CREATE INDEX events_by_room ON events(room_id, stream_ordering);
CREATE INDEX events_by_room_ts ON events(room_id, origin_server_ts);
CREATE INDEX events_by_state_key ON events(room_id, type, state_key);

-- The events with no children yet: the `prev_events` of the next event.
CREATE TABLE forward_extremities (
    room_id  TEXT NOT NULL REFERENCES rooms(room_id),
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- The room's state now, for fast reads; `membership` is set for m.room.member.
CREATE TABLE current_state (
    room_id    TEXT NOT NULL REFERENCES rooms(room_id),
    type       TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    membership TEXT,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_by_member ON current_state(state_key, membership) WHERE type = 'm.room.member';

-- Client transaction IDs, so a retried send yields the same event.
CREATE TABLE event_txns (
    room_id   TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id, device_id, txn_id)
);

CREATE TABLE room_aliases (
    alias   TEXT PRIMARY KEY NOT NULL,
    room_id TEXT NOT NULL REFERENCES rooms(room_id),
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_by_room ON room_aliases(room_id);

CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

CREATE TABLE event_reports (
    id          BIGSERIAL PRIMARY KEY,
    room_id     TEXT NOT NULL,
    event_id    TEXT,
    user_id     TEXT NOT NULL,
    reason      TEXT,
    received_ts BIGINT NOT NULL
);
