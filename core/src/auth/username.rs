//! What a local user ID may look like when it is registered.

/// Why a requested localpart cannot be registered.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidUsername(pub &'static str);

/// The spec's historical limit on the length of a whole user ID.
const MAX_USER_ID_LENGTH: usize = 255;

/// Checks a localpart for registration, as Synapse does: only
/// `a-z 0-9 . _ = - / +`, not starting with `_` (reserved for application
/// services), not all digits (reserved for guests), and a user ID of at most
/// 255 bytes.
pub fn check_localpart(
    localpart: &str,
    server_name: &str,
    guest: bool,
) -> Result<(), InvalidUsername> {
    if localpart.is_empty() {
        return Err(InvalidUsername("User ID cannot be empty"));
    }
    if !localpart
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'))
    {
        return Err(InvalidUsername(
            "User ID can only contain characters a-z, 0-9, or '=_-./+'",
        ));
    }
    if localpart.starts_with('_') {
        return Err(InvalidUsername("User ID may not begin with _"));
    }
    if !guest && localpart.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidUsername(
            "Numeric user IDs are reserved for guest users.",
        ));
    }
    if localpart.len() + server_name.len() + 2 > MAX_USER_ID_LENGTH {
        return Err(InvalidUsername(
            "User ID may not be longer than 255 characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_rules() {
        assert!(check_localpart("alice.b-c=d/e+f_g", "example.org", false).is_ok());
        assert!(check_localpart("Alice", "example.org", false).is_err());
        assert!(check_localpart("al ice", "example.org", false).is_err());
        assert!(check_localpart("_bridge", "example.org", false).is_err());
        assert!(check_localpart("12345", "example.org", false).is_err());
        assert!(check_localpart("12345", "example.org", true).is_ok());
        assert!(check_localpart(&"a".repeat(250), "example.org", false).is_err());
    }
}
