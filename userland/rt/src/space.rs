//! Building objects and address spaces from user space: the one copy of
//! what init does for every protection domain and what the system tests
//! (`vspaces`, `ipcbench`) do for their child threads.
//!
//! - [`Objects`] hands out free slots of the caller's CNode and retypes
//!   objects into them, moving on to the next Untyped when one is used up
//!   (CNodes come from the arena Untyped, the only one they can come from).
//!   A slot emptied through [`Objects::delete`] is handed out again;
//!   [`Objects::record`] notes the slots handed out until
//!   [`Objects::recorded`], so a caller can delete what it built.
//! - [`tables_for`] and [`map_frame`] install the PageTables a mapping
//!   needs: the kernel's `PageTable.Map` installs the highest missing level,
//!   so each keeps adding one until the mapping goes through.
//! - [`Scratch`] fills a Frame through a page of the caller's own address
//!   space (map, copy, unmap).
//! - [`load_elf`] puts an ELF executable's `PT_LOAD` segments into fresh
//!   4 KiB Frames of another address space, with the segment's rights.
//!
//! Every function answers the kernel's [`Error`]; [`LoadError`] adds what
//! only the ELF can get wrong, naming the segment.

use alloc::vec::Vec;
use sys::bootinfo::{self, BootInfo};
use sys::{
    CNode, Cap, CapType, Error, FixedSize, Frame, MapRights, PageTable, Retype, Slot, Untyped,
};

/// The root task's CNode has `2^ROOT_CNODE_BITS` slots (the kernel's).
pub const ROOT_CNODE_SLOTS: u32 = 1 << 10;

/// Free slots of one CNode and the Untypeds to retype into them.
pub struct Objects {
    cnode: Cap<CNode>,
    arena: Cap<Untyped>,
    untypeds: [Cap<Untyped>; bootinfo::MAX_UNTYPEDS],
    untyped_count: usize,
    current: usize,
    next_slot: u32,
    end_slot: u32,
    /// Slots below `next_slot` emptied again, handed out first.
    freed: Vec<Slot>,
    /// The slots handed out since [`Objects::record`], while recording.
    recording: Option<Vec<Slot>>,
}

impl Objects {
    /// The root task's objects: its CNode ([`bootinfo::INIT_CNODE`]), its
    /// free slots from `first_free_slot`, the arena Untyped (the first) for
    /// CNodes and the other RAM Untypeds, largest first, for the rest.
    pub fn from_boot_info(info: &BootInfo) -> Objects {
        let mut ram = [(0u8, bootinfo::ARENA); bootinfo::MAX_UNTYPEDS];
        let mut untyped_count = 0;
        for untyped in sys::untypeds::initial_untypeds(info)
            .skip(1)
            .filter(|u| !u.is_device())
        {
            ram[untyped_count] = (untyped.descriptor.size_bits, untyped.cap());
            untyped_count += 1;
        }
        ram[..untyped_count].sort_unstable_by_key(|&(bits, _)| core::cmp::Reverse(bits));
        let untypeds = core::array::from_fn(|i| ram[i].1);
        Objects {
            cnode: bootinfo::INIT_CNODE,
            arena: bootinfo::ARENA,
            untypeds,
            untyped_count,
            current: 0,
            next_slot: info.first_free_slot as u32,
            end_slot: ROOT_CNODE_SLOTS,
            freed: Vec::new(),
            recording: None,
        }
    }

    /// Starts noting every slot handed out (and not given back), until
    /// [`Objects::recorded`]: what a caller must delete to undo what it
    /// built (init, restarting a domain).
    pub fn record(&mut self) {
        self.recording = Some(Vec::new());
    }

    /// The slots handed out since [`Objects::record`]; stops recording.
    pub fn recorded(&mut self) -> Vec<Slot> {
        self.recording.take().unwrap_or_default()
    }

    /// The CNode whose slots these are.
    pub fn cnode(&self) -> Cap<CNode> {
        self.cnode
    }

