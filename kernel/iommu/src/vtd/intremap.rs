//! VT-d interrupt remapping: the table of interrupt remapping table entries
//! (IRTEs) the unit consults for every interrupt request, and the formats
//! that point requests at it.
//!
//! Why: on x86 a DMA write to `0xFEEx_xxxx` is not translated memory
//! traffic but an interrupt request. Without remapping, any device a driver
//! controls can raise any vector on any CPU — forge another driver's
//! interrupt, or the kernel's own. With remapping on and compatibility
//! format off (GSTS.CFIS clear), a request must name an IRTE by index
//! (remappable format), the IRTE must be present, and its source-id check
//! must match the requester id the request arrived with; otherwise the unit
//! drops it and records a fault (reasons 0x20..0x26).
//!
//! Sources: VT-d 5.1 (remapping), 5.1.4 (IRTE layout), 5.1.5 (remappable
//! MSI and I/O APIC formats), 6.5.2.7 (interrupt entry cache invalidate),
//! 11.4.29 (IRTA_REG).

use super::VtdError;
use super::qi::{Descriptor, kind};
use crate::PhysAddr;

/// Bytes of one IRTE.
pub const IRTE_SIZE: usize = 16;
/// IRTEs in one 4 KiB page.
pub const ENTRIES_PER_PAGE: usize = 4096 / IRTE_SIZE;

/// Which requests an IRTE accepts, by source id (IRTE bits 83:80 and 79:64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceCheck {
    /// SVT = 00: any requester (for nothing a device could forge).
    Any,
    /// SVT = 01, SQ = 00: only requester id `0` (bus, device, function).
    Requester(u16),
}

/// One present IRTE in physical destination mode, fixed delivery, xAPIC
/// destination ids (EIME off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irte {
    /// The vector delivered (bits 23:16).
    pub vector: u8,
    /// The destination local APIC id (xAPIC: DST bits 15:8, IRTE bits 47:40).
    pub destination: u8,
    /// Level-triggered (TM, bit 4); edge otherwise.
    pub level: bool,
    /// Who may raise it.
    pub source: SourceCheck,
}

/// Bits of the low IRTE word.
mod low {
    /// P: present.
    pub const PRESENT: u64 = 1 << 0;
    /// TM: trigger mode, 1 = level.
    pub const LEVEL: u64 = 1 << 4;
    /// V: vector, bits 23:16.
    pub const VECTOR_SHIFT: u32 = 16;
    /// DST: destination, bits 63:32; an xAPIC id sits in DST bits 15:8.
    pub const XAPIC_DESTINATION_SHIFT: u32 = 32 + 8;
}

/// Bits of the high IRTE word.
mod high {
    /// SID: source id, bits 15:0.
    pub const SOURCE_ID_MASK: u64 = 0xffff;
    /// SVT: source validation type, bits 19:18; 01 = check SID (with SQ).
    pub const VERIFY_REQUESTER: u64 = 1 << 18;
    /// SVT's two bits.
    pub const SVT_MASK: u64 = 3 << 18;
}

impl Irte {
    /// The entry as the unit reads it: `[bits 63:0, bits 127:64]`.
    pub fn encode(&self) -> [u64; 2] {
        let mut word0 = low::PRESENT
            | u64::from(self.vector) << low::VECTOR_SHIFT
            | u64::from(self.destination) << low::XAPIC_DESTINATION_SHIFT;
        if self.level {
            word0 |= low::LEVEL;
        }
        let word1 = match self.source {
            SourceCheck::Any => 0,
            SourceCheck::Requester(id) => high::VERIFY_REQUESTER | u64::from(id),
        };
        [word0, word1]
    }

    /// The entry `words` describe, if it is present and in the form
    /// [`Irte::encode`] writes (anything else is `None`).
    pub fn decode(words: [u64; 2]) -> Option<Irte> {
        let [word0, word1] = words;
        if word0 & low::PRESENT == 0 {
            return None;
        }
        let source = match word1 & high::SVT_MASK {
            0 => SourceCheck::Any,
            high::VERIFY_REQUESTER => SourceCheck::Requester((word1 & high::SOURCE_ID_MASK) as u16),
            _ => return None,
        };
        let irte = Irte {
            vector: (word0 >> low::VECTOR_SHIFT) as u8,
            destination: (word0 >> low::XAPIC_DESTINATION_SHIFT) as u8,
            level: word0 & low::LEVEL != 0,
            source,
        };
        (irte.encode() == words).then_some(irte)
    }

