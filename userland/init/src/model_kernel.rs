//! Host tests only: a stand-in kernel (`sys::host`) that runs the
//! capability model itself (`caps`, the code the kernel calls), so a test
//! sees what the kernel would hold after init's invocations: which slots
//! are filled, how far each Untyped is carved, which Frame copy holds an
//! IO mapping.
//!
//! [`ModelKernel::boot`] sets up what the kernel gives the root task: its
//! CNode of `2^10` slots with a capability to itself at
//! `bootinfo::INIT_CNODE`, the IommuControl at `bootinfo::IOMMU_CONTROL`,
//! the Console at `bootinfo::CONSOLE`,
//! the arena Untyped at `bootinfo::FIRST_UNTYPED` and one RAM Untyped
//! after it, described in the [`BootInfo`] it returns. Invocations are
//! decoded as `kernel/src/invocation/` decodes them, for the ones init's
//! request server makes: `Untyped.Retype`, `CNode.Copy`, `CNode.Mint`,
//! `CNode.Delete`, `CNode.Revoke`, `IommuControl.MintDevice`,
//! `IoSpace.Map`. Any other invocation answers `NotSupported`, and so does
//! every other system call, as with no stand-in: the debug console stays
//! quiet (a `println!` stops at its first byte).

use std::cell::RefCell;
use std::rc::Rc;

use abi::bootinfo::{self, BootInfo};
use abi::{Error, Invocation, ObjectType, Syscall};
use caps::{
    ArrayStorage, Badge, Caps, DiscardEffects, IommuUnit, NewObject, ObjectKind, ObjectState,
    Rights, SlotId,
};
use sys::MessageInfo;
use sys::host::{SyscallIn, set_kernel};
use sys::ipc::IpcBuffer;
use sys::syscall::SyscallOut;

/// Slots outside any CNode: where boot puts the arena and init's CNode
/// before moving them in.
const ROOT_SLOTS: u32 = 2;
/// The arena Untyped: CNodes (init's 32 KiB, the domains') come from it.
const ARENA_ADDRESS: u64 = 0x100_0000;
const ARENA_BITS: u8 = 16;
/// The one RAM Untyped.
const RAM_ADDRESS: u64 = 0x1000_0000;
/// Its size: 1 MiB.
pub const RAM_BITS: u8 = 20;
/// Init's CNode: `2^INIT_CNODE_BITS` slots, as the kernel makes it.
const INIT_CNODE_BITS: u8 = 10;
/// Every arena byte can back a slot.
const SLOTS: usize = ROOT_SLOTS as usize + (1 << (ARENA_BITS - caps::SLOT_SIZE_BITS));
const OBJECTS: usize = 256;
/// Init's first free slot, after its boot capabilities and Untypeds.
const FIRST_FREE_SLOT: u32 = bootinfo::FIRST_UNTYPED + 2;

/// The capability system the stand-in runs, and the slot of init's CSpace
/// root.
pub struct ModelKernel {
    /// Over storage on the heap (leaked: a test boots a few), so the
    /// capability system (over 300 KiB with the IPA index) is not moved
    /// through the stack in debug builds.
    caps: Caps<&'static mut ArrayStorage<SLOTS, OBJECTS>>,
    root: SlotId,
}

