//! The `virtio_drivers::Hal` of a driver domain, [`StageOneHal`]: DMA only
//! through the driver's own stage-1 table.
//!
//! The domain gives [`install`] a memory region it maps read-write and
//! that its IoSpace maps at `memory_ipa` (the image's `io_map`), and table
//! frames its IoSpace maps read-only. Page `i` of the region has one fixed
//! IOVA, `iova + i * 4096`, mapped in the stage-1 table only while the
//! device may touch it:
//!
//! | Hal call | what happens to the stage 1 |
//! |---|---|
//! | `dma_alloc` (virtqueues) | free pages zeroed, mapped (read-only when the device only reads), invalidated |
//! | `dma_dealloc` | unmapped, invalidated, free again |
//! | `share` of a buffer in pages [`reserve`]d from the region | those pages mapped in place with the direction's rights, invalidated (no copy) |
//! | `share` of any other buffer (a request header on the stack) | copied into free pages (bounce), mapped, invalidated |
//! | `unshare` | unmapped and invalidated; a bounce is copied back when the device wrote it |
//!
//! So the address the device gets is an IOVA that translates only through
//! the driver's tables, into the driver's IoSpace, and only for the
//! duration of one request: after `unshare` returns the device reaches
//! nothing of the buffer (the kernel waits for the IOMMU's invalidation).
//!
//! That is [`Sharing::PerRequest`], the default. [`set_sharing`] trades
//! it for fewer invalidations: [`Sharing::StagedBounces`] bounces small
//! buffers (request headers, statuses) through [`STAGING_PAGES`] pages
//! that stay mapped read-write, and [`Sharing::Premapped`] also keeps the
//! reserved pages mapped read-write, so a request changes nothing in
//! stage 1. The device can then reach those pages between requests, and
//! write a bounce while the driver copies it back: what the device can
//! reach is still only the pool, never the rest of the IoSpace or memory.
//! `share` cannot fail in the crate's interface: when the pool has no free
//! page it returns IOVA 0, never mapped, so the device's access faults and
//! the request fails; [`take_error`] says why.

use core::ptr::NonNull;

use iopt::{BitmapPool, Config, InvalidationRange, IoPageTable, Rights, SliceMemory};
use sys::{Cap, IoSpace, IoUserTable, Slot, UserTableFormat};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::{Failure, failure};

/// The most pages of DMA memory a pool manages.
pub const MAX_PAGES: usize = 64;
/// Pages kept mapped for bounces under [`Sharing::StagedBounces`] and
/// [`Sharing::Premapped`] (one per buffer of a request but the data).
pub const STAGING_PAGES: usize = 2;

/// How `share` gives a buffer to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// Every buffer mapped (and invalidated) when shared, unmapped (and
    /// invalidated) when the device returns it: the default.
    PerRequest,
    /// Buffers of one page or less that are not in reserved pages bounce
    /// through staging pages that stay mapped read-write; buffers in
    /// reserved pages are still mapped per request.
    StagedBounces,
    /// As `StagedBounces`, and the reserved pages stay mapped read-write:
    /// no stage-1 change per request.
    Premapped,
    /// As `PerRequest`, but a request's maps are invalidated together,
    /// once, before the doorbell ([`flush`], called by
    /// `crate::platform::AccessPlatform::notify`), and its unmaps
    /// together when the driver calls [`flush`] after the device returned
    /// the request (before it looks at the data); each flush invalidates
    /// the span of every pending range in one call. Between a buffer's
    /// `unshare` and that flush the device can still reach it: a bounce
    /// is copied back in that window.
    Batched,
}
const PAGE: u64 = 4096;

