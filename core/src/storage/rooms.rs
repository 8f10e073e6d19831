//! Rooms, their events and their state.
//!
//! State is kept as delta-encoded state groups (`state_groups` +
//! `state_group_entries`): a group holds only what changed since its
//! `prev_group`; every [`SNAPSHOT_INTERVAL`] groups a full snapshot starts a
//! new chain, so a look-up at any event reads at most that many groups.
//! `current_state` mirrors the latest group for fast reads.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::events::TimelineEventType;
use sqlx::Row;

use super::push::PushActionRow;
use super::{Result, Storage, now_ms, read, to_completion, write};
use crate::rooms::pdu::Pdu;

/// How many deltas may chain before a full snapshot is written.
pub const SNAPSHOT_INTERVAL: i64 = 100;

/// `(event type, state key)`.
pub type StateKey = (String, String);

/// A user's membership in a room: `(room, membership, the membership
/// event's stream position)`.
pub type Membership = (String, String, i64);

/// The rooms a user has a membership in: those they did not forget, and
/// those they forgot (which `/sync` no longer shows).
#[derive(Debug, Default)]
pub struct UserRooms {
    pub memberships: Vec<Membership>,
    pub forgotten: Vec<String>,
}

/// A room's joined members and invitees.
pub type JoinedAndInvited = (Vec<String>, Vec<String>);

#[derive(Debug, Clone)]
pub struct RoomRecord {
    pub room_id: String,
    pub room_version: String,
    pub creator: String,
    pub is_public: bool,
}

/// An event with where it sits in the stream.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub pdu: Arc<Pdu>,
    pub stream_ordering: i64,
    pub state_group: i64,
    pub redacted_by: Option<String>,
}

/// A new state group: `entries` are the changes since `prev_group`, or the
/// whole state when `prev_group` is `None`.
#[derive(Debug, Clone)]
pub struct NewStateGroup {
    pub id: i64,
    pub prev_group: Option<i64>,
    pub chain_length: i64,
    pub entries: Vec<(StateKey, String)>,
}

/// Everything one accepted event changes, written in one transaction.
#[derive(Debug, Clone)]
pub struct EventWrite {
    pub pdu: Arc<Pdu>,
    /// Set for the `m.room.create` event: the room row to create.
    pub new_room: Option<RoomRecord>,
    pub state_group: i64,
    pub new_state_group: Option<NewStateGroup>,
    /// The extremities this event replaces.
    pub replaces_extremities: Vec<String>,
    /// `(user, device, txn)` for client sends.
    pub txn: Option<(String, String, String)>,
    /// What the local members' push rules decided for this event.
    pub push_actions: Vec<PushActionRow>,
}

macro_rules! stored_event {
    ($row:expr) => {{
        let row = $row;
        let event_id: String = row.try_get("event_id")?;
        let json: String = row.try_get("json")?;
        let pdu =
            Pdu::from_stored(&event_id, json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        StoredEvent {
            pdu: Arc::new(pdu),
            stream_ordering: row.try_get("stream_ordering")?,
            state_group: row.try_get("state_group")?,
            redacted_by: row.try_get("redacted_by")?,
        }
    }};
}

/// Every row as a [`StoredEvent`].
macro_rules! stored_events {
    ($rows:expr) => {{
        let rows = $rows;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(stored_event!(row));
        }
        out
    }};
}

/// An optional row as an optional [`StoredEvent`].
macro_rules! optional_stored_event {
    ($row:expr) => {
        match $row {
            Some(row) => Some(stored_event!(row)),
            None => None,
        }
    };
}

const EVENT_COLUMNS: &str = "event_id, json, stream_ordering, state_group, redacted_by";

/// Rows per multi-row insert into `event_push_actions`: 9 parameters each,
/// well under SQLite's limit of 32,766 parameters per statement.
const PUSH_ACTIONS_PER_INSERT: usize = 1_000;

/// Rows per multi-row insert into `state_group_entries` (4 parameters each).
const STATE_ENTRIES_PER_INSERT: usize = 5_000;

/// A room ID and an event ID in it.
type RoomEventId<'a> = (&'a str, &'a str);

/// The batch's net change to its rooms' forward extremities, as
/// `(added, removed)` pairs of room and event ID: an event that a later
/// event of the same batch replaces is neither added nor removed.
fn extremity_changes(batch: &[EventWrite]) -> (Vec<RoomEventId<'_>>, Vec<RoomEventId<'_>>) {
    let replaced: HashSet<(&str, &str)> = batch
        .iter()
        .flat_map(|write| {
            let room_id = write.pdu.room_id.as_str();
            write
                .replaces_extremities
                .iter()
                .map(move |old| (room_id, old.as_str()))
        })
        .collect();
    let added: Vec<(&str, &str)> = batch
        .iter()
        .map(|write| (write.pdu.room_id.as_str(), write.pdu.event_id.as_str()))
        .filter(|new| !replaced.contains(new))
        .collect();
    let in_batch: HashSet<&str> = batch
        .iter()
        .map(|write| write.pdu.event_id.as_str())
        .collect();
    let removed: Vec<(&str, &str)> = replaced
        .into_iter()
        .filter(|(_, event_id)| !in_batch.contains(event_id))
        .collect();
    (added, removed)
}

