//! `fuzz`: a system-call fuzzer running as the root task. It issues
//! [`CALLS`] random system calls (100,000 unless built with `FUZZ_CALLS`;
//! `cargo xtask fuzz --calls N --seed S` sets `FUZZ_CALLS` and `FUZZ_SEED`
//! in the compiler's environment, read here with `option_env!`) — mostly capability invocations with random
//! capability pointers, labels, message words, arguments and extra
//! capabilities, biased towards values that reach deep into the kernel
//! (real slots, real labels, small sizes) — and checks that every call
//! returns a defined status: 0 or one of `abi::Error`'s codes. About a
//! quarter of the calls come from [`structure`]: sequences that build real
//! structure (threads in their own spaces, tables, mappings in CPU spaces
//! and IoSpaces, attached devices, bound fault queues and IRQ handlers)
//! and tear it down at random. After every [`BATCH`] calls (and at the
//! end) it asks the kernel to compare its page tables, IOMMU entries and
//! interrupt remapping entries with the capability model
//! (`DebugCheckAbstraction`, a kernel built with `fuzz-checks`; the kernel
//! prints the first disagreement) and fails on any. The kernel must
//! survive all of it; a kernel panic or fault ends the run without the
//! closing line, which the runner counts as a failure.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use abi::{Error, Invocation, MessageInfo, Syscall};
use rt::check;
use rt::testing::{Outcome, Suite};
use sys::syscall;

mod structure;

rt::entry!(main);

/// How many calls the run makes: `FUZZ_CALLS` at build time, else 100,000.
const CALLS: u64 = number(option_env!("FUZZ_CALLS"), 100_000);
/// The random sequence's seed: `FUZZ_SEED` at build time, else CI's.
const SEED: u64 = number(option_env!("FUZZ_SEED"), 0x5EED_0FC0_FFEE);

/// Calls between two abstraction checks.
const BATCH: u64 = 10_000;

/// A build-time number, decimal or `0x`-hexadecimal (`_` ignored);
/// `default` when the variable is unset. A malformed value stops the build.
const fn number(text: Option<&str>, default: u64) -> u64 {
    let Some(text) = text else {
        return default;
    };
    let bytes = text.as_bytes();
    let (mut i, radix) = if bytes.len() > 2 && bytes[0] == b'0' && (bytes[1] | 0x20) == b'x' {
        (2, 16)
    } else {
        (0, 10)
    };
    let mut value: u64 = 0;
    while i < bytes.len() {
        let digit = match bytes[i] {
            b'_' => {
                i += 1;
                continue;
            }
            b @ b'0'..=b'9' => (b - b'0') as u64,
            b @ b'a'..=b'f' if radix == 16 => (b - b'a' + 10) as u64,
            b @ b'A'..=b'F' if radix == 16 => (b - b'A' + 10) as u64,
            _ => panic!("FUZZ_CALLS / FUZZ_SEED: not a number"),
        };
        value = match value.checked_mul(radix) {
            Some(v) => match v.checked_add(digit) {
                Some(v) => v,
                None => panic!("FUZZ_CALLS / FUZZ_SEED: too large"),
            },
            None => panic!("FUZZ_CALLS / FUZZ_SEED: too large"),
        };
        i += 1;
    }
    value
}

/// xorshift64*: small, deterministic, good enough to spread inputs.
pub struct Random(u64);