/// What [`install`] needs: where the DMA memory and the table frames are,
/// here and in the IoSpace, the stage-1 format, and the IOVAs to use.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// The IoSpace (the kernel's stage 2) the stage-1 table is bound in.
    pub space: Cap<IoSpace>,
    /// The slot of the domain's own where the IoUserTable goes.
    pub table_slot: Slot,
    /// The DMA memory: its address here, its IPA, its pages (at most
    /// [`MAX_PAGES`]).
    pub memory: (u64, u64, usize),
    /// The table frames: their address here, their IPA, how many.
    pub tables: (u64, u64, usize),
    /// The first IOVA of the pool; page `i` of the memory is at `iova + i
    /// * 4096`.
    pub iova: u64,
}

#[cfg(target_arch = "x86_64")]
const FORMAT: (iopt::Format, UserTableFormat, u32) = (
    iopt::Format::VtdFirstStage,
    UserTableFormat::X86FirstStage4Level,
    48,
);
#[cfg(not(target_arch = "x86_64"))]
const FORMAT: (iopt::Format, UserTableFormat, u32) = (
    iopt::Format::ArmStage1,
    UserTableFormat::ArmStage1Granule4k48Bit,
    44,
);

/// How the stage 1 was used since [`install`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `IoUserTable.Invalidate` calls.
    pub invalidations: u64,
    /// Buffers shared in place (pages from [`reserve`]).
    pub in_place: u64,
    /// Buffers shared through a bounce copy.
    pub bounced: u64,
    /// Allocations (`dma_alloc`).
    pub allocations: u64,
    /// Counter ticks (`rt::bench::io_counter`) in stage-1 map, unmap and
    /// invalidation.
    pub iommu_ticks: u64,
    /// Buffers given to the device as a [`redirect`]'s IOVA.
    pub redirected: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    /// Unmapped, free for an allocation or a bounce.
    Free,
    /// Mapped: a `dma_alloc` allocation.
    Allocated,
    /// Unmapped, the domain's (see [`reserve`]); mapped while shared.
    Reserved,
    /// A reserved page, mapped while the device holds a buffer in it.
    Shared,
    /// Mapped: the first page of a bounce for the buffer at `original`.
    Bounce { original: u64, len: u64 },
    /// Mapped: a later page of a bounce.
    BounceTail,
    /// Mapped read-write, free for a bounce (not [`Sharing::PerRequest`]).
    Staging,
    /// Mapped read-write: a staging page in use for the buffer at
    /// `original`.
    Staged { original: u64, len: u64 },
    /// A reserved page kept mapped read-write ([`Sharing::Premapped`]).
    Premapped,
    /// A premapped page holding a buffer the device was given.
    PremappedShared,
}

/// Where the pool's stage-1 changes reach the IOMMU: the IoUserTable's
/// `Invalidate` in a driver, a recorder in the host tests.
pub trait InvalidateRange {
    /// Makes the IOMMU forget what it cached of `[iova, iova + len)`.
    fn invalidate(&mut self, iova: u64, len: u64) -> Result<(), sys::Error>;
}

impl InvalidateRange for Cap<IoUserTable> {
    fn invalidate(&mut self, iova: u64, len: u64) -> Result<(), sys::Error> {
        self.invalidate_range(iova, len)
    }
}

struct Pool<T: InvalidateRange> {
    stage1: IoPageTable<BitmapPool<1>, SliceMemory<'static>>,
    table: T,
    memory: u64,
    memory_ipa: u64,
    iova: u64,
    pages: [Page; MAX_PAGES],
    count: usize,
    counters: Counters,
    error: Option<Failure>,
    sharing: Sharing,
    /// Inside a `Batched` share or unshare: stage-1 changes wait for
    /// [`flush`].
    deferring: bool,
    /// The IPA the next in-place share maps its page to instead of its
    /// own ([`misdirect`], a restart test's rogue driver).
    misdirect: Option<u64>,
    /// Zero copy ([`redirect`]): a buffer at this address of the driver is
    /// given to the device as this IOVA instead, nothing mapped or copied.
    redirect: Option<(u64, u64)>,
}

static POOL: spin::Mutex<Option<Pool<Cap<IoUserTable>>>> = spin::Mutex::new(None);

