//! Fuzz target `devicetree`: arbitrary DTB blobs through the questions the
//! kernel asks (`firmware::devicetree`: `/memory` ranges, bootargs, the
//! SMMUv3, the PCIe host and its windows, the initrd), both straight
//! (`parse`) and as the kernel reads them (`discover`: header, total size,
//! then the blob, from a memory image). Seeds: QEMU 10.0.2 `virt,iommu=
//! smmuv3` dumped with `dumpdtb=`, with and without `-initrd`, packed and
//! without the 32 `virtio_mmio` nodes.
//!
//! Asserts: no panic; every error renders; bootargs lie within the input;
//! no more RAM ranges than the input has bytes; an initrd is not empty and
//! ends inside the 64-bit space; `discover` agrees with `parse` of the
//! bytes the header announces (and fails as it should without them).
#![no_main]

use firmware::devicetree::{self, DeviceTree, DeviceTreeError, MemoryRange};
use firmware::{MemoryImage, lies_within};
use libfuzzer_sys::fuzz_target;

/// Where the memory image puts the blob (RAM on virt).
const BASE: u64 = 0x4000_0000;

fuzz_target!(|bytes: &[u8]| {
    let mut ram = Vec::new();
    let parsed = devicetree::parse(bytes, &mut |range| record(&mut ram, range, bytes.len()));
    match &parsed {
        Ok(tree) => check(tree, bytes),
        Err(error) => {
            let _ = error.to_string();
        }
    }

    let memory = MemoryImage { base: BASE, bytes };
    let mut ram_read = Vec::new();
    let read = devicetree::discover(&memory, BASE, &mut |range| {
        record(&mut ram_read, range, bytes.len())
    });
    let expected = match bytes.get(..8) {
        None => Err(DeviceTreeError::HeaderUnmapped),
        Some(header) => devicetree::total_size(header.try_into().unwrap()).and_then(|total| {
            let blob = bytes.get(..total).ok_or(DeviceTreeError::Unmapped)?;
            let mut ram_expected = Vec::new();
            let tree = devicetree::parse(blob, &mut |range| {
                record(&mut ram_expected, range, bytes.len())
            });
            if tree.is_ok() {
                assert_eq!(ram_expected, ram_read);
            }
            tree
        }),
    };
    assert_eq!(read, expected);
    if let Ok(tree) = &read {
        check(tree, bytes);
    }
});

/// Records a RAM range, failing (instead of hanging) past one per byte.
fn record(ram: &mut Vec<MemoryRange>, range: MemoryRange, limit: usize) {
    ram.push(range);
    assert!(ram.len() <= limit, "more RAM ranges than input bytes");
}

/// What a parsed tree promises.
fn check(tree: &DeviceTree<'_>, bytes: &[u8]) {
    assert!(tree.bootargs.is_empty() || lies_within(tree.bootargs.as_bytes(), bytes));
    if let Some((start, size)) = tree.initrd {
        assert!(size > 0);
        assert!(start.checked_add(size).is_some());
    }
}