/// A write transaction whose statements are sent together where the backend
/// allows it. SQLite takes the whole transaction, `BEGIN` to `COMMIT`, as one
/// query: one round trip to its connection's thread instead of one per
/// statement. PostgreSQL's protocol takes one statement with parameters at a
/// time, so there each runs on its own. What the statements return (one
/// integer per row, from `RETURNING`) is collected in order.
///
/// A transaction that does not commit (a statement failed, or the future
/// was dropped part-way) closes its connection, which rolls it back: the
/// connection must not go back to the pool inside it.
struct BatchTransaction<'c, DB: sqlx::Database> {
    connection: &'c mut sqlx::pool::PoolConnection<DB>,
    sql: sqlx::QueryBuilder<DB>,
    statements: usize,
    returned: Vec<i64>,
    committed: bool,
}

impl<'c, DB: sqlx::Database> BatchTransaction<'c, DB>
where
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    fn begin(connection: &'c mut sqlx::pool::PoolConnection<DB>) -> Self {
        // Not the builder's initial text, which every reset would keep.
        let mut sql = sqlx::QueryBuilder::new("");
        sql.push("BEGIN");
        Self {
            connection,
            sql,
            statements: 1,
            returned: Vec::new(),
            committed: false,
        }
    }

    /// Where the next statement is to be written.
    async fn next(&mut self) -> Result<&mut sqlx::QueryBuilder<DB>> {
        if self.statements > 0 {
            if DB::NAME == "SQLite" {
                self.sql.push("; ");
            } else {
                self.flush().await?;
            }
        }
        self.statements += 1;
        Ok(&mut self.sql)
    }

    /// Runs what is not run yet.
    async fn flush(&mut self) -> Result<()> {
        if self.statements > 0 {
            let rows = self
                .sql
                .build_query_scalar::<i64>()
                .fetch_all(&mut **self.connection)
                .await?;
            self.returned.extend(rows);
            self.sql.reset();
            self.statements = 0;
        }
        Ok(())
    }

    /// Commits; returns what the statements returned.
    async fn commit(mut self) -> Result<Vec<i64>> {
        self.next().await?.push("COMMIT");
        self.flush().await?;
        self.committed = true;
        Ok(std::mem::take(&mut self.returned))
    }
}

impl<DB: sqlx::Database> Drop for BatchTransaction<'_, DB> {
    fn drop(&mut self) {
        if !self.committed {
            self.connection.close_on_drop();
        }
    }
}