/// The table's invalidation for iopt's flush, counted.
struct Invalidate<'a, T: InvalidateRange> {
    table: &'a mut T,
    window: (u64, u64),
    calls: &'a mut u64,
    /// Invalidate `window` at the first range and nothing after
    /// (`Some(false)` until then), or each range as iopt gives it (`None`).
    whole_window: Option<bool>,
}

impl<T: InvalidateRange> iopt::Invalidator for Invalidate<'_, T> {
    type Error = sys::Error;

    fn invalidate_range(&mut self, range: InvalidationRange) -> Result<(), sys::Error> {
        match self.whole_window {
            Some(true) => Ok(()),
            Some(false) => {
                self.whole_window = Some(true);
                self.invalidate_all()
            }
            None => {
                *self.calls += 1;
                self.table.invalidate(range.iova, range.len)
            }
        }
    }

    fn invalidate_all(&mut self) -> Result<(), sys::Error> {
        // Shadow nesting composes per range: the pool's whole window.
        *self.calls += 1;
        self.table.invalidate(self.window.0, self.window.1)
    }
}

/// The pages `[va, va + len)` touches.
fn span(va: u64, len: u64) -> u64 {
    ((va & (PAGE - 1)) + len.max(1)).div_ceil(PAGE)
}

fn rights(direction: BufferDirection) -> Rights {
    match direction {
        BufferDirection::DriverToDevice => Rights::READ,
        BufferDirection::DeviceToDriver | BufferDirection::Both => Rights::READ_WRITE,
    }
}

impl<T: InvalidateRange> Pool<T> {
    /// A pool of `count` pages at `memory` here, `memory_ipa` in the
    /// IoSpace, `iova` in `stage1`, all free and unmapped.
    fn new(
        stage1: IoPageTable<BitmapPool<1>, SliceMemory<'static>>,
        table: T,
        (memory, memory_ipa, count): (u64, u64, usize),
        iova: u64,
    ) -> Self {
        Pool {
            stage1,
            table,
            memory,
            memory_ipa,
            iova,
            pages: [Page::Free; MAX_PAGES],
            count: count.min(MAX_PAGES),
            counters: Counters::default(),
            error: None,
            sharing: Sharing::PerRequest,
            deferring: false,
            misdirect: None,
            redirect: None,
        }
    }

    fn va(&self, page: usize) -> u64 {
        self.memory + page as u64 * PAGE
    }

    fn iova_of(&self, page: usize) -> u64 {
        self.iova + page as u64 * PAGE
    }

    /// The page whose IOVA is `iova`.
    fn page_at_iova(&self, iova: u64) -> Option<usize> {
        let page = usize::try_from(iova.checked_sub(self.iova)? / PAGE).ok()?;
        (page < self.count).then_some(page)
    }

    /// The page at address `va` of this domain, when in the pool.
    fn page_at(&self, va: u64) -> Option<usize> {
        let page = usize::try_from(va.checked_sub(self.memory)? / PAGE).ok()?;
        (page < self.count).then_some(page)
    }

    fn find_free(&self, pages: usize) -> Option<usize> {
        (0..=self.count.checked_sub(pages)?).find(|&first| {
            self.pages[first..first + pages]
                .iter()
                .all(|p| *p == Page::Free)
        })
    }

    fn flush(&mut self) -> Result<(), Failure> {
        let mut window = (self.iova, self.count as u64 * PAGE);
        let batched = self.sharing == Sharing::Batched;
        let pending = self.stage1.pending_invalidation();
        if batched && !pending.is_overflowed() {
            // One call for every pending range: the span from the first
            // to the last.
            let ranges = pending.ranges();
            if let (Some(start), Some(end)) = (
                ranges.iter().map(|r| r.iova).min(),
                ranges.iter().map(|r| r.end()).max(),
            ) {
                window = (start, end - start);
            }
        }
        let mut invalidate = Invalidate {
            table: &mut self.table,
            window,
            calls: &mut self.counters.invalidations,
            whole_window: batched.then_some(false),
        };
        self.stage1
            .flush(&mut invalidate)
            .map_err(|e| failure(format_args!("IoUserTable.Invalidate: {e:?}")))
    }

