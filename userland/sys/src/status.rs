//! Asking init what IOMMU capabilities it handed out, checked live.
//!
//! Init keeps a table of every capability it placed in a domain's CNode on
//! the run-time request path (`crate::resources`): the IoDevice, the
//! IoSpace, the fault queue and its Notification, by domain and slot. A
//! [`STATUS`] request reads one entry of that table, and init checks it
//! *at that moment*: it copies the domain's slot into a scratch slot of
//! its own with `CNode.Copy` and deletes the copy again. The copy fails
//! (`EmptySlot`) when the domain deleted the capability or a revoke took
//! it away, so [`Entry::live`] says whether the slot still holds a
//! capability now, not whether init once gave one. (The kernel has no
//! invocation that names a capability's kind, so a domain that moved
//! something else into that slot would still count as holding it.)
//!
//! | request (label) | MR0 | reply MR0 | reply MR1 | reply MR2 | reply MR3 |
//! |---|---|---|---|---|---|
//! | [`STATUS`] | entry index | domain index | [`Kind`] code | PCI address `\| slot << 16` | 0 when live, else the kernel's error code of the check |
//! | [`DOMAIN_NAME`] | domain index | name bytes 0..8 | 8..16 | 16..24 (NUL-padded, cut at 24) | how many domains |
//!
//! An index past the end is refused with `Refusal::BadArgument` (7). Any
//! domain with an endpoint to init may ask: the table says which domain
//! holds what, which every domain of an image may know from the image.

use crate::cap::{Cap, Endpoint};
use crate::resources::{Refusal, RequestError};
use crate::{Error, MessageInfo};

/// Read one entry of init's table of handed-out IOMMU capabilities.
pub const STATUS: u32 = 0x10_000b;
/// Read one domain's name.
pub const DOMAIN_NAME: u32 = 0x10_000c;

/// What kind of capability an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An IoDevice (1).
    IoDevice,
    /// An IoSpace (2).
    IoSpace,
    /// An IoFaultQueue (3).
    IoFaultQueue,
    /// The Notification its fault queue signals (4).
    Notification,
}

impl Kind {
    /// The code in the reply.
    pub fn code(self) -> u64 {
        match self {
            Kind::IoDevice => 1,
            Kind::IoSpace => 2,
            Kind::IoFaultQueue => 3,
            Kind::Notification => 4,
        }
    }

    /// From a reply's code.
    pub fn from_code(code: u64) -> Option<Kind> {
        Some(match code {
            1 => Kind::IoDevice,
            2 => Kind::IoSpace,
            3 => Kind::IoFaultQueue,
            4 => Kind::Notification,
            _ => return None,
        })
    }

    /// Its kernel object's name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::IoDevice => "IoDevice",
            Kind::IoSpace => "IoSpace",
            Kind::IoFaultQueue => "IoFaultQueue",
            Kind::Notification => "Notification",
        }
    }
}

/// One entry of init's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The holding domain's index in the image.
    pub domain: u64,
    /// The capability's kind.
    pub kind: Kind,
    /// The device it is for (`resources::pci_address`).
    pub pci: u64,
    /// The domain's slot init put it in.
    pub slot: u32,
    /// `Ok` when the slot still held a capability when init looked, else
    /// the kernel's answer to init's check.
    pub live: Result<(), Error>,
}

impl Entry {
    /// The reply registers of this entry.
    pub fn to_mrs(&self) -> [u64; 4] {
        let live = match self.live {
            Ok(()) => 0,
            Err(e) => u64::from(e.code()),
        };
        [
            self.domain,
            self.kind.code(),
            self.pci | u64::from(self.slot) << 16,
            live,
        ]
    }

    /// From reply registers; `None` when they name no [`Kind`].
    pub fn from_mrs(mrs: [u64; 4]) -> Option<Entry> {
        let live = match mrs[3] {
            0 => Ok(()),
            code => Err(u8::try_from(code)
                .ok()
                .and_then(Error::from_code)
                .unwrap_or(crate::syscall::UNKNOWN_STATUS)),
        };
        Some(Entry {
            domain: mrs[0],
            kind: Kind::from_code(mrs[1])?,
            pci: mrs[2] & 0xFFFF,
            slot: (mrs[2] >> 16) as u32,
            live,
        })
    }
}

/// A domain name in three registers (NUL-padded, cut at 24 bytes).
pub fn name_to_mrs(name: &str) -> [u64; 3] {
    let mut bytes = [0u8; 24];
    let len = name.len().min(24);
    bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    [word(0), word(1), word(2)]
}

/// The name of [`name_to_mrs`]'s registers, into `out`; its length.
pub fn name_from_mrs(mrs: [u64; 3], out: &mut [u8; 24]) -> usize {
    for (i, word) in mrs.iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    out.iter().position(|&b| b == 0).unwrap_or(24)
}

fn call(init: Cap<Endpoint>, label: u32, index: u64) -> Result<Option<[u64; 4]>, RequestError> {
    let reply = init
        .call(MessageInfo::new(label, 1), [index, 0, 0, 0])
        .map_err(RequestError::Call)?;
    match reply.info.label {
        0 => Ok(Some(reply.mrs)),
        label => match Refusal::from_reply(label, reply.mrs[0]) {
            Refusal::BadArgument => Ok(None),
            refusal => Err(RequestError::Refused(refusal)),
        },
    }
}

/// [`STATUS`]: entry `index` of init's table, checked now; `None` past
/// the end.
pub fn entry(init: Cap<Endpoint>, index: u64) -> Result<Option<Entry>, RequestError> {
    Ok(call(init, STATUS, index)?.and_then(Entry::from_mrs))
}

/// [`DOMAIN_NAME`]: domain `index`'s name (into `out`, its length) and how
/// many domains there are; `None` past the end.
pub fn domain_name(
    init: Cap<Endpoint>,
    index: u64,
    out: &mut [u8; 24],
) -> Result<Option<(usize, u64)>, RequestError> {
    Ok(call(init, DOMAIN_NAME, index)?
        .map(|mrs| (name_from_mrs([mrs[0], mrs[1], mrs[2]], out), mrs[3])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_names_round_trip_through_registers() {
        for (kind, live) in [
            (Kind::IoDevice, Ok(())),
            (Kind::IoSpace, Err(Error::EmptySlot)),
            (Kind::IoFaultQueue, Ok(())),
            (Kind::Notification, Err(Error::LookupFailed)),
        ] {
            let entry = Entry {
                domain: 2,
                kind,
                pci: 0x38,
                slot: 41,
                live,
            };
            assert_eq!(Entry::from_mrs(entry.to_mrs()), Some(entry));
        }
        assert_eq!(Entry::from_mrs([0, 9, 0, 0]), None);
        let mut out = [0u8; 24];
        let len = name_from_mrs(name_to_mrs("vnet"), &mut out);
        assert_eq!(&out[..len], b"vnet");
        let long = "a-name-longer-than-twenty-four-bytes";
        let len = name_from_mrs(name_to_mrs(long), &mut out);
        assert_eq!(&out[..len], &long.as_bytes()[..24]);
    }
}