impl Random {
    /// The next 64 random bits.
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A random number below `n` (not 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A value that is often interesting: small, a slot, a size, a
    /// boundary, or anything at all.
    fn argument(&mut self) -> u64 {
        match self.below(8) {
            0 => self.below(16),
            1 => self.below(1100),
            2 => 12 + self.below(40),
            3 => [0, 1, u64::MAX, 1 << 63, u64::from(u32::MAX), 4096][self.below(6) as usize],
            4 => self.below(64) << 12,
            _ => self.next(),
        }
    }
}

fn main(_startup: &rt::Startup) -> i32 {
    let mut suite = Suite::new();
    suite.run("syscall_fuzzer", fuzz);
    suite.finish()
}

/// The abstraction check after `call` calls: the kernel's tables agree
/// with the capability model (the kernel prints a disagreement itself).
fn abstraction_holds(call: u64) -> Outcome {
    let result = sys::debug_check_abstraction();
    check!(
        result != Err(Error::NotSupported),
        "this kernel has no abstraction check: boot the fuzz kernel (cargo build --profile fuzz --features fuzz-checks -p kernel)"
    );
    check!(
        result.is_ok(),
        "after {call} calls the kernel's tables disagree with the capability model ({result:?}); see the [abstraction] line above"
    );
    Ok(())
}

/// Whether `status` is 0 or one of `abi::Error`'s codes.
fn defined(status: u64) -> bool {
    status == 0
        || u8::try_from(status)
            .ok()
            .and_then(Error::from_code)
            .is_some()
}

fn fuzz() -> Outcome {
    // xorshift never leaves 0: a zero seed starts from 1.
    let mut random = Random(SEED.max(1));
    rt::println!("fuzz: {CALLS} calls, seed {SEED:#x}");
    let mut statuses = [0u64; 128];
    let mut call = 0;
    let mut skipped = 0u64;
    let mut structure = structure::Structure::new();
    let mut next_check = BATCH;
    let mut checks = 0u64;
    while call < CALLS {
        if call >= next_check {
            abstraction_holds(call)?;
            checks += 1;
            next_check = call + BATCH;
        }
        if random.below(4) == 0 {
            let mut undefined = None;
            call += structure.step(&mut random, &mut |status| {
                if !defined(status) {
                    undefined = Some(status);
                }
                statuses[(status as usize).min(127)] += 1;
            });
            check!(
                undefined.is_none(),
                "call {call}: a structure invocation answered undefined status {:#x}",
                undefined.unwrap_or(0)
            );
            continue;
        }
        // Never the debug halt (it ends the session) nor a flood of console
        // bytes (single characters or, with a cap-dump kernel, whole dumps),
        // nor a Wait: the structure's notifications exist, and nothing
        // would ever signal one the only thread waits on.
        let number = match random.below(10) {
            0 => random.below(40),
            1 => Syscall::Yield as u64,
            _ => Syscall::Call as u64,
        };
        if [
            Syscall::DebugHalt,
            Syscall::DebugPutChar,
            Syscall::DebugCapDump,
            Syscall::Wait,
        ]
        .iter()
        .any(|call| number == *call as u64)
        {
            skipped += 1;
            continue;
        }
        let label = match random.below(4) {
            0 => random.next() as u32,
            _ => Invocation::ALL[random.below(Invocation::ALL.len() as u64) as usize] as u32,
        };
        let info = match random.below(6) {
            0 => random.next(),
            _ => MessageInfo {
                label,
                length: random.below(9) as u8,
                extra_caps: random.below(4) as u8,
            }
            .to_word(),
        };
        for i in 0..3 {
            sys::ipc::set_cap(i, sys::Slot::new(random.argument() as u32));
        }
        for i in 4..8 {
            sys::ipc::set_mr(i, random.argument());
        }
        // Real capabilities most of the time: the root CNode (CNode
        // operations), the Untypeds (retype), the control caps, and what
        // earlier calls created.
        let cap = match random.below(8) {
            0 | 1 => u64::from(abi::bootinfo::INIT_CNODE),
            2 | 3 => u64::from(abi::bootinfo::FIRST_UNTYPED) + random.below(24),
            4 => random.below(64),
            5 => 64 + random.below(64),
            _ => random.argument(),
        };
        let registers = match random.below(3) {
            // Shaped like a retype or CNode call: type/slot, size/slot, slot, count.
            0 => [
                random.below(16),
                12 + random.below(10),
                64 + random.below(64),
                1 + random.below(4),
            ],
            1 => [
                64 + random.below(64),
                random.below(128),
                random.below(8),
                random.below(8),
            ],
            _ => [
                random.argument(),
                random.argument(),
                random.argument(),
                random.argument(),
            ],
        };
        // Never create endpoints or notifications (object types 3 and 4):
        // a random Call, Recv or Wait on one would block the only thread
        // that could ever wake it. Their paths have their own tests.
        let mut registers = registers;
        if matches!(registers[0], 3 | 4) {
            registers[0] = 5;
        }
        // Never touch its own thread: suspending, rewriting or deleting the
        // only thread is a legitimate way to stop, not a kernel bug.
        // (nor its address space, its CNode, its IPC buffer or the Console
        // it reports through).
        let own = [
            abi::bootinfo::INIT_TCB,
            abi::bootinfo::INIT_VSPACE,
            abi::bootinfo::INIT_CNODE,
            abi::bootinfo::INIT_IPC_BUFFER,
            abi::bootinfo::CONSOLE,
        ]
        .map(u64::from);
        if own.contains(&cap) || own.contains(&registers[0]) || own.contains(&registers[1]) {
            skipped += 1;
            continue;
        }
        let out = syscall(number, cap, info, registers);
        check!(
            defined(out.status),
            "call {call}: system call {number} on {cap:#x} answered undefined status {:#x}",
            out.status
        );
        statuses[(out.status as usize).min(127)] += 1;
        call += 1;
    }
    abstraction_holds(call)?;
    checks += 1;
    rt::println!("fuzz: {checks} abstraction checks passed, one per {BATCH} calls and at the end");
    rt::println!(
        "fuzz: {CALLS} calls made ({skipped} drawn and not made); answers by status code:"
    );
    for (code, count) in statuses.iter().enumerate().filter(|(_, c)| **c > 0) {
        let name = u8::try_from(code).ok().and_then(Error::from_code);
        match name {
            Some(error) => rt::println!("fuzz:   {count:>9} {error}"),
            None => rt::println!("fuzz:   {count:>9} ok"),
        }
    }
    Ok(())
}
