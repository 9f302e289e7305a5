//! Kernel benchmarks (`bench=...` on the command line), meant to run under
//! `-icount shift=0,sleep=off`, where the cycle counter advances one tick per
//! guest instruction: the numbers are instruction counts, identical from run
//! to run.
//!
//! Each benchmark times `ITERATIONS` operations from user mode and subtracts
//! the same loop without the operation (the measurement overhead). Output:
//! `bench NAME instructions=N` per benchmark, for `cargo xtask bench`.

use crate::arch::{self, Exit, UserContext};
use crate::frames::BootFrames;
use crate::vspace;

const ITERATIONS: u64 = 1000;

/// Runs the benchmarks the command line names; returns the exit status.
pub fn run(names: &str, frames: &mut BootFrames) -> u32 {
    let mut status = crate::EXIT_SUCCESS;
    for name in names.split(',') {
        let result = match name {
            "null-syscall" => null_syscall(frames),
            other => Err(BenchError::Unknown(other)),
        };
        match result {
            Ok(per_operation) => crate::println!("bench {name} instructions={per_operation}"),
            Err(e) => {
                crate::println!("bench {name} FAILED: {e}");
                status = crate::EXIT_TESTS_FAILED;
            }
        }
    }
    status
}

enum BenchError<'a> {
    Unknown(&'a str),
    OutOfFrames,
    UnexpectedExit(Exit),
}

impl core::fmt::Display for BenchError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BenchError::Unknown(name) => {
                write!(f, "unknown benchmark {name:?} (known: null-syscall)")
            }
            BenchError::OutOfFrames => write!(f, "out of boot frames"),
            BenchError::UnexpectedExit(exit) => {
                write!(f, "the bench program stopped with {exit:?}")
            }
        }
    }
}

/// A user `Yield` round trip: trap entry, decode, return to user.
fn null_syscall(frames: &mut BootFrames) -> Result<u64, BenchError<'static>> {
    let root = vspace::space_with_program(arch::user_bench_program(), frames)
        .map_err(|_| BenchError::OutOfFrames)?;
    arch::set_address_space(root);
    let with_calls = time_program(ITERATIONS, 1)?;
    let overhead = time_program(ITERATIONS, 0)?;
    Ok(with_calls.saturating_sub(overhead) / ITERATIONS)
}

/// Runs the bench program to its halt and returns the total it reports.
///
/// A function of its own, so the timed loop (the inlined
/// `syscall::handle`) is compiled the same whatever else the harness
/// inlines: inlined into `run`, its registers followed unrelated code
/// (console printing out of line cost it three instructions a call on
/// aarch64; kernel/README.md, "Size").
#[inline(never)]
fn time_program(iterations: u64, make_calls: u64) -> Result<u64, BenchError<'static>> {
    let mut context = UserContext::new_user(vspace::PROGRAM_ADDRESS, 0);
    context.set_start_arguments(iterations, make_calls);
    loop {
        match arch::run_user(&mut context) {
            Exit::Syscall if context.syscall_number() == abi::Syscall::DebugHalt as u64 => {
                return Ok(context.syscall_arg(0));
            }
            Exit::Syscall => {
                crate::syscall::handle(&mut context);
            }
            other => return Err(BenchError::UnexpectedExit(other)),
        }
    }
}
