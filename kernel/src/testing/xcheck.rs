//! The IOMMU cross-check (`tests=xcheck`): for each case the kernel programs
//! real IOMMU structures, runs edu DMA through them in QEMU and reports the
//! structures and the outcome on the console; `cargo xtask test` replays the
//! structures in the executable model of the same IOMMU and fails the case
//! when QEMU and the model disagree (see tools/xtask/src/xcheck.rs for the
//! line protocol).

use crate::boot_types::Discovered;
use crate::frames::BootFrames;
use crate::iommu_unit::{UNIT, Unit};
use crate::pci::Ecam;
use crate::testing::edu::Edu;

/// Bytes each DMA moves.
const LENGTH: u64 = 64;
/// The pattern the source page holds.
const PATTERN: u8 = 0xA5;

/// Two pages a case copies between: the device reads `source_iova` and
/// writes what it read to `destination_iova`.
struct Transfer {
    source_iova: u64,
    source_pa: u64,
    destination_iova: u64,
    destination_pa: u64,
    /// The structures use what QEMU lacks (VT-d nesting): the runner also
    /// checks that the full model (real NEST=1 hardware) translates them.
    full_model_translates: bool,
}

/// Runs every case for this machine's IOMMU; returns the exit status.
pub fn run(found: &Discovered, frames: &mut BootFrames) -> u32 {
    let Some(ecam) = found.ecam else {
        crate::println!("[xcheck] no PCI ECAM window");
        return crate::EXIT_TESTS_FAILED;
    };
    let edu = match Edu::probe(&Ecam::new(ecam)) {
        Ok(edu) => edu,
        Err(e) => {
            crate::println!("[xcheck] {e}");
            return crate::EXIT_TESTS_FAILED;
        }
    };
    let (Some(source), Some(destination)) = (frames.alloc(), frames.alloc()) else {
        return crate::EXIT_BOOT_FAILED;
    };
    fill(source, PATTERN);
    // Nothing is mapped: the DMA goes to the pages' own addresses and must
    // be refused exactly as the model says.
    let blocked = Transfer {
        source_iova: source,
        source_pa: source,
        destination_iova: destination,
        destination_pa: destination,
        full_model_translates: false,
    };
    run_case("boot_blocked", &edu, &blocked, frames);
    let mut suite = crate::testing::selftest::Suite::default();
    let requester = edu.bdf.requester_id();
    for case in cases::CASES {
        let setup = {
            let mut guard = UNIT.lock();
            let Some(unit) = guard.as_mut() else { break };
            (case.build)(unit, frames, requester, source, destination)
        };
        match setup {
            Ok(Some(transfer)) => {
                // The kernel's part passes when it could program the case;
                // whether QEMU and the model agree is judged by the runner.
                suite.run(case.name, || Ok(()));
                run_case(case.name, &edu, &transfer, frames);
            }
            Ok(None) => {}
            Err(why) => suite.run(case.name, || {
                crate::fail!("programming the case failed: {why}")
            }),
        }
    }
    suite.finish()
}

fn fill(pa: u64, value: u8) {
    // `pa` is a boot frame owned by this module.
    crate::mem::fill(pa, value, 4096);
}

fn landed(pa: u64) -> bool {
    // `pa` is a boot frame; the device may have written it (`mem`'s
    // accessors are volatile).
    (0..LENGTH).all(|i| crate::mem::read_u8(pa + i) == PATTERN)
}

