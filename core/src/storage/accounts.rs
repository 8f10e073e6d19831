//! Users and their profiles.

use sqlx::Row;

use super::{Result, Storage, now_ms, read, to_completion, write};

/// A user as the auth code needs to see it.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub is_guest: bool,
    pub deactivated: bool,
}

/// Everything needed to create an account.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub is_guest: bool,
    pub user_type: Option<String>,
    pub displayname: Option<String>,
    pub shadow_banned: bool,
}

impl Storage {
    /// Creates the user and their profile; `Ok(false)` when the ID is taken.
    pub async fn create_user(&self, user: &NewUser) -> Result<bool> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO users (user_id, password_hash, is_admin, is_guest, user_type, shadow_banned, created_ts)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(&user.user_id)
            .bind(&user.password_hash)
            .bind(user.is_admin)
            .bind(user.is_guest)
            .bind(&user.user_type)
            .bind(user.shadow_banned)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Ok(false);
            }
            sqlx::query("INSERT INTO profiles (user_id, displayname) VALUES ($1, $2)")
                .bind(&user.user_id)
                .bind(&user.displayname)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn user(&self, user_id: &str) -> Result<Option<UserRecord>> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT user_id, password_hash, is_admin, is_guest, deactivated
                 FROM users WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
            row.map(|row| {
                Ok(UserRecord {
                    user_id: row.try_get("user_id")?,
                    password_hash: row.try_get("password_hash")?,
                    is_admin: row.try_get("is_admin")?,
                    is_guest: row.try_get("is_guest")?,
                    deactivated: row.try_get("deactivated")?,
                })
            })
            .transpose()
        })
    }

    pub async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<()> {
        write!(self, pool => {
            sqlx::query("UPDATE users SET password_hash = $1 WHERE user_id = $2")
                .bind(hash)
                .bind(user_id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Marks the account deactivated and removes every device, token and
    /// pusher.
    pub async fn deactivate_user(&self, user_id: &str) -> Result<()> {
        let (this, user_id) = (self.clone(), user_id.to_owned());
        to_completion(async move {
            write!(this, pool => {
                let mut tx = pool.begin().await?;
                sqlx::query("UPDATE users SET deactivated = $1 WHERE user_id = $2")
                    .bind(true)
                    .bind(&user_id)
                    .execute(&mut *tx)
                    .await?;
                for table in ["devices", "pushers"] {
                    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE user_id = $1")))
                        .bind(&user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            })?;
            this.caches.pushers.invalidate(user_id.as_str());
            Ok(())
        })
        .await
    }

    pub async fn displayname(&self, user_id: &str) -> Result<Option<String>> {
        read!(self, pool => {
            sqlx::query_scalar("SELECT displayname FROM profiles WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(pool)
                .await
                .map(Option::flatten)
        })
    }
}

/// A user's profile fields.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

impl Storage {
    /// The profile of an existing user; `None` when there is no such user.
    pub async fn profile(&self, user_id: &str) -> Result<Option<Profile>> {
        read!(self, pool => {
            let row = sqlx::query("SELECT displayname, avatar_url FROM profiles WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(pool)
                .await?;
            row.map(|row| {
                Ok(Profile {
                    displayname: row.try_get("displayname")?,
                    avatar_url: row.try_get("avatar_url")?,
                })
            })
            .transpose()
        })
    }

    pub async fn set_profile(&self, user_id: &str, profile: &Profile) -> Result<()> {
        write!(self, pool => {
            sqlx::query("UPDATE profiles SET displayname = $1, avatar_url = $2 WHERE user_id = $3")
                .bind(&profile.displayname)
                .bind(&profile.avatar_url)
                .bind(user_id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Users matching `term` (in their ID or display name) who share a room
    /// with `searcher` or are joined to a room anyone may join, as Synapse's default
    /// user directory does. Returns at most `limit + 1` rows so the caller
    /// can tell whether there were more.
    pub async fn search_user_directory(
        &self,
        searcher: &str,
        term: &str,
        limit: i64,
    ) -> Result<Vec<(String, Profile)>> {
        let pattern = format!(
            "%{}%",
            term.to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT p.user_id, p.displayname, p.avatar_url FROM profiles p
                 JOIN users u ON u.user_id = p.user_id AND u.deactivated = $4
                 WHERE (LOWER(p.user_id) LIKE $2 ESCAPE '\\' OR LOWER(COALESCE(p.displayname, '')) LIKE $2 ESCAPE '\\')
                 AND EXISTS (
                     SELECT 1 FROM current_state theirs
                     WHERE theirs.type = 'm.room.member' AND theirs.state_key = p.user_id
                       AND theirs.membership = 'join'
                       AND (theirs.room_id IN (SELECT room_id FROM rooms WHERE join_rule = 'public')
                            OR theirs.room_id IN (
                                SELECT room_id FROM current_state mine
                                WHERE mine.type = 'm.room.member' AND mine.state_key = $1
                                  AND mine.membership = 'join')))
                 ORDER BY p.user_id LIMIT $3",
            )
            .bind(searcher)
            .bind(&pattern)
            .bind(limit + 1)
            .bind(false)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok((
                        row.try_get("user_id")?,
                        Profile {
                            displayname: row.try_get("displayname")?,
                            avatar_url: row.try_get("avatar_url")?,
                        },
                    ))
                })
                .collect()
        })
    }
}
