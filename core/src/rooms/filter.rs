//! Event filters (spec: "Filtering"): which events of a timeline a client
//! asked for.

use ruma::api::client::filter::{RoomEventFilter, UrlFilter};

use super::pdu::Pdu;

/// Whether `pattern` (which may end in `*`) matches `value`.
fn glob(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// Whether an event type passes a filter's `types` and `not_types`.
pub fn types_match(types: Option<&[String]>, not_types: &[String], kind: &str) -> bool {
    !not_types.iter().any(|p| glob(p, kind))
        && types.is_none_or(|t| t.iter().any(|p| glob(p, kind)))
}

/// Whether the event passes the filter's type, sender, room and URL rules.
pub fn matches(filter: &RoomEventFilter, pdu: &Pdu) -> bool {
    let kind = pdu.kind.to_string();
    if filter.not_types.iter().any(|p| glob(p, &kind)) {
        return false;
    }
    if let Some(types) = &filter.types
        && !types.iter().any(|p| glob(p, &kind))
    {
        return false;
    }
    if filter.not_senders.contains(&pdu.sender) {
        return false;
    }
    if let Some(senders) = &filter.senders
        && !senders.contains(&pdu.sender)
    {
        return false;
    }
    if filter.not_rooms.contains(&pdu.room_id) {
        return false;
    }
    if let Some(rooms) = &filter.rooms
        && !rooms.contains(&pdu.room_id)
    {
        return false;
    }
    if let Some(url_filter) = &filter.url_filter {
        let has_url = pdu
            .content_value()
            .get("url")
            .is_some_and(|u| u.is_string());
        if has_url != (*url_filter == UrlFilter::EventsWithUrl) {
            return false;
        }
    }
    true
}