    fn map(&mut self, first: usize, pages: usize, rights: Rights) -> Result<(), Failure> {
        let start = rt::bench::io_counter();
        let mapped = self.map_uncounted(first, pages, rights);
        self.counters.iommu_ticks += rt::bench::io_counter() - start;
        mapped
    }

    fn unmap(&mut self, first: usize, pages: usize) -> Result<(), Failure> {
        let start = rt::bench::io_counter();
        let unmapped = self.unmap_uncounted(first, pages);
        self.counters.iommu_ticks += rt::bench::io_counter() - start;
        unmapped
    }

    fn map_uncounted(&mut self, first: usize, pages: usize, rights: Rights) -> Result<(), Failure> {
        let (iova, ipa) = (self.iova_of(first), self.memory_ipa + first as u64 * PAGE);
        self.stage1
            .map(iova, ipa, pages as u64 * PAGE, rights)
            .map_err(|e| failure(format_args!("stage-1 map of IOVA {iova:#x}: {e:?}")))?;
        if self.deferring {
            return Ok(());
        }
        self.flush()
    }

    fn unmap_uncounted(&mut self, first: usize, pages: usize) -> Result<(), Failure> {
        let iova = self.iova_of(first);
        self.stage1
            .unmap(iova, pages as u64 * PAGE)
            .map_err(|e| failure(format_args!("stage-1 unmap of IOVA {iova:#x}: {e:?}")))?;
        if self.deferring {
            return Ok(());
        }
        self.flush()
    }

    /// Runs `operation` (a `share` or `unshare` of the Hal) with its
    /// stage-1 changes deferred to [`flush`] when `Batched`.
    fn deferred<R>(&mut self, operation: impl FnOnce(&mut Self) -> R) -> R {
        self.deferring = self.sharing == Sharing::Batched;
        let result = operation(self);
        self.deferring = false;
        result
    }

    /// Invalidates what changed since the last flush, counted.
    fn flush_pending(&mut self) -> Result<(), Failure> {
        if self.stage1.pending_invalidation().is_empty() {
            return Ok(());
        }
        let start = rt::bench::io_counter();
        let flushed = self.flush();
        self.counters.iommu_ticks += rt::bench::io_counter() - start;
        flushed
    }

    fn allocate(&mut self, pages: usize, direction: BufferDirection) -> Result<usize, Failure> {
        let first = self.find_free(pages).ok_or_else(|| {
            failure(format_args!(
                "no {pages} free contiguous page(s) of the {}-page DMA pool",
                self.count
            ))
        })?;
        zero(self.va(first), pages as u64 * PAGE);
        self.map(first, pages, rights(direction))?;
        self.pages[first..first + pages].fill(Page::Allocated);
        self.counters.allocations += 1;
        Ok(first)
    }

    fn deallocate(&mut self, iova: u64, pages: usize) -> Result<(), Failure> {
        let first = self
            .page_at_iova(iova)
            .filter(|&first| {
                first + pages <= self.count
                    && self.pages[first..first + pages]
                        .iter()
                        .all(|p| *p == Page::Allocated)
            })
            .ok_or_else(|| {
                failure(format_args!(
                    "dma_dealloc of {pages} page(s) at IOVA {iova:#x}, not an allocation"
                ))
            })?;
        self.unmap(first, pages)?;
        self.pages[first..first + pages].fill(Page::Free);
        Ok(())
    }

    fn reserve(&mut self, pages: usize) -> Result<u64, Failure> {
        let first = self
            .find_free(pages)
            .ok_or_else(|| failure(format_args!("no {pages} free page(s) to reserve")))?;
        self.pages[first..first + pages].fill(Page::Reserved);
        Ok(self.va(first))
    }

