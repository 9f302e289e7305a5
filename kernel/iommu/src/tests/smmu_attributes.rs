//! Memory attributes through a nest as the kernel configures it: whatever
//! attribute index a driver's stage-1 entry picks, the device's access is
//! Normal Write-Back (the kernel README, "Memory attributes a driver
//! chooses"), on SMMUs with and without SMMU_IDR3.FWB.

use super::common::{GuestFrames, GuestView, MIB};
use super::smmu_translate::{CD_IPA, EDU, GUEST_BASE, GUEST_SIZE, request};
use crate::model::smmu::{MemoryAttributes, Translation};
use crate::model::smmu_device::SimSmmu;
use crate::model::{Access, SimFrames, SimMemory};
use crate::pagetable::{PageSize, PageTable, PageTableFormat, Perms};
use crate::smmuv3::cd::Cd;
use crate::smmuv3::pagetable::{Stage1Format, Stage2Format, levels_4k};
use crate::smmuv3::regs::{Features, Idr3};
use crate::smmuv3::ste::Stage2Config;
use crate::smmuv3::{BlockPolicy, Smmu};
use crate::{FrameAllocator, PhysAddr};
use std::vec::Vec;

/// A driver's stage-1 leaf with AttrIndx (bits 4:2) set to the value held.
#[derive(Clone, Copy)]
struct Stage1WithAttrIndex(u64);

impl PageTableFormat for Stage1WithAttrIndex {
    fn table_entry(&self, table: PhysAddr) -> u64 {
        Stage1Format.table_entry(table)
    }
    fn leaf_entry(&self, address: PhysAddr, height: u32, perms: Perms) -> u64 {
        Stage1Format.leaf_entry(address, height, perms) | self.0 << 2
    }
    fn is_present(&self, entry: u64) -> bool {
        Stage1Format.is_present(entry)
    }
    fn is_table(&self, entry: u64, height: u32) -> bool {
        Stage1Format.is_table(entry, height)
    }
    fn perms(&self, entry: u64) -> Perms {
        Stage1Format.perms(entry)
    }
    fn max_leaf_height(&self) -> u32 {
        Stage1Format.max_leaf_height()
    }
}

const IOVA: u64 = 0x1000_0000;
const IPA_BITS: u32 = 40;

/// Builds a nest the way `io_space` does (stage 2 in the unit's format,
/// the kernel's CD, a nested STE) whose stage 1 maps IOVA + 4 KiB * i to
/// guest page 0x200 + i with AttrIndx i, and translates a read and a write
/// of each page; returns (index, access, translation) for each.
fn attributes_through_a_nest(features: Features) -> Vec<(u64, Access, Translation)> {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::new(&memory, features);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..256)
        .unwrap();
    let stage2_format = Stage2Format::for_unit(smmu.features());
    let s2 = PageTable::new(&mut frames, stage2_format, levels_4k(IPA_BITS), IPA_BITS).unwrap();
    for page in 0..GUEST_SIZE / 4096 {
        let (ipa, pa) = (page * 4096, GUEST_BASE + page * 4096);
        s2.map(
            &memory,
            &mut frames,
            ipa,
            pa,
            PageSize::Size4K,
            Perms::READ_WRITE,
        )
        .unwrap();
    }
    let cd_page = frames.alloc_zeroed_frame().unwrap();
    s2.map(
        &memory,
        &mut frames,
        CD_IPA,
        cd_page,
        PageSize::Size4K,
        Perms::READ,
    )
    .unwrap();
    let view = GuestView {
        memory: &memory,
        offset: GUEST_BASE,
    };
    let mut guest_frames = GuestFrames {
        view: &view,
        next: 0,
        end: MIB,
    };
    let s1 = PageTable::new(&mut guest_frames, Stage1Format, levels_4k(48), 48).unwrap();
    for index in 0..8 {
        let with_index =
            PageTable::at(s1.root(), Stage1WithAttrIndex(index), levels_4k(48), 48).unwrap();
        let (iova, ipa) = (IOVA + 4096 * index, 0x20_0000 + 4096 * index);
        with_index
            .map(
                &view,
                &mut guest_frames,
                iova,
                ipa,
                PageSize::Size4K,
                Perms::READ_WRITE,
            )
            .unwrap();
    }
    let cd = Cd::for_nest(1, s1.root(), IPA_BITS, smmu.features()).unwrap();
    smmu.write_cd(&memory, cd_page, EDU, 0, &cd).unwrap();
    let stage2 = Stage2Config {
        vmid: 1,
        table: s2.root(),
        ipa_bits: IPA_BITS,
        output_bits: 44,
    };
    smmu.attach_nested(&memory, &mut frames, EDU, &stage2, CD_IPA)
        .unwrap();
    let model = device.model();
    let mut seen = Vec::new();
    for index in 0..8 {
        for access in [Access::Read, Access::Write] {
            let address = IOVA + 4096 * index + 0x10;
            let translation = model
                .translate_with_attributes(&memory, request(address, access, None))
                .unwrap_or_else(|outcome| panic!("AttrIndx {index}: {outcome:?}"));
            assert_eq!(
                translation.address,
                GUEST_BASE + 0x20_0000 + 4096 * index + 0x10
            );
            seen.push((index, access, translation));
        }
    }
    seen
}

