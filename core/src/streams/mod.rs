//! The live streams a client follows through `/sync`: where each stands,
//! the token that carries a position in each, and the [`notifier`] that
//! wakes long-polling clients when something for them changes.

pub mod notifier;
pub mod typing;

use std::{
    fmt,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use self::{
    notifier::{Notifier, WakeKey},
    typing::Typing,
};

/// The live state every stream writer and `/sync` share.
pub struct Live {
    pub positions: StreamPositions,
    pub notifier: Arc<Notifier>,
    pub typing: Typing,
}

impl Live {
    pub fn new(initial: Positions) -> Self {
        Self {
            positions: StreamPositions::new(initial),
            notifier: Arc::default(),
            typing: Typing::default(),
        }
    }

    /// Publishes a committed write at `position` and wakes whoever follows
    /// `keys`.
    pub fn publish(&self, stream: Stream, position: i64, keys: &[WakeKey]) {
        self.positions.advance(stream, position);
        self.notifier.wake(keys);
    }
}

/// The streams, in the order their positions appear in a sync token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Room events; the position is `events.stream_ordering`.
    Events,
    AccountData,
    Receipts,
    /// Kept in memory only: typing notices do not outlive the process.
    Typing,
    ToDevice,
    DeviceLists,
    Presence,
}

impl Stream {
    const ALL: [Stream; 7] = [
        Stream::Events,
        Stream::AccountData,
        Stream::Receipts,
        Stream::Typing,
        Stream::ToDevice,
        Stream::DeviceLists,
        Stream::Presence,
    ];

    /// The row of `stream_positions` for streams stored in the database.
    pub fn table_name(self) -> Option<&'static str> {
        match self {
            Stream::Events | Stream::Typing => None,
            Stream::AccountData => Some("account_data"),
            Stream::Receipts => Some("receipts"),
            Stream::ToDevice => Some("to_device"),
            Stream::DeviceLists => Some("device_lists"),
            Stream::Presence => Some("presence"),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A position in every stream: what a sync token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Positions([i64; 7]);

impl Positions {
    pub fn get(&self, stream: Stream) -> i64 {
        self.0[stream.index()]
    }

    pub fn set(&mut self, stream: Stream, position: i64) {
        self.0[stream.index()] = position;
    }

    /// Whether any stream is past where `earlier` stood.
    pub fn advanced_since(&self, earlier: &Positions) -> bool {
        self.0.iter().zip(earlier.0).any(|(now, then)| *now > then)
    }

    /// Each stream at the earlier of the two positions.
    pub fn earliest(&self, other: &Positions) -> Positions {
        let mut earliest = *self;
        for (mine, theirs) in earliest.0.iter_mut().zip(other.0) {
            *mine = (*mine).min(theirs);
        }
        earliest
    }
}

/// `s<events>_<account data>_<receipts>_<typing>_<to-device>_<device lists>_<presence>`.
/// The leading `s<events>` alone is a pagination token for `/messages`.
impl fmt::Display for Positions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0[0])?;
        for position in &self.0[1..] {
            write!(f, "_{position}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("malformed sync token")]
pub struct MalformedToken;

impl FromStr for Positions {
    type Err = MalformedToken;

    fn from_str(token: &str) -> Result<Self, MalformedToken> {
        let mut parts = token.strip_prefix('s').ok_or(MalformedToken)?.split('_');
        let mut positions = Positions::default();
        for stream in Stream::ALL {
            let part = parts.next().ok_or(MalformedToken)?;
            let position: i64 = part.parse().map_err(|_| MalformedToken)?;
            if position < 0 {
                return Err(MalformedToken);
            }
            positions.set(stream, position);
        }
        if parts.next().is_some() {
            return Err(MalformedToken);
        }
        Ok(positions)
    }
}

/// Where each stream stands in this process: a position is published only
/// once everything up to it is committed, so a reader never skips a write.
#[derive(Default)]
pub struct StreamPositions([AtomicI64; 7]);

impl StreamPositions {
    pub fn new(initial: Positions) -> Self {
        let positions = Self::default();
        for stream in Stream::ALL {
            positions.advance(stream, initial.get(stream));
        }
        positions
    }

    pub fn current(&self) -> Positions {
        let mut out = Positions::default();
        for stream in Stream::ALL {
            out.set(stream, self.0[stream.index()].load(Ordering::Acquire));
        }
        out
    }

    pub fn get(&self, stream: Stream) -> i64 {
        self.0[stream.index()].load(Ordering::Acquire)
    }

    /// Moves a stream forward (never back) to a committed position.
    pub fn advance(&self, stream: Stream, position: i64) {
        self.0[stream.index()].fetch_max(position, Ordering::AcqRel);
    }

    /// The next position of an in-memory stream.
    pub fn bump(&self, stream: Stream) -> i64 {
        self.0[stream.index()].fetch_add(1, Ordering::AcqRel) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let mut positions = Positions::default();
        positions.set(Stream::Events, 42);
        positions.set(Stream::Presence, 7);
        let token = positions.to_string();
        assert_eq!(token, "s42_0_0_0_0_0_7");
        assert_eq!(token.parse::<Positions>().unwrap(), positions);
        for bad in [
            "",
            "s",
            "s1",
            "42_0_0_0_0_0_7",
            "s1_2_3_4_5_6_7_8",
            "s-1_0_0_0_0_0_0",
            "sx_0_0_0_0_0_0",
        ] {
            assert!(bad.parse::<Positions>().is_err(), "{bad}");
        }
    }
}