    fn share(&mut self, va: u64, len: u64, direction: BufferDirection) -> Result<u64, Failure> {
        if let Some((proxy, iova)) = self.redirect
            && va == proxy
        {
            self.counters.redirected += 1;
            return Ok(iova);
        }
        let pages = span(va, len) as usize;
        if let Some(first) = self.page_at(va).filter(|&first| {
            first + pages <= self.count
                && self.pages[first..first + pages]
                    .iter()
                    .all(|p| *p == Page::Reserved)
        }) {
            match self.misdirect.take() {
                Some(ipa) => {
                    let iova = self.iova_of(first);
                    self.stage1
                        .map(iova, ipa, pages as u64 * PAGE, rights(direction))
                        .map_err(|e| {
                            failure(format_args!("misdirected map of {iova:#x}: {e:?}"))
                        })?;
                    self.flush()?;
                }
                None => self.map(first, pages, rights(direction))?,
            }
            self.pages[first..first + pages].fill(Page::Shared);
            self.counters.in_place += 1;
            return Ok(self.iova_of(first) + (va & (PAGE - 1)));
        }
        if let Some(first) = self.page_at(va).filter(|&first| {
            first + pages <= self.count
                && self.pages[first..first + pages]
                    .iter()
                    .all(|p| *p == Page::Premapped)
        }) {
            self.pages[first..first + pages].fill(Page::PremappedShared);
            self.counters.in_place += 1;
            return Ok(self.iova_of(first) + (va & (PAGE - 1)));
        }
        if len <= PAGE
            && let Some(first) = self.pages[..self.count]
                .iter()
                .position(|p| *p == Page::Staging)
        {
            let staging = self.va(first);
            zero(staging, PAGE);
            if direction != BufferDirection::DeviceToDriver {
                copy(va, staging, len);
            }
            self.pages[first] = Page::Staged { original: va, len };
            self.counters.bounced += 1;
            return Ok(self.iova_of(first));
        }
        let pages = span(0, len) as usize;
        let first = self.find_free(pages).ok_or_else(|| {
            failure(format_args!(
                "no {pages} free page(s) to bounce a {len}-byte buffer through"
            ))
        })?;
        let bounce = self.va(first);
        zero(bounce, pages as u64 * PAGE);
        if direction != BufferDirection::DeviceToDriver {
            copy(va, bounce, len);
        }
        self.map(first, pages, rights(direction))?;
        self.pages[first] = Page::Bounce { original: va, len };
        self.pages[first + 1..first + pages].fill(Page::BounceTail);
        self.counters.bounced += 1;
        Ok(self.iova_of(first))
    }

    fn unshare(
        &mut self,
        iova: u64,
        va: u64,
        len: u64,
        direction: BufferDirection,
    ) -> Result<(), Failure> {
        if self.redirect == Some((va, iova)) {
            return Ok(());
        }
        let first = self
            .page_at_iova(iova)
            .ok_or_else(|| failure(format_args!("unshare of IOVA {iova:#x}, not the pool's")))?;
        match self.pages[first] {
            Page::Shared => {
                let pages = span(va, len) as usize;
                self.unmap(first, pages)?;
                self.pages[first..first + pages].fill(Page::Reserved);
                Ok(())
            }
            Page::Bounce { original, len } if original == va => {
                let pages = span(0, len) as usize;
                // Unmapped first: the device cannot change what is copied.
                self.unmap(first, pages)?;
                if direction != BufferDirection::DriverToDevice {
                    copy(self.va(first), original, len);
                }
                self.pages[first..first + pages].fill(Page::Free);
                Ok(())
            }
            Page::PremappedShared => {
                let pages = span(va, len) as usize;
                self.pages[first..first + pages].fill(Page::Premapped);
                Ok(())
            }
            Page::Staged { original, len } if original == va => {
                if direction != BufferDirection::DriverToDevice {
                    copy(self.va(first), original, len);
                }
                self.pages[first] = Page::Staging;
                Ok(())
            }
            other => Err(failure(format_args!(
                "unshare of IOVA {iova:#x} (buffer at {va:#x}), whose page is {other:?}"
            ))),
        }
    }
}