    /// How many slots [`slot`](Objects::slot) can still hand out.
    pub fn free_slots(&self) -> u32 {
        self.end_slot - self.next_slot + self.freed.len() as u32
    }

    /// A free slot: the last one [`delete`](Objects::delete) emptied, else
    /// the next never used. `InvalidSlot` when the CNode is full.
    pub fn slot(&mut self) -> Result<Slot, Error> {
        let slot = match self.freed.pop() {
            Some(slot) => slot,
            None if self.next_slot >= self.end_slot => return Err(Error::InvalidSlot),
            None => {
                self.next_slot += 1;
                Slot::new(self.next_slot - 1)
            }
        };
        if let Some(recording) = &mut self.recording {
            recording.push(slot);
        }
        Ok(slot)
    }

    /// Retypes one object of the fixed-size kind `T` (a Tcb, Endpoint,
    /// Notification, PageTable or IoFaultQueue) into a free slot, from the
    /// current Untyped, the next one when it answers `UntypedExhausted`.
    pub fn make<T: FixedSize>(&mut self) -> Result<Cap<T>, Error> {
        self.make_sized::<T>(0)
    }

    /// Retypes one object of kind `T` and `2^size_bits` bytes (Frames 12 or
    /// 21, CNodes log2 of their slots; ignored for fixed-size kinds) into
    /// a free slot. CNodes come from the arena; other kinds from the
    /// current Untyped, the next one when it answers `UntypedExhausted`.
    pub fn make_sized<T: Retype>(&mut self, size_bits: u8) -> Result<Cap<T>, Error> {
        let slot = self.slot()?;
        if T::OBJECT_TYPE == sys::ObjectType::Cnode {
            let made = self.arena.retype_sized::<T>(size_bits, slot);
            return self.give_back_on_error(slot, made);
        }
        self.retype_into(slot, |untyped| untyped.retype_sized::<T>(size_bits, slot))
    }

    /// An IoSpace of the unit `control` (`Untyped.Retype` with the unit's
    /// IommuControl), in a free slot.
    pub fn make_io_space(
        &mut self,
        control: Cap<sys::IommuControl>,
    ) -> Result<Cap<sys::IoSpace>, Error> {
        let slot = self.slot()?;
        self.retype_into(slot, |untyped| untyped.retype_io_space(control, slot))
    }

    /// An IoSpace of the unit `control` retyped from `untyped` alone (with
    /// no moving on: the caller chose that memory), in a free slot.
    pub fn make_io_space_from(
        &mut self,
        untyped: Cap<Untyped>,
        control: Cap<sys::IommuControl>,
    ) -> Result<Cap<sys::IoSpace>, Error> {
        let slot = self.slot()?;
        let made = untyped.retype_io_space(control, slot);
        self.give_back_on_error(slot, made)
    }

    /// `CNode.Delete` of `slot` of this CNode (the last capability of an
    /// object destroys it); the emptied slot goes back to the free ones.
    pub fn delete(&mut self, slot: Slot) -> Result<(), Error> {
        self.cnode.delete(slot)?;
        self.freed.push(slot);
        self.forget(slot);
        Ok(())
    }

    /// Takes `slot`, empty again, out of the recording: it is no longer
    /// the recorder's to delete.
    fn forget(&mut self, slot: Slot) {
        if let Some(recording) = &mut self.recording {
            recording.retain(|&recorded| recorded != slot);
        }
    }

    /// Runs `retype` on the current Untyped, moving on while it is used up.
    fn retype_into<T: CapType>(
        &mut self,
        slot: Slot,
        mut retype: impl FnMut(Cap<Untyped>) -> Result<Cap<T>, Error>,
    ) -> Result<Cap<T>, Error> {
        let mut result = Err(Error::UntypedExhausted);
        while self.current < self.untyped_count {
            result = retype(self.untypeds[self.current]);
            if result != Err(Error::UntypedExhausted) {
                break;
            }
            self.current += 1;
        }
        self.give_back_on_error(slot, result)
    }

