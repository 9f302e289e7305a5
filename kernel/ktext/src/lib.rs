//! Console text without `core::fmt`: what the release kernel prints with.
//!
//! `core::fmt` and the `Display` impls it reaches were ~13 KB of the
//! release kernel's `.text` (kernel/README.md, "Size"). Here a line is a
//! template and its arguments, as with `format_args!`, but small: the
//! template is a `&'static str` with positional `{}` placeholders, checked
//! against the argument count at compile time ([`check`]), and each
//! argument is an [`Arg`]: a number (`{}` decimal, `{:#x}`, `{:x}`,
//! `{:#018x}`, `{:02x}`, `{:>8}`, `{:#05b}`), a string, or a [`Text`]: the
//! error types the kernel reports implement it in their own crates. A
//! [`Sink`] takes the string slices: the kernel's is the UART. Host crates
//! keep `Display` for those errors through [`display`], so the text is
//! written once and reads the same everywhere.
#![no_std]

use core::fmt;

/// Where text goes: the kernel's console, or a `core::fmt::Formatter` on
/// the host ([`display`]).
pub trait Sink {
    /// Appends `text`.
    fn str(&mut self, text: &str);
}

/// Something that writes itself as console text.
pub trait Text {
    /// Writes the text to `out`.
    fn write(&self, out: &mut dyn Sink);
}

impl Text for str {
    fn write(&self, out: &mut dyn Sink) {
        out.str(self);
    }
}

impl<T: Text + ?Sized> Text for &T {
    fn write(&self, out: &mut dyn Sink) {
        (**self).write(out);
    }
}

/// A number and how to print it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Number {
    value: u64,
    spec: Spec,
}

/// Room for the widest number: 66 characters (a width is at most that;
/// `u64::MAX` is 20 decimal digits, 16 hex, 64 binary).
const ROOM: usize = 66;

impl Number {
    /// The number's characters, at the end of `buf`.
    fn render(self, buf: &mut [u8; ROOM]) -> &str {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let Spec {
            radix,
            width,
            prefix,
            fill,
        } = self.spec;
        let radix = u64::from(radix);
        let mut value = self.value;
        let mut at = ROOM;
        loop {
            at -= 1;
            buf[at] = DIGITS[(value % radix) as usize];
            value /= radix;
            if value == 0 {
                break;
            }
        }
        let prefix: &[u8] = match (prefix, radix) {
            (false, _) => b"",
            (true, 2) => b"0b",
            (true, _) => b"0x",
        };
        let width = usize::from(width).min(ROOM);
        if fill == b'0' {
            // Zeros between the prefix and the digits, up to the width.
            let digits = (ROOM - at).max(width.saturating_sub(prefix.len()));
            let start = ROOM - digits.min(ROOM - prefix.len());
            buf[start..at].fill(b'0');
            at = start;
        }
        at -= prefix.len();
        buf[at..at + prefix.len()].copy_from_slice(prefix);
        // Spaces before the number, up to the width.
        let start = ROOM - (ROOM - at).max(width);
        buf[start..at].fill(b' ');
        at = start;
        // Every byte from `at` on is ASCII, written just above.
        core::str::from_utf8(&buf[at..]).unwrap_or("?")
    }

    #[inline(never)]
    fn write(self, out: &mut dyn Sink) {
        let mut buf = [0; ROOM];
        out.str(self.render(&mut buf));
    }
}

/// Writes `text` to a `core::fmt::Formatter`: a `Display` impl for a type
/// that is [`Text`] is `ktext::display(self, f)`, so host crates and tests
/// see exactly the kernel's console text.
pub fn display(text: &dyn Text, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    struct ToFormatter<'a, 'b> {
        f: &'a mut fmt::Formatter<'b>,
        result: fmt::Result,
    }
    impl Sink for ToFormatter<'_, '_> {
        fn str(&mut self, text: &str) {
            if self.result.is_ok() {
                self.result = self.f.write_str(text);
            }
        }
    }
    let mut sink = ToFormatter { f, result: Ok(()) };
    text.write(&mut sink);
    sink.result
}

/// One argument of a template.
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    /// A number, printed as its placeholder says.
    Number(u64),
    /// A string, printed as it is.
    Str(&'a str),
    /// Anything else that writes itself.
    Text(&'a dyn Text),
}

/// What can be an [`Arg`]: integers, string slices, and every [`Text`].
/// The macros call `to_arg` by method syntax, so references to these work
/// too.
pub trait ToArg {
    /// The argument.
    fn to_arg(&self) -> Arg<'_>;
}

/// Integers print as numbers (`{}` in decimal, or as the placeholder says).
macro_rules! number {
    ($($t:ty),*) => {$(
        impl ToArg for $t {
            #[inline(always)]
            fn to_arg(&self) -> Arg<'_> {
                Arg::Number(*self as u64)
            }
        }
    )*};
}
// usize is at most 64 bits on every target the kernel builds for.
number!(u8, u16, u32, u64, usize);

impl ToArg for str {
    #[inline(always)]
    fn to_arg(&self) -> Arg<'_> {
        Arg::Str(self)
    }
}

