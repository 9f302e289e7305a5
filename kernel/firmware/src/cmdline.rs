//! The kernel command line: whitespace-separated `key=value` words.
//!
//! Nothing here allocates or copies: every word and value is a part of the
//! text. The first word with a key decides its value.

/// A parsed view of the command line.
#[derive(Clone, Copy, Debug)]
pub struct Cmdline<'a>(&'a str);

impl<'a> Cmdline<'a> {
    /// Wraps a command line.
    pub fn new(text: &'a str) -> Cmdline<'a> {
        Cmdline(text)
    }

    /// The whitespace-separated words.
    pub fn words(&self) -> impl Iterator<Item = &'a str> {
        self.0.split_ascii_whitespace()
    }

    /// The value of `key`, if present: what follows the first `=` of the
    /// first word whose text before that `=` is `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.words().find_map(|word| {
            let (k, v) = word.split_once('=')?;
            (k == key).then_some(v)
        })
    }

    /// The value of `key` as a number ([`number`]); the value's text when
    /// it is not one.
    pub fn get_u64(&self, key: &str) -> Option<Result<u64, &'a str>> {
        let text = self.get(key)?;
        Some(number(text).ok_or(text))
    }

    /// Whether `key` lists `item` among its comma-separated values.
    pub fn lists(&self, key: &str, item: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.split(',').any(|x| x == item))
    }

    /// `module=ADDRESS,LENGTH`: where a boot module the loader did not
    /// announce lies (aarch64 virt, which loads none for an ELF kernel;
    /// the test runner uses QEMU's generic loader and says where).
    pub fn module(&self) -> Option<(u64, u64)> {
        self.get("module").and_then(address_and_length)
    }
}

/// A number: decimal, or hexadecimal after `0x` (what `u64`'s `FromStr`
/// and `from_str_radix` accept: an optional `+`, no `_`, no overflow).
pub fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// `ADDRESS,LENGTH`, each a [`number`], split at the first comma.
pub fn address_and_length(text: &str) -> Option<(u64, u64)> {
    let (address, length) = text.split_once(',')?;
    Some((number(address)?, number(length)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_from_the_first_word_with_the_key() {
        let line = Cmdline::new("tests=boot,xcheck  vtd.cap=0x12 vtd.cap=7 flag a=b=c\tn=42");
        assert_eq!(line.get("tests"), Some("boot,xcheck"));
        assert_eq!(line.get_u64("vtd.cap"), Some(Ok(0x12)));
        assert_eq!(line.get_u64("n"), Some(Ok(42)));
        assert_eq!(line.get_u64("tests"), Some(Err("boot,xcheck")));
        assert_eq!(line.get("a"), Some("b=c"));
        assert_eq!(line.get("flag"), None);
        assert_eq!(line.get("missing"), None);
        assert!(line.lists("tests", "xcheck"));
        assert!(!line.lists("tests", "xch"));
        assert_eq!(line.words().count(), 6);
    }

    #[test]
    fn module_is_address_and_length() {
        let line = Cmdline::new("tests=user module=0x48000000,16448");
        assert_eq!(line.module(), Some((0x4800_0000, 16448)));
        assert_eq!(Cmdline::new("module=0x10").module(), None);
        assert_eq!(Cmdline::new("module=1,2,3").module(), None);
        assert_eq!(Cmdline::new("module=0x,1").module(), None);
        assert_eq!(address_and_length("+1,0x2"), Some((1, 2)));
    }

    #[test]
    fn numbers_do_not_overflow() {
        assert_eq!(number("18446744073709551615"), Some(u64::MAX));
        assert_eq!(number("18446744073709551616"), None);
        assert_eq!(number("0x10000000000000000"), None);
        assert_eq!(number("0X10"), None);
        assert_eq!(number(""), None);
    }
}
