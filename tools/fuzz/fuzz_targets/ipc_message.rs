//! Fuzz target `ipc_message`: the decoders of the words a message carries
//! (`caps/abi`): the `MessageInfo` word, system-call numbers, invocation
//! labels, object types and error codes, and `sys::resources`' reading of
//! init's replies (label and MR0).
//!
//! Asserts: every decoder is exact. A `MessageInfo` that decodes encodes
//! back to the same word, with at most 64 registers and 3 capabilities,
//! and one that does not is `InvalidMessage`; a system call, label, object
//! type or error that decodes has the number it was decoded from; a
//! refusal's code is the reply label it was read from.
#![no_main]

use abi::{Error, Invocation, MessageInfo, ObjectType, Syscall, registers};
use libfuzzer_sys::fuzz_target;
use sys::resources::Refusal;

fuzz_target!(|input: (u64, u64, u32, u64, u8)| {
    let (word, number, label, mr0, code) = input;
    match MessageInfo::from_word(word) {
        Ok(info) => {
            assert_eq!(info.to_word(), word);
            assert!(usize::from(info.length) <= registers::MAX_MESSAGE_REGISTERS);
            assert!(usize::from(info.extra_caps) <= registers::MAX_EXTRA_CAPS);
        }
        Err(error) => assert_eq!(error, Error::InvalidMessage),
    }
    if let Some(call) = Syscall::from_number(number) {
        assert_eq!(call as u64, number);
    }
    if let Some(invocation) = Invocation::from_label(label) {
        assert_eq!(invocation as u32, label);
    }
    if let Some(kind) = ObjectType::from_number(number) {
        assert_eq!(kind as u64, number);
    }
    if let Some(error) = Error::from_code(code) {
        assert_eq!(error.code(), code);
    }
    let refusal = Refusal::from_reply(label, mr0);
    assert_eq!(refusal.code(), label);
});
