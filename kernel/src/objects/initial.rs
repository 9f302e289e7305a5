//! The capability system at boot: the root task's initial CSpace (its
//! CNode, IrqControl, IommuControl, Console, every free byte of RAM and
//! every device window as Untyped), its thread, address space and IPC
//! buffer.

use super::effects::SINK;
use super::page_tables::register_boot_root;
use super::{ARENA_BITS, ARENA_SLOT, CAPS, ROOT_CNODE_BITS, ROOT_CNODE_SLOT, ROOT_SLOTS, Storage};
use crate::frames::BootFrames;
use crate::iommu_unit::UNIT;
use abi::bootinfo::{self, BootInfo, UntypedDescriptor};
use abi::ipc::IPC_BUFFER_ADDRESS;
use caps::{Badge, Caps, NewObject, Rights};

/// What the root task starts with.
pub struct RootTask {
    /// Its address space's root table (the INIT_VSPACE PageTable object).
    pub vspace: u64,
    /// Its TCB object and the TCB's physical address.
    pub tcb: (caps::ObjectId, u64),
    /// Its IPC buffer: a Frame object (slot `INIT_IPC_BUFFER`) and its
    /// physical address.
    pub ipc_buffer: (caps::ObjectId, u64),
}

/// Why boot could not build the capability system.
pub type BootError = &'static str;

/// Splits `[start, end)` into naturally aligned power-of-two pieces, largest
/// first where alignment allows.
fn aligned_pieces(mut start: u64, end: u64, mut each: impl FnMut(u64, u8)) {
    while start < end {
        let align = if start == 0 {
            63
        } else {
            start.trailing_zeros()
        };
        let fit = 63 - (end - start).leading_zeros();
        let bits = align.min(fit).min(47) as u8;
        each(start, bits);
        start += 1 << bits;
    }
}

