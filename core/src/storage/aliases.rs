//! Room aliases (spec: "Room aliases").

use super::{Result, Storage, is_unique_violation, read, write};

impl Storage {
    /// Maps `alias` to `room_id`; `Ok(false)` when the alias is taken.
    pub async fn create_alias(&self, alias: &str, room_id: &str, creator: &str) -> Result<bool> {
        write!(self, pool => {
            let result = sqlx::query("INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)")
                .bind(alias)
                .bind(room_id)
                .bind(creator)
                .execute(pool)
                .await;
            match result {
                Ok(_) => Ok(true),
                Err(err) if is_unique_violation(&err) => Ok(false),
                Err(err) => Err(err),
            }
        })
    }

    /// The room and creator of an alias.
    pub async fn alias(&self, alias: &str) -> Result<Option<(String, String)>> {
        read!(self, pool => {
            sqlx::query_as("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
                .bind(alias)
                .fetch_optional(pool)
                .await
        })
    }

    pub async fn delete_alias(&self, alias: &str) -> Result<()> {
        write!(self, pool => {
            sqlx::query("DELETE FROM room_aliases WHERE alias = $1")
                .bind(alias)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    pub async fn room_aliases(&self, room_id: &str) -> Result<Vec<String>> {
        read!(self, pool => {
            sqlx::query_scalar("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
                .bind(room_id)
                .fetch_all(pool)
                .await
        })
    }
}

impl Storage {
    /// Points every alias of `from` at `to` (used when a room is upgraded).
    pub async fn move_aliases(&self, from: &str, to: &str) -> Result<()> {
        write!(self, pool => {
            sqlx::query("UPDATE room_aliases SET room_id = $1 WHERE room_id = $2")
                .bind(to)
                .bind(from)
                .execute(pool)
                .await?;
            Ok(())
        })
    }
}
