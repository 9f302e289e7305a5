//! PageTable invocations: `Map` (install as the highest missing level of
//! an address space), `Unmap` (only an empty table leaves).

use super::{Call, Reply};
use crate::objects::{self, CapSystem, Root};
use abi::{Error, Invocation};
use caps::{ObjectId, ObjectKind, Rights};

/// A decoded PageTable invocation.
pub(super) enum PageTableOp {
    /// Install the table `(object, paddr)` at the free table entry `entry`
    /// (a physical address) of the address space `root`.
    Map {
        root: Root,
        table: (ObjectId, u64),
        entry: u64,
    },
    /// Unlink the empty installed table at `paddr`.
    Unmap { paddr: u64 },
}

/// Decodes a PageTable invocation; changes nothing.
#[inline(always)]
pub(super) fn decode(caps: &CapSystem, call: &Call) -> Result<PageTableOp, Error> {
    match call.invocation {
        Invocation::PageTableMap => {
            let root = objects::root_of(caps, call.extra_cap(caps, 0)?)?;
            let object = caps
                .lookup_as(call.slot, ObjectKind::PageTable, Rights::WRITE)?
                .object();
            let (paddr, _) = objects::memory_of(caps, call.slot)?;
            objects::check_table_install(&root, paddr)?;
            let entry = crate::vspace::free_table_entry(root.paddr, call.argument(0)?).map_err(
                |e| match e {
                    crate::vspace::MapError::BadAddress(_) => Error::InvalidAddress,
                    _ => Error::AddressInUse,
                },
            )?;
            Ok(PageTableOp::Map {
                root,
                table: (object, paddr),
                entry,
            })
        }
        Invocation::PageTableUnmap => {
            caps.lookup_as(call.slot, ObjectKind::PageTable, Rights::WRITE)?;
            let (paddr, _) = objects::memory_of(caps, call.slot)?;
            objects::installed_table(paddr)?;
            // A table leaves only empty: its leaves and lower tables would
            // otherwise outlive what the capability model knows of them (a
            // Frame deleted behind it, or a leaf read as a table pointer
            // when the table comes back one level higher).
            if !crate::vspace::table_is_empty(paddr) {
                return Err(Error::TableNotEmpty);
            }
            Ok(PageTableOp::Unmap { paddr })
        }
        _ => Err(Error::InvalidInvocation),
    }
}

/// Performs a decoded PageTable invocation; it cannot fail (decode found
/// the entry free and a record for the table, and the root if new, under
/// the capability lock held since).
#[inline(always)]
pub(super) fn perform(op: PageTableOp) -> Reply {
    match op {
        PageTableOp::Map {
            root,
            table: (object, paddr),
            entry,
        } => {
            objects::register_root(root);
            crate::vspace::install_table(entry, paddr);
            objects::record_table(object, paddr, entry);
        }
        PageTableOp::Unmap { paddr } => {
            objects::forget_table(paddr);
            // A device bound to the VSpace (SVA) may cache entries that
            // led through the table: gone before its memory can be reused.
            crate::io_space::invalidate_all_vspaces();
        }
    }
    Reply::EMPTY
}