/// Reports the unit's registers and every non-zero word of the boot frames,
/// runs the transfer and reports what happened.
fn run_case(name: &str, edu: &Edu, transfer: &Transfer, frames: &BootFrames) {
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else {
        crate::println!("[xcheck] no IOMMU unit");
        return;
    };
    unit.drain_faults();
    fill(transfer.destination_pa, 0);
    crate::println!("xcheck begin {name} vendor={}", vendor(unit));
    report_registers(unit);
    if transfer.full_model_translates {
        crate::println!("xcheck reg full_model_translates=1");
    }
    let data_pages = [transfer.source_pa, transfer.destination_pa];
    for pa in frames
        .allocated()
        .step_by(8)
        .filter(|pa| !data_pages.contains(&(pa & !0xFFF)))
    {
        let value = crate::mem::read_u64(pa);
        if value != 0 {
            crate::println!("xcheck mem {pa:#x} {value:#x}");
        }
    }
    let requester = edu.bdf.requester_id();
    crate::println!(
        "xcheck dma rid={requester:#x} iova={:#x} access=read pa={:#x}",
        transfer.source_iova,
        transfer.source_pa
    );
    crate::println!(
        "xcheck dma rid={requester:#x} iova={:#x} access=write pa={:#x}",
        transfer.destination_iova,
        transfer.destination_pa
    );
    let moved = edu
        .dma_from_memory(transfer.source_iova, LENGTH)
        .and_then(|()| edu.dma_to_memory(transfer.destination_iova, LENGTH));
    if let Err(e) = moved {
        crate::println!("[xcheck] {name}: {e}");
    }
    let faults = unit.drain_faults();
    let mut codes: heapless::Vec<u32, 16> = heapless::Vec::new();
    for fault in faults.iter().filter(|f| f.requester == requester) {
        if !codes.contains(&fault.reason) {
            let _ = codes.push(fault.reason);
        }
    }
    let verdict = if landed(transfer.destination_pa) {
        "landed"
    } else {
        "blocked"
    };
    crate::print!("xcheck observed {verdict} faults=");
    for (i, code) in codes.iter().enumerate() {
        crate::print!("{}{code:#x}", if i == 0 { "" } else { "," });
    }
    crate::println!();
    crate::println!("xcheck end {name}");
}

fn vendor(unit: &Unit) -> &'static str {
    match unit {
        #[cfg(target_arch = "x86_64")]
        Unit::Vtd(_) => "vtd",
        #[cfg(target_arch = "aarch64")]
        Unit::Smmu(_) => "smmu",
    }
}

fn report_registers(unit: &Unit) {
    match unit {
        #[cfg(target_arch = "x86_64")]
        Unit::Vtd(vtd) => {
            let (root, mode) = vtd
                .root_table()
                .unwrap_or((0, iommu::vtd::regs::RootTableMode::Legacy));
            let mode = match mode {
                iommu::vtd::regs::RootTableMode::Legacy => "legacy",
                iommu::vtd::regs::RootTableMode::Scalable => "scalable",
            };
            let nest = u8::from(vtd.extended_capability().nest());
            crate::println!("xcheck reg root={root:#x} mode={mode} nest={nest}");
        }
        #[cfg(target_arch = "aarch64")]
        Unit::Smmu(smmu) => {
            let features = smmu.features();
            let (base, cfg) = smmu
                .stream_table()
                .map(|t| (t.base(), t.base_cfg()))
                .unwrap_or((0, 0));
            crate::println!(
                "xcheck reg strtab_base={base:#x} strtab_cfg={cfg:#x} idr0={:#x} idr1={:#x} idr3={:#x} idr5={:#x}",
                features.idr0.0,
                features.idr1.0,
                features.idr3.0,
                features.idr5.0
            );
        }
    }
}

/// The cases per vendor: each programs the unit for the edu device and says
/// which transfer to run, or `None` when the unit lacks what it needs.
mod cases {
    use super::Transfer;
    use crate::frames::BootFrames;
    use crate::iommu_unit::{DirectMemory, Unit};
    use iommu::pagetable::{PageSize, PageTable, Perms};

    /// Why a case could not be programmed.
    pub type Why = &'static str;
    type Build = fn(&mut Unit, &mut BootFrames, u16, u64, u64) -> Result<Option<Transfer>, Why>;

    /// One case.
    pub struct Case {
        /// Name, as `xcheck_NAME` in the runner's output.
        pub name: &'static str,
        /// Programs the unit.
        pub build: Build,
    }

    /// IOVAs the device uses.
    const SOURCE_IOVA: u64 = 0x10_0000;
    const DESTINATION_IOVA: u64 = 0x20_0000;
    /// IPAs of the data pages in nested cases (stage 1 outputs these).
    const SOURCE_IPA: u64 = 0x8000_0000;
    const DESTINATION_IPA: u64 = 0x8000_1000;

