//! `syscalls`: a system test of the user-side SDK on the running kernel.
//! Prints `test NAME ... ok|FAILED` lines and `N passed, N failed`, then
//! halts with 0 (all passed) or 1.
//!
//! It checks the debug and scheduling calls (printing and halting only
//! through a Console capability with the right rights), the refusal of
//! unknown numbers, and what `rt` provides (zeroed `.bss`, the heap); it
//! runs as the kernel's boot module, before init exists.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use rt::check;
use rt::testing::{Outcome, Suite};
use sys::{Error, Syscall, syscall};

rt::entry!(main);

fn main(_startup: &rt::Startup) -> i32 {
    let mut suite = Suite::new();
    suite.run("debug_put_char_succeeds", debug_put_char_succeeds);
    suite.run(
        "a_program_without_the_console_prints_nothing",
        a_program_without_the_console_prints_nothing,
    );
    suite.run(
        "a_write_only_console_prints_but_cannot_halt",
        a_write_only_console_prints_but_cannot_halt,
    );
    suite.run("yield_succeeds", yield_succeeds);
    suite.run("unknown_syscall_is_refused", unknown_syscall_is_refused);
    suite.run(
        "debug_name_thread_checks_its_capability",
        debug_name_thread_checks_its_capability,
    );
    suite.run(
        "cap_dump_is_declined_without_the_feature",
        cap_dump_is_declined_without_the_feature,
    );
    suite.run(
        "abstraction_check_is_declined_without_the_feature",
        abstraction_check_is_declined_without_the_feature,
    );
    suite.run("bss_starts_zeroed", bss_starts_zeroed);
    suite.run("heap_allocates_and_reuses", heap_allocates_and_reuses);
    suite.finish()
}

fn debug_put_char_succeeds() -> Outcome {
    // One DebugPutChar per byte, each checked.
    for byte in b"debug console: every byte acknowledged\n" {
        let result = sys::debug_put_char(*byte);
        check!(result.is_ok(), "DebugPutChar answered {result:?}");
    }
    Ok(())
}

fn a_program_without_the_console_prints_nothing() -> Outcome {
    use sys::{Cap, Console, Slot};
    // Through an empty slot and through a capability of another kind, as a
    // domain without `console` would. Were the kernel to print anyway, this
    // line would fail the run by itself.
    let leak = b"\ntest the_console_gate_leaked ... FAILED\n";
    let nobody: Cap<Console> = Cap::from_slot(Slot::new(1000));
    let not_a_console: Cap<Console> = sys::bootinfo::INIT_CNODE.cast();
    for (console, expected) in [
        (nobody, Error::EmptySlot),
        (not_a_console, Error::WrongKind),
    ] {
        for byte in leak {
            let result = sys::console_put_char(console, *byte);
            check!(
                result == Err(expected),
                "DebugPutChar through {console:?} answered {result:?}"
            );
        }
        // Nor can it end the session (a halt would end the run with 3).
        let error = sys::console_halt(console, 3);
        check!(
            error == expected,
            "DebugHalt through {console:?} answered {error:?}"
        );
    }
    Ok(())
}

fn a_write_only_console_prints_but_cannot_halt() -> Outcome {
    use sys::bootinfo::{CONSOLE, INIT_CNODE};
    use sys::{Cap, Console, Rights, Slot};
    // The copy init gives a domain whose image says `console = "write"`.
    let slot = Slot::new(900);
    let result = INIT_CNODE.copy_from(slot, INIT_CNODE, CONSOLE.slot(), Rights::WRITE);
    check!(result.is_ok(), "copying the Console answered {result:?}");
    let write_only: Cap<Console> = Cap::from_slot(slot);
    for byte in b"write-only console: every byte printed\n" {
        let result = sys::console_put_char(write_only, *byte);
        check!(result.is_ok(), "DebugPutChar answered {result:?}");
    }
    // Halting takes the grant right too (a halt would end the run with 3).
    let error = sys::console_halt(write_only, 3);
    check!(
        error == Error::InsufficientRights,
        "DebugHalt without the grant right answered {error:?}"
    );
    let result = INIT_CNODE.delete(slot);
    check!(result.is_ok(), "deleting the copy answered {result:?}");
    Ok(())
}

fn yield_succeeds() -> Outcome {
    let out = syscall(Syscall::Yield as u64, 0, 0, [0; 4]);
    check!(out.status == 0, "Yield answered status {}", out.status);
    Ok(())
}

fn unknown_syscall_is_refused() -> Outcome {
    for number in [0, 8, 31, 37, u64::MAX] {
        let out = syscall(number, 0, 0, [1, 2, 3, 4]);
        let expected = u64::from(Error::InvalidSyscall.code());
        check!(
            out.status == expected,
            "system call {number:#x} answered status {} instead of InvalidSyscall ({expected})",
            out.status
        );
    }
    Ok(())
}

fn debug_name_thread_checks_its_capability() -> Outcome {
    use sys::bootinfo::{INIT_CNODE, INIT_TCB};
    use sys::{Cap, Slot, Tcb};
    let own = INIT_TCB;
    let result = own.set_debug_name("syscalls");
    check!(result.is_ok(), "naming its own thread answered {result:?}");
    // The kernel checks the capability: a CNode is not a thread.
    let not_a_tcb: Cap<Tcb> = INIT_CNODE.cast();
    let result = not_a_tcb.set_debug_name("nobody");
    check!(
        result == Err(Error::WrongKind),
        "naming through a CNode capability answered {result:?}"
    );
    let empty = Cap::<Tcb>::from_slot(Slot::new(1000));
    let result = empty.set_debug_name("nobody");
    check!(
        result.is_err(),
        "naming through an empty slot answered {result:?}"
    );
    Ok(())
}

fn cap_dump_is_declined_without_the_feature() -> Outcome {
    // The tests run the release kernel, built without `cap-dump`.
    let result = sys::debug_cap_dump();
    check!(
        result == Err(Error::NotSupported),
        "DebugCapDump answered {result:?} in a kernel without cap-dump"
    );
    Ok(())
}

fn abstraction_check_is_declined_without_the_feature() -> Outcome {
    // The release kernel has no `fuzz-checks`: the check is not in it.
    let result = sys::debug_check_abstraction();
    check!(
        result == Err(Error::NotSupported),
        "DebugCheckAbstraction answered {result:?} in a kernel without fuzz-checks"
    );
    Ok(())
}

/// 4 KiB of `.bss` that `_start` zeroed.
static WORDS: [AtomicU64; 512] = [const { AtomicU64::new(0) }; 512];

fn bss_starts_zeroed() -> Outcome {
    for (index, word) in WORDS.iter().enumerate() {
        let value = word.swap(u64::MAX, Ordering::Relaxed);
        check!(value == 0, ".bss word {index} was {value:#x}");
    }
    Ok(())
}

fn heap_allocates_and_reuses() -> Outcome {
    for round in 0..4u64 {
        let numbers: Vec<u64> = (0..2000).map(|i| i * round).collect();
        let boxed = Box::new([round; 64]);
        let sum: u64 = numbers.iter().sum();
        check!(
            sum == round * 1999 * 2000 / 2,
            "round {round}: the vector sums to {sum}"
        );
        check!(
            boxed.iter().all(|&value| value == round),
            "round {round}: the box changed"
        );
    }
    Ok(())
}
