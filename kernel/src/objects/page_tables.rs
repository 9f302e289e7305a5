//! The CPU page tables the kernel linked into address spaces: a record per
//! PageTable object installed under a table entry or used as an address
//! space's root, so that a dead table is unlinked and a dead root stops its
//! threads (`reconcile`), and no table is installed twice.
//!
//! Every change to the records happens under the capability lock, so what
//! an invocation's decode found (room for a record, a table not yet
//! installed) still holds when it performs.

use super::Storage;
use abi::Error;
use caps::{Caps, ObjectId, ObjectKind, Rights, SlotId};
use core::sync::atomic::{AtomicU64, Ordering};

/// A PageTable object the kernel linked into an address space: installed
/// under a table entry, or (`installed_at: None`) an address space's root.
struct TableRecord {
    object: ObjectId,
    paddr: u64,
    installed_at: Option<u64>,
}

const MAX_PAGE_TABLES: usize = 512;

static PAGE_TABLES: spin::Mutex<heapless::Vec<TableRecord, MAX_PAGE_TABLES>> =
    spin::Mutex::new(heapless::Vec::new());

/// The root table (physical address) of an address space [`root_of`]
/// found or [`register_root`] made last; [`NO_ROOT`]: none. Its record is
/// a root's while this names it: records change under the capability lock
/// only, a root's record goes only in [`reconcile`], which forgets this,
/// and no record installs a root's table (`check_table_install`). So
/// `root_of`, under the capability lock, answers for it without the
/// records' lock and scan (about 25 instructions of `Frame.Map`).
static KNOWN_ROOT: AtomicU64 = AtomicU64::new(NO_ROOT);

/// [`KNOWN_ROOT`] naming no table (no page starts there).
const NO_ROOT: u64 = u64::MAX;

/// The roots of every address space the kernel knows (PageTable records
/// not installed under another table), for the abstraction check.
#[cfg(feature = "fuzz-checks")]
pub fn address_space_roots() -> heapless::Vec<u64, MAX_PAGE_TABLES> {
    let tables = PAGE_TABLES.lock();
    let roots = tables.iter().filter(|t| t.installed_at.is_none());
    roots.map(|t| t.paddr).collect()
}

/// Boot: the root task's address space (`object` at `paddr`) is a root.
pub(super) fn register_boot_root(object: ObjectId, paddr: u64) {
    let _ = PAGE_TABLES.lock().push(TableRecord {
        object,
        paddr,
        installed_at: None,
    });
}

/// An address space's root as an invocation's decode found it: already
/// one, or a PageTable [`register_root`] makes one.
#[derive(Clone, Copy)]
pub struct Root {
    /// The root table's physical address.
    pub paddr: u64,
    object: ObjectId,
    /// Not a root yet: [`register_root`] records it.
    new: bool,
}

impl Root {
    /// The root's PageTable object.
    pub fn object(&self) -> ObjectId {
        self.object
    }
}

/// The PageTable in `slot` (write right) as an address space's root,
/// changing nothing. Errors: the lookup's, `DeadObject`, `AlreadyMapped`
/// (installed as a lower-level table), `ObjectTableFull` (not a root yet
/// and no record free to make it one).
#[inline(always)]
pub fn root_of(caps: &Caps<Storage>, slot: SlotId) -> Result<Root, Error> {
    let cap = *caps.lookup_as(slot, ObjectKind::PageTable, Rights::WRITE)?;
    let paddr = caps
        .object(cap.object())
        .and_then(|o| o.memory())
        .map(|(p, _)| p)
        .ok_or(Error::DeadObject)?;
    if KNOWN_ROOT.load(Ordering::Relaxed) == paddr {
        return Ok(Root {
            paddr,
            object: cap.object(),
            new: false,
        });
    }
    let tables = PAGE_TABLES.lock();
    let new = match tables.iter().find(|t| t.paddr == paddr) {
        Some(t) if t.installed_at.is_some() => return Err(Error::AlreadyMapped),
        Some(_) => {
            KNOWN_ROOT.store(paddr, Ordering::Relaxed);
            false
        }
        None if tables.is_full() => return Err(Error::ObjectTableFull),
        None => true,
    };
    Ok(Root {
        paddr,
        object: cap.object(),
        new,
    })
}

/// Makes a root [`root_of`] found a root: records it and gives it the
/// kernel's half of every address space. Nothing to do for a known root.
#[inline(always)]
pub fn register_root(root: Root) {
    if root.new {
        // Room was checked by `root_of` under the capability lock held since.
        let _ = PAGE_TABLES.lock().push(TableRecord {
            object: root.object,
            paddr: root.paddr,
            installed_at: None,
        });
        crate::vspace::init_root(root.paddr);
    }
}

/// Whether the PageTable at `paddr` can be installed in the address space
/// `root`, changing nothing. Errors: `AlreadyMapped` (installed already,
/// or a root, this one included), `ObjectTableFull` (no record free for it
/// and, if new, the root).
#[inline]
pub fn check_table_install(root: &Root, paddr: u64) -> Result<(), Error> {
    let tables = PAGE_TABLES.lock();
    if tables.iter().any(|t| t.paddr == paddr) || (root.new && root.paddr == paddr) {
        return Err(Error::AlreadyMapped);
    }
    if tables.len() + usize::from(root.new) + 1 > tables.capacity() {
        return Err(Error::ObjectTableFull);
    }
    Ok(())
}

/// Records the PageTable `object` at `paddr` as installed under the table
/// entry at physical address `entry` (room checked by
/// [`check_table_install`]).
#[inline]
pub fn record_table(object: ObjectId, paddr: u64, entry: u64) {
    let _ = PAGE_TABLES.lock().push(TableRecord {
        object,
        paddr,
        installed_at: Some(entry),
    });
}

