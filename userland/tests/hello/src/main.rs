//! `hello`: the smallest user program. Prints one line on the debug
//! console and halts with status 0, the success sentinel a test runner
//! watches for.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

rt::entry!(main);

fn main(_startup: &rt::Startup) -> i32 {
    rt::println!("hello from user space");
    0
}