/// Builds the capability system: the root task's CNode, IOMMU and IRQ
/// control caps, every byte of free RAM as Untyped capabilities and every
/// device window (`devmem`: PCI ECAM and BAR windows) as device Untyped
/// capabilities after them; maps
/// the boot-info page and the IPC buffer into the root task's address space
/// rooted at `vspace`.
pub fn init(frames: &mut BootFrames, vspace: u64) -> Result<RootTask, BootError> {
    // Only builds the tables down to the IPC buffer's page (the buffer
    // itself becomes a Frame object below).
    let table_builder = frames.alloc().ok_or("no frame for the IPC buffer")?;
    let info_frame = frames.alloc().ok_or("no frame for the boot-info page")?;
    let rw = crate::vspace::Rights {
        write: true,
        execute: false,
    };
    let ro = crate::vspace::Rights {
        write: false,
        execute: false,
    };
    crate::vspace::map_page(vspace, IPC_BUFFER_ADDRESS, table_builder, rw, &mut || {
        frames.alloc()
    })
    .map_err(|_| "cannot map the IPC buffer")?;
    crate::vspace::map_page(
        vspace,
        bootinfo::BOOT_INFO_ADDRESS,
        info_frame,
        ro,
        &mut || frames.alloc(),
    )
    .map_err(|_| "cannot map the boot-info page")?;

    // Everything the boot allocator has not handed out becomes Untyped.
    let free = frames.take_rest();
    let arena = free.start.next_multiple_of(1 << ARENA_BITS);
    if arena + (1 << ARENA_BITS) > free.end {
        return Err("not enough free RAM for the CNode arena");
    }
    // Emptied in place in its `.bss` home: the storage is megabytes, and
    // built as a value it was copied through the stack (kernel/README.md,
    // "Capabilities and the root task").
    let caps = CAPS
        .init(|caps| caps.get_mut().reset(ROOT_SLOTS, arena))
        .ok_or("the capability system is already built")?;
    let mut caps = caps.lock();
    let mut clear = SINK;
    caps.boot_untyped(ARENA_SLOT, arena, ARENA_BITS, false)
        .map_err(|_| "arena untyped")?;
    caps.retype(
        ARENA_SLOT,
        NewObject::CNode {
            size_bits: ROOT_CNODE_BITS,
        },
        ROOT_CNODE_SLOT,
        &mut clear,
    )
    .map_err(|_| "root CNode")?;
    let slot = |caps: &Caps<Storage>, index: u32| caps.resolve(ROOT_CNODE_SLOT, index);

    let cnode_copy = slot(&caps, bootinfo::INIT_CNODE).map_err(|_| "INIT_CNODE slot")?;
    caps.mint(ROOT_CNODE_SLOT, cnode_copy, Rights::ALL, Badge(0))
        .map_err(|_| "INIT_CNODE copy")?;
    let irq = slot(&caps, bootinfo::IRQ_CONTROL).map_err(|_| "IRQ_CONTROL slot")?;
    caps.boot_irq_control(irq, 1024).map_err(|_| "IrqControl")?;
    let console = slot(&caps, bootinfo::CONSOLE).map_err(|_| "CONSOLE slot")?;
    caps.boot_console(console).map_err(|_| "Console")?;
    if let Some(unit) = UNIT.lock().as_ref() {
        let dest = slot(&caps, bootinfo::IOMMU_CONTROL).map_err(|_| "IOMMU_CONTROL slot")?;
        caps.boot_iommu_control(dest, unit.model_unit())
            .map_err(|_| "IommuControl")?;
    }

    let mut untypeds = [UntypedDescriptor::default(); bootinfo::MAX_UNTYPEDS];
    let mut count = 0usize;
    // The arena Untyped first: the only one CNodes can come from.
    let first = slot(&caps, bootinfo::FIRST_UNTYPED).map_err(|_| "FIRST_UNTYPED slot")?;
    caps.move_cap(ARENA_SLOT, first).map_err(|_| "arena move")?;
    untypeds[0] = UntypedDescriptor {
        physical_address: arena,
        size_bits: ARENA_BITS,
        ..Default::default()
    };
    count += 1;
    let mut failure = None;
    let mut left_out = 0u64;
    // `device`: None for RAM, else the device window's kind (abi `device_kind`).
    let mut add = |start: u64, bits: u8, device: Option<u8>| {
        if bits < 12 || failure.is_some() {
            return;
        }
        if count >= bootinfo::MAX_UNTYPEDS {
            left_out += 1 << bits;
            return;
        }
        let result = slot(&caps, bootinfo::FIRST_UNTYPED + count as u32)
            .and_then(|dest| caps.boot_untyped(dest, start, bits, device.is_some()));
        match result {
            Ok(_) => {
                untypeds[count] = UntypedDescriptor {
                    physical_address: start,
                    size_bits: bits,
                    is_device: u8::from(device.is_some()),
                    device_kind: device.unwrap_or(bootinfo::device_kind::UNKNOWN),
                    ..Default::default()
                };
                count += 1;
            }
            Err(_) => failure = Some("an initial Untyped"),
        }
    };
    aligned_pieces(free.start, arena, &mut |s, b| add(s, b, None));
    aligned_pieces(arena + (1 << ARENA_BITS), free.end, &mut |s, b| {
        add(s, b, None)
    });
    for window in crate::devmem::windows() {
        aligned_pieces(window.start, window.end, &mut |s, b| {
            add(s, b, Some(window.kind))
        });
    }
    if let Some(what) = failure {
        return Err(what);
    }
    if left_out > 0 {
        crate::say!(
            "[caps] {:#x} bytes of RAM or device memory left out: more than {} Untypeds",
            left_out,
            bootinfo::MAX_UNTYPEDS
        );
    }
    // The root task's own thread, carved from the largest RAM Untyped.
    let largest = (1..count)
        .filter(|&i| untypeds[i].is_device == 0)
        .max_by_key(|&i| untypeds[i].size_bits)
        .ok_or("no RAM Untyped")?;
    let largest_slot =
        slot(&caps, bootinfo::FIRST_UNTYPED + largest as u32).map_err(|_| "untyped slot")?;
    let tcb_slot = slot(&caps, bootinfo::INIT_TCB).map_err(|_| "INIT_TCB slot")?;
    let tcb = caps
        .retype(largest_slot, NewObject::Tcb, tcb_slot, &mut clear)
        .map_err(|_| "root TCB")?;
    let tcb_paddr = caps
        .object(tcb)
        .and_then(|o| o.memory())
        .map(|(paddr, _)| paddr)
        .ok_or("root TCB memory")?;
    // The root task's address space becomes a PageTable object (INIT_VSPACE)
    // so that it can map frames into itself: a copy of the boot root table.
    let vspace_slot = slot(&caps, bootinfo::INIT_VSPACE).map_err(|_| "INIT_VSPACE slot")?;
    let vspace_object = caps
        .retype(largest_slot, NewObject::PageTable, vspace_slot, &mut clear)
        .map_err(|_| "root VSpace")?;
    let new_root = caps
        .object(vspace_object)
        .and_then(|o| o.memory())
        .map(|(paddr, _)| paddr)
        .ok_or("root VSpace memory")?;
    // Both are 4 KiB page-table pages: the boot root (kernel-owned) and the
    // fresh PageTable object.
    crate::mem::copy(vspace, new_root, 4096);
    register_boot_root(vspace_object, new_root);
    // The IPC buffer is a Frame object the root task holds (and may give to
    // threads it starts in its own space), mapped through the model so that
    // its deletion unmaps it. The boot frame mapped above only built the
    // tables on the way.
    let buffer_slot = slot(&caps, bootinfo::INIT_IPC_BUFFER).map_err(|_| "INIT_IPC_BUFFER slot")?;
    let buffer_object = caps
        .retype(
            largest_slot,
            NewObject::Frame { size_bits: 12 },
            buffer_slot,
            &mut clear,
        )
        .map_err(|_| "root IPC buffer")?;
    let buffer_paddr = caps
        .object(buffer_object)
        .and_then(|o| o.memory())
        .map(|(paddr, _)| paddr)
        .ok_or("root IPC buffer memory")?;
    crate::vspace::unmap_leaf(new_root, IPC_BUFFER_ADDRESS, 12);
    caps.map_frame(
        buffer_slot,
        new_root,
        IPC_BUFFER_ADDRESS,
        Rights::READ | Rights::WRITE,
        &mut clear,
    )
    .map_err(|_| "map the root IPC buffer")?;

    let info = BootInfo {
        magic: bootinfo::BOOT_INFO_MAGIC,
        version: 1,
        untyped_count: count as u64,
        first_free_slot: u64::from(bootinfo::FIRST_UNTYPED) + count as u64,
        image_address: 0,
        image_length: 0,
        untypeds,
    };
    // A fresh 4 KiB frame; BootInfo fits in a page (checked by abi's tests).
    crate::mem::write(info_frame, info);
    let ram = untypeds[..count].iter().filter(|u| u.is_device == 0);
    crate::say!(
        "[caps] root task: CNode of {} slots, {} Untypeds ({} KiB of RAM, {} device), IPC buffer at {:#x}",
        1u32 << ROOT_CNODE_BITS,
        count,
        ram.clone()
            .map(|u| (1u64 << u.size_bits) >> 10)
            .sum::<u64>(),
        count - ram.count(),
        IPC_BUFFER_ADDRESS
    );
    Ok(RootTask {
        vspace: new_root,
        tcb: (tcb, tcb_paddr),
        ipc_buffer: (buffer_object, buffer_paddr),
    })
}
