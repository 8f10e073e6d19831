//! Where the live streams stand (see `crate::streams`).

use super::{Result, Storage, read};
use crate::streams::{Positions, Stream};

/// Takes a stream's next position inside the transaction `$tx`: the row lock
/// orders concurrent writers, so positions commit in the order handed out.
macro_rules! next_position {
    ($tx:expr, $stream:expr) => {
        sqlx::query_scalar::<_, i64>(
            "UPDATE stream_positions SET position = position + 1 WHERE stream = $1 RETURNING position",
        )
        .bind($stream.table_name().expect("a stored stream"))
        .fetch_one(&mut *$tx)
        .await?
    };
}
pub(crate) use next_position;

impl Storage {
    /// The stream position of the last event written.
    pub(super) async fn last_event_position(&self) -> Result<i64> {
        let last: Option<i64> = read!(self, pool => {
            sqlx::query_scalar("SELECT MAX(stream_ordering) FROM events")
                .fetch_one(pool)
                .await?
        });
        Ok(last.unwrap_or_default())
    }

    /// The committed position of every stored stream.
    pub async fn stream_positions(&self) -> Result<Positions> {
        let mut positions = Positions::default();
        read!(self, pool => {
            positions.set(Stream::Events, self.last_event_position().await?);
            let rows: Vec<(String, i64)> = sqlx::query_as("SELECT stream, position FROM stream_positions")
                .fetch_all(pool)
                .await?;
            for stream in [Stream::AccountData, Stream::Receipts, Stream::ToDevice, Stream::DeviceLists, Stream::Presence] {
                if let Some((_, position)) = rows.iter().find(|(name, _)| Some(name.as_str()) == stream.table_name()) {
                    positions.set(stream, *position);
                }
            }
        });
        Ok(positions)
    }
}
