//! Byte sizes the way Synapse writes them: a number of bytes, or a string
//! with a binary suffix (`512K`, `50M`, `2G`, `1T`).

use std::fmt;

use serde::{Deserialize, Deserializer, de};

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ConfigSize(pub u64);

impl fmt::Debug for ConfigSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

impl ConfigSize {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (number, unit) = match text.char_indices().last()? {
            (i, c) if c.is_ascii_alphabetic() => (&text[..i], c),
            _ => (text, ' '),
        };
        let multiplier: u64 = match unit {
            ' ' => 1,
            'K' => 1 << 10,
            'M' => 1 << 20,
            'G' => 1 << 30,
            'T' => 1 << 40,
            _ => return None,
        };
        let number: u64 = number.trim().parse().ok()?;
        number.checked_mul(multiplier).map(Self)
    }
}

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ConfigSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as `50M`, `512K` or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ConfigSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ConfigSize)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                ConfigSize::parse(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synapse_size_forms() {
        assert_eq!(ConfigSize::parse("1500"), Some(ConfigSize(1500)));
        assert_eq!(ConfigSize::parse("50M"), Some(ConfigSize(50 << 20)));
        assert_eq!(ConfigSize::parse("512K"), Some(ConfigSize(512 << 10)));
        assert_eq!(ConfigSize::parse("2G"), Some(ConfigSize(2 << 30)));
        assert_eq!(ConfigSize::parse("50MB"), None);
        assert_eq!(ConfigSize::parse("M"), None);
        assert_eq!(ConfigSize::parse("5m"), None);
    }
}