/// The table entry the PageTable at `paddr` is installed under. Errors:
/// `NotMapped` (not installed under a table: never, or a root).
#[inline]
pub fn installed_table(paddr: u64) -> Result<u64, Error> {
    let tables = PAGE_TABLES.lock();
    tables
        .iter()
        .find_map(|t| t.installed_at.filter(|_| t.paddr == paddr))
        .ok_or(Error::NotMapped)
}

/// Unlinks the installed PageTable at `paddr` and drops its record.
#[inline]
pub fn forget_table(paddr: u64) {
    let mut tables = PAGE_TABLES.lock();
    if let Some(index) = tables
        .iter()
        .position(|t| t.paddr == paddr && t.installed_at.is_some())
    {
        if let Some(entry) = tables[index].installed_at {
            crate::vspace::clear_entry(entry);
        }
        tables.swap_remove(index);
    }
}

/// [`super::reconcile`]'s part for page tables: dead tables unlinked, dead
/// roots' threads stopped, tables linked below dead ones emptied and
/// forgotten, and Frame mappings that went with them forgotten by the model.
pub(super) fn reconcile(caps: &mut Caps<Storage>, threads: &mut crate::sched::Threads) {
    let alive = |object: caps::ObjectId, kind: ObjectKind, paddr: u64| {
        super::reconcile::alive(caps, object, kind, paddr)
    };
    let mut tables = PAGE_TABLES.lock();
    // Pushed, not `collect()`ed: heapless's `from_iter` `expect`s, which
    // keeps `core::fmt` code in the kernel (README, "Size").
    let mut dead: heapless::Vec<u64, MAX_PAGE_TABLES> = heapless::Vec::new();
    for t in tables.iter() {
        if !alive(t.object, ObjectKind::PageTable, t.paddr) {
            let _ = dead.push(t.paddr);
        }
    }
    // Devices bound to a VSpace (SVA): dead IoDevices' (and IoPasids' or
    // their IoDevices') and dead roots' bindings end; once CPU tables are
    // unlinked (below), every bound device forgets its whole address
    // space before the operation returns.
    let sva_alive = |object, kind| {
        caps.object(object).is_some_and(|o| {
            o.kind() == kind
                && !matches!(o.state(), caps::ObjectState::IoPasid { device: None, .. })
        })
    };
    if dead.is_empty() {
        crate::io_space::reconcile_sva(false, sva_alive);
        return;
    }
    // A dead root's record goes below.
    KNOWN_ROOT.store(NO_ROOT, Ordering::Relaxed);
    let inside_dead = |entry: u64| in_a_page_of(&dead, entry);
    for table in tables.iter().filter(|t| listed(&dead, t.paddr)) {
        match table.installed_at {
            // A dead table still linked from a live one: unlink it.
            Some(entry) if !inside_dead(entry) => crate::vspace::clear_entry(entry),
            Some(_) => {}
            // A dead address-space root: no thread may run on it any more.
            None => crate::sched::forget_address_space(threads, table.paddr),
        }
    }
    // Live tables linked from a dead one, and those linked from them, lose
    // their place (their entry lives in memory that may be retyped): they
    // are emptied, so that installed again they bring no leaf or lower
    // table along, and their records go.
    let mut orphans: heapless::Vec<u64, MAX_PAGE_TABLES> = heapless::Vec::new();
    loop {
        let inside = |entry: u64| inside_dead(entry) || in_a_page_of(&orphans, entry);
        let next = tables.iter().find(|t| {
            !listed(&dead, t.paddr)
                && !listed(&orphans, t.paddr)
                && t.installed_at.is_some_and(inside)
        });
        match next.map(|t| t.paddr) {
            Some(paddr) if orphans.push(paddr).is_ok() => {}
            _ => break,
        }
    }
    for &table in &orphans {
        crate::vspace::clear_table(table);
    }
    crate::io_space::reconcile_sva(true, sva_alive);
    tables.retain(|t| !listed(&dead, t.paddr) && !listed(&orphans, t.paddr));
    // Frame capabilities whose CPU leaf went with a table (or whose address
    // space died) no longer map anything: the model forgets the mapping, so
    // that a later unmap never clears a leaf another Frame holds there.
    for index in 0..caps.slots().len() {
        let Some(cap) = caps.slots()[index].cap().copied() else {
            continue;
        };
        let Some(cpu) = cap.cpu_mapping() else {
            continue;
        };
        let root_alive = tables
            .iter()
            .any(|t| t.paddr == cpu.vspace && t.installed_at.is_none());
        let memory = caps.object(cap.object()).and_then(|o| o.memory());
        let mapped = root_alive
            && memory.is_some_and(|(paddr, bits)| {
                crate::vspace::mapped_at(cpu.vspace, cpu.vaddr, bits) == Some(paddr)
            });
        if !mapped {
            let _ = caps.unmap_frame(SlotId(index as u32), &mut caps::DiscardEffects);
        }
    }
}

/// Whether `paddr` is in `list`: one out-of-line copy for [`reconcile`]'s
/// seven tests (each inlined `contains` was an unrolled loop of ~280 bytes;
/// kernel/README.md, "Size").
#[inline(never)]
fn listed(list: &[u64], paddr: u64) -> bool {
    list.contains(&paddr)
}

/// Whether `entry` lies in one of the 4 KiB pages at `tables`.
#[inline(never)]
fn in_a_page_of(tables: &[u64], entry: u64) -> bool {
    tables.iter().any(|&t| entry >= t && entry < t + 4096)
}