    /// Whether a request from requester `source_id` passes this entry's
    /// source check (what the hardware does before delivering).
    pub fn accepts(&self, source_id: u16) -> bool {
        match self.source {
            SourceCheck::Any => true,
            SourceCheck::Requester(id) => id == source_id,
        }
    }
}

/// The IRTA_REG value for a table of `entries` IRTEs at `table`
/// (11.4.29: address bits 63:12, S = log2(entries) - 1 in bits 3:0, EIME
/// bit 11 clear: xAPIC destinations).
pub fn irta_value(table: PhysAddr, entries: usize) -> Result<u64, VtdError> {
    if table & 0xfff != 0 {
        return Err(VtdError::InvalidParameter {
            what: "interrupt remapping table not 4 KiB aligned",
        });
    }
    if !entries.is_power_of_two() || !(2..=65536).contains(&entries) {
        return Err(VtdError::InvalidParameter {
            what: "interrupt remapping table size not a power of two in 2..=65536",
        });
    }
    Ok(table | u64::from(entries.trailing_zeros() - 1))
}

/// Bit 4 of a remappable MSI address and bit 48 of a remappable I/O APIC
/// entry: "interrupt format = remappable".
const REMAPPABLE: u64 = 1;

/// The MSI address and data that name IRTE `index` (5.1.5.2): address
/// `0xFEE0_0000 | handle[14:0] << 5 | 1 << 4 | handle[15] << 2`, SHV (bit
/// 3) clear so the data is unused (0).
pub fn msi_message(index: u16) -> (u64, u32) {
    let handle = u64::from(index);
    let address = 0xFEE0_0000 | (handle & 0x7fff) << 5 | REMAPPABLE << 4 | (handle >> 15 & 1) << 2;
    (address, 0)
}

/// An I/O APIC redirection entry in remappable format naming IRTE `index`
/// (5.1.5.1): handle\[14:0\] in bits 63:49, format bit 48, handle\[15\] in bit
/// 11, mask 16, trigger 15, polarity 13; the vector (7:0) must equal the
/// IRTE's, which the I/O APIC uses to match EOIs.
pub fn ioapic_entry(index: u16, vector: u8, masked: bool, level: bool) -> u64 {
    let handle = u64::from(index);
    (handle & 0x7fff) << 49
        | REMAPPABLE << 48
        | (handle >> 15 & 1) << 11
        | u64::from(masked) << 16
        | u64::from(level) << 15
        | u64::from(vector)
}

/// Which interrupt entries an invalidation drops from the unit's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryCacheScope {
    /// Every entry.
    Global,
    /// `2^order` entries from `index` (aligned).
    Entries {
        /// First IRTE.
        index: u16,
        /// log2 of the count (IM, at most 31).
        order: u8,
    },
}

/// Descriptor type of the interrupt entry cache invalidate (6.5.2.7).
pub const INTERRUPT_ENTRY_CACHE: u64 = 0x4;

impl Descriptor {
    /// Interrupt entry cache invalidate descriptor (6.5.2.7): G bit 4
    /// (0 global, 1 index-selective), IM bits 31:27, IIDX bits 47:32.
    pub fn interrupt_entry_cache(scope: EntryCacheScope) -> Self {
        let low = match scope {
            EntryCacheScope::Global => 0,
            EntryCacheScope::Entries { index, order } => {
                1 << 4 | u64::from(order & 0x1f) << 27 | u64::from(index) << 32
            }
        };
        Self([INTERRUPT_ENTRY_CACHE | low, 0, 0, 0])
    }
}