impl<T: InvalidateRange> Pool<T> {
    /// Back to [`Sharing::PerRequest`], then on to `sharing`.
    fn set_sharing(&mut self, sharing: Sharing) -> Result<(), Failure> {
        self.flush_pending()?;
        if let Some(busy) = self.pages[..self.count].iter().position(|p| {
            matches!(
                p,
                Page::Staged { .. } | Page::Shared | Page::PremappedShared
            )
        }) {
            return Err(failure(format_args!(
                "page {busy} of the pool is shared with the device: no change of sharing under I/O"
            )));
        }
        for page in 0..self.count {
            match self.pages[page] {
                Page::Staging => {
                    self.unmap(page, 1)?;
                    self.pages[page] = Page::Free;
                }
                Page::Premapped => {
                    self.unmap(page, 1)?;
                    self.pages[page] = Page::Reserved;
                }
                _ => {}
            }
        }
        self.sharing = Sharing::PerRequest;
        if matches!(sharing, Sharing::PerRequest | Sharing::Batched) {
            self.sharing = sharing;
            return Ok(());
        }
        for _ in 0..STAGING_PAGES {
            let page = self
                .find_free(1)
                .ok_or_else(|| failure(format_args!("no free page to stage bounces in")))?;
            self.map(page, 1, Rights::READ_WRITE)?;
            self.pages[page] = Page::Staging;
        }
        if sharing == Sharing::Premapped {
            for page in 0..self.count {
                if self.pages[page] == Page::Reserved {
                    self.map(page, 1, Rights::READ_WRITE)?;
                    self.pages[page] = Page::Premapped;
                }
            }
        }
        self.sharing = sharing;
        Ok(())
    }
}

/// Makes the IOMMU see every stage-1 change a `Batched` share or unshare
/// left pending (nothing to do otherwise): before the doorbell, and after
/// the device returned a request, before the driver reads what it wrote.
pub fn flush() -> Result<(), Failure> {
    let mut guard = POOL.lock();
    let pool = guard
        .as_mut()
        .ok_or_else(|| failure(format_args!("no DMA pool installed")))?;
    pool.flush_pending()
        .inspect_err(|why| pool.error = Some(why.clone()))
}

/// Maps `iova` to `ipa` of the IoSpace in the stage 1 for good
/// (read-write; the IoSpace's mapping decides) and invalidates it: a fixed window outside the pool, such as the IOVA
/// of a client's Frame that the IoSpace maps at `ipa` only during a
/// request (zero copy), or of the MSI doorbell the kernel keeps
/// write-only in the IoSpace (`crate::msix`, aarch64). Until something is mapped at `ipa`, the device's
/// access there faults in stage 2.
pub fn map_fixed(iova: u64, ipa: u64) -> Result<(), Failure> {
    let mut guard = POOL.lock();
    let pool = guard
        .as_mut()
        .ok_or_else(|| failure(format_args!("no DMA pool installed")))?;
    pool.stage1
        .map(iova, ipa, PAGE, Rights::READ_WRITE)
        .map_err(|e| failure(format_args!("stage-1 map of IOVA {iova:#x}: {e:?}")))?;
    pool.flush()
}

/// `IoUserTable.Invalidate` of `[iova, iova + len)` (outside the pool: a
/// [`map_fixed`] window), counted: on VT-d it composes the window's entry
/// through whatever the IoSpace maps behind it now.
pub fn invalidate(iova: u64, len: u64) -> Result<(), Failure> {
    let mut guard = POOL.lock();
    let pool = guard
        .as_mut()
        .ok_or_else(|| failure(format_args!("no DMA pool installed")))?;
    pool.counters.invalidations += 1;
    pool.table.invalidate_range(iova, len).map_err(|e| {
        failure(format_args!(
            "IoUserTable.Invalidate of IOVA {iova:#x}: {e:?}"
        ))
    })
}