fn assert_all_write_back(features: Features) {
    let wrong: Vec<_> = attributes_through_a_nest(features)
        .into_iter()
        .filter(|(_, _, t)| t.attributes != MemoryAttributes::WRITE_BACK)
        .map(|(index, access, t)| (index, access, t.attributes))
        .collect();
    assert!(
        wrong.is_empty(),
        "AttrIndx whose access is not Normal Write-Back: {wrong:?}"
    );
}

#[test]
fn every_attribute_index_a_driver_picks_is_write_back() {
    assert!(!Features::QEMU.idr3.fwb());
    assert_all_write_back(Features::QEMU);
}

#[test]
fn every_attribute_index_is_write_back_with_forced_write_back() {
    let fwb = Features {
        idr3: Idr3(Features::QEMU.idr3.0 | 1 << 8),
        ..Features::QEMU
    };
    assert_all_write_back(fwb);
}

/// The model's attribute rules themselves (Arm ARM D8.6; MAIR encodings).
#[test]
fn the_model_combines_stage1_and_stage2_attributes() {
    use crate::model::smmu::{Cacheability, DeviceType};
    let device = MemoryAttributes::from_mair(0x00);
    assert_eq!(device, MemoryAttributes::Device(DeviceType::NGnRnE));
    assert_eq!(
        MemoryAttributes::from_mair(0x04),
        MemoryAttributes::Device(DeviceType::NGnRE)
    );
    assert_eq!(
        MemoryAttributes::from_mair(0xff),
        MemoryAttributes::WRITE_BACK
    );
    let non_cacheable = MemoryAttributes::Normal {
        inner: Cacheability::NonCacheable,
        outer: Cacheability::NonCacheable,
    };
    assert_eq!(MemoryAttributes::from_mair(0x44), non_cacheable);
    assert_eq!(
        MemoryAttributes::from_mair(0xbb),
        MemoryAttributes::Normal {
            inner: Cacheability::WriteThrough,
            outer: Cacheability::WriteThrough,
        }
    );
    assert_eq!(
        MemoryAttributes::from_mair(0x40),
        MemoryAttributes::Unpredictable
    );
    // Without FWB stage 2 Normal WB (0b1111) keeps stage 1's choice...
    assert_eq!(MemoryAttributes::combine(device, 0b1111, false), device);
    assert_eq!(
        MemoryAttributes::combine(non_cacheable, 0b1111, false),
        non_cacheable
    );
    // ...and the weaker of the two wins.
    assert_eq!(
        MemoryAttributes::combine(MemoryAttributes::WRITE_BACK, 0b0101, false),
        non_cacheable
    );
    // With FWB, 0b0110 forces Normal WB, 0b0111 takes stage 1's.
    assert_eq!(
        MemoryAttributes::combine(device, 0b0110, true),
        MemoryAttributes::WRITE_BACK
    );
    assert_eq!(MemoryAttributes::combine(device, 0b0111, true), device);
    assert_eq!(
        MemoryAttributes::combine(MemoryAttributes::WRITE_BACK, 0b0001, true),
        MemoryAttributes::Device(DeviceType::NGnRE)
    );
}
