//! `ping`: the client of `images/pingpong.toml`, and its system test. It
//! learns its channels by name, writes a word into the shared region, calls
//! the server (`pong`, another protection domain) through the endpoint
//! channel, and checks that the server saw the word, that the server's
//! answer appeared in the shared region, that the call arrived with the
//! server end's badge and that the server's notification arrived with the
//! client end's. It prints `test NAME ... ok` lines and halts the system
//! with the suite's status.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use rt::check;
use rt::testing::{Outcome, Suite};
use sys::{Cap, Endpoint, Frame, MessageInfo, Notification};

rt::entry!(main);

/// Where the image maps the shared region in this domain (`pingpong.toml`).
const SHARED: u64 = 0x2000_0000;
/// The server end's badge of the endpoint channel (its id 0: `1 << 0`).
const SERVER_BADGE: u64 = 1 << 0;
/// This end's badge of the notification channel (its id 1: `1 << 1`).
const CLIENT_BADGE: u64 = 1 << 1;

/// The shared region, as words.
fn shared() -> rt::shared::SharedWords {
    #[allow(unsafe_code)]
    // SAFETY: init maps the 4 KiB shared region read-write at SHARED
    // before this domain starts, for its whole life; only this type
    // touches it here.
    unsafe {
        rt::shared::SharedWords::new(SHARED, 512)
    }
}

fn main(startup: &rt::Startup) -> i32 {
    let mut suite = Suite::new();
    let table = startup.caps();
    let calls = table.and_then(|t| t.lookup::<Endpoint>("channel0"));
    let answered = table.and_then(|t| t.lookup::<Notification>("channel1"));
    suite.run("capabilities_found_by_name", || {
        check!(table.is_some(), "init gave no capability table");
        check!(calls.is_some(), "no endpoint named channel0");
        check!(answered.is_some(), "no notification named channel1");
        let wrong_kind = table.and_then(|t| t.lookup::<Frame>("channel0"));
        check!(
            wrong_kind.is_none(),
            "channel0 looked up as a Frame: {wrong_kind:?}"
        );
        Ok(())
    });
    let (Some(calls), Some(answered)) = (calls, answered) else {
        return suite.finish();
    };
    for (round, word) in [0x1234_5678_9abc_def0u64, 0x0f0f_0f0f_0f0f_0f0f, 42]
        .into_iter()
        .enumerate()
    {
        suite.run(
            match round {
                0 => "call_and_shared_region_round_1",
                1 => "call_and_shared_region_round_2",
                _ => "call_and_shared_region_round_3",
            },
            || round_trip(calls, answered, word),
        );
    }
    suite.finish()
}

/// One exchange: our write, the call, the server's write and signal.
fn round_trip(calls: Cap<Endpoint>, answered: Cap<Notification>, word: u64) -> Outcome {
    shared().write(0, word);
    let reply = calls.call(MessageInfo::new(7, 1), [word, 0, 0, 0]);
    let Ok(reply) = reply else {
        rt::fail!("Call answered {reply:?}")
    };
    check!(
        reply.mrs[0] == SERVER_BADGE,
        "the server received badge {:#x}, expected {SERVER_BADGE:#x}",
        reply.mrs[0]
    );
    check!(
        reply.mrs[1] == word,
        "the server read {:#x} from the shared region, we wrote {word:#x}",
        reply.mrs[1]
    );
    check!(
        reply.mrs[2] == word,
        "the server received {:#x} in the message, we sent {word:#x}",
        reply.mrs[2]
    );
    let answer = shared().read(1).unwrap_or(0);
    check!(
        answer == !word,
        "the shared region holds {answer:#x} after the call, the server writes {:#x}",
        !word
    );
    let bits = answered.wait();
    check!(
        bits == Ok(CLIENT_BADGE),
        "the server's notification brought {bits:?}, expected Ok({CLIENT_BADGE:#x})"
    );
    Ok(())
}
