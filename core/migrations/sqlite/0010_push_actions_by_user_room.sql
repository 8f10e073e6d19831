-- One B-tree for push actions instead of four (the rowid table, the primary
-- key and two indexes, each keyed by user): an event in a room of N members
-- writes N rows, and with four trees each commit rewrote about 4 × N pages.
-- Clustered by (user, room, stream ordering), a user's rows in a room sit
-- together, so the unread counts of a room are one range, and consecutive
-- events of a room land on the same page per user.
CREATE TABLE event_push_actions_by_user_room (
    user_id         TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    event_id        TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    notify          INTEGER NOT NULL,
    highlight       INTEGER NOT NULL,
    actions         TEXT NOT NULL,
    ts              BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, stream_ordering)
) WITHOUT ROWID;
INSERT INTO event_push_actions_by_user_room
    SELECT user_id, room_id, stream_ordering, event_id, thread_id, notify, highlight, actions, ts
    FROM event_push_actions;
DROP TABLE event_push_actions;
ALTER TABLE event_push_actions_by_user_room RENAME TO event_push_actions;
