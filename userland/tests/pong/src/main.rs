//! `pong`: the server of `images/pingpong.toml`. It learns its channels by
//! name (`channel0`, the endpoint the client calls; `channel1`, the
//! notification it signals), then answers every call: it reads the word
//! the client wrote at the start of the shared region, writes its answer
//! (the word inverted) just after it, signals the client, and replies with
//! the badge it received and the word it read.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use sys::{Endpoint, MessageInfo, Notification};

rt::entry!(main);

/// Where the image maps the shared region in this domain (`pingpong.toml`).
const SHARED: u64 = 0x1000_0000;

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
    let Some(table) = startup.caps() else {
        rt::println!("[pong] no capability table");
        return 1;
    };
    let (Some(calls), Some(answered)) = (
        table.lookup::<Endpoint>("channel0"),
        table.lookup::<Notification>("channel1"),
    ) else {
        rt::println!("[pong] channel0 (endpoint) or channel1 (notification) missing");
        return 1;
    };
    let mut message = calls.recv();
    loop {
        let call = match message {
            Ok(call) => call,
            Err(e) => {
                rt::println!("[pong] receiving answered {e:?}");
                return 1;
            }
        };
        let seen = shared().read(0).unwrap_or(0);
        shared().write(1, !seen);
        if let Err(e) = answered.signal() {
            rt::println!("[pong] signalling answered {e:?}");
            return 1;
        }
        message = calls.reply_recv(MessageInfo::new(0, 3), [call.badge, seen, call.mrs[0], 0]);
    }
}