impl ModelKernel {
    /// Boots the model and installs it as this thread's kernel; returns it
    /// (for measuring) and init's boot info.
    pub fn boot() -> (Rc<RefCell<ModelKernel>>, BootInfo) {
        let storage = alloc::boxed::Box::leak(alloc::boxed::Box::new(
            ArrayStorage::with_cnode_memory(ROOT_SLOTS, ARENA_ADDRESS),
        ));
        let mut caps = Caps::new(storage);
        let mut sink = DiscardEffects;
        let arena = SlotId(0);
        let root = SlotId(1);
        caps.boot_untyped(arena, ARENA_ADDRESS, ARENA_BITS, false)
            .expect("the arena");
        caps.retype(
            arena,
            NewObject::CNode {
                size_bits: INIT_CNODE_BITS,
            },
            root,
            &mut sink,
        )
        .expect("init's CNode");
        let at = |caps: &Caps<_>, index| caps.resolve(root, index).expect("a slot of init's");
        caps.copy(root, at(&caps, bootinfo::INIT_CNODE))
            .expect("init's CNode in itself");
        caps.move_cap(arena, at(&caps, bootinfo::FIRST_UNTYPED))
            .expect("the arena in init's CNode");
        caps.boot_untyped(
            at(&caps, bootinfo::FIRST_UNTYPED + 1),
            RAM_ADDRESS,
            RAM_BITS,
            false,
        )
        .expect("the RAM Untyped");
        caps.boot_console(at(&caps, bootinfo::CONSOLE))
            .expect("the Console");
        caps.boot_iommu_control(
            at(&caps, bootinfo::IOMMU_CONTROL),
            IommuUnit {
                id: 0,
                pasid_bits: 0,
                domain_ids: 16,
                ipa_bits: 39,
                rid_limit: 1 << 16,
                reserved_ipa_base: 0,
                reserved_ipa_size: 0,
            },
        )
        .expect("the IommuControl");
        let mut info = BootInfo {
            magic: bootinfo::BOOT_INFO_MAGIC,
            version: 1,
            untyped_count: 2,
            first_free_slot: u64::from(FIRST_FREE_SLOT),
            image_address: 0,
            image_length: 0,
            untypeds: [Default::default(); bootinfo::MAX_UNTYPEDS],
        };
        info.untypeds[0].physical_address = ARENA_ADDRESS;
        info.untypeds[0].size_bits = ARENA_BITS;
        info.untypeds[1].physical_address = RAM_ADDRESS;
        info.untypeds[1].size_bits = RAM_BITS;
        let kernel = Rc::new(RefCell::new(ModelKernel { caps, root }));
        let installed = Rc::clone(&kernel);
        set_kernel(move |call: SyscallIn, buffer: &mut IpcBuffer| {
            let reply = if call.number == Syscall::Call as u64 {
                installed.borrow_mut().invoke(call, buffer)
            } else {
                Err(Error::NotSupported)
            };
            match reply {
                Ok(None) => SyscallOut::default(),
                Ok(Some(mr0)) => SyscallOut {
                    info: MessageInfo::new(0, 1).to_word(),
                    mrs: [mr0, 0, 0, 0],
                    ..SyscallOut::default()
                },
                Err(e) => SyscallOut {
                    status: u64::from(e.code()),
                    ..SyscallOut::default()
                },
            }
        });
        (kernel, info)
    }

    /// Decodes and performs one invocation, as the kernel does; `Some` is
    /// a reply's MR0 (`UntypedRetype`: how many objects were made).
    fn invoke(&mut self, call: SyscallIn, buffer: &IpcBuffer) -> Result<Option<u64>, Error> {
        let info = MessageInfo::from_word(call.info).map_err(|_| Error::InvalidMessage)?;
        let argument = |index: usize| {
            if index < usize::from(info.length) {
                Ok(call.mrs[index])
            } else {
                Err(Error::TruncatedMessage)
            }
        };
        let index = |value: u64| u32::try_from(value).map_err(|_| Error::InvalidSlot);
        let root = self.root;
        let caps = &mut self.caps;
        let extra = |caps: &Caps<_>, n: usize| {
            if n >= usize::from(info.extra_caps) {
                return Err(Error::TruncatedMessage);
            }
            caps.resolve(root, buffer.caps[n])
                .map_err(|_| Error::LookupFailed)
        };
        let slot = caps
            .resolve(root, index(call.cap).map_err(|_| Error::LookupFailed)?)
            .map_err(|_| Error::LookupFailed)?;
        let kind = caps.lookup(slot)?.kind();
        let invocation = Invocation::from_label(info.label).ok_or(Error::InvalidInvocation)?;
        let mut sink = DiscardEffects;
        match (kind, invocation) {
            (ObjectKind::Untyped, Invocation::UntypedRetype) => {
                let size_bits = u8::try_from(argument(1)?).map_err(|_| Error::InvalidSize)?;
                let new = match ObjectType::from_number(argument(0)?) {
                    Some(ObjectType::Untyped) => NewObject::Untyped { size_bits },
                    Some(ObjectType::Cnode) => NewObject::CNode { size_bits },
                    Some(ObjectType::Frame) => NewObject::Frame { size_bits },
                    Some(ObjectType::PageTable) => NewObject::PageTable,
                    Some(ObjectType::Endpoint) => NewObject::Endpoint,
                    Some(ObjectType::Notification) => NewObject::Notification,
                    Some(ObjectType::IoSpace) => NewObject::IoSpace {
                        iommu: extra(caps, 0)?,
                    },
                    _ => return Err(Error::NotSupported),
                };
                if argument(3)? != 1 {
                    return Err(Error::NotSupported);
                }
                let dest = caps.resolve(root, index(argument(2)?)?)?;
                caps.retype(slot, new, dest, &mut sink)?;
                return Ok(Some(1));
            }
            (ObjectKind::CNode, Invocation::CnodeCopy | Invocation::CnodeMint) => {
                let dest = caps.resolve(slot, index(argument(0)?)?)?;
                let source_cnode = if info.extra_caps > 0 {
                    extra(caps, 0)?
                } else {
                    slot
                };
                let source = caps.resolve(source_cnode, index(argument(1)?)?)?;
                let rights = Rights::from_bits_truncate(argument(2)? as u8);
                let badge = if invocation == Invocation::CnodeMint {
                    argument(3)?
                } else {
                    0
                };
                caps.mint(source, dest, rights, Badge(badge))?;
            }
            (ObjectKind::CNode, Invocation::CnodeDelete) => {
                let target = caps.resolve(slot, index(argument(0)?)?)?;
                caps.delete(target, &mut sink)?;
            }
            (ObjectKind::CNode, Invocation::CnodeRevoke) => {
                let target = caps.resolve(slot, index(argument(0)?)?)?;
                caps.revoke(target, &mut sink)?;
            }
            (ObjectKind::IommuControl, Invocation::IommuMintDevice) => {
                let requester = u32::try_from(argument(0)?).map_err(|_| Error::InvalidArgument)?;
                let dest = caps.resolve(root, index(argument(1)?)?)?;
                caps.mint_device(slot, requester, dest)?;
            }
            (ObjectKind::IoSpace, Invocation::IoSpaceMap) => {
                let frame = extra(caps, 0)?;
                let rights = argument(1)?;
                if rights > 3 {
                    return Err(Error::InvalidRights);
                }
                caps.map_io(
                    frame,
                    slot,
                    argument(0)?,
                    Rights::from_bits_truncate(rights as u8),
                    &mut sink,
                )?;
            }
            _ => return Err(Error::NotSupported),
        }
        Ok(None)
    }

