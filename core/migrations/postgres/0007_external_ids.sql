-- Users' identities at single sign-on providers (Synapse's table): the same
-- subject at the same provider maps to the same user on every login.
CREATE TABLE user_external_ids (
    auth_provider TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (user_id),
    PRIMARY KEY (auth_provider, external_id)
);
CREATE INDEX user_external_ids_user ON user_external_ids (user_id);
