//! Host tests of the DMA pool against a real `iopt` table: what the stage
//! 1 maps after each Hal operation, with which rights, and how many
//! invalidations each costs.

extern crate std;

use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use super::*;

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct PageBytes([u8; 4096]);

/// Records every invalidation.
#[derive(Default)]
struct Recorder(Vec<(u64, u64)>);

impl InvalidateRange for Recorder {
    fn invalidate(&mut self, iova: u64, len: u64) -> Result<(), sys::Error> {
        self.0.push((iova, len));
        Ok(())
    }
}

const PAGES: usize = 8;
const IPA: u64 = 0x10_0000;
const IOVA: u64 = 0x1000_0000;
const TABLES_IPA: u64 = 0x4000;

/// A pool of `PAGES` pages filled with 0xEE (so zeroing shows).
fn pool() -> Pool<Recorder> {
    let memory: &'static mut [PageBytes] =
        Box::leak(vec![PageBytes([0xEE; 4096]); PAGES].into_boxed_slice());
    let tables: &'static mut [[u64; 512]] = Box::leak(vec![[0u64; 512]; 8].into_boxed_slice());
    let slice = SliceMemory::new(TABLES_IPA, tables).unwrap();
    let frames = BitmapPool::<1>::new(TABLES_IPA, 8).unwrap();
    let config = Config::new(FORMAT.0).with_ipa_bits(FORMAT.2).unwrap();
    let stage1 = IoPageTable::new(config, frames, slice).unwrap();
    Pool::new(
        stage1,
        Recorder::default(),
        (memory.as_ptr() as u64, IPA, PAGES),
        IOVA,
    )
}

/// What the stage 1 maps at `iova`: its IPA and rights.
fn mapped(pool: &Pool<Recorder>, iova: u64) -> Option<(u64, Rights)> {
    pool.stage1
        .translate(iova)
        .unwrap()
        .map(|translation| (translation.ipa, translation.rights))
}

/// Every page of the pool the stage 1 maps.
fn mapped_pages(pool: &Pool<Recorder>) -> Vec<usize> {
    (0..PAGES)
        .filter(|&page| mapped(pool, IOVA + page as u64 * PAGE).is_some())
        .collect()
}

fn byte(va: u64) -> u8 {
    // SAFETY: the tests pass addresses of the pool's leaked pages or of
    // their own buffers.
    #[allow(unsafe_code)]
    unsafe {
        (va as *const u8).read_volatile()
    }
}

fn set(va: u64, value: u8, len: usize) {
    // SAFETY: as in `byte`.
    #[allow(unsafe_code)]
    unsafe {
        core::ptr::write_bytes(va as *mut u8, value, len)
    }
}

#[test]
fn allocations_are_zeroed_and_mapped_until_freed() {
    let mut pool = pool();
    let first = pool.allocate(2, BufferDirection::DriverToDevice).unwrap();
    assert_eq!(byte(pool.va(first)), 0);
    assert_eq!(byte(pool.va(first) + 2 * 4096 - 1), 0);
    let iova = pool.iova_of(first);
    assert_eq!(mapped(&pool, iova + 4096), Some((IPA + 4096, Rights::READ)));
    assert_eq!(pool.table.0.len(), 1);
    pool.deallocate(iova, 2).unwrap();
    assert!(mapped_pages(&pool).is_empty());
    assert_eq!(pool.table.0.len(), 2);
    assert!(pool.deallocate(iova, 2).is_err(), "freed twice");
}

#[test]
fn a_buffer_outside_the_pool_bounces_and_nothing_stays_mapped() {
    let mut pool = pool();
    let header = [7u8; 16];
    let va = header.as_ptr() as u64;
    let iova = pool.share(va, 16, BufferDirection::DriverToDevice).unwrap();
    let page = pool.page_at_iova(iova).unwrap();
    assert_eq!(mapped(&pool, iova).map(|(_, r)| r), Some(Rights::READ));
    assert_eq!(byte(pool.va(page) + 15), 7, "copied in");
    assert_eq!(byte(pool.va(page) + 16), 0, "the rest of the page zeroed");
    pool.unshare(iova, va, 16, BufferDirection::DriverToDevice)
        .unwrap();
    assert!(mapped_pages(&pool).is_empty());
    assert_eq!(
        pool.table.0.len(),
        2,
        "map and unmap, one invalidation each"
    );
    // The device writes a status: copied back after the unmap.
    let mut status = [0u8; 1];
    let va = status.as_mut_ptr() as u64;
    let iova = pool.share(va, 1, BufferDirection::DeviceToDriver).unwrap();
    assert_eq!(
        mapped(&pool, iova).map(|(_, r)| r),
        Some(Rights::READ_WRITE)
    );
    set(pool.va(pool.page_at_iova(iova).unwrap()), 0x5A, 1);
    pool.unshare(iova, va, 1, BufferDirection::DeviceToDriver)
        .unwrap();
    assert_eq!(byte(va), 0x5A);
    assert!(mapped_pages(&pool).is_empty());
}