    /// The capabilities in init's CNode, by slot index.
    fn init_caps(&self) -> impl Iterator<Item = (u32, &caps::Cap)> {
        (0..1 << INIT_CNODE_BITS).filter_map(|index| {
            let slot = self.caps.resolve(self.root, index).ok()?;
            Some((index, self.caps.lookup(slot).ok()?))
        })
    }

    /// How many Frame capabilities init's CNode holds.
    pub fn frames_held(&self) -> usize {
        self.init_caps()
            .filter(|(_, cap)| cap.kind() == ObjectKind::Frame)
            .count()
    }

    /// How many Frame capabilities of init's CNode hold an IO mapping.
    pub fn io_mappings(&self) -> usize {
        self.init_caps()
            .filter(|(_, cap)| cap.mapping().is_some())
            .count()
    }

    /// How many IoSpaces are alive.
    pub fn live_io_spaces(&self) -> usize {
        self.caps
            .objects()
            .iter()
            .flatten()
            .filter(|object| object.kind() == ObjectKind::IoSpace)
            .count()
    }

    /// The bytes the RAM Untyped can still hand out: above its watermark,
    /// or all of it once nothing carved from it is alive.
    pub fn ram_bytes_left(&self) -> u64 {
        let slot = self
            .caps
            .resolve(self.root, bootinfo::FIRST_UNTYPED + 1)
            .expect("the RAM Untyped's slot");
        let cap = self.caps.lookup(slot).expect("the RAM Untyped");
        let object = self.caps.object(cap.object()).expect("a live Untyped");
        match object.state() {
            ObjectState::Untyped { .. } if object.live_children() == 0 => 1 << RAM_BITS,
            ObjectState::Untyped { watermark, .. } => (1 << RAM_BITS) - watermark,
            _ => 0,
        }
    }

    /// The kind of the capability in slot `index` of the CNode whose
    /// capability is in init's slot `cnode`, if it holds one.
    pub fn kind_in(&self, cnode: u32, index: u32) -> Option<ObjectKind> {
        let cnode = self.caps.resolve(self.root, cnode).ok()?;
        let slot = self.caps.resolve(cnode, index).ok()?;
        Some(self.caps.lookup(slot).ok()?.kind())
    }
}
