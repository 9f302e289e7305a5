//! The kernel command line: whitespace-separated `key=value` words.

/// A parsed view of the command line.
#[derive(Clone, Copy)]
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

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.0.split_ascii_whitespace().find_map(|word| {
            let (k, v) = word.split_once('=')?;
            (k == key).then_some(v)
        })
    }

    /// The value of `key` as a number (decimal or `0x` hexadecimal).
    pub fn get_u64(&self, key: &str) -> Option<Result<u64, &'a str>> {
        let text = self.get(key)?;
        let parsed = match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => text.parse(),
        };
        Some(parsed.map_err(|_| text))
    }

    /// Whether `key` lists `item` among its comma-separated values.
    pub fn lists(&self, key: &str, item: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.split(',').any(|x| x == item))
    }
}
