//! Decoding the kernel's raw console lines for the reader.
//!
//! The release kernel prints register values, IOMMU fault records and
//! trap frames raw, one compact line each, so its image carries no
//! decoding text (kernel/README.md, "Size"). xtask decodes them when it
//! echoes the guest console (`cargo xtask run`) and in the serial tail a
//! failed system test prints, with the `Display` impls of the `iommu`
//! crate's `decode` feature, compiled here on the host. [`decode`] gives
//! the lines the kernel used to print itself:
//!
//! ```text
//! [vtd] VER V CAP C ECAP E                     VER, CAP and ECAP decoded
//! [smmu] IDR0 A IDR1 B IDR3 C IDR5 D           the four IDRs decoded
//! [vtd] fault FRCD LOW HIGH[ burst]            the fault record decoded
//! [smmu] event W0 W1 W2 W3[ burst]             the event record decoded
//! [trap] unexpected exception V error E cr2 A frame W...     (x86_64)
//! [trap] unexpected exception entry N ESR E FAR A frame W...  (aarch64)
//! ```

use iommu::smmuv3::queue::Event;
use iommu::smmuv3::regs::{Idr0, Idr1, Idr3, Idr5};
use iommu::vtd::regs::{Capability, ExtendedCapability, FaultRecord, Version};

/// What xtask puts before a decoded line, so a reader tells it from the
/// guest's own output.
pub const DECODED: &str = "  = ";

/// The decoded text for one raw console line: the lines the kernel used to
/// print, or nothing when `line` is not one the kernel prints raw (or does
/// not parse).
pub fn decode(line: &str) -> Vec<String> {
    registers(line)
        .or_else(|| record(line))
        .or_else(|| trap(line))
        .unwrap_or_default()
}

/// A `0x`-prefixed hexadecimal number.
fn hex(word: &str) -> Option<u64> {
    u64::from_str_radix(word.strip_prefix("0x")?, 16).ok()
}

/// The words after `tag` when they are `names[i] value[i]` pairs.
fn named(rest: &str, names: &[&str]) -> Option<Vec<u64>> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    if words.len() != names.len() * 2 {
        return None;
    }
    words
        .chunks(2)
        .zip(names)
        .map(|(pair, name)| (pair[0] == *name).then(|| hex(pair[1])).flatten())
        .collect()
}

/// `[vtd] VER ...` and `[smmu] IDR0 ...`: one line per register.
fn registers(line: &str) -> Option<Vec<String>> {
    if let Some(rest) = line.strip_prefix("[vtd] VER ") {
        let values = named(&format!("VER {rest}"), &["VER", "CAP", "ECAP"])?;
        return Some(vec![
            format!("[vtd] {}", Version(u32::try_from(values[0]).ok()?)),
            format!("[vtd] {}", Capability(values[1])),
            format!("[vtd] {}", ExtendedCapability(values[2])),
        ]);
    }
    let rest = line.strip_prefix("[smmu] IDR0 ")?;
    let values = named(&format!("IDR0 {rest}"), &["IDR0", "IDR1", "IDR3", "IDR5"])?;
    let value = |i: usize| u32::try_from(values[i]).ok();
    Some(vec![
        format!("[smmu] {}", Idr0(value(0)?)),
        format!("[smmu] {}", Idr1(value(1)?)),
        format!("[smmu] {}", Idr3(value(2)?)),
        format!("[smmu] {}", Idr5(value(3)?)),
    ])
}

/// The first `count` hexadecimal words of `rest` and the text after them
/// (a burst's ` (xN...)` note).
fn words(rest: &str, count: usize) -> Option<(Vec<u64>, &str)> {
    let mut values = Vec::new();
    let mut rest = rest;
    for _ in 0..count {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ').unwrap_or(rest.len());
        values.push(hex(&rest[..end])?);
        rest = &rest[end..];
    }
    Some((values, rest))
}

