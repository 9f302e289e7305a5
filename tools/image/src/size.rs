//! Sizes in image files: an integer number of bytes (`4096`, `0x20_0000`)
//! or a string with a binary unit (`"4 KiB"`, `"2 MiB"`, `"1 GiB"`, `"512 B"`).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Visitor};

/// A number of bytes as written in an image or platform file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

/// Parses `"<decimal> <unit>"` (the space is optional) with unit `B`,
/// `KiB`, `MiB` or `GiB`, or a plain decimal.
pub fn parse(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.replace('_', "").parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// Writes `bytes` the way a person would: `"2 MiB"`, `"12 KiB"`, `"100 B"`.
pub fn human(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Size, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: bytes as an integer, or a string like \"4 KiB\" or \"2 MiB\"")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Size, E> {
                u64::try_from(value)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Size, E> {
                Ok(Size(value))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Size, E> {
                parse(value).map(Size).ok_or_else(|| {
                    E::custom(format!(
                        "`{value}` is not a size; write bytes as an integer or a string like \"4 KiB\", \"2 MiB\", \"1 GiB\""
                    ))
                })
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("4 KiB"), Some(4096));
        assert_eq!(parse("2MiB"), Some(2 << 20));
        assert_eq!(parse("1 GiB"), Some(1 << 30));
        assert_eq!(parse("512 B"), Some(512));
        assert_eq!(parse("65_536"), Some(65536));
        for bad in [
            "",
            "KiB",
            "4 kb",
            "4 KB",
            "-1 KiB",
            "1.5 MiB",
            "99999999999999 GiB",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(2 << 20), "2 MiB");
        assert_eq!(human(12 << 10), "12 KiB");
        assert_eq!(human(100), "100 B");
        assert_eq!(human(4097), "4097 B");
    }

    #[test]
    fn toml_accepts_integers_and_strings() {
        #[derive(Debug, Deserialize)]
        struct Sizes {
            a: Size,
            b: Size,
        }
        let sizes: Sizes = toml::from_str("a = 0x1000\nb = \"2 MiB\"\n").unwrap();
        assert_eq!((sizes.a, sizes.b), (Size(4096), Size(2 << 20)));
        let error = toml::from_str::<Sizes>("a = -1\nb = 1\n").unwrap_err();
        assert!(error.message().contains("negative"), "{error}");
    }
}
