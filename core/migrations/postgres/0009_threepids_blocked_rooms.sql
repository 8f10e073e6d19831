-- Third-party identifiers (e-mail addresses, phone numbers) of local users
-- (Synapse's table): set by the admin API, listed and removed by the user,
-- and used to log in by e-mail address. An identifier belongs to one user.
CREATE TABLE user_threepids (
    user_id      TEXT NOT NULL REFERENCES users (user_id),
    medium       TEXT NOT NULL,
    address      TEXT NOT NULL,
    validated_at BIGINT NOT NULL,
    added_at     BIGINT NOT NULL,
    PRIMARY KEY (medium, address)
);
CREATE INDEX user_threepids_user ON user_threepids (user_id);

-- Rooms an admin blocked (Synapse's table): nobody on this server may join
-- or be invited to them any more, even before the server knows the room.
CREATE TABLE blocked_rooms (
    room_id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL
);