    /// A fresh domain tag (VT-d DID, SMMU VMID) per case, as the kernel
    /// gives every IoSpace its own: reusing one for different tables without
    /// invalidating would let the IOTLB serve the old translations (the
    /// cross-check caught exactly that on SMMUv3).
    fn fresh_tag() -> u16 {
        static NEXT: core::sync::atomic::AtomicU16 = core::sync::atomic::AtomicU16::new(1);
        NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
    }

    fn mapped(source: u64, destination: u64) -> Transfer {
        Transfer {
            source_iova: SOURCE_IOVA,
            source_pa: source,
            destination_iova: DESTINATION_IOVA,
            destination_pa: destination,
            full_model_translates: false,
        }
    }

    fn map<F: iommu::pagetable::PageTableFormat>(
        table: &PageTable<F>,
        frames: &mut BootFrames,
        input: u64,
        output: u64,
        perms: Perms,
    ) -> Result<(), Why> {
        table
            .map(
                &DirectMemory,
                frames,
                input,
                output,
                PageSize::Size4K,
                perms,
            )
            .map_err(|_| "mapping a page failed")
    }

    #[cfg(target_arch = "x86_64")]
    pub const CASES: &[Case] = &[
        Case {
            name: "vtd_legacy_second_stage",
            build: |u, f, r, s, d| vtd::legacy(u, f, r, s, d, Some(Perms::READ_WRITE)),
        },
        Case {
            name: "vtd_legacy_read_only_write",
            build: |u, f, r, s, d| vtd::legacy(u, f, r, s, d, Some(Perms::READ)),
        },
        Case {
            name: "vtd_legacy_unmapped",
            build: |u, f, r, s, d| vtd::legacy(u, f, r, s, d, None),
        },
        Case {
            name: "vtd_scalable_second_stage",
            build: vtd::scalable_second_stage,
        },
        Case {
            name: "vtd_scalable_first_stage",
            build: vtd::scalable_first_stage,
        },
        Case {
            name: "vtd_scalable_nested",
            build: vtd::scalable_nested,
        },
        Case {
            name: "vtd_shadow_nested",
            build: |u, f, r, s, d| vtd::shadow(u, f, r, s, d, false),
        },
        Case {
            name: "vtd_shadow_nested_malicious",
            build: |u, f, r, s, d| vtd::shadow(u, f, r, s, d, true),
        },
        Case {
            name: "vtd_scalable_rid_pasid",
            build: vtd::scalable_rid_pasid,
        },
    ];

    #[cfg(target_arch = "aarch64")]
    pub const CASES: &[Case] = &[
        Case {
            name: "smmu_stage2",
            build: |u, f, r, s, d| smmu::stage2_case(u, f, r, s, d, true),
        },
        Case {
            name: "smmu_stage2_unmapped",
            build: |u, f, r, s, d| smmu::stage2_case(u, f, r, s, d, false),
        },
        Case {
            name: "smmu_nested",
            build: smmu::nested,
        },
        Case {
            name: "smmu_abort",
            build: smmu::abort,
        },
    ];

    #[cfg(target_arch = "x86_64")]
    mod vtd {
        use super::*;
        use iommu::vtd::VtdUnit;
        use iommu::vtd::regs::RootTableMode;
        use iommu::vtd::tables::{
            FirstStageFormat, LegacyContext, PasidConfig, PasidEntry, SecondStageFormat,
            SecondStageLevels,
        };

        type Vtd = VtdUnit<crate::iommu_unit::DirectMmio>;

        fn unit(unit: &mut Unit) -> &mut Vtd {
            let Unit::Vtd(vtd) = unit;
            vtd
        }

        fn mode(vtd: &Vtd) -> Option<RootTableMode> {
            vtd.root_table().map(|(_, mode)| mode)
        }

        fn second_stage(
            vtd: &Vtd,
            frames: &mut BootFrames,
        ) -> Result<(PageTable<SecondStageFormat>, SecondStageLevels), Why> {
            let levels = SecondStageLevels::best(vtd.capability())
                .ok_or("no second-stage depth in CAP.SAGAW")?;
            let format = SecondStageFormat::for_unit(vtd.capability());
            let table = PageTable::new(frames, format, levels.height(), levels.input_bits())
                .map_err(|_| "second-stage root")?;
            Ok((table, levels))
        }