impl<T: Text> ToArg for T {
    #[inline(always)]
    fn to_arg(&self) -> Arg<'_> {
        Arg::Text(self)
    }
}

/// How a placeholder prints a number: `{}`, `{:#x}`, `{:x}`, `{:#018x}`,
/// `{:02x}`, `{:>8}`, `{:#05b}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Spec {
    radix: u8,
    width: u8,
    prefix: bool,
    fill: u8,
}

/// Parses a placeholder's inside (`""`, `":#x"`, `":>8"`, ...); `None` if
/// it is not one of the forms above.
const fn spec(inside: &[u8], from: usize, to: usize) -> Option<Spec> {
    let mut spec = Spec {
        radix: 10,
        width: 0,
        prefix: false,
        fill: b' ',
    };
    let mut at = from;
    if at == to {
        return Some(spec);
    }
    if inside[at] != b':' {
        return None;
    }
    at += 1;
    if at < to && inside[at] == b'>' {
        at += 1;
    } else {
        if at < to && inside[at] == b'#' {
            spec.prefix = true;
            at += 1;
        }
        if at < to && inside[at] == b'0' {
            spec.fill = b'0';
            at += 1;
        }
    }
    while at < to && inside[at].is_ascii_digit() {
        let width = spec.width as u32 * 10 + (inside[at] - b'0') as u32;
        if width > ROOM as u32 {
            return None;
        }
        spec.width = width as u8;
        at += 1;
    }
    if at < to && (inside[at] == b'x' || inside[at] == b'b') {
        spec.radix = if inside[at] == b'x' { 16 } else { 2 };
        at += 1;
    } else if spec.prefix || spec.fill == b'0' {
        // `#` and `0` only with a hex or binary number.
        return None;
    }
    if at != to {
        return None;
    }
    Some(spec)
}

/// How many placeholders `template` has, or `None` if one is malformed
/// or a brace is unmatched (`{{` and `}}` are literal braces).
pub const fn placeholders(template: &str) -> Option<usize> {
    let bytes = template.as_bytes();
    let mut count = 0;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'{' if at + 1 < bytes.len() && bytes[at + 1] == b'{' => at += 2,
            b'}' if at + 1 < bytes.len() && bytes[at + 1] == b'}' => at += 2,
            b'}' => return None,
            b'{' => {
                let mut close = at + 1;
                while close < bytes.len() && bytes[close] != b'}' {
                    close += 1;
                }
                if close == bytes.len() || spec(bytes, at + 1, close).is_none() {
                    return None;
                }
                count += 1;
                at = close + 1;
            }
            _ => at += 1,
        }
    }
    Some(count)
}

/// Whether `template` is well formed with exactly `args` placeholders:
/// the macros assert it at compile time.
pub const fn check(template: &str, args: usize) -> bool {
    matches!(placeholders(template), Some(count) if count == args)
}

/// Writes `template` with each placeholder replaced by the next of `args`
/// (a template [`check`] passed; anything else prints what it can).
#[inline(never)]
pub fn write(out: &mut dyn Sink, template: &str, args: &[Arg<'_>]) {
    let bytes = template.as_bytes();
    let mut args = args.iter();
    let mut start = 0;
    let mut at = 0;
    while at < bytes.len() {
        let brace = bytes[at];
        if brace != b'{' && brace != b'}' {
            at += 1;
            continue;
        }
        out.str(template.get(start..at).unwrap_or(""));
        if bytes.get(at + 1) == Some(&brace) {
            // `{{` or `}}`: the brace itself.
            start = at + 1;
            at += 2;
            continue;
        }
        let mut close = at + 1;
        while close < bytes.len() && bytes[close] != b'}' {
            close += 1;
        }
        let spec = spec(bytes, at + 1, close).unwrap_or(Spec {
            radix: 10,
            width: 0,
            prefix: false,
            fill: b' ',
        });
        match args.next() {
            Some(Arg::Number(value)) => Number {
                value: *value,
                spec,
            }
            .write(out),
            Some(Arg::Str(text)) => out.str(text),
            Some(Arg::Text(text)) => text.write(out),
            None => {}
        }
        at = close + 1;
        start = at;
    }
    out.str(template.get(start..).unwrap_or(""));
}

/// Writes each of `words` as ` {:#x}`: a raw register dump on one line.
/// Out of line, so a fixed-size dump is one loop, not one call per word.
#[inline(never)]
pub fn words(out: &mut dyn Sink, words: &[u64]) {
    let spec = Spec {
        radix: 16,
        width: 0,
        prefix: true,
        fill: b' ',
    };
    for &value in words {
        out.str(" ");
        Number { value, spec }.write(out);
    }
}

/// A template and its arguments as one [`Text`]: [`text!`] makes one.
#[derive(Clone, Copy)]
pub struct Line<'a> {
    /// The template.
    pub template: &'a str,
    /// Its arguments, one per placeholder.
    pub args: &'a [Arg<'a>],
}

impl Text for Line<'_> {
    fn write(&self, out: &mut dyn Sink) {
        write(out, self.template, self.args);
    }
}

