//! Fuzz target `cmdline`: the kernel command line (`firmware::cmdline`):
//! words, `get`, `get_u64`, `lists`, `module` and `number`. Any UTF-8
//! input (the kernel only ever sees UTF-8: the PVH command line and the
//! device tree's bootargs are checked before); seeds are the system tests'
//! command lines.
//!
//! Asserts: no panic; words are non-empty, hold no ASCII whitespace and
//! lie within the input; `get` of every key is the value of the first word
//! with that key, within the input; `get_u64` is `number` of that value,
//! and a number prints back (decimal and `0x`) to itself; `lists` finds
//! every comma-separated item of the value; `module` is `number` of the
//! two halves of the `module` value.
#![no_main]

use firmware::cmdline::{Cmdline, number};
use firmware::lies_within;
use libfuzzer_sys::fuzz_target;

/// Words whose keys are looked up (each lookup scans the line).
const CHECKED_WORDS: usize = 64;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let line = Cmdline::new(text);
    for word in line.words().take(CHECKED_WORDS) {
        assert!(!word.is_empty());
        assert!(!word.bytes().any(|byte| byte.is_ascii_whitespace()));
        assert!(lies_within(word.as_bytes(), bytes));
        let Some((key, _)) = word.split_once('=') else {
            continue;
        };
        let value = line.get(key).expect("a key in the line has a value");
        let first = line
            .words()
            .find_map(|word| word.split_once('=').filter(|(k, _)| *k == key))
            .map(|(_, value)| value)
            .unwrap();
        assert_eq!(
            value.as_bytes().as_ptr_range(),
            first.as_bytes().as_ptr_range()
        );
        assert!(value.is_empty() || lies_within(value.as_bytes(), bytes));
        match line.get_u64(key).expect("the key is there") {
            Ok(n) => {
                assert_eq!(number(value), Some(n));
                assert_eq!(number(&n.to_string()), Some(n));
                assert_eq!(number(&format!("{n:#x}")), Some(n));
            }
            Err(text) => {
                assert_eq!(
                    text.as_bytes().as_ptr_range(),
                    value.as_bytes().as_ptr_range()
                );
                assert_eq!(number(value), None);
            }
        }
        for item in value.split(',').take(CHECKED_WORDS) {
            assert!(line.lists(key, item));
        }
    }
    if let Some((address, length)) = line.module() {
        let value = line.get("module").unwrap();
        let (first, second) = value.split_once(',').unwrap();
        assert_eq!(
            (number(first), number(second)),
            (Some(address), Some(length))
        );
    }
});