        /// A legacy context entry whose second stage maps the two pages
        /// with the given rights (`None`: leave the destination unmapped).
        pub fn legacy(
            unit_: &mut Unit,
            frames: &mut BootFrames,
            requester: u16,
            source: u64,
            destination: u64,
            destination_perms: Option<Perms>,
        ) -> Result<Option<Transfer>, Why> {
            let vtd = unit(unit_);
            if mode(vtd) != Some(RootTableMode::Legacy) {
                return Ok(None);
            }
            let (table, levels) = second_stage(vtd, frames)?;
            map(&table, frames, SOURCE_IOVA, source, Perms::READ)?;
            if let Some(perms) = destination_perms {
                map(&table, frames, DESTINATION_IOVA, destination, perms)?;
            }
            let context = LegacyContext::Translated {
                domain: fresh_tag(),
                table: table.root(),
                levels,
            };
            vtd.set_legacy_context(&DirectMemory, frames, requester, Some(context))
                .map_err(|_| "setting the context entry failed")?;
            Ok(Some(mapped(source, destination)))
        }

        fn scalable(
            vtd: &mut Vtd,
            frames: &mut BootFrames,
            requester: u16,
            config: PasidConfig,
        ) -> Result<(), Why> {
            vtd.set_pasid_entry(&DirectMemory, frames, requester, 0, Some(config))
                .map_err(|_| "setting the PASID entry failed")
        }

        pub fn scalable_second_stage(
            u: &mut Unit,
            frames: &mut BootFrames,
            requester: u16,
            source: u64,
            destination: u64,
        ) -> Result<Option<Transfer>, Why> {
            let vtd = unit(u);
            if mode(vtd) != Some(RootTableMode::Scalable) || !vtd.extended_capability().slts() {
                return Ok(None);
            }
            let (table, levels) = second_stage(vtd, frames)?;
            map(&table, frames, SOURCE_IOVA, source, Perms::READ)?;
            map(
                &table,
                frames,
                DESTINATION_IOVA,
                destination,
                Perms::READ_WRITE,
            )?;
            scalable(
                vtd,
                frames,
                requester,
                PasidConfig::SecondStage {
                    domain: fresh_tag(),
                    table: table.root(),
                    levels,
                },
            )?;
            Ok(Some(mapped(source, destination)))
        }

        pub fn scalable_first_stage(
            u: &mut Unit,
            frames: &mut BootFrames,
            requester: u16,
            source: u64,
            destination: u64,
        ) -> Result<Option<Transfer>, Why> {
            let vtd = unit(u);
            if mode(vtd) != Some(RootTableMode::Scalable) || !vtd.extended_capability().flts() {
                return Ok(None);
            }
            let table = PageTable::new(frames, FirstStageFormat::for_unit(vtd.capability()), 4, 48)
                .map_err(|_| "first-stage root")?;
            map(&table, frames, SOURCE_IOVA, source, Perms::READ)?;
            map(
                &table,
                frames,
                DESTINATION_IOVA,
                destination,
                Perms::READ_WRITE,
            )?;
            scalable(
                vtd,
                frames,
                requester,
                PasidConfig::FirstStage {
                    domain: fresh_tag(),
                    table: table.root(),
                },
            )?;
            Ok(Some(mapped(source, destination)))
        }

        /// Where the PASID-table entry for `pasid` of `requester` lives,
        /// following the scalable root, context and PASID-directory entries.
        fn pasid_entry_address(vtd: &Vtd, requester: u16, pasid: u32) -> Option<u64> {
            use iommu::PhysMem;
            const ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;
            let (root, _) = vtd.root_table()?;
            let devfn = u64::from(requester & 0xFF);
            let root_entry = DirectMemory
                .read_u64(root + 16 * u64::from(requester >> 8) + if devfn >= 128 { 8 } else { 0 });
            let context = (root_entry & ADDRESS) + 32 * (devfn % 128);
            let directory = DirectMemory.read_u64(context) & ADDRESS;
            let table = DirectMemory.read_u64(directory + 8 * u64::from(pasid >> 6)) & ADDRESS;
            (directory != 0 && table != 0).then_some(table + 64 * u64::from(pasid & 63))
        }