/// `[vtd] fault FRCD ...` and `[smmu] event ...`, with a burst's note kept.
fn record(line: &str) -> Option<Vec<String>> {
    if let Some(rest) = line.strip_prefix("[vtd] fault FRCD ") {
        let (values, note) = words(rest, 2)?;
        let record = FaultRecord::decode(0, values[0], values[1])?;
        return Some(vec![format!("[vtd] fault: {record}{note}")]);
    }
    let rest = line.strip_prefix("[smmu] event ")?;
    let (values, note) = words(rest, 4)?;
    let event = Event::decode([values[0], values[1], values[2], values[3]]);
    Some(vec![format!("[smmu] event: {event}{note}")])
}

/// x86_64 exception vectors 0..31 (Intel SDM vol. 3, 6.15).
const VECTOR_NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor segment overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 floating point",
    "alignment check",
    "machine check",
    "SIMD floating point",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

/// The 16 aarch64 vector-table entries, in VBAR_EL1 order.
const ENTRY_NAMES: [&str; 16] = [
    "sync, current EL, SP0",
    "IRQ, current EL, SP0",
    "FIQ, current EL, SP0",
    "SError, current EL, SP0",
    "sync, current EL, SPx",
    "IRQ, current EL, SPx",
    "FIQ, current EL, SPx",
    "SError, current EL, SPx",
    "sync, lower EL AArch64",
    "IRQ, lower EL AArch64",
    "FIQ, lower EL AArch64",
    "SError, lower EL AArch64",
    "sync, lower EL AArch32",
    "IRQ, lower EL AArch32",
    "FIQ, lower EL AArch32",
    "SError, lower EL AArch32",
];

/// Names the exception class of an ESR value (Arm ARM D17.2.37).
fn exception_class(esr: u64) -> &'static str {
    match (esr >> 26) & 0x3F {
        0x00 => "unknown reason",
        0x01 => "WFI/WFE",
        0x07 => "FP/SIMD access",
        0x0E => "illegal execution state",
        0x15 => "SVC (AArch64)",
        0x18 => "system register access",
        0x20 => "instruction abort, lower EL",
        0x21 => "instruction abort, same EL",
        0x22 => "PC alignment",
        0x24 => "data abort, lower EL",
        0x25 => "data abort, same EL",
        0x26 => "SP alignment",
        0x2F => "SError",
        0x3C => "BRK",
        _ => "other",
    }
}

/// The x86_64 frame's words in the kernel's order, named (`TrapFrame`'s
/// `Display` in kernel/src/arch/x86_64/trap.rs).
const X86_64_FRAME: [&str; 20] = [
    "rip", "cs", "rflags", "rsp", "ss", "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8",
    "r9", "r10", "r11", "r12", "r13", "r14", "r15",
];