    /// Returns `slot` (the last one handed out) to the free ones when
    /// `result` says nothing was created in it.
    fn give_back_on_error<R>(&mut self, slot: Slot, result: Result<R, Error>) -> Result<R, Error> {
        if result.is_err() {
            self.forget(slot);
            if self.next_slot == slot.index() + 1 {
                self.next_slot = slot.index();
            } else {
                self.freed.push(slot);
            }
        }
        result
    }

    /// A copy of the capability in `source` with `rights` (and `badge` if
    /// not 0) in a free slot of the same CNode.
    pub fn mint<T: CapType>(
        &mut self,
        source: Cap<T>,
        rights: sys::Rights,
        badge: u64,
    ) -> Result<Cap<T>, Error> {
        let slot = self.slot()?;
        let minted = self.cnode.mint(slot, source, rights, badge);
        self.give_back_on_error(slot, minted)
    }
}

/// Installs PageTables in `space` until a 4 KiB page at `address` can be
/// mapped (tables the space already has are kept).
pub fn tables_for(objects: &mut Objects, space: Cap<PageTable>, address: u64) -> Result<(), Error> {
    for _ in 0..3 {
        let table: Cap<PageTable> = objects.make()?;
        match table.map(space, address) {
            Ok(()) => {}
            Err(Error::AddressInUse) => return objects.delete(table.slot()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Maps `frame` (4 KiB or 2 MiB) at `address` of `space` with `rights`,
/// first installing whatever PageTables are missing on the way.
pub fn map_frame(
    objects: &mut Objects,
    frame: Cap<Frame>,
    space: Cap<PageTable>,
    address: u64,
    rights: MapRights,
) -> Result<(), Error> {
    for _ in 0..4 {
        match frame.map(space, address, rights) {
            Err(Error::MissingPageTable) => {
                let table: Cap<PageTable> = objects.make()?;
                table.map(space, address)?;
            }
            other => return other,
        }
    }
    Err(Error::MissingPageTable)
}

/// A page of the caller's own address space through which Frames are
/// filled before they are mapped elsewhere.
#[derive(Clone, Copy, Debug)]
pub struct Scratch {
    own: Cap<PageTable>,
    address: u64,
}

impl Scratch {
    /// The page at `address` of `own` (the caller's VSpace; nothing else may
    /// be mapped there), with its tables installed.
    pub fn new(objects: &mut Objects, own: Cap<PageTable>, address: u64) -> Result<Scratch, Error> {
        tables_for(objects, own, address)?;
        Ok(Scratch { own, address })
    }

    /// The root task's scratch page at `address` of [`bootinfo::INIT_VSPACE`].
    pub fn for_root_task(objects: &mut Objects, address: u64) -> Result<Scratch, Error> {
        Scratch::new(objects, bootinfo::INIT_VSPACE, address)
    }

    /// Copies `bytes` into the 4 KiB `frame` at `offset` (what does not fit
    /// in the page is left out), through the scratch page.
    pub fn fill(&self, frame: Cap<Frame>, offset: usize, bytes: &[u8]) -> Result<(), Error> {
        frame.map(self.own, self.address, MapRights::READ_WRITE)?;
        let start = offset.min(4096);
        let length = bytes.len().min(4096 - start);
        write_page(self.address, start, &bytes[..length]);
        frame.unmap()
    }

    /// A new 4 KiB Frame holding `bytes` (at most a page) from offset 0.
    pub fn filled_frame(&self, objects: &mut Objects, bytes: &[u8]) -> Result<Cap<Frame>, Error> {
        let frame: Cap<Frame> = objects.make_sized(12)?;
        self.fill(frame, 0, bytes)?;
        Ok(frame)
    }
}

/// Writes `bytes` at `page + offset` in the caller's address space.
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
fn write_page(page: u64, offset: usize, bytes: &[u8]) {
    // SAFETY: `Scratch::fill` mapped a writable 4 KiB Frame at `page` just
    // before and unmaps it just after; nothing else uses that page, and
    // `offset + bytes.len() <= 4096` keeps the copy inside it.
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), (page as *mut u8).add(offset), bytes.len())
    };
}

/// On the host no page was mapped (every call answered an error first).
#[cfg(not(target_os = "none"))]
fn write_page(_page: u64, _offset: usize, _bytes: &[u8]) {}

/// Why a program could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// Not a little-endian ELF64 executable, or its headers are malformed.
    BadElf,
    /// Built for another architecture (the ELF machine number).
    WrongMachine(u16),
    /// Segment `index` lies outside the file, is not page aligned, or is
    /// not below the top of user space.
    BadSegment {
        /// Index in the program header table.
        index: usize,
    },
    /// The kernel refused while loading segment `index`.
    Kernel {
        /// Index in the program header table.
        index: usize,
        /// What the kernel answered.
        error: Error,
    },
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LoadError::BadElf => f.write_str("not a valid ELF64 executable"),
            LoadError::WrongMachine(machine) => {
                write!(f, "built for ELF machine {machine}, not this architecture")
            }
            LoadError::BadSegment { index } => write!(
                f,
                "segment {index} lies outside the file, is not page aligned or is not in user space"
            ),
            LoadError::Kernel { index, error } => {
                write!(f, "loading segment {index}: the kernel answered {error:?}")
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
const MACHINE: u16 = elf::abi::EM_X86_64;
#[cfg(not(target_arch = "x86_64"))]
const MACHINE: u16 = elf::abi::EM_AARCH64;

/// Loads the ELF executable `image` into `space`: each `PT_LOAD` segment
/// into fresh 4 KiB Frames filled through `scratch` and mapped with the
/// segment's rights (read, read-write or read-execute); returns the entry
/// point. Segments must start on a page boundary (rt's linker scripts put
/// each in its own pages).
pub fn load_elf(
    objects: &mut Objects,
    scratch: &Scratch,
    space: Cap<PageTable>,
    image: &[u8],
) -> Result<u64, LoadError> {
    use elf::ElfBytes;
    use elf::abi::{PF_W, PF_X, PT_LOAD};
    use elf::endian::LittleEndian;

    let file = ElfBytes::<LittleEndian>::minimal_parse(image).map_err(|_| LoadError::BadElf)?;
    if file.ehdr.e_machine != MACHINE {
        return Err(LoadError::WrongMachine(file.ehdr.e_machine));
    }
    let Some(segments) = file.segments() else {
        return Ok(file.ehdr.e_entry);
    };
    for (index, segment) in segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.p_type == PT_LOAD)
    {
        let file_end = segment.p_offset.checked_add(segment.p_filesz);
        let memory_end = segment.p_vaddr.checked_add(segment.p_memsz);
        if file_end.is_none_or(|end| end > image.len() as u64)
            || segment.p_filesz > segment.p_memsz
            || !segment.p_vaddr.is_multiple_of(4096)
            || memory_end.is_none_or(|end| end > 1 << 47)
        {
            return Err(LoadError::BadSegment { index });
        }
        let rights = if segment.p_flags & PF_W != 0 {
            MapRights::READ_WRITE
        } else if segment.p_flags & PF_X != 0 {
            MapRights::READ_EXECUTE
        } else {
            MapRights::READ
        };
        let bytes =
            &image[segment.p_offset as usize..(segment.p_offset + segment.p_filesz) as usize];
        let kernel = |error| LoadError::Kernel { index, error };
        for page in 0..segment.p_memsz.div_ceil(4096) {
            let start = (page * 4096) as usize;
            let chunk = bytes
                .get(start..bytes.len().min(start + 4096))
                .unwrap_or(&[]);
            let frame: Cap<Frame> = objects.make_sized(12).map_err(kernel)?;
            if !chunk.is_empty() {
                scratch.fill(frame, 0, chunk).map_err(kernel)?;
            }
            let address = segment.p_vaddr + page * 4096;
            map_frame(objects, frame, space, address, rights).map_err(kernel)?;
        }
    }
    Ok(file.ehdr.e_entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::Invocation;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;
    use std::vec::Vec;
    use sys::host::{SyscallIn, clear_kernel, set_kernel};
    use sys::ipc::IpcBuffer;
    use sys::syscall::SyscallOut;

    /// What the stand-in kernel remembers.
    #[derive(Default)]
    struct Fake {
        /// Objects each Untyped slot can still make.
        room: HashMap<u64, u32>,
        /// (untyped, object type, destination slot) of every retype.
        retyped: Vec<(u64, u64, u64)>,
        /// Page tables installed per VSpace slot (3 make a 4 KiB page mappable).
        tables: HashMap<u64, u32>,
        /// (frame, vspace, address, rights) of every Frame.Map that succeeded.
        maps: Vec<(u64, u64, u64, u64)>,
    }

    fn status(result: Result<(), Error>) -> SyscallOut {
        SyscallOut {
            status: result.err().map_or(0, |e| u64::from(e.code())),
            ..SyscallOut::default()
        }
    }

    fn install(fake: &Rc<RefCell<Fake>>) {
        let fake = Rc::clone(fake);
        set_kernel(move |call: SyscallIn, buffer: &mut IpcBuffer| {
            let info = sys::MessageInfo::from_word(call.info).expect("MessageInfo");
            let mut fake = fake.borrow_mut();
            let result = match info.label {
                l if l == Invocation::UntypedRetype as u32 => {
                    let room = fake.room.entry(call.cap).or_insert(0);
                    if *room == 0 {
                        Err(Error::UntypedExhausted)
                    } else {
                        *room -= 1;
                        fake.retyped.push((call.cap, call.mrs[0], call.mrs[2]));
                        // As the kernel: MR0 says how many were made.
                        return SyscallOut {
                            info: sys::MessageInfo::new(0, 1).to_word(),
                            mrs: [1, 0, 0, 0],
                            ..SyscallOut::default()
                        };
                    }
                }
                l if l == Invocation::PageTableMap as u32 => {
                    let tables = fake.tables.entry(u64::from(buffer.caps[0])).or_insert(0);
                    if *tables == 3 {
                        Err(Error::AddressInUse)
                    } else {
                        *tables += 1;
                        Ok(())
                    }
                }
                l if l == Invocation::FrameMap as u32 => {
                    let space = u64::from(buffer.caps[0]);
                    if fake.tables.get(&space).copied().unwrap_or(0) < 3 {
                        Err(Error::MissingPageTable)
                    } else {
                        fake.maps.push((call.cap, space, call.mrs[0], call.mrs[1]));
                        Ok(())
                    }
                }
                _ => Ok(()),
            };
            status(result)
        });
    }

    /// A boot info with the arena and two RAM Untypeds (4 KiB and 1 MiB).
    fn boot_info() -> BootInfo {
        let mut info = BootInfo {
            magic: bootinfo::BOOT_INFO_MAGIC,
            version: 1,
            untyped_count: 3,
            first_free_slot: 20,
            image_address: 0,
            image_length: 0,
            untypeds: [Default::default(); bootinfo::MAX_UNTYPEDS],
        };
        for (index, bits) in [(0, 17), (1, 12), (2, 20)] {
            info.untypeds[index].size_bits = bits;
            info.untypeds[index].physical_address = 1 << 30 << index;
        }
        info
    }

    #[test]
    fn objects_use_the_largest_untyped_first_and_move_on_when_it_is_used_up() {
        let fake = Rc::new(RefCell::new(Fake::default()));
        let arena = u64::from(bootinfo::FIRST_UNTYPED.index());
        fake.borrow_mut()
            .room
            .extend([(arena, 1), (arena + 1, 1), (arena + 2, 1)]);
        install(&fake);
        let mut objects = Objects::from_boot_info(&boot_info());
        let first: Cap<Frame> = objects.make_sized(12).unwrap();
        let second: Cap<Frame> = objects.make_sized(12).unwrap();
        let cnode: Cap<CNode> = objects.make_sized(4).unwrap();
        assert_eq!(
            (first.slot(), second.slot(), cnode.slot()),
            (Slot::new(20), Slot::new(21), Slot::new(22)),
            "consecutive slots"
        );
        let retyped = fake.borrow().retyped.clone();
        let frame = sys::ObjectType::Frame as u64;
        let cnode_type = sys::ObjectType::Cnode as u64;
        // The 1 MiB Untyped (slot 18), then the 4 KiB one; CNodes from the arena.
        assert_eq!(
            retyped,
            [
                (arena + 2, frame, 20),
                (arena + 1, frame, 21),
                (arena, cnode_type, 22)
            ]
        );
        // Everything used up: the error comes back and the slot is reused.
        assert_eq!(
            objects.make_sized::<Frame>(12),
            Err(Error::UntypedExhausted)
        );
        assert_eq!(objects.slot(), Ok(Slot::new(23)));
        clear_kernel();
    }

    #[test]
    fn map_frame_installs_the_missing_tables_then_maps() {
        let fake = Rc::new(RefCell::new(Fake::default()));
        fake.borrow_mut()
            .room
            .insert(u64::from(bootinfo::FIRST_UNTYPED.index()) + 2, 10);
        install(&fake);
        let mut objects = Objects::from_boot_info(&boot_info());
        let space: Cap<PageTable> = Cap::from_slot(Slot::new(7));
        let frame: Cap<Frame> = Cap::from_slot(Slot::new(9));
        map_frame(&mut objects, frame, space, 0x1000_0000, MapRights::READ).unwrap();
        assert_eq!(fake.borrow().tables[&7], 3);
        assert_eq!(fake.borrow().maps, [(9, 7, 0x1000_0000, 1)]);
        // With every table present, tables_for gives the extra one back,
        // and its slot.
        let free = objects.free_slots();
        tables_for(&mut objects, space, 0x1000_1000).unwrap();
        assert_eq!(fake.borrow().tables[&7], 3);
        assert_eq!(objects.free_slots(), free);
        clear_kernel();
    }

    #[test]
    fn a_deleted_slot_is_handed_out_again() {
        let fake = Rc::new(RefCell::new(Fake::default()));
        let arena = u64::from(bootinfo::FIRST_UNTYPED.index());
        fake.borrow_mut().room.insert(arena + 2, 1);
        install(&fake);
        let mut objects = Objects::from_boot_info(&boot_info());
        let free = objects.free_slots();
        assert_eq!(free, ROOT_CNODE_SLOTS - 20);
        let frame: Cap<Frame> = objects.make_sized(12).unwrap();
        let (first, second) = (objects.slot().unwrap(), objects.slot().unwrap());
        assert_eq!(
            (frame.slot(), first, second),
            (Slot::new(20), Slot::new(21), Slot::new(22))
        );
        objects.delete(frame.slot()).unwrap();
        assert_eq!(objects.free_slots(), free - 2);
        // A retype that fails gives the reused slot back too.
        assert_eq!(
            objects.make_sized::<Frame>(12),
            Err(Error::UntypedExhausted)
        );
        assert_eq!(objects.slot(), Ok(Slot::new(20)));
        assert_eq!(objects.slot(), Ok(Slot::new(23)));
        clear_kernel();
    }

    #[test]
    fn recorded_slots_are_those_still_holding_what_was_made() {
        let fake = Rc::new(RefCell::new(Fake::default()));
        let arena = u64::from(bootinfo::FIRST_UNTYPED.index());
        fake.borrow_mut().room.insert(arena + 2, 2);
        install(&fake);
        let mut objects = Objects::from_boot_info(&boot_info());
        let before: Cap<Frame> = objects.make_sized(12).unwrap();
        objects.record();
        let kept: Cap<Frame> = objects.make_sized(12).unwrap();
        let deleted = objects.slot().unwrap();
        objects.delete(deleted).unwrap();
        // Handed out again, then given back by a failing retype.
        assert_eq!(
            objects.make_sized::<Frame>(12),
            Err(Error::UntypedExhausted)
        );
        let last = objects.slot().unwrap();
        assert_eq!(objects.recorded(), [kept.slot(), last]);
        assert_ne!(before.slot(), kept.slot());
        // Not recording: nothing is noted.
        objects.slot().unwrap();
        assert_eq!(objects.recorded(), []);
        clear_kernel();
    }

    /// A little-endian ELF64 executable for this host's machine with two
    /// `PT_LOAD` segments: text (r-x, 5000 bytes in the file) at 0x40_0000
    /// and data (rw-, 16 bytes in the file, 8 KiB in memory) at 0x40_3000.
    fn two_segment_elf() -> Vec<u8> {
        let mut elf = std::vec![0u8; 64 + 2 * 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // ELFCLASS64
        elf[5] = 1; // little-endian
        elf[6] = 1; // EV_CURRENT
        elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[18..20].copy_from_slice(&MACHINE.to_le_bytes());
        elf[20..24].copy_from_slice(&1u32.to_le_bytes());
        elf[24..32].copy_from_slice(&0x40_0010u64.to_le_bytes()); // entry
        elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
        elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
        elf[56..58].copy_from_slice(&2u16.to_le_bytes()); // phnum
        let text_offset = elf.len() as u64;
        let segments = [
            (5u32, text_offset, 0x40_0000u64, 5000u64, 5000u64),
            (6u32, text_offset + 5000, 0x40_3000, 16, 8192),
        ];
        for (index, (flags, offset, vaddr, filesz, memsz)) in segments.into_iter().enumerate() {
            let at = 64 + index * 56;
            elf[at..at + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
            elf[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
            elf[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            elf[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
            elf[at + 24..at + 32].copy_from_slice(&vaddr.to_le_bytes());
            elf[at + 32..at + 40].copy_from_slice(&filesz.to_le_bytes());
            elf[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
            elf[at + 48..at + 56].copy_from_slice(&4096u64.to_le_bytes());
        }
        elf.resize(elf.len() + 5016, 0xAA);
        elf
    }

    #[test]
    fn an_elf_is_loaded_page_by_page_with_its_segments_rights() {
        let fake = Rc::new(RefCell::new(Fake::default()));
        fake.borrow_mut()
            .room
            .insert(u64::from(bootinfo::FIRST_UNTYPED.index()) + 2, 100);
        install(&fake);
        let mut objects = Objects::from_boot_info(&boot_info());
        let scratch = Scratch::for_root_task(&mut objects, 0x10_0000_0000).unwrap();
        let space: Cap<PageTable> = Cap::from_slot(Slot::new(900));
        let entry = load_elf(&mut objects, &scratch, space, &two_segment_elf()).unwrap();
        assert_eq!(entry, 0x40_0010);
        let into_space: Vec<(u64, u64)> = fake
            .borrow()
            .maps
            .iter()
            .filter(|map| map.1 == 900)
            .map(|map| (map.2, map.3))
            .collect();
        let (rx, rw) = (MapRights::READ_EXECUTE.bits(), MapRights::READ_WRITE.bits());
        assert_eq!(
            into_space,
            [
                (0x40_0000, rx),
                (0x40_1000, rx),
                (0x40_3000, rw),
                (0x40_4000, rw)
            ]
        );
        // A segment that ends outside the file is refused, naming it.
        let mut bad = two_segment_elf();
        bad.truncate(64 + 2 * 56 + 100);
        assert_eq!(
            load_elf(&mut objects, &scratch, space, &bad),
            Err(LoadError::BadSegment { index: 0 })
        );
        assert_eq!(
            load_elf(&mut objects, &scratch, space, b"not an elf"),
            Err(LoadError::BadElf)
        );
        clear_kernel();
    }
}
