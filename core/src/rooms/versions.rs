//! The room versions Myelin creates and serves (spec: "Room versions").

use ruma::{RoomVersionId, room_version_rules::RoomVersionRules};

/// Every stable room version whose rules ruma's state-res implements.
pub const SUPPORTED: [&str; 12] = [
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
];

/// The version and its rules, if Myelin supports it.
pub fn supported(version: &str) -> Option<(RoomVersionId, RoomVersionRules)> {
    if !SUPPORTED.contains(&version) {
        return None;
    }
    let id = RoomVersionId::try_from(version).ok()?;
    let rules = id.rules()?;
    Some((id, rules))
}