        /// A driver's first stage (IOVA -> IPA, x86 first-stage format) and
        /// the kernel's second stage (IPA -> PA) that maps the first stage's
        /// own tables read-only at IPA = PA and the two data pages at their
        /// IPAs; the first stage sends the destination to
        /// `destination_ipa`.
        fn nested_tables(
            vtd: &Vtd,
            frames: &mut BootFrames,
            source: u64,
            destination: u64,
            destination_ipa: u64,
        ) -> Result<
            (
                PageTable<FirstStageFormat>,
                PageTable<SecondStageFormat>,
                SecondStageLevels,
            ),
            Why,
        > {
            let (second, levels) = second_stage(vtd, frames)?;
            let first = PageTable::new(frames, FirstStageFormat::for_unit(vtd.capability()), 4, 48)
                .map_err(|_| "first-stage root")?;
            let first_frames = frames.allocated().end;
            map(&first, frames, SOURCE_IOVA, SOURCE_IPA, Perms::READ)?;
            map(
                &first,
                frames,
                DESTINATION_IOVA,
                destination_ipa,
                Perms::READ_WRITE,
            )?;
            let first_end = frames.allocated().end;
            for table in (first.root()..first.root() + 4096)
                .chain(first_frames..first_end)
                .step_by(4096)
            {
                map(&second, frames, table, table, Perms::READ)?;
            }
            map(&second, frames, SOURCE_IPA, source, Perms::READ)?;
            map(
                &second,
                frames,
                DESTINATION_IPA,
                destination,
                Perms::READ_WRITE,
            )?;
            Ok((first, second, levels))
        }

        /// PGTT=nested. The driver refuses it without ECAP.NEST (QEMU), so
        /// the case first builds a valid second-stage entry, then rewrites it
        /// in place with the unchecked nested encoding: QEMU must block with
        /// 0x5B as the model's QEMU mode says, and the full model (NEST=1
        /// hardware) must translate the same structures.
        pub fn scalable_nested(
            u: &mut Unit,
            frames: &mut BootFrames,
            requester: u16,
            source: u64,
            destination: u64,
        ) -> Result<Option<Transfer>, Why> {
            use iommu::PhysMem;
            let vtd = unit(u);
            if mode(vtd) != Some(RootTableMode::Scalable) || !vtd.extended_capability().slts() {
                return Ok(None);
            }
            let (first, second, levels) =
                nested_tables(vtd, frames, source, destination, DESTINATION_IPA)?;
            scalable(
                vtd,
                frames,
                requester,
                PasidConfig::SecondStage {
                    domain: fresh_tag(),
                    table: second.root(),
                    levels,
                },
            )?;
            let entry =
                pasid_entry_address(vtd, requester, 0).ok_or("the PASID entry was not found")?;
            let nested = PasidEntry::encode_unchecked(PasidConfig::Nested {
                domain: fresh_tag(),
                first_stage_table: first.root(),
                second_stage_table: second.root(),
                levels,
            });
            DirectMemory.write_u64(entry, 0);
            for (i, word) in nested.0.iter().enumerate().skip(1) {
                DirectMemory.write_u64(entry + 8 * i as u64, *word);
            }
            DirectMemory.write_u64(entry, nested.0[0]);
            vtd.invalidate_all(&DirectMemory)
                .map_err(|_| "invalidation failed")?;
            Ok(Some(Transfer {
                full_model_translates: true,
                ..mapped(source, destination)
            }))
        }