impl Storage {
    /// Writes a batch of accepted events in one transaction (one fsync for
    /// the lot); returns each event's stream ordering.
    pub async fn persist_events(&self, batch: &[EventWrite]) -> Result<Vec<i64>> {
        write!(self, pool => {
            let mut connection = pool.acquire().await?;
            // Unread counts gain the new actions once committed; reads in
            // between are not kept, as they may already include them.
            let counting = self.caches.unread.begin_change();
            let written: Result<Vec<i64>> = async {
                let mut tx = BatchTransaction::begin(&mut connection);
                for write in batch {
                    let pdu = &write.pdu;
                    if let Some(room) = &write.new_room {
                        let sql = tx.next().await?;
                        sql.push("INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts) ");
                        sql.push_values([room], |mut row, room| {
                            row.push_bind(room.room_id.as_str())
                                .push_bind(room.room_version.as_str())
                                .push_bind(room.creator.as_str())
                                .push_bind(room.is_public)
                                .push_bind(now_ms());
                        });
                    }
                    if let Some(group) = &write.new_state_group {
                        let sql = tx.next().await?;
                        sql.push("INSERT INTO state_groups (id, room_id, prev_group, chain_length) ");
                        sql.push_values([group], |mut row, group| {
                            row.push_bind(group.id)
                                .push_bind(pdu.room_id.as_str())
                                .push_bind(group.prev_group)
                                .push_bind(group.chain_length);
                        });
                        for entries in group.entries.chunks(STATE_ENTRIES_PER_INSERT) {
                            let sql = tx.next().await?;
                            sql.push("INSERT INTO state_group_entries (state_group, type, state_key, event_id) ");
                            sql.push_values(entries, |mut row, ((kind, state_key), event_id)| {
                                row.push_bind(group.id)
                                    .push_bind(kind.as_str())
                                    .push_bind(state_key.as_str())
                                    .push_bind(event_id.as_str());
                            });
                        }
                    }
                    let sql = tx.next().await?;
                    sql.push(
                        "INSERT INTO events (event_id, room_id, sender, type, state_key, depth,
                             origin_server_ts, state_group, json) ",
                    );
                    sql.push_values([pdu], |mut row, pdu| {
                        row.push_bind(pdu.event_id.as_str())
                            .push_bind(pdu.room_id.as_str())
                            .push_bind(pdu.sender.as_str())
                            .push_bind(pdu.kind.to_string())
                            .push_bind(pdu.state_key.as_deref())
                            .push_bind(pdu.depth as i64)
                            .push_bind(i64::from(pdu.origin_server_ts.get()))
                            .push_bind(write.state_group)
                            .push_bind(pdu.json.as_str());
                    });
                    sql.push(" RETURNING stream_ordering");
                    if let Some(state_key) = &pdu.state_key {
                        let membership = (pdu.kind == TimelineEventType::RoomMember)
                            .then(|| pdu.content_str("membership"))
                            .flatten();
                        let sql = tx.next().await?;
                        sql.push("INSERT INTO current_state (room_id, type, state_key, event_id, membership) ");
                        sql.push_values([pdu], |mut row, pdu| {
                            row.push_bind(pdu.room_id.as_str())
                                .push_bind(pdu.kind.to_string())
                                .push_bind(state_key.as_str())
                                .push_bind(pdu.event_id.as_str())
                                .push_bind(membership.as_deref());
                        });
                        sql.push(
                            " ON CONFLICT (room_id, type, state_key)
                             DO UPDATE SET event_id = excluded.event_id, membership = excluded.membership",
                        );
                        // A new membership brings a forgotten room back.
                        if membership.is_some() {
                            let sql = tx.next().await?;
                            sql.push("DELETE FROM forgotten_rooms WHERE user_id = ")
                                .push_bind(state_key.as_str())
                                .push(" AND room_id = ")
                                .push_bind(pdu.room_id.as_str());
                        }
                    }
                    if let Some(redacted) = &pdu.redacts {
                        let sql = tx.next().await?;
                        sql.push("UPDATE events SET redacted_by = ")
                            .push_bind(pdu.event_id.as_str())
                            .push(" WHERE event_id = ")
                            .push_bind(redacted.as_str())
                            .push(" AND room_id = ")
                            .push_bind(pdu.room_id.as_str())
                            .push(" AND redacted_by IS NULL");
                    }
                    if pdu.kind == TimelineEventType::RoomJoinRules && pdu.state_key.as_deref() == Some("") {
                        let sql = tx.next().await?;
                        sql.push("UPDATE rooms SET join_rule = ")
                            .push_bind(pdu.content_str("join_rule"))
                            .push(" WHERE room_id = ")
                            .push_bind(pdu.room_id.as_str());
                    }
                }
                // What the batch adds besides its events goes in one statement per
                // table, not one per event.
                let (added, removed) = extremity_changes(batch);
                if !removed.is_empty() {
                    let sql = tx.next().await?;
                    sql.push("DELETE FROM forward_extremities WHERE (room_id, event_id) IN (");
                    sql.push_values(&removed, |mut row, (room_id, event_id)| {
                        row.push_bind(*room_id).push_bind(*event_id);
                    });
                    sql.push(")");
                }
                if !added.is_empty() {
                    let sql = tx.next().await?;
                    sql.push("INSERT INTO forward_extremities (room_id, event_id) ");
                    sql.push_values(&added, |mut row, (room_id, event_id)| {
                        row.push_bind(*room_id).push_bind(*event_id);
                    });
                }
                let txns: Vec<_> = batch
                    .iter()
                    .filter_map(|write| write.txn.as_ref().map(|txn| (&write.pdu, txn)))
                    .collect();
                if !txns.is_empty() {
                    let sql = tx.next().await?;
                    sql.push("INSERT INTO event_txns (room_id, user_id, device_id, txn_id, event_id) ");
                    sql.push_values(&txns, |mut row, (pdu, (user, device, txn))| {
                        row.push_bind(pdu.room_id.as_str())
                            .push_bind(user.as_str())
                            .push_bind(device.as_str())
                            .push_bind(txn.as_str())
                            .push_bind(pdu.event_id.as_str());
                    });
                    sql.push(" ON CONFLICT DO NOTHING");
                }
                // Everyone the events notify (a room's every member, usually). The
                // events' stream orderings are not known before the commit on SQLite,
                // so each row looks its event's up.
                let actions: Vec<_> = batch
                    .iter()
                    .flat_map(|write| write.push_actions.iter().map(move |action| (&write.pdu, action)))
                    .collect();
                // A big room's actions go in full chunks of one fixed text, each on its
                // own, so that the connection's statement cache keeps serving them.
                let big_room = actions.len() >= PUSH_ACTIONS_PER_INSERT;
                for actions in actions.chunks(PUSH_ACTIONS_PER_INSERT) {
                    if big_room {
                        tx.flush().await?;
                    }
                    let sql = tx.next().await?;
                    sql.push(
                        "INSERT INTO event_push_actions (user_id, room_id, event_id, stream_ordering,
                             thread_id, notify, highlight, actions, ts) ",
                    );
                    sql.push_values(actions, |mut row, (pdu, action)| {
                        row.push_bind(action.user_id.as_str())
                            .push_bind(pdu.room_id.as_str())
                            .push_bind(pdu.event_id.as_str())
                            .push_unseparated(", (SELECT stream_ordering FROM events WHERE event_id = ")
                            .push_bind_unseparated(pdu.event_id.as_str())
                            .push_unseparated(")")
                            .push_bind(action.thread_id.as_str())
                            .push_bind(action.notify)
                            .push_bind(action.highlight)
                            .push_bind(action.actions.as_str())
                            .push_bind(i64::from(pdu.origin_server_ts.get()));
                    });
                }
                tx.commit().await
            }
            .await;
            let orderings = written?;
            // Each event's INSERT returns its ordering, so this cannot fail
            // (and if it did, the batch is committed but reported failed:
            // its rooms reload their heads from the database).
            if orderings.len() != batch.len() {
                return Err(sqlx::Error::Protocol(format!(
                    "{} stream orderings for {} committed events",
                    orderings.len(),
                    batch.len()
                )));
            }
            self.events_committed(batch, &orderings);
            drop(counting);
            Ok(orderings)
        })
    }

    /// Brings the caches up to a committed batch of events.
    fn events_committed(&self, batch: &[EventWrite], orderings: &[i64]) {
        self.caches.recent.write().record(batch, orderings);
        for write in batch {
            let pdu = &write.pdu;
            if pdu.kind == TimelineEventType::RoomMember
                && let Some(member) = &pdu.state_key
            {
                self.caches.memberships.invalidate(member.as_str());
                self.caches.room_members.invalidate(pdu.room_id.as_str());
            }
            // A new event is after every receipt: it simply adds to the
            // counts of whom it notifies.
            for action in &write.push_actions {
                self.caches
                    .unread
                    .update(action.user_id.as_str(), |counts| {
                        let counts = Arc::make_mut(counts)
                            .entry((pdu.room_id.to_string(), action.thread_id.clone()))
                            .or_default();
                        counts.notifications += i64::from(action.notify);
                        counts.highlights += i64::from(action.highlight);
                    });
            }
        }
    }

    /// Stores the resolution of a forked room: a snapshot state group and
    /// the current state it becomes.
    pub async fn write_resolved_state(
        &self,
        room_id: &str,
        group: &NewStateGroup,
        state: &[Arc<Pdu>],
    ) -> Result<()> {
        let (this, room_id) = (self.clone(), room_id.to_owned());
        let (group, state) = (group.clone(), state.to_vec());
        to_completion(async move {
            this.write_resolved_state_inner(&room_id, &group, &state)
                .await
        })
        .await
    }

    async fn write_resolved_state_inner(
        &self,
        room_id: &str,
        group: &NewStateGroup,
        state: &[Arc<Pdu>],
    ) -> Result<()> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES ($1, $2, NULL, 0)")
                .bind(group.id)
                .bind(room_id)
                .execute(&mut *tx)
                .await?;
            for ((kind, state_key), event_id) in &group.entries {
                sqlx::query(
                    "INSERT INTO state_group_entries (state_group, type, state_key, event_id) VALUES ($1, $2, $3, $4)",
                )
                .bind(group.id)
                .bind(kind)
                .bind(state_key)
                .bind(event_id)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("DELETE FROM current_state WHERE room_id = $1")
                .bind(room_id)
                .execute(&mut *tx)
                .await?;
            for pdu in state {
                let membership = (pdu.kind == TimelineEventType::RoomMember)
                    .then(|| pdu.content_str("membership"))
                    .flatten();
                sqlx::query(
                    "INSERT INTO current_state (room_id, type, state_key, event_id, membership)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(room_id)
                .bind(pdu.kind.to_string())
                .bind(&pdu.state_key)
                .bind(pdu.event_id.as_str())
                .bind(membership)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            // Anyone's membership may have changed.
            self.caches.memberships.clear();
            self.caches.room_members.invalidate(room_id);
            Ok(())
        })
    }

    pub async fn room(&self, room_id: &str) -> Result<Option<RoomRecord>> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT room_id, room_version, creator, is_public FROM rooms WHERE room_id = $1",
            )
            .bind(room_id)
            .fetch_optional(pool)
            .await?;
            row.map(|row| {
                Ok(RoomRecord {
                    room_id: row.try_get("room_id")?,
                    room_version: row.try_get("room_version")?,
                    creator: row.try_get("creator")?,
                    is_public: row.try_get("is_public")?,
                })
            })
            .transpose()
        })
    }

    /// The highest state group ID allocated so far.
    pub async fn max_state_group(&self) -> Result<i64> {
        read!(self, pool => {
            sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(id) FROM state_groups")
                .fetch_one(pool)
                .await
                .map(Option::unwrap_or_default)
        })
    }

    pub async fn state_group_chain_length(&self, group: i64) -> Result<i64> {
        read!(self, pool => {
            sqlx::query_scalar("SELECT chain_length FROM state_groups WHERE id = $1")
                .bind(group)
                .fetch_one(pool)
                .await
        })
    }

    pub async fn forward_extremities(&self, room_id: &str) -> Result<Vec<StoredEvent>> {
        read!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(&*format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN
                 (SELECT event_id FROM forward_extremities WHERE room_id = $1)
                 ORDER BY stream_ordering"
            )))
            .bind(room_id)
            .fetch_all(pool)
            .await?;
            Ok(stored_events!(rows))
        })
    }

    pub async fn event(&self, event_id: &str) -> Result<Option<StoredEvent>> {
        read!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(&*format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1")))
                .bind(event_id)
                .fetch_optional(pool)
                .await?;
            Ok(optional_stored_event!(row))
        })
    }

    /// The events with these IDs that exist, in no particular order.
    pub async fn events(&self, event_ids: &[String]) -> Result<Vec<StoredEvent>> {
        let (mut out, missing) = self.caches.recent.read().events(event_ids);
        // Chunked so the statement stays within both backends' parameter limits.
        for chunk in missing.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({})",
                placeholders.join(", ")
            );
            read!(self, pool => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(&*sql));
                for id in chunk {
                    query = query.bind(id);
                }
                for row in query.fetch_all(pool).await? {
                    out.push(stored_event!(row));
                }
            });
        }
        Ok(out)
    }

    /// The event a client's transaction produced, if it was already sent.
    pub async fn txn_event(
        &self,
        room_id: &str,
        (user_id, device_id, txn_id): &crate::rooms::TxnKey,
    ) -> Result<Option<String>> {
        read!(self, pool => {
            sqlx::query_scalar(
                "SELECT event_id FROM event_txns
                 WHERE room_id = $1 AND user_id = $2 AND device_id = $3 AND txn_id = $4",
            )
            .bind(room_id)
            .bind(user_id)
            .bind(device_id)
            .bind(txn_id)
            .fetch_optional(pool)
            .await
        })
    }

    /// The user's membership events in the room, as `(stream position,
    /// membership)`, oldest first.
    pub async fn membership_positions(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Vec<(i64, String)>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2
             ORDER BY stream_ordering"
        );
        read!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(&*sql)).bind(room_id).bind(user_id).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let event = stored_event!(row);
                out.push((event.stream_ordering, event.pdu.content_str("membership").unwrap_or_default()));
            }
            Ok(out)
        })
    }

    /// The full state map of a state group: its chain is walked in one
    /// recursive query, the nearest entry for each key wins.
    pub async fn state_at_group(&self, group: i64) -> Result<Arc<HashMap<StateKey, String>>> {
        self.caches
            .state_groups
            .get_or_load(&group, async {
                Ok(Arc::new(self.state_at_group_filtered(group, None).await?))
            })
            .await
    }

    /// One entry of a state group's state.
    pub async fn state_entry_at_group(
        &self,
        group: i64,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<String>> {
        let mut map = self
            .state_at_group_filtered(group, Some((kind, state_key)))
            .await?;
        Ok(map.remove(&(kind.to_owned(), state_key.to_owned())))
    }

    // `chain CROSS JOIN entries` makes SQLite walk the (at most
    // SNAPSHOT_INTERVAL) groups first and look each one up by primary key;
    // with a plain JOIN it may scan every room's entries instead.
    async fn state_at_group_filtered(
        &self,
        group: i64,
        only: Option<(&str, &str)>,
    ) -> Result<HashMap<StateKey, String>> {
        let filter = if only.is_some() {
            "AND e.type = $2 AND e.state_key = $3"
        } else {
            ""
        };
        let sql = format!(
            "WITH RECURSIVE chain(id, prev, distance) AS (
                 SELECT id, prev_group, 0 FROM state_groups WHERE id = $1
                 UNION ALL
                 SELECT g.id, g.prev_group, c.distance + 1
                 FROM state_groups g JOIN chain c ON g.id = c.prev
             )
             SELECT e.type, e.state_key, e.event_id
             FROM chain c CROSS JOIN state_group_entries e
             WHERE e.state_group = c.id {filter}
             ORDER BY c.distance DESC"
        );
        read!(self, pool => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(&*sql)).bind(group);
            if let Some((kind, state_key)) = only {
                query = query.bind(kind).bind(state_key);
            }
            let rows = query.fetch_all(pool).await?;
            // Farthest first, so nearer groups overwrite older entries.
            let mut state = HashMap::with_capacity(rows.len());
            for row in rows {
                state.insert((row.try_get("type")?, row.try_get("state_key")?), row.try_get("event_id")?);
            }
            Ok(state)
        })
    }

    /// The room's current state as `(key, event ID)`.
    pub async fn current_state_ids(&self, room_id: &str) -> Result<HashMap<StateKey, String>> {
        read!(self, pool => {
            let rows = sqlx::query("SELECT type, state_key, event_id FROM current_state WHERE room_id = $1")
                .bind(room_id)
                .fetch_all(pool)
                .await?;
            let mut state = HashMap::with_capacity(rows.len());
            for row in rows {
                state.insert((row.try_get("type")?, row.try_get("state_key")?), row.try_get("event_id")?);
            }
            Ok(state)
        })
    }

    pub async fn current_state_event(
        &self,
        room_id: &str,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<StoredEvent>> {
        read!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(&*format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE event_id =
                 (SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3)"
            )))
            .bind(room_id)
            .bind(kind)
            .bind(state_key)
            .fetch_optional(pool)
            .await?;
            Ok(optional_stored_event!(row))
        })
    }

    /// A room's current state events of one type, whatever their state key.
    pub async fn current_state_of_type(
        &self,
        room_id: &str,
        kind: &str,
    ) -> Result<Vec<StoredEvent>> {
        read!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(&*format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN
                 (SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2)"
            )))
            .bind(room_id)
            .bind(kind)
            .fetch_all(pool)
            .await?;
            Ok(stored_events!(rows))
        })
    }

    /// A user's current membership in a room and the event that set it.
    pub async fn membership(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Option<(String, String)>> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT membership, event_id FROM current_state
                 WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2",
            )
            .bind(room_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
            row.map(|row| Ok((row.try_get::<Option<String>, _>("membership")?.unwrap_or_default(), row.try_get("event_id")?)))
                .transpose()
        })
    }

    /// Rooms in which the user's current membership is `membership`.
    pub async fn rooms_with_membership(
        &self,
        user_id: &str,
        membership: &str,
    ) -> Result<Vec<String>> {
        read!(self, pool => {
            sqlx::query_scalar(
                "SELECT room_id FROM current_state
                 WHERE type = 'm.room.member' AND state_key = $1 AND membership = $2 ORDER BY room_id",
            )
            .bind(user_id)
            .bind(membership)
            .fetch_all(pool)
            .await
        })
    }

    /// Users whose current membership in the room is `membership`.
    /// The room's joined and invited members, in one query.
    pub async fn joined_and_invited(&self, room_id: &str) -> Result<Arc<JoinedAndInvited>> {
        self.caches
            .room_members
            .get_or_load(&room_id.to_owned(), async {
                Ok(Arc::new(self.joined_and_invited_uncached(room_id).await?))
            })
            .await
    }

    async fn joined_and_invited_uncached(&self, room_id: &str) -> Result<JoinedAndInvited> {
        let rows: Vec<(String, String)> = read!(self, pool => {
            sqlx::query_as(
                "SELECT state_key, membership FROM current_state
                 WHERE room_id = $1 AND type = 'm.room.member' AND membership IN ('join', 'invite')
                 ORDER BY state_key",
            )
            .bind(room_id)
            .fetch_all(pool)
            .await?
        });
        let (joined, invited): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|(_, membership)| membership == "join");
        Ok((
            joined.into_iter().map(|(user, _)| user).collect(),
            invited.into_iter().map(|(user, _)| user).collect(),
        ))
    }

    pub async fn room_members_with(&self, room_id: &str, membership: &str) -> Result<Vec<String>> {
        read!(self, pool => {
            sqlx::query_scalar(
                "SELECT state_key FROM current_state
                 WHERE room_id = $1 AND type = 'm.room.member' AND membership = $2 ORDER BY state_key",
            )
            .bind(room_id)
            .bind(membership)
            .fetch_all(pool)
            .await
        })
    }

    /// Events of a room between two stream positions, exclusive of `from`.
    /// Backwards (`forward == false`) returns newest first.
    pub async fn room_events(
        &self,
        room_id: &str,
        from: i64,
        to: Option<i64>,
        forward: bool,
        limit: i64,
    ) -> Result<Vec<StoredEvent>> {
        if let Some(events) = self.caches.recent.read().room_events(
            room_id,
            from,
            to,
            forward,
            limit.try_into().unwrap_or_default(),
        ) {
            return Ok(events);
        }
        let sql = if forward {
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering > $2
                 AND stream_ordering <= $3 ORDER BY stream_ordering ASC LIMIT $4"
            )
        } else {
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering < $2
                 AND stream_ordering >= $3 ORDER BY stream_ordering DESC LIMIT $4"
            )
        };
        let to = to.unwrap_or(if forward { i64::MAX } else { 0 });
        read!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(&*sql))
                .bind(room_id)
                .bind(from)
                .bind(to)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            Ok(stored_events!(rows))
        })
    }

    /// Every room the user has a membership in: `(room, membership, the
    /// membership event's stream position)`.
    pub async fn memberships_of(&self, user_id: &str) -> Result<Arc<UserRooms>> {
        self.caches
            .memberships
            .get_or_load(&user_id.to_owned(), async {
                Ok(Arc::new(self.memberships_of_uncached(user_id).await?))
            })
            .await
    }

    async fn memberships_of_uncached(&self, user_id: &str) -> Result<UserRooms> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT c.room_id, c.membership, e.stream_ordering,
                     CAST(CASE WHEN EXISTS (SELECT 1 FROM forgotten_rooms f
                                            WHERE f.user_id = $1 AND f.room_id = c.room_id)
                          THEN 1 ELSE 0 END AS BIGINT) AS forgotten
                 FROM current_state c JOIN events e ON e.event_id = c.event_id
                 WHERE c.type = 'm.room.member' AND c.state_key = $1",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?;
            let mut rooms = UserRooms::default();
            for row in rows {
                let room_id: String = row.try_get("room_id")?;
                if row.try_get::<i64, _>("forgotten")? == 1 {
                    rooms.forgotten.push(room_id);
                    continue;
                }
                let membership = row.try_get::<Option<String>, _>("membership")?.unwrap_or_default();
                rooms.memberships.push((room_id, membership, row.try_get("stream_ordering")?));
            }
            Ok(rooms)
        })
    }

    /// Those of `rooms` with events in the stream range `(since, upto]`.
    pub async fn rooms_with_events_between<'r>(
        &self,
        since: i64,
        upto: i64,
        rooms: &[&'r str],
    ) -> Result<Vec<&'r str>> {
        if let Some(found) =
            self.caches
                .recent
                .read()
                .rooms_between(since, upto, rooms.iter().copied())
        {
            return Ok(found);
        }
        let with_events: HashSet<String> = read!(self, pool => {
            sqlx::query_scalar(
                "SELECT DISTINCT room_id FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2",
            )
            .bind(since)
            .bind(upto)
            .fetch_all(pool)
            .await
        })?
        .into_iter()
        .collect();
        Ok(rooms
            .iter()
            .copied()
            .filter(|room| with_events.contains(*room))
            .collect())
    }

    /// The state group after the room's last event at or before `position`.
    pub async fn state_group_at(&self, room_id: &str, position: i64) -> Result<Option<i64>> {
        if let Some(group) = self.caches.recent.read().state_group_at(room_id, position) {
            return Ok(Some(group));
        }
        read!(self, pool => {
            sqlx::query_scalar(
                "SELECT state_group FROM events WHERE room_id = $1 AND stream_ordering <= $2
                 ORDER BY stream_ordering DESC LIMIT 1",
            )
            .bind(room_id)
            .bind(position)
            .fetch_optional(pool)
            .await
        })
    }

    /// The transaction IDs a device sent these events with.
    pub async fn txn_ids(
        &self,
        user_id: &str,
        device_id: &str,
        event_ids: &[String],
    ) -> Result<HashMap<String, String>> {
        if event_ids.is_empty() {
            return Ok(HashMap::new());
        }
        if let Some(txns) = self
            .caches
            .recent
            .read()
            .txn_ids(user_id, device_id, event_ids)
        {
            return Ok(txns);
        }
        let placeholders: Vec<String> = (3..event_ids.len() + 3).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT event_id, txn_id FROM event_txns
             WHERE user_id = $1 AND device_id = $2 AND event_id IN ({})",
            placeholders.join(", ")
        );
        read!(self, pool => {
            let mut query = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(&*sql)).bind(user_id).bind(device_id);
            for id in event_ids {
                query = query.bind(id);
            }
            Ok(query.fetch_all(pool).await?.into_iter().collect())
        })
    }

    /// Users joined to at least one room the user is joined to (the user too).
    pub async fn users_sharing_rooms(&self, user_id: &str) -> Result<Vec<String>> {
        read!(self, pool => {
            sqlx::query_scalar(
                "SELECT DISTINCT m.state_key FROM current_state m
                 WHERE m.type = 'm.room.member' AND m.membership = 'join' AND m.room_id IN
                   (SELECT room_id FROM current_state
                    WHERE type = 'm.room.member' AND state_key = $1 AND membership = 'join')",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await
        })
    }

    /// The newest stream position of a room.
    pub async fn room_max_stream(&self, room_id: &str) -> Result<i64> {
        read!(self, pool => {
            sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(stream_ordering) FROM events WHERE room_id = $1")
                .bind(room_id)
                .fetch_one(pool)
                .await
                .map(Option::unwrap_or_default)
        })
    }

    /// The event closest to `ts` in the given direction.
    pub async fn event_near_ts(
        &self,
        room_id: &str,
        ts: i64,
        forward: bool,
    ) -> Result<Option<StoredEvent>> {
        let sql = if forward {
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND origin_server_ts >= $2
                     ORDER BY origin_server_ts ASC, stream_ordering ASC LIMIT 1"
            )
        } else {
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND origin_server_ts <= $2
                     ORDER BY origin_server_ts DESC, stream_ordering DESC LIMIT 1"
            )
        };
        read!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(&*sql)).bind(room_id).bind(ts).fetch_optional(pool).await?;
            Ok(optional_stored_event!(row))
        })
    }

    pub async fn forget_room(&self, user_id: &str, room_id: &str) -> Result<()> {
        let (this, user_id, room_id) = (self.clone(), user_id.to_owned(), room_id.to_owned());
        to_completion(async move { this.forget_room_inner(&user_id, &room_id).await }).await
    }

    async fn forget_room_inner(&self, user_id: &str, room_id: &str) -> Result<()> {
        write!(self, pool => {
            sqlx::query("INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(user_id)
                .bind(room_id)
                .execute(pool)
                .await?;
            self.caches.memberships.invalidate(user_id);
            Ok(())
        })
    }

    pub async fn set_room_public(&self, room_id: &str, public: bool) -> Result<()> {
        write!(self, pool => {
            sqlx::query("UPDATE rooms SET is_public = $1 WHERE room_id = $2")
                .bind(public)
                .bind(room_id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Public rooms with their joined-member count, most members first.
    pub async fn public_rooms(&self) -> Result<Vec<(String, i64)>> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT r.room_id, COUNT(c.state_key) AS joined FROM rooms r
                 LEFT JOIN current_state c ON c.room_id = r.room_id
                     AND c.type = 'm.room.member' AND c.membership = 'join'
                 WHERE r.is_public = $1 GROUP BY r.room_id ORDER BY joined DESC, r.room_id",
            )
            .bind(true)
            .fetch_all(pool)
            .await?;
            rows.iter().map(|row| Ok((row.try_get("room_id")?, row.try_get("joined")?))).collect()
        })
    }

    pub async fn report_event(
        &self,
        room_id: &str,
        event_id: Option<&str>,
        user_id: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        write!(self, pool => {
            sqlx::query(
                "INSERT INTO event_reports (room_id, event_id, user_id, reason, received_ts)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(room_id)
            .bind(event_id)
            .bind(user_id)
            .bind(reason)
            .bind(now_ms())
            .execute(pool)
            .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use super::BatchTransaction;

    /// One connection, as the server's write pool.
    async fn pool(options: SqliteConnectOptions) -> sqlx::SqlitePool {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT UNIQUE)")
            .execute(&pool)
            .await
            .unwrap();
        pool
    }

    async fn values(pool: &sqlx::SqlitePool) -> Vec<String> {
        sqlx::query_scalar("SELECT v FROM t ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    /// What statements return comes back in order, also across a statement
    /// run on its own in the middle (a big room's push actions).
    #[tokio::test]
    async fn a_batch_commits_and_returns_in_order() {
        let pool = pool(SqliteConnectOptions::from_str("sqlite::memory:").unwrap()).await;
        let mut connection = pool.acquire().await.unwrap();
        let mut tx = BatchTransaction::begin(&mut connection);
        for v in ["a", "b"] {
            let sql = tx.next().await.unwrap();
            sql.push("INSERT INTO t (v) VALUES (")
                .push_bind(v)
                .push(") RETURNING id");
        }
        tx.flush().await.unwrap();
        tx.next()
            .await
            .unwrap()
            .push("INSERT INTO t (v) VALUES ('c') RETURNING id");
        assert_eq!(tx.commit().await.unwrap(), [1, 2, 3]);
        drop(connection);
        assert_eq!(values(&pool).await, ["a", "b", "c"]);
    }

    /// A batch that does not commit, because a statement failed or because
    /// it was abandoned part-way (its future dropped), leaves nothing behind,
    /// and no open transaction on the pooled connection.
    #[tokio::test]
    async fn a_batch_that_does_not_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("batch.db"))
            .create_if_missing(true);
        let pool = pool(options).await;

        let mut connection = pool.acquire().await.unwrap();
        let mut tx = BatchTransaction::begin(&mut connection);
        for v in ["a", "a"] {
            tx.next()
                .await
                .unwrap()
                .push("INSERT INTO t (v) VALUES (")
                .push_bind(v)
                .push(")");
        }
        assert!(tx.commit().await.is_err(), "the second `a` is a duplicate");
        drop(connection);
        assert!(values(&pool).await.is_empty());

        let mut connection = pool.acquire().await.unwrap();
        let mut tx = BatchTransaction::begin(&mut connection);
        tx.next()
            .await
            .unwrap()
            .push("INSERT INTO t (v) VALUES ('b')");
        tx.flush().await.unwrap();
        drop(tx);
        drop(connection);
        assert!(values(&pool).await.is_empty());

        sqlx::query("INSERT INTO t (v) VALUES ('c')")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(values(&pool).await, ["c"]);
    }
}
