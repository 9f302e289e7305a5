//! `redteam`: both domains of `images/redteam.toml`, told apart by what
//! init gave them. The domain whose capability table holds an `untyped`
//! is the attacker (`attacks.rs`): it tries every attack its Untyped, its
//! own CNode and VSpace, its edu device and init's request endpoint allow,
//! printing a `test NAME ... ok` line for each one the kernel or init
//! refuses, and last asks the other domain to check its own work. The
//! other is the honest domain (`honest.rs`): it computes over its private
//! memory before the attacker runs and answers that last question.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

mod attacks;
mod honest;
mod work;

use sys::Untyped;

rt::entry!(main);

fn main(startup: &rt::Startup) -> i32 {
    let Some(table) = startup.caps() else {
        rt::println!("[redteam] no capability table: boot images/redteam.toml");
        return 1;
    };
    if table.lookup::<Untyped>("untyped").is_some() {
        attacks::run(table)
    } else {
        honest::run(table)
    }
}