/// Zero copy: until [`redirect`]`(None)`, a buffer at the driver's
/// address `proxy` (a page of its own, so the crate's slice is valid
/// memory) is given to the device as `iova` (a [`map_fixed`] window) with
/// nothing mapped, copied or unmapped: the device reads or writes what the
/// IoSpace maps behind `iova`, never `proxy`.
pub fn redirect(to: Option<(u64, u64)>) {
    if let Some(pool) = POOL.lock().as_mut() {
        pool.redirect = to;
    }
}

/// Changes how buffers are shared from the next request on (see
/// [`Sharing`]); refused while a buffer is shared.
pub fn set_sharing(sharing: Sharing) -> Result<(), Failure> {
    POOL.lock()
        .as_mut()
        .ok_or_else(|| failure(format_args!("no DMA pool installed")))?
        .set_sharing(sharing)
}

/// Builds the driver's stage-1 table in `setup.tables` with iopt, binds
/// it in `setup.space` (`IoSpace.BindUserTable`) and makes the pool of
/// `setup.memory` the Hal's. Returns the IoUserTable, for
/// `IoDevice.AttachNested`.
pub fn install(setup: Setup) -> Result<Cap<IoUserTable>, Failure> {
    let count = setup.memory.2;
    if count > MAX_PAGES {
        return Err(failure(format_args!(
            "a DMA pool of {count} pages; at most {MAX_PAGES}"
        )));
    }
    let (tables, tables_ipa, frames) = setup.tables;
    #[allow(unsafe_code)]
    // SAFETY: the domain maps `frames` table frames read-write at `tables`
    // for its life (the image's region), and `install`, called once,
    // makes this the only Rust view of them.
    let memory_frames = unsafe { driverkit::start::table_frames(tables, frames) };
    let slice = SliceMemory::new(tables_ipa, memory_frames)
        .ok_or_else(|| failure(format_args!("the table frames are not page aligned")))?;
    let pool = BitmapPool::<1>::new(tables_ipa, frames)
        .ok_or_else(|| failure(format_args!("{frames} table frames do not fit one bitmap")))?;
    let config = Config::new(FORMAT.0)
        .with_ipa_bits(FORMAT.2)
        .map_err(|e| failure(format_args!("iopt config: {e:?}")))?;
    let stage1 =
        IoPageTable::new(config, pool, slice).map_err(|e| failure(format_args!("iopt: {e:?}")))?;
    let table = setup
        .space
        .bind_user_table(stage1.root().ipa(), FORMAT.1, setup.table_slot)
        .map_err(|e| failure(format_args!("IoSpace.BindUserTable: {e:?}")))?;
    *POOL.lock() = Some(Pool::new(stage1, table, setup.memory, setup.iova));
    Ok(table)
}

/// Takes `pages` free pages of the pool for the domain's own buffers,
/// unmapped until a buffer in them is shared (then the device reads or
/// writes them in place, with no copy). Returns their address.
pub fn reserve(pages: usize) -> Result<u64, Failure> {
    POOL.lock()
        .as_mut()
        .ok_or_else(|| failure(format_args!("no DMA pool installed")))?
        .reserve(pages)
}

/// Makes the next in-place share map its page's IOVA to `ipa`, wherever
/// that is, instead of to the page: what a driver gone rogue does with
/// its own stage 1 (the restart test `inject = "rogue-dma"`). The device
/// then reaches `ipa` only if the IoSpace maps it; if not, its access
/// faults in the IOMMU.
pub fn misdirect(ipa: u64) -> Result<(), Failure> {
    POOL.lock()
        .as_mut()
        .ok_or_else(|| failure(format_args!("no DMA pool installed")))?
        .misdirect = Some(ipa);
    Ok(())
}