// The type codes the queue module knows must not collide with this one.
const _: () = assert!(
    INTERRUPT_ENTRY_CACHE != kind::CONTEXT_CACHE
        && INTERRUPT_ENTRY_CACHE != kind::IOTLB
        && INTERRUPT_ENTRY_CACHE != kind::WAIT
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irte_fields_sit_where_the_spec_puts_them() {
        let entry = Irte {
            vector: 0x31,
            destination: 0x02,
            level: false,
            source: SourceCheck::Requester(0x0020),
        };
        // P=1, vector 0x31 at 23:16, xAPIC id 2 at 47:40; SVT=01, SID 0x20.
        assert_eq!(entry.encode(), [0x0000_0200_0031_0001, 0x0004_0020]);
        let level = Irte {
            level: true,
            source: SourceCheck::Any,
            ..entry
        };
        assert_eq!(level.encode(), [0x0000_0200_0031_0011, 0]);
    }

    #[test]
    fn decode_inverts_encode_and_refuses_the_rest() {
        for source in [SourceCheck::Any, SourceCheck::Requester(0xf0)] {
            for level in [false, true] {
                let entry = Irte {
                    vector: 48,
                    destination: 0,
                    level,
                    source,
                };
                assert_eq!(Irte::decode(entry.encode()), Some(entry));
            }
        }
        assert_eq!(Irte::decode([0, 0]), None, "not present");
        assert_eq!(Irte::decode([1 << 0 | 1 << 2, 0]), None, "redirection hint");
        assert_eq!(Irte::decode([1, 2 << 18]), None, "bus-range validation");
    }

    #[test]
    fn the_source_check_compares_the_whole_requester_id() {
        let entry = Irte {
            vector: 48,
            destination: 0,
            level: false,
            source: SourceCheck::Requester(0x0020),
        };
        assert!(entry.accepts(0x0020));
        assert!(!entry.accepts(0x0018));
        assert!(!entry.accepts(0x0021));
        let open = Irte {
            source: SourceCheck::Any,
            ..entry
        };
        assert!(open.accepts(0x0018));
    }

    #[test]
    fn irta_encodes_the_size_as_log2_minus_one() {
        assert_eq!(irta_value(0x1234_5000, 256), Ok(0x1234_5007));
        assert_eq!(irta_value(0x1000, 2), Ok(0x1000));
        assert_eq!(irta_value(0x1000, 65536), Ok(0x100f));
        assert!(irta_value(0x1080, 256).is_err());
        assert!(irta_value(0x1000, 3).is_err());
        assert!(irta_value(0x1000, 1).is_err());
    }

    #[test]
    fn remappable_msi_and_ioapic_formats() {
        // Handle 5: bits 19:5 = 5, format bit 4.
        assert_eq!(msi_message(5), (0xFEE0_00B0, 0));
        // Handle 0x8001: handle[15] goes to bit 2.
        assert_eq!(msi_message(0x8001), (0xFEE0_0034, 0));
        let entry = ioapic_entry(3, 35, true, false);
        assert_eq!(entry >> 49, 3);
        assert_eq!(entry >> 48 & 1, 1);
        assert_eq!(entry >> 16 & 1, 1);
        assert_eq!(entry & 0xff, 35);
        assert_eq!(
            ioapic_entry(0x8000, 0, false, true),
            1 << 48 | 1 << 11 | 1 << 15
        );
    }

    #[test]
    fn entry_cache_invalidation_descriptor() {
        let global = Descriptor::interrupt_entry_cache(EntryCacheScope::Global);
        assert_eq!(global.0, [0x4, 0, 0, 0]);
        let one = Descriptor::interrupt_entry_cache(EntryCacheScope::Entries {
            index: 17,
            order: 0,
        });
        assert_eq!(one.0[0], 0x4 | 1 << 4 | 17 << 32);
        assert_eq!(one.kind(), INTERRUPT_ENTRY_CACHE);
    }

    #[test]
    fn interrupt_faults_print_their_entry() {
        use crate::vtd::regs::{FaultAccess, FaultRecord};
        let record = FaultRecord {
            source_id: 0x0018,
            reason: 0x26,
            address: 17 << 48,
            access: FaultAccess::Write,
            pasid: None,
            privileged: false,
            execute: false,
            address_type: 0,
            index: 0,
        };
        let text = std::format!("{record}");
        assert_eq!(
            text,
            "interrupt remapping fault: 00:03.0 IRTE 17 reason 0x26 (IR: source id does not match the entry)"
        );
    }
}
