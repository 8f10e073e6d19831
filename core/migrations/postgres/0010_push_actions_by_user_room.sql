-- One index for push actions instead of three, each keyed by user: an event
-- in a room of N members writes N rows, and every index costs N more page
-- writes per commit. (user, room, stream ordering) serves the unread counts
-- of a room as one range; /notifications sorts the user's rows.
ALTER TABLE event_push_actions DROP CONSTRAINT event_push_actions_pkey;
DROP INDEX push_actions_by_room;
DROP INDEX push_actions_by_stream;
ALTER TABLE event_push_actions ADD PRIMARY KEY (user_id, room_id, stream_ordering);
