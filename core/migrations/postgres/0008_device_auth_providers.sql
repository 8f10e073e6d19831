-- Which single sign-on session at which provider a device logged in
-- through (Synapse's table), so that the provider's back-channel logout
-- ends those devices. Deleting the device deletes its row.
CREATE TABLE device_auth_providers (
    user_id                  TEXT NOT NULL,
    device_id                TEXT NOT NULL,
    auth_provider_id         TEXT NOT NULL,
    auth_provider_session_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX device_auth_providers_session
    ON device_auth_providers (auth_provider_id, auth_provider_session_id);