/// `[trap] unexpected exception ...`: the exception named, then the
/// registers in rows.
fn trap(line: &str) -> Option<Vec<String>> {
    let rest = line.strip_prefix("[trap] unexpected exception ")?;
    let (head, frame) = rest.split_once(" frame ")?;
    let (frame, extra) = words(frame, frame.split_whitespace().count())?;
    if !extra.trim().is_empty() {
        return None;
    }
    let head: Vec<&str> = head.split_whitespace().collect();
    match head[..] {
        [vector, "error", error, "cr2", cr2] if frame.len() == X86_64_FRAME.len() => {
            let vector: usize = vector.parse().ok()?;
            let name = VECTOR_NAMES.get(vector).copied().unwrap_or("interrupt");
            let r = |name: &str| frame[X86_64_FRAME.iter().position(|n| *n == name).unwrap_or(0)];
            let row = |names: [&str; 3]| {
                let cells: Vec<String> = names
                    .iter()
                    .map(|name| format!("{name:<3} {:#018x}", r(name)))
                    .collect();
                format!("  {}", cells.join("  "))
            };
            Some(vec![
                format!(
                    "[trap] unexpected exception {vector} ({name}), error code {:#x}, faulting address (cr2) {:#018x}",
                    hex(error)?,
                    hex(cr2)?
                ),
                format!(
                    "  rip {:#018x}  cs {:#x}  rflags {:#x}",
                    r("rip"),
                    r("cs"),
                    r("rflags")
                ),
                format!("  rsp {:#018x}  ss {:#x}", r("rsp"), r("ss")),
                row(["rax", "rbx", "rcx"]),
                row(["rdx", "rsi", "rdi"]),
                row(["rbp", "r8", "r9"]),
                row(["r10", "r11", "r12"]),
                row(["r13", "r14", "r15"]),
            ])
        }
        ["entry", entry, "ESR", esr, "FAR", far] if frame.len() == 3 + 31 => {
            let entry: usize = entry.parse().ok()?;
            let name = ENTRY_NAMES.get(entry).copied().unwrap_or("?");
            let esr = hex(esr)?;
            let mut lines = vec![
                format!(
                    "[trap] unexpected exception: {name}; ESR {esr:#x} ({}), faulting address (FAR) {:#018x}",
                    exception_class(esr),
                    hex(far)?
                ),
                format!(
                    "  elr {:#018x}  spsr {:#x}  sp {:#018x}",
                    frame[0], frame[1], frame[2]
                ),
            ];
            let x = &frame[3..];
            for row in x.chunks(4).enumerate() {
                let (row, values) = row;
                let cells: String = values
                    .iter()
                    .enumerate()
                    .map(|(column, value)| format!("  x{:<2} {value:#018x}", row * 4 + column))
                    .collect();
                lines.push(cells);
            }
            Some(lines)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines the kernel printed before it printed raw, recorded from
    /// QEMU 10.0.2 (release kernel of main at 030773b; `[vtd]` on q35 with
    /// the legacy `intel-iommu`, `[smmu]` on `virt,iommu=smmuv3`), against
    /// the raw lines it prints now.
    #[test]
    fn registers_decode_to_the_old_text() {
        assert_eq!(
            decode("[vtd] VER 0x10 CAP 0x00d2008c222f0606 ECAP 0x0000000000f00f4a"),
            [
                "[vtd] VT-d 1.0",
                "[vtd] CAP 0x00d2008c222f0606: ND=6 (16-bit DIDs) SAGAW=3+4-level MGAW=48 FRO=0x220 NFR=1 MAMV=18 PSI=1 CM=0 RWBF=0 SLLPS(2M=1 1G=1) FL1GP=0 DRD=1 DWD=1 ESRTPS=0",
                "[vtd] ECAP 0x0000000000f00f4a: QI IR PT IRO=0xf0 MHMV=15 PSS=0",
            ]
        );
        assert_eq!(
            decode("[smmu] IDR0 0x0d44101b IDR1 0x02730010 IDR3 0x00001414 IDR5 0x00000074"),
            [
                "[smmu] IDR0 0x0d44101b: S1P=1 S2P=1 TTF=AArch64 COHACC=1 BTM=0 HTTU=0 ATS=0 ASID16=1 MSI=0 PRI=0 VMID16=1 CD2L=0 TTENDIAN=2 STALL_MODEL=1 TERM_MODEL=1 ST_LEVEL=2-level",
                "[smmu] IDR1 0x02730010: SIDSIZE=16 SSIDSIZE=0 PRIQS=0 EVENTQS=19 CMDQS=19 REL=0 QUEUES_PRESET=0 TABLES_PRESET=0",
                "[smmu] IDR3 0x00001414: HAD=1 XNX=1 FWB=0 RIL=1 BBML=2",
                "[smmu] IDR5 0x00000074: OAS=44-bit granules 4K 16K 64K VAX=0 STALL_MAX=0",
            ]
        );
    }

    #[test]
    fn records_decode_with_their_burst_note() {
        let record = FaultRecord {
            source_id: 0x20,
            reason: 5,
            address: 0x4000_0000,
            access: iommu::vtd::regs::FaultAccess::Write,
            pasid: None,
            privileged: false,
            execute: false,
            address_type: 0,
            index: 0,
        };
        let (low, high) = record.encode();
        let raw = format!("[vtd] fault FRCD {low:#x} {high:#x} (x3, the last at addr 0x40002000)");
        assert_eq!(
            decode(&raw),
            [
                "[vtd] fault: DMAR fault: 00:04.0 Write addr 0x40000000 reason 0x5 (no write permission) (x3, the last at addr 0x40002000)"
            ]
        );
        let event = Event::decode([0x10 | 0x20 << 32, 1 << 35, 0x1000, 0x2000]);
        let [w0, w1, w2, w3] = event.encode();
        let raw = format!("[smmu] event {w0:#x} {w1:#x} {w2:#x} {w3:#x}");
        assert_eq!(decode(&raw), [format!("[smmu] event: {event}")]);
        assert!(decode(&raw)[0].starts_with("[smmu] event: SMMU event "));
    }

    /// The report in the layout the kernel printed before it printed raw
    /// (its format strings, with made-up register values).
    #[test]
    fn an_x86_64_trap_decodes_to_the_old_report() {
        let frame: Vec<String> = (1..=20u64).map(|i| format!("{:#x}", i * 0x10)).collect();
        let raw = format!(
            "[trap] unexpected exception 14 error 0x2 cr2 0xdead000 frame {}",
            frame.join(" ")
        );
        let lines = decode(&raw);
        assert_eq!(
            lines,
            [
                "[trap] unexpected exception 14 (page fault), error code 0x2, faulting address (cr2) 0x000000000dead000",
                "  rip 0x0000000000000010  cs 0x20  rflags 0x30",
                "  rsp 0x0000000000000040  ss 0x50",
                "  rax 0x0000000000000060  rbx 0x0000000000000070  rcx 0x0000000000000080",
                "  rdx 0x0000000000000090  rsi 0x00000000000000a0  rdi 0x00000000000000b0",
                "  rbp 0x00000000000000c0  r8  0x00000000000000d0  r9  0x00000000000000e0",
                "  r10 0x00000000000000f0  r11 0x0000000000000100  r12 0x0000000000000110",
                "  r13 0x0000000000000120  r14 0x0000000000000130  r15 0x0000000000000140",
            ]
        );
    }

    /// Likewise on aarch64.
    #[test]
    fn an_aarch64_trap_decodes_to_the_old_report() {
        let frame: Vec<String> = (0..34u64).map(|i| format!("{i:#x}")).collect();
        let raw = format!(
            "[trap] unexpected exception entry 4 ESR 0x96000045 FAR 0x8 frame {}",
            frame.join(" ")
        );
        let lines = decode(&raw);
        assert_eq!(lines.len(), 10, "{lines:?}");
        assert_eq!(
            lines[0],
            "[trap] unexpected exception: sync, current EL, SPx; ESR 0x96000045 (data abort, same EL), faulting address (FAR) 0x0000000000000008"
        );
        assert_eq!(
            lines[1],
            "  elr 0x0000000000000000  spsr 0x1  sp 0x0000000000000002"
        );
        assert_eq!(
            lines[2],
            "  x0  0x0000000000000003  x1  0x0000000000000004  x2  0x0000000000000005  x3  0x0000000000000006"
        );
        assert_eq!(
            lines[9],
            "  x28 0x000000000000001f  x29 0x0000000000000020  x30 0x0000000000000021"
        );
    }

    #[test]
    fn other_lines_and_malformed_ones_decode_to_nothing() {
        for line in [
            "test a ... ok",
            "[vtd] VER 0x10 CAP nope ECAP 0x1",
            "[vtd] VER 0x10 CAP 0x1",
            "[smmu] IDR0 0x1 IDR1 0x2 IDR3 0x3",
            "[vtd] fault FRCD 0x0 0x0",
            "[trap] unexpected exception 14 error 0x2 cr2 0x0 frame 0x1 0x2",
            "[trap] unexpected exception entry 4 ESR 0x1 FAR 0x2 frame 0x1",
        ] {
            assert!(decode(line).is_empty(), "{line}");
        }
    }
}
