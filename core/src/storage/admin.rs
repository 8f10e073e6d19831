//! What only the admin API needs: blocked rooms, purging a room, and users
//! as the admin API shows and changes them.

use sqlx::Row;

use super::{Result, Storage, is_unique_violation, read, to_completion, write};

/// A user as `GET /_synapse/admin/v2/users/{userId}` shows them.
#[derive(Debug, Clone)]
pub struct AdminUserRecord {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub is_guest: bool,
    pub deactivated: bool,
    pub shadow_banned: bool,
    pub user_type: Option<String>,
    pub created_ts: i64,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

impl Storage {
    /// Blocks a room (known to this server or not); blocking twice is fine.
    pub async fn block_room(&self, room_id: &str, by: &str) -> Result<()> {
        write!(self, pool => {
            sqlx::query(
                "INSERT INTO blocked_rooms (room_id, user_id) VALUES ($1, $2) ON CONFLICT (room_id) DO NOTHING",
            )
            .bind(room_id)
            .bind(by)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    pub async fn is_room_blocked(&self, room_id: &str) -> Result<bool> {
        read!(self, pool => {
            let found: Option<String> =
                sqlx::query_scalar("SELECT room_id FROM blocked_rooms WHERE room_id = $1")
                    .bind(room_id)
                    .fetch_optional(pool)
                    .await?;
            Ok(found.is_some())
        })
    }

    /// Deletes every alias of the room; returns them.
    pub async fn delete_room_aliases(&self, room_id: &str) -> Result<Vec<String>> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let aliases: Vec<String> =
                sqlx::query_scalar("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
                    .bind(room_id)
                    .fetch_all(&mut *tx)
                    .await?;
            sqlx::query("DELETE FROM room_aliases WHERE room_id = $1")
                .bind(room_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(aliases)
        })
    }

    /// Points every alias of `from` at `to`, now owned by `creator`;
    /// returns the aliases moved.
    pub async fn move_room_aliases(
        &self,
        from: &str,
        to: &str,
        creator: &str,
    ) -> Result<Vec<String>> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let aliases: Vec<String> =
                sqlx::query_scalar("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
                    .bind(from)
                    .fetch_all(&mut *tx)
                    .await?;
            sqlx::query("UPDATE room_aliases SET room_id = $1, creator = $2 WHERE room_id = $3")
                .bind(to)
                .bind(creator)
                .bind(from)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(aliases)
        })
    }

    /// Local users (those of `server_name`) and their current membership in
    /// the room.
    pub async fn local_memberships_in(
        &self,
        room_id: &str,
        server_name: &str,
    ) -> Result<Vec<(String, String)>> {
        let suffix = format!(":{server_name}");
        let rows: Vec<(String, Option<String>)> = read!(self, pool => {
            sqlx::query_as(
                "SELECT state_key, membership FROM current_state
                 WHERE room_id = $1 AND type = 'm.room.member' ORDER BY state_key",
            )
            .bind(room_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .filter(|(user, _)| user.ends_with(&suffix))
            .map(|(user, membership)| (user, membership.unwrap_or_default()))
            .collect())
    }

    /// Removes every trace of a room: its events, state, aliases, receipts,
    /// notifications, room account data and the room itself. Abuse reports
    /// about it stay. The caller holds the room's lock.
    pub async fn purge_room(&self, room_id: &str) -> Result<()> {
        let (this, room_id) = (self.clone(), room_id.to_owned());
        to_completion(async move { this.purge_room_inner(&room_id).await }).await
    }

    async fn purge_room_inner(&self, room_id: &str) -> Result<()> {
        const STATEMENTS: &[&str] = &[
            "DELETE FROM event_push_actions WHERE room_id = $1",
            "DELETE FROM receipts WHERE room_id = $1",
            "DELETE FROM account_data WHERE room_id = $1",
            "DELETE FROM event_txns WHERE room_id = $1",
            "DELETE FROM forgotten_rooms WHERE room_id = $1",
            "DELETE FROM room_aliases WHERE room_id = $1",
            "DELETE FROM current_state WHERE room_id = $1",
            "DELETE FROM forward_extremities WHERE room_id = $1",
            "DELETE FROM events WHERE room_id = $1",
            "DELETE FROM state_group_entries WHERE state_group IN (SELECT id FROM state_groups WHERE room_id = $1)",
            "DELETE FROM state_groups WHERE room_id = $1",
            "DELETE FROM rooms WHERE room_id = $1",
        ];
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            for statement in STATEMENTS {
                sqlx::query(*statement).bind(room_id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            self.caches.recent.write().forget_room(room_id);
            self.caches.memberships.clear();
            self.caches.unread.clear();
            self.caches.room_members.invalidate(room_id);
            self.caches.state_groups.clear();
            Ok(())
        })
    }

    pub async fn admin_user(&self, user_id: &str) -> Result<Option<AdminUserRecord>> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT u.user_id, u.password_hash, u.is_admin, u.is_guest, u.deactivated, u.shadow_banned,
                        u.user_type, u.created_ts, p.displayname, p.avatar_url
                 FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id
                 WHERE u.user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
            row.map(|row| {
                Ok(AdminUserRecord {
                    user_id: row.try_get("user_id")?,
                    password_hash: row.try_get("password_hash")?,
                    is_admin: row.try_get("is_admin")?,
                    is_guest: row.try_get("is_guest")?,
                    deactivated: row.try_get("deactivated")?,
                    shadow_banned: row.try_get("shadow_banned")?,
                    user_type: row.try_get("user_type")?,
                    created_ts: row.try_get("created_ts")?,
                    displayname: row.try_get("displayname")?,
                    avatar_url: row.try_get("avatar_url")?,
                })
            })
            .transpose()
        })
    }

    /// The user's identities at single sign-on providers:
    /// `(auth_provider, external_id)`.
    pub async fn external_ids_of(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        read!(self, pool => {
            sqlx::query_as(
                "SELECT auth_provider, external_id FROM user_external_ids WHERE user_id = $1
                 ORDER BY auth_provider, external_id",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await
        })
    }

    /// Replaces the user's identities at single sign-on providers;
    /// `Ok(false)` (and nothing changed) when one belongs to another user.
    pub async fn replace_external_ids(
        &self,
        user_id: &str,
        ids: &[(String, String)],
    ) -> Result<bool> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM user_external_ids WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            for (auth_provider, external_id) in ids {
                let inserted = sqlx::query(
                    "INSERT INTO user_external_ids (auth_provider, external_id, user_id) VALUES ($1, $2, $3)",
                )
                .bind(auth_provider)
                .bind(external_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await;
                match inserted {
                    Ok(_) => {}
                    Err(err) if is_unique_violation(&err) => return Ok(false),
                    Err(err) => return Err(err),
                }
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn set_admin(&self, user_id: &str, is_admin: bool) -> Result<()> {
        write!(self, pool => {
            sqlx::query("UPDATE users SET is_admin = $1 WHERE user_id = $2")
                .bind(is_admin)
                .bind(user_id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    pub async fn set_user_type(&self, user_id: &str, user_type: Option<&str>) -> Result<()> {
        write!(self, pool => {
            sqlx::query("UPDATE users SET user_type = $1 WHERE user_id = $2")
                .bind(user_type)
                .bind(user_id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Clears the deactivated mark (the admin API's reactivation).
    pub async fn reactivate_user(&self, user_id: &str) -> Result<()> {
        write!(self, pool => {
            sqlx::query("UPDATE users SET deactivated = $1 WHERE user_id = $2")
                .bind(false)
                .bind(user_id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }
}