        /// Shadow nesting (QEMU has no hardware nesting): a driver's first
        /// stage (IOVA -> IPA) and the kernel's second stage (IPA -> PA) are
        /// composed into a kernel-owned second-stage table the device uses.
        /// `malicious`: the driver's first stage also points the destination
        /// IOVA at an IPA the second stage does not map, which the shadow
        /// must leave out (the DMA faults instead of landing anywhere).
        pub fn shadow(
            u: &mut Unit,
            frames: &mut BootFrames,
            requester: u16,
            source: u64,
            destination: u64,
            malicious: bool,
        ) -> Result<Option<Transfer>, Why> {
            use iommu::vtd::shadow::shadow_range;
            const FOREIGN_IPA: u64 = 0x4000_0000;
            let vtd = unit(u);
            let scalable_mode = mode(vtd) == Some(RootTableMode::Scalable);
            if scalable_mode && !vtd.extended_capability().slts() {
                return Ok(None);
            }
            let destination_ipa = if malicious {
                FOREIGN_IPA
            } else {
                DESTINATION_IPA
            };
            let (first, second, levels) =
                nested_tables(vtd, frames, source, destination, destination_ipa)?;
            let shadow = PageTable::new(
                frames,
                SecondStageFormat::for_unit(vtd.capability()),
                levels.height(),
                levels.input_bits(),
            )
            .map_err(|_| "shadow root")?;
            let length = DESTINATION_IOVA + 4096 - SOURCE_IOVA;
            shadow_range(
                &DirectMemory,
                frames,
                first.root(),
                &second,
                &shadow,
                SOURCE_IOVA,
                length,
                1024,
                false,
            )
            .map_err(|_| "composing the shadow failed")?;
            let domain = fresh_tag();
            if scalable_mode {
                scalable(
                    vtd,
                    frames,
                    requester,
                    PasidConfig::SecondStage {
                        domain,
                        table: shadow.root(),
                        levels,
                    },
                )?;
            } else {
                let context = LegacyContext::Translated {
                    domain,
                    table: shadow.root(),
                    levels,
                };
                vtd.set_legacy_context(&DirectMemory, frames, requester, Some(context))
                    .map_err(|_| "setting the context entry failed")?;
            }
            Ok(Some(mapped(source, destination)))
        }

        /// A non-zero RID_PASID: requests without a PASID use PASID 1's
        /// entry (second stage) because the context entry says so. (QEMU's
        /// PASID mode reports PSS=0, a 1-bit PASID space: PASID 1 is the
        /// only non-zero one.)
        pub fn scalable_rid_pasid(
            u: &mut Unit,
            frames: &mut BootFrames,
            requester: u16,
            source: u64,
            destination: u64,
        ) -> Result<Option<Transfer>, Why> {
            use iommu::PhysMem;
            const RID_PASID: u32 = 1;
            let vtd = unit(u);
            if mode(vtd) != Some(RootTableMode::Scalable)
                || !vtd.extended_capability().slts()
                || !vtd.extended_capability().pasid()
            {
                return Ok(None);
            }
            let (table, levels) = second_stage(vtd, frames)?;
            map(&table, frames, SOURCE_IOVA, source, Perms::READ)?;
            map(
                &table,
                frames,
                DESTINATION_IOVA,
                destination,
                Perms::READ_WRITE,
            )?;
            let config = PasidConfig::SecondStage {
                domain: fresh_tag(),
                table: table.root(),
                levels,
            };
            // PASID 0 blocked, PASID 1 translating.
            vtd.set_pasid_entry(&DirectMemory, frames, requester, 0, None)
                .map_err(|_| "clearing PASID 0 failed")?;
            vtd.set_pasid_entry(&DirectMemory, frames, requester, RID_PASID, Some(config))
                .map_err(|_| "setting PASID 1 failed")?;
            let (root, _) = vtd.root_table().ok_or("no root table")?;
            let devfn = u64::from(requester & 0xFF);
            let root_entry = DirectMemory
                .read_u64(root + 16 * u64::from(requester >> 8) + if devfn >= 128 { 8 } else { 0 });
            let context = (root_entry & 0x000F_FFFF_FFFF_F000) + 32 * (devfn % 128);
            let word1 = DirectMemory.read_u64(context + 8);
            DirectMemory.write_u64(context + 8, (word1 & !0xF_FFFF) | u64::from(RID_PASID));
            vtd.invalidate_all(&DirectMemory)
                .map_err(|_| "invalidation failed")?;
            Ok(Some(mapped(source, destination)))
        }
    }

    #[cfg(target_arch = "aarch64")]
    mod smmu {
        use super::*;
        use iommu::smmuv3::Smmu;
        use iommu::smmuv3::cd::{Cd, CdParams};
        use iommu::smmuv3::pagetable::{Stage1Format, Stage2Format, levels_4k};
        use iommu::smmuv3::ste::{Stage2Config, Ste};