/// Writes a template to a [`Sink`]: `ktext::put!(out, "at {:#x}, {}
/// bytes", a, n)`. The template must be a literal whose placeholders match
/// the arguments (checked at compile time); each argument is a
/// [`ToArg`].
#[macro_export]
macro_rules! put {
    ($out:expr, $template:literal $(, $arg:expr)* $(,)?) => {{
        #[allow(unused_imports)]
        use $crate::ToArg as _;
        const _: () = assert!(
            $crate::check($template, <[&str]>::len(&[$(stringify!($arg)),*])),
            "the template's placeholders do not match its arguments"
        );
        $crate::write($out, $template, &[$(($arg).to_arg()),*])
    }};
}

/// A template and its arguments as a [`Line`], a [`Text`], for the end of
/// the statement: `log(&ktext::text!("[io] page {:#x} leaked", page))`.
#[macro_export]
macro_rules! text {
    ($template:literal $(, $arg:expr)* $(,)?) => {
        $crate::Line {
            template: {
                const _: () = assert!(
                    $crate::check($template, <[&str]>::len(&[$(stringify!($arg)),*])),
                    "the template's placeholders do not match its arguments"
                );
                $template
            },
            args: &[$({
                #[allow(unused_imports)]
                use $crate::ToArg as _;
                ($arg).to_arg()
            }),*],
        }
    };
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;

    struct Collect(String);
    impl Sink for Collect {
        fn str(&mut self, text: &str) {
            self.0.push_str(text);
        }
    }

    /// What `write` makes of one template and its arguments.
    fn line(template: &str, args: &[Arg<'_>]) -> String {
        let mut out = Collect(String::new());
        write(&mut out, template, args);
        out.0
    }

    const EDGES: [u64; 12] = [
        0,
        1,
        9,
        0xa,
        0xf,
        0x10,
        99,
        100,
        0xdead_beef,
        1 << 63,
        u64::MAX - 1,
        u64::MAX,
    ];

    #[test]
    fn numbers_print_as_core_fmt_prints_them() {
        for value in EDGES {
            let n = [Arg::Number(value)];
            assert_eq!(line("{}", &n), std::format!("{value}"));
            assert_eq!(line("{:#x}", &n), std::format!("{value:#x}"));
            assert_eq!(line("{:x}", &n), std::format!("{value:x}"));
            assert_eq!(line("{:02x}", &n), std::format!("{value:02x}"));
            assert_eq!(line("{:#05b}", &n), std::format!("{value:#05b}"));
            assert_eq!(line("{:>8}", &n), std::format!("{value:>8}"));
            assert_eq!(line("{:>21}", &n), std::format!("{value:>21}"));
            for width in [1, 2, 3, 4, 6, 10, 12, 14, 18, 19, 40] {
                let template = std::format!("{{:#0{width}x}}");
                assert_eq!(
                    line(&template, &n),
                    std::format!("{value:#0width$x}"),
                    "{template} of {value:#x}"
                );
            }
        }
        assert_eq!(line("{}", &[u8::MAX.to_arg()]), "255");
        assert_eq!(line("{}", &[u16::MAX.to_arg()]), "65535");
        assert_eq!(line("{}", &[u32::MAX.to_arg()]), "4294967295");
        assert_eq!(
            line("{}", &[usize::MAX.to_arg()]),
            std::format!("{}", usize::MAX)
        );
    }

    #[test]
    fn the_widest_number_fits() {
        let widest = std::format!("{:#066b}", u64::MAX);
        assert_eq!(line("{:#066b}", &[Arg::Number(u64::MAX)]), widest);
        assert_eq!(line("{:#066x}", &[Arg::Number(1)]).len(), ROOM);
        // Wider than the room: refused at compile time by `check`.
        assert!(!check("{:#067x}", 1));
        assert!(!check("{:#0999x}", 1));
    }

    #[test]
    fn templates_are_checked() {
        assert!(check("no placeholders", 0));
        assert!(check("{} and {:#x} and {:>8} and {{literal}}", 3));
        assert!(!check("{}", 0));
        assert!(!check("{}", 2));
        assert!(!check("{name}", 1));
        assert!(!check("{:?}", 1));
        assert!(!check("{:#}", 1));
        assert!(!check("{:08}", 1));
        assert!(!check("unclosed {", 1));
        assert!(!check("stray }", 0));
        assert_eq!(line("{{x}} {}", &[Arg::Str("y")]), "{x} y");
    }

    #[test]
    fn strings_texts_and_display_agree() {
        struct Shown;
        impl Text for Shown {
            fn write(&self, out: &mut dyn Sink) {
                put!(out, "x{} {:#06x} {}", 1u8, 0xabu8, "end");
            }
        }
        impl fmt::Display for Shown {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                display(self, f)
            }
        }
        let name = "edu";
        let text = text!("[pci] {} BAR{} at {:#x}: {}", name, 2u8, 0x1000u32, Shown);
        let mut out = Collect(String::new());
        text.write(&mut out);
        assert_eq!(out.0, "[pci] edu BAR2 at 0x1000: x1 0x00ab end");
        assert_eq!(std::format!("{}", Shown), "x1 0x00ab end");
    }
}
