//! `edu`: one program, two roles. As a protection domain of an image (init
//! gave it a capability table) it is the driver, `edu::story`; as the root
//! task (no table) it runs the IOMMU test suite, `suite`, kept apart from
//! the driver's library.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

mod suite;

rt::entry!(main);

fn main(startup: &rt::Startup) -> i32 {
    match startup.caps() {
        Some(table) => edu::story::run(table),
        None => suite::run(),
    }
}