/// The counters since [`install`].
pub fn counters() -> Counters {
    POOL.lock()
        .as_ref()
        .map_or(Counters::default(), |pool| pool.counters)
}

/// Why a Hal call that cannot report failed last (once).
pub fn take_error() -> Option<Failure> {
    POOL.lock().as_mut().and_then(|pool| pool.error.take())
}

/// Where IOVA `iova` leads in the stage-1 table right now (its IPA), or
/// `None` when unmapped: what the IOMMU would find.
pub fn translate(iova: u64) -> Option<u64> {
    let guard = POOL.lock();
    let pool = guard.as_ref()?;
    pool.stage1.translate(iova).ok().flatten().map(|t| t.ipa)
}

/// Zeroes `len` bytes of the pool at `va`.
#[allow(unsafe_code)]
fn zero(va: u64, len: u64) {
    // SAFETY: `va..va + len` is free pool memory, mapped read-write for the
    // domain's life and not mapped for the device (the caller maps it
    // after), nor referred to by anything else.
    unsafe { core::ptr::write_bytes(va as *mut u8, 0, len as usize) }
}

/// Copies `len` bytes from `from` to `to`.
#[allow(unsafe_code)]
fn copy(from: u64, to: u64, len: u64) {
    // SAFETY: one side is a bounce page of the pool (mapped read-write, not
    // mapped for the device while copied back, as `unshare` unmaps first),
    // the other the buffer the crate passed to `share`/`unshare`, valid and
    // not accessed by anything else for the call (the Hal's contract); they
    // do not overlap, as the buffer is not in a free or bounce page.
    unsafe { core::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, len as usize) }
}

/// The `virtio_drivers::Hal` of a driver domain: see the module's
/// documentation.
pub struct StageOneHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned pool pages that nothing
// else uses until `dma_dealloc`; `mmio_phys_to_virt` returns the domain's
// mapping of a BAR init mapped for it (`crate::pci`), and panics for any
// other address; `share` returns an IOVA the stage 1 maps to the buffer or
// its bounce copy until `unshare`.
#[allow(unsafe_code)]
unsafe impl Hal for StageOneHal {
    fn dma_alloc(pages: usize, direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let mut guard = POOL.lock();
        let Some(pool) = guard.as_mut() else {
            return (0, NonNull::dangling());
        };
        match pool.allocate(pages, direction) {
            Ok(first) => match NonNull::new(pool.va(first) as *mut u8) {
                Some(va) => (pool.iova_of(first), va),
                None => (0, NonNull::dangling()),
            },
            Err(why) => {
                pool.error = Some(why);
                (0, NonNull::dangling())
            }
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        let mut guard = POOL.lock();
        let Some(pool) = guard.as_mut() else {
            return -1;
        };
        match pool.deallocate(paddr, pages) {
            Ok(()) => 0,
            Err(why) => {
                pool.error = Some(why);
                -1
            }
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        match crate::pci::bar_address(paddr, size as u64).and_then(|va| NonNull::new(va as *mut u8))
        {
            Some(va) => va,
            None => panic!(
                "[virtio] {size:#x} bytes of device memory at {paddr:#x}: in no BAR init mapped"
            ),
        }
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let (va, len) = (buffer.as_ptr() as *mut u8 as u64, buffer.len() as u64);
        let mut guard = POOL.lock();
        let Some(pool) = guard.as_mut() else {
            return 0;
        };
        pool.deferred(|pool| pool.share(va, len, direction))
            .unwrap_or_else(|why| {
                pool.error = Some(why);
                0
            })
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let (va, len) = (buffer.as_ptr() as *mut u8 as u64, buffer.len() as u64);
        let mut guard = POOL.lock();
        if let Some(pool) = guard.as_mut()
            && let Err(why) = pool.deferred(|pool| pool.unshare(paddr, va, len, direction))
        {
            pool.error = Some(why);
        }
    }
}

#[cfg(test)]
mod tests;