#[test]
fn reserved_pages_are_shared_in_place_once_at_a_time() {
    let mut pool = pool();
    let data = pool.reserve(1).unwrap();
    assert!(mapped_pages(&pool).is_empty(), "reserved is not mapped");
    let iova = pool
        .share(data + 100, 512, BufferDirection::DeviceToDriver)
        .unwrap();
    let page = pool.page_at(data).unwrap();
    assert_eq!(iova, pool.iova_of(page) + 100, "in place, same offset");
    assert_eq!(
        mapped(&pool, iova),
        Some((IPA + page as u64 * PAGE + 100, Rights::READ_WRITE))
    );
    // The same page again while shared: a bounce, not a second mapping.
    let again = pool
        .share(data + 1024, 512, BufferDirection::DriverToDevice)
        .unwrap();
    assert_ne!(pool.page_at_iova(again), Some(page));
    pool.unshare(again, data + 1024, 512, BufferDirection::DriverToDevice)
        .unwrap();
    pool.unshare(iova, data + 100, 512, BufferDirection::DeviceToDriver)
        .unwrap();
    assert!(mapped_pages(&pool).is_empty());
    assert_eq!(pool.pages[page], Page::Reserved);
}

#[test]
fn an_exhausted_pool_refuses_and_maps_nothing_more() {
    let mut pool = pool();
    pool.allocate(PAGES, BufferDirection::Both).unwrap();
    let invalidations = pool.table.0.len();
    let header = [1u8; 16];
    assert!(
        pool.share(header.as_ptr() as u64, 16, BufferDirection::DriverToDevice)
            .is_err()
    );
    assert!(pool.allocate(1, BufferDirection::Both).is_err());
    assert_eq!(pool.table.0.len(), invalidations);
    assert_eq!(mapped_pages(&pool).len(), PAGES);
}

#[test]
fn unshare_of_an_iova_the_pool_did_not_give_is_refused() {
    let mut pool = pool();
    let buffer = [0u8; 8];
    let va = buffer.as_ptr() as u64;
    assert!(pool.unshare(IPA, va, 8, BufferDirection::Both).is_err());
    assert!(pool.unshare(IOVA, va, 8, BufferDirection::Both).is_err());
    let iova = pool.share(va, 8, BufferDirection::Both).unwrap();
    assert!(
        pool.unshare(iova, va + 1, 8, BufferDirection::Both)
            .is_err(),
        "another buffer's address"
    );
}

#[test]
fn the_sharing_modes_change_what_stays_mapped() {
    let mut pool = pool();
    let data = pool.reserve(1).unwrap();
    let data_page = pool.page_at(data).unwrap();
    let header = [3u8; 16];
    let va = header.as_ptr() as u64;

    pool.set_sharing(Sharing::StagedBounces).unwrap();
    assert_eq!(mapped_pages(&pool).len(), STAGING_PAGES);
    let before = pool.table.0.len();
    let iova = pool.share(va, 16, BufferDirection::DriverToDevice).unwrap();
    pool.unshare(iova, va, 16, BufferDirection::DriverToDevice)
        .unwrap();
    assert_eq!(
        pool.table.0.len(),
        before,
        "a staged bounce invalidates nothing"
    );
    let in_place = pool
        .share(data, 4096, BufferDirection::DeviceToDriver)
        .unwrap();
    pool.unshare(in_place, data, 4096, BufferDirection::DeviceToDriver)
        .unwrap();
    assert_eq!(pool.table.0.len(), before + 2, "the data page per request");

    pool.set_sharing(Sharing::Premapped).unwrap();
    assert!(mapped_pages(&pool).contains(&data_page));
    let before = pool.table.0.len();
    let in_place = pool
        .share(data, 4096, BufferDirection::DeviceToDriver)
        .unwrap();
    assert!(
        pool.set_sharing(Sharing::PerRequest).is_err(),
        "no change while a buffer is shared"
    );
    pool.unshare(in_place, data, 4096, BufferDirection::DeviceToDriver)
        .unwrap();
    assert_eq!(pool.table.0.len(), before);
    assert!(mapped_pages(&pool).contains(&data_page), "stays mapped");

    pool.set_sharing(Sharing::PerRequest).unwrap();
    assert!(mapped_pages(&pool).is_empty(), "back to nothing mapped");
    assert_eq!(pool.pages[data_page], Page::Reserved);
}

