//! The honest domain. Init starts it above the attacker (priority 200
//! against 150), so it fills its private memory with [`work::word`]s and
//! blocks in `Recv` on its endpoint before the attacker runs at all. The
//! attacker's last act is a [`work::CHECK`] call: the honest domain reads
//! every word back and replies MR0 = 1 when all are as written (else 0,
//! MR1 the first wrong index) and MR2 = [`work::answer`] of the nonce over
//! what it read, which the attacker checks against the definition.

use crate::work::{self, HONEST_MEMORY, WORDS};
use sys::names::CapTable;
use sys::{Endpoint, MessageInfo};

#[allow(unsafe_code)]
fn memory() -> rt::shared::SharedWords {
    // SAFETY: the image maps `honest_memory` (16 KiB) read-write at
    // HONEST_MEMORY in this domain only, for its whole life.
    unsafe { rt::shared::SharedWords::new(HONEST_MEMORY, WORDS) }
}

/// Runs the honest domain; returns only if its endpoint fails.
pub fn run(table: &CapTable) -> i32 {
    let Some(endpoint) = table.lookup::<Endpoint>("channel0") else {
        rt::println!("[honest] no endpoint named channel0");
        return 1;
    };
    let memory = memory();
    for index in 0..WORDS {
        memory.write(index, work::word(index));
    }
    rt::println!("[honest] wrote its {WORDS} words; waiting for the check");
    let mut received = endpoint.recv();
    loop {
        let request = match received {
            Ok(request) => request,
            Err(e) => {
                rt::println!("[honest] Recv answered {e:?}");
                return 1;
            }
        };
        let (label, mrs) = if request.info.label == work::CHECK {
            let read = (0..WORDS).map(|index| memory.read(index).unwrap_or(0));
            let wrong = read
                .clone()
                .enumerate()
                .find(|&(index, value)| value != work::word(index));
            let answer = work::answer(request.mrs[0], read);
            rt::println!(
                "[honest] checked its memory: {}",
                match wrong {
                    None => "every word as written",
                    Some(_) => "CHANGED",
                }
            );
            (
                0,
                [
                    u64::from(wrong.is_none()),
                    wrong.map_or(0, |(index, _)| index as u64),
                    answer,
                    0,
                ],
            )
        } else {
            (1, [0; 4])
        };
        received = endpoint.reply_recv(MessageInfo::new(label, 3), mrs);
    }
}
