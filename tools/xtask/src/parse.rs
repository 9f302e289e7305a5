//! Parsers for the text xtask reads: libtest summaries, system-test lines
//! from the guest's serial console, the guest's exit line and QEMU's version.
//!
//! All pure; each accepts a trailing `\r` (serial consoles send CRLF).

/// A libtest binary's summary:
/// `test result: ok. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; ...`.
/// Returns `(passed, failed)`.
pub fn libtest_summary(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_verdict, counts) = rest.split_once(". ")?;
    let mut passed = None;
    let mut failed = None;
    for part in counts.split(';') {
        let (number, what) = part.trim().split_once(' ')?;
        match what {
            "passed" => passed = Some(number.parse().ok()?),
            "failed" => failed = Some(number.parse().ok()?),
            _ => {}
        }
    }
    Some((passed?, failed?))
}

/// One system test's verdict, as printed by the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestLine {
    /// The test's name.
    pub name: String,
    /// `true` for `ok`, `false` for `FAILED`.
    pub passed: bool,
}

/// A guest's `test NAME ... ok` or `test NAME ... FAILED` line.
pub fn test_line(line: &str) -> Option<TestLine> {
    let rest = line.trim_end().strip_prefix("test ")?;
    let (name, verdict) = rest.rsplit_once(" ... ")?;
    let passed = match verdict {
        "ok" => true,
        "FAILED" => false,
        _ => return None,
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some(TestLine {
        name: name.to_string(),
        passed,
    })
}

/// The closing line `N passed, N failed` (optionally `, N skipped`) alone on
/// a line. Returns `(passed, failed)`.
pub fn closing_line(line: &str) -> Option<(u64, u64)> {
    let mut parts = line.trim_end().split(", ");
    let passed = count(parts.next()?, "passed")?;
    let failed = count(parts.next()?, "failed")?;
    match parts.next() {
        None => {}
        Some(skipped) => {
            count(skipped, "skipped")?;
        }
    }
    parts.next().is_none().then_some((passed, failed))
}

/// `"<N> <word>"` -> N.
fn count(text: &str, word: &str) -> Option<u64> {
    let number = text.strip_suffix(word)?.strip_suffix(' ')?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// The prefix of the kernel's last line, `portcullis: exit <status>`.
pub const EXIT_LINE_PREFIX: &str = "portcullis: exit ";

/// The guest status announced by `portcullis: exit <status>`.
pub fn exit_line(line: &str) -> Option<u32> {
    line.trim_end().strip_prefix(EXIT_LINE_PREFIX)?.parse().ok()
}

/// `(major, minor, micro)` from the first line of `qemu-system-* --version`:
/// `QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)`.
pub fn qemu_version(output: &str) -> Option<(u32, u32, u32)> {
    let rest = output
        .lines()
        .next()?
        .trim()
        .strip_prefix("QEMU emulator version ")?;
    let version = rest.split_whitespace().next()?;
    let mut numbers = version.split('.').map(|n| n.parse::<u32>().ok());
    let major = numbers.next()??;
    let minor = numbers.next().flatten().unwrap_or(0);
    let micro = numbers.next().flatten().unwrap_or(0);
    Some((major, minor, micro))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_summaries() {
        assert_eq!(
            libtest_summary(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
            ),
            Some((12, 0))
        );
        assert_eq!(
            libtest_summary(
                "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out"
            ),
            Some((3, 2))
        );
        assert_eq!(
            libtest_summary(
                "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 5 filtered out; finished in 0.00s\r"
            ),
            Some((0, 0))
        );
        assert_eq!(libtest_summary("test foo ... ok"), None);
        assert_eq!(
            libtest_summary("test result: ok. many passed; 0 failed"),
            None
        );
        assert_eq!(libtest_summary("running 3 tests"), None);
    }

    #[test]
    fn guest_test_lines() {
        assert_eq!(
            test_line("test vtd_cap ... ok\r"),
            Some(TestLine {
                name: "vtd_cap".into(),
                passed: true
            })
        );
        assert_eq!(
            test_line("test boot::smmu_idr0 ... FAILED"),
            Some(TestLine {
                name: "boot::smmu_idr0".into(),
                passed: false
            })
        );
        assert_eq!(test_line("test x ... ignored"), None);
        assert_eq!(test_line("test  ... ok"), None);
        assert_eq!(test_line("[boot] test x ... ok"), None);
        assert_eq!(test_line("test result: ok. 1 passed; 0 failed;"), None);
    }

    #[test]
    fn closing_lines() {
        assert_eq!(closing_line("3 passed, 0 failed"), Some((3, 0)));
        assert_eq!(closing_line("3 passed, 1 failed\r"), Some((3, 1)));
        assert_eq!(closing_line("3 passed, 1 failed, 2 skipped"), Some((3, 1)));
        assert_eq!(closing_line("note: 3 passed, 1 failed"), None);
        assert_eq!(closing_line("3 passed, 1 failed, extra"), None);
        assert_eq!(closing_line("3 passed"), None);
        assert_eq!(closing_line("-3 passed, 1 failed"), None);
    }

    #[test]
    fn exit_lines() {
        assert_eq!(exit_line("portcullis: exit 0"), Some(0));
        assert_eq!(exit_line("portcullis: exit 4\r"), Some(4));
        assert_eq!(exit_line("portcullis: exit"), None);
        assert_eq!(exit_line("[boot] portcullis: exit 0"), None);
    }

    #[test]
    fn qemu_versions() {
        assert_eq!(
            qemu_version(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025"
            ),
            Some((10, 0, 2))
        );
        assert_eq!(
            qemu_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)"),
            Some((7, 2, 15))
        );
        assert_eq!(qemu_version("QEMU emulator version 9.1.0"), Some((9, 1, 0)));
        assert_eq!(qemu_version("QEMU emulator version 11.0"), Some((11, 0, 0)));
        assert_eq!(qemu_version("qemu-system-x86_64: command not found"), None);
        assert_eq!(qemu_version(""), None);
    }
}