        type Arm = Smmu<crate::iommu_unit::DirectMmio>;
        const IPA_BITS: u32 = 40;

        fn unit(unit: &mut Unit) -> &mut Arm {
            let Unit::Smmu(smmu) = unit;
            smmu
        }

        fn stage2_table(frames: &mut BootFrames) -> Result<PageTable<Stage2Format>, Why> {
            PageTable::new(
                frames,
                Stage2Format::default(),
                levels_4k(IPA_BITS),
                IPA_BITS,
            )
            .map_err(|_| "stage-2 root")
        }

        fn config(table: &PageTable<Stage2Format>) -> Stage2Config {
            Stage2Config {
                vmid: fresh_tag(),
                table: table.root(),
                ipa_bits: IPA_BITS,
                output_bits: 44,
            }
        }

        pub fn stage2_case(
            u: &mut Unit,
            frames: &mut BootFrames,
            requester: u16,
            source: u64,
            destination: u64,
            map_destination: bool,
        ) -> Result<Option<Transfer>, Why> {
            let smmu = unit(u);
            let table = stage2_table(frames)?;
            map(&table, frames, SOURCE_IOVA, source, Perms::READ)?;
            if map_destination {
                map(
                    &table,
                    frames,
                    DESTINATION_IOVA,
                    destination,
                    Perms::READ_WRITE,
                )?;
            }
            smmu.attach_stage2(&DirectMemory, frames, u32::from(requester), &config(&table))
                .map_err(|_| "attaching stage 2 failed")?;
            Ok(Some(mapped(source, destination)))
        }

        /// Stage 1 (IOVA -> IPA) nested in stage 2 (IPA -> PA); the CD and
        /// every stage-1 table are fetched through stage 2.
        pub fn nested(
            u: &mut Unit,
            frames: &mut BootFrames,
            requester: u16,
            source: u64,
            destination: u64,
        ) -> Result<Option<Transfer>, Why> {
            const CD_IPA: u64 = 0x9000_0000;
            let smmu = unit(u);
            let second = stage2_table(frames)?;
            let first = PageTable::new(frames, Stage1Format, levels_4k(48), 48)
                .map_err(|_| "stage-1 root")?;
            let first_frames = frames.allocated().end;
            map(&first, frames, SOURCE_IOVA, SOURCE_IPA, Perms::READ)?;
            map(
                &first,
                frames,
                DESTINATION_IOVA,
                DESTINATION_IPA,
                Perms::READ_WRITE,
            )?;
            let first_end = frames.allocated().end;
            let cd_page = frames.alloc().ok_or("no frame for the CD")?;
            for table in (first.root()..first.root() + 4096)
                .chain(first_frames..first_end)
                .step_by(4096)
            {
                map(&second, frames, table, table, Perms::READ)?;
            }
            map(&second, frames, CD_IPA, cd_page, Perms::READ)?;
            map(&second, frames, SOURCE_IPA, source, Perms::READ)?;
            map(
                &second,
                frames,
                DESTINATION_IPA,
                destination,
                Perms::READ_WRITE,
            )?;
            let params = CdParams {
                asid: fresh_tag(),
                ttb0: first.root(),
                va_bits: 48,
                output_bits: 44,
                mair: 0xFF,
            };
            let cd =
                Cd::new(&params, smmu.features()).map_err(|_| "the CD parameters were refused")?;
            let sid = u32::from(requester);
            smmu.write_cd(&DirectMemory, cd_page, sid, 0, &cd)
                .map_err(|_| "writing the CD failed")?;
            smmu.attach_nested(&DirectMemory, frames, sid, &config(&second), CD_IPA)
                .map_err(|_| "attaching nested failed")?;
            Ok(Some(mapped(source, destination)))
        }

        pub fn abort(
            u: &mut Unit,
            frames: &mut BootFrames,
            requester: u16,
            source: u64,
            destination: u64,
        ) -> Result<Option<Transfer>, Why> {
            let smmu = unit(u);
            smmu.install_ste(&DirectMemory, frames, u32::from(requester), &Ste::abort())
                .map_err(|_| "installing the abort STE failed")?;
            Ok(Some(mapped(source, destination)))
        }
    }
}