#[test]
fn batched_sharing_invalidates_the_window_once_per_flush() {
    let mut pool = pool();
    let data = pool.reserve(1).unwrap();
    pool.set_sharing(Sharing::Batched).unwrap();
    let header = [9u8; 16];
    let mut status = [0u8; 1];
    let buffers = [
        (header.as_ptr() as u64, 16, BufferDirection::DriverToDevice),
        (data, 4096, BufferDirection::DeviceToDriver),
        (
            status.as_mut_ptr() as u64,
            1,
            BufferDirection::DeviceToDriver,
        ),
    ];
    let before = pool.table.0.len();
    let iovas: Vec<u64> = buffers
        .iter()
        .map(|&(va, len, direction)| {
            pool.deferred(|pool| pool.share(va, len, direction))
                .unwrap()
        })
        .collect();
    assert_eq!(pool.table.0.len(), before, "nothing before the flush");
    pool.flush_pending().unwrap();
    let first = iovas.iter().map(|iova| iova & !(PAGE - 1)).min().unwrap();
    let last = iovas
        .iter()
        .map(|iova| (iova & !(PAGE - 1)) + PAGE)
        .max()
        .unwrap();
    assert_eq!(
        &pool.table.0[before..],
        &[(first, last - first)],
        "one invalidation spanning the three pages"
    );
    for (&iova, &(va, len, direction)) in iovas.iter().zip(&buffers) {
        pool.deferred(|pool| pool.unshare(iova, va, len, direction))
            .unwrap();
    }
    assert!(mapped_pages(&pool).is_empty(), "unmapped in the table");
    assert_eq!(pool.table.0.len(), before + 1, "not yet invalidated");
    pool.flush_pending().unwrap();
    assert_eq!(pool.table.0.len(), before + 2);
    pool.flush_pending().unwrap();
    assert_eq!(pool.table.0.len(), before + 2, "nothing pending, no call");
}

/// Zero copy: while a redirect is set, the proxy page goes to the device
/// as the redirect's IOVA with no stage-1 change, no invalidation and no
/// copy; other buffers are shared as before, and without the redirect the
/// proxy is an ordinary reserved page again.
#[test]
fn a_redirected_buffer_is_given_as_its_iova_with_nothing_mapped() {
    const FRAME_IOVA: u64 = 0x1800_0000;
    let mut pool = pool();
    let data = pool.reserve(1).unwrap();
    set(data, 0x5A, 4096);
    pool.redirect = Some((data, FRAME_IOVA));
    let before = pool.table.0.len();
    let iova = pool
        .share(data, 4096, BufferDirection::DeviceToDriver)
        .unwrap();
    assert_eq!(iova, FRAME_IOVA);
    assert!(mapped_pages(&pool).is_empty(), "nothing of the pool mapped");
    assert_eq!(pool.table.0.len(), before, "no invalidation");
    pool.unshare(iova, data, 4096, BufferDirection::DeviceToDriver)
        .unwrap();
    assert_eq!(byte(data), 0x5A, "the proxy page is never copied into");
    assert_eq!(pool.counters.redirected, 1);
    // Another buffer (a request header) still bounces and is mapped.
    let header = [7u8; 16];
    let va = header.as_ptr() as u64;
    let bounced = pool.share(va, 16, BufferDirection::DriverToDevice).unwrap();
    assert_ne!(bounced, FRAME_IOVA);
    assert!(mapped(&pool, bounced).is_some());
    pool.unshare(bounced, va, 16, BufferDirection::DriverToDevice)
        .unwrap();
    pool.redirect = None;
    let in_place = pool
        .share(data, 4096, BufferDirection::DeviceToDriver)
        .unwrap();
    assert_eq!(in_place, pool.iova_of(pool.page_at(data).unwrap()));
    pool.unshare(in_place, data, 4096, BufferDirection::DeviceToDriver)
        .unwrap();
}
