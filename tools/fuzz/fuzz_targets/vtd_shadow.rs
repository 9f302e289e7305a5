//! Fuzz target `vtd_shadow`: shadow nesting for VT-d units without nesting
//! (`iommu::vtd::shadow::shadow_range`): a user's first-stage tables, any
//! bytes at all, composed with the kernel's second stage into the shadow
//! table the device uses; then a first stage rewritten, a second-stage page
//! revoked the way `vtd::shadow` documents (unmap, `remove_leaves_to`) and
//! another range re-shadowed.
//!
//! The second stage maps IPA pages 0..16 onto 32 physical pages (aliases
//! allowed) with rights from the input; the first stage lives in those
//! pages, rooted at any of IPA pages 0..32.
//!
//! Asserts (confinement): every shadow translation in both ranges lands in
//! a physical page the *current* second stage maps, with no right the
//! second stage does not give for it; every memory read of the composition
//! is a kernel table page or a physical page the second stage maps
//! readable, and every write a kernel table page (the user's memory is
//! never written). Asserts (exactness): after re-shadowing, each page of
//! the range translates exactly as `compose_page` (a nested walk) does.
#![no_main]

use iommu::PhysMem;
use iommu::model::{SimFrames, SimMemory};
use iommu::pagetable::{PageSize, PageTable, Perms};
use iommu::vtd::shadow::{compose_page, shadow_range};
use iommu::vtd::tables::SecondStageFormat;
use libfuzzer_sys::fuzz_target;

/// IPA pages the second stage may map.
const GUEST_PAGES: u64 = 16;
/// Physical pages behind them, from [`BACKING`].
const BACKING_PAGES: u64 = 32;
/// Where the guest's physical pages start.
const BACKING: u64 = 8 << 20;
/// The kernel's table frames (second stage and shadow): `TABLES..MEMORY`.
const TABLES: u64 = 32 << 20;
/// Size of the simulated memory.
const MEMORY: u64 = 64 << 20;

/// The memory the composition sees, checking each access.
struct Watched<'a> {
    memory: &'a SimMemory,
    /// Physical pages the second stage maps readable.
    readable: Vec<u64>,
}

impl PhysMem for Watched<'_> {
    fn read_u64(&self, addr: u64) -> u64 {
        assert!(
            addr >= TABLES || self.readable.contains(&(addr & !0xfff)),
            "the composition read {addr:#x}, which the second stage does not map readable"
        );
        self.memory.read_u64(addr)
    }
    fn write_u64(&self, addr: u64, value: u64) {
        assert!(
            addr >= TABLES,
            "the composition wrote {addr:#x}, outside the kernel's tables"
        );
        self.memory.write_u64(addr, value)
    }
}

/// The user's writes: word `slot % 512` of backing page `slot / 512 % 32`.
fn write_user(memory: &SimMemory, writes: &[(u16, u64)]) {
    for &(slot, value) in writes {
        let page = BACKING + (u64::from(slot >> 9) % BACKING_PAGES) * 4096;
        memory.write_u64(page + 8 * u64::from(slot & 511), value);
    }
}

/// Stage 2's physical page and rights for each IPA page (None: unmapped).
type Stage2 = [Option<(u64, Perms)>; GUEST_PAGES as usize];

/// Every shadow translation of `pages` pages from `start` lands where
/// `stage2` allows.
fn assert_confined(
    memory: &SimMemory,
    shadow: &PageTable<SecondStageFormat>,
    stage2: &Stage2,
    start: u64,
    pages: u64,
) {
    for page in 0..pages {
        let iova = start + page * 4096;
        let Some((pa, perms)) = shadow.lookup(memory, iova) else {
            continue;
        };
        let pa = pa & !0xfff;
        let allowed = stage2.iter().flatten().any(|&(mapped, s2)| {
            mapped == pa && (!perms.read || s2.read) && (!perms.write || s2.write)
        });
        assert!(
            allowed,
            "shadow maps {iova:#x} -> {pa:#x} {perms:?}, which stage 2 {stage2:?} does not allow"
        );
    }
}

/// Stage 2's rights and page per IPA page, the first stage's root page,
/// 1 GiB pages allowed, the first range (page, count), the second range,
/// the user's writes, its rewrites, and the IPA page to revoke.
type Input = (
    [u8; GUEST_PAGES as usize],
    u8,
    bool,
    (u32, u8),
    (u32, u8),
    Vec<(u16, u64)>,
    Vec<(u16, u64)>,
    Option<u8>,
);

fuzz_target!(|input: Input| {
    let (rights, root, allow_1g, first, second_range, writes, rewrites, revoke) = input;
    let memory = SimMemory::new(MEMORY);
    let mut frames = SimFrames::new(&memory, TABLES, MEMORY);
    let format = SecondStageFormat { max_leaf_height: 1 };
    let second = PageTable::new(&mut frames, format, 4, 48).expect("root frame");
    let mut stage2: Stage2 = [None; GUEST_PAGES as usize];
    for (ipa_page, byte) in rights.iter().enumerate() {
        let perms = Perms {
            read: byte & 1 != 0,
            write: byte & 2 != 0,
        };
        if !perms.read && !perms.write {
            continue;
        }
        let pa = BACKING + u64::from(byte >> 2) % BACKING_PAGES * 4096;
        second
            .map(
                &memory,
                &mut frames,
                (ipa_page as u64) << 12,
                pa,
                PageSize::Size4K,
                perms,
            )
            .expect("stage 2 maps");
        stage2[ipa_page] = Some((pa, perms));
    }
    write_user(&memory, &writes);
    let shadow = PageTable::new(&mut frames, format, 4, 48).expect("root frame");
    let root_ipa = (u64::from(root) % (2 * GUEST_PAGES)) << 12;
    let window =
        |(page, count): (u32, u8)| ((u64::from(page) << 12) & ((1 << 47) - 1), u64::from(count));

    let readable = |stage2: &Stage2| {
        stage2
            .iter()
            .flatten()
            .filter(|(_, perms)| perms.read)
            .map(|&(pa, _)| pa)
            .collect::<Vec<_>>()
    };
    let (start, pages) = window(first);
    let watched = Watched {
        memory: &memory,
        readable: readable(&stage2),
    };
    let stats = shadow_range(
        &watched,
        &mut frames,
        root_ipa,
        &second,
        &shadow,
        start,
        pages * 4096,
        256,
        allow_1g,
    );
    if let Ok(stats) = stats {
        assert_eq!(stats.pages, pages);
    }
    assert_confined(&memory, &shadow, &stage2, start, pages);

    // The user rewrites its tables; the kernel revokes a page as
    // vtd::shadow documents, then re-shadows what the user invalidates.
    write_user(&memory, &rewrites);
    if let Some(page) = revoke.map(|page| u64::from(page) % GUEST_PAGES)
        && let Some((pa, _)) = stage2[page as usize].take()
    {
        second.unmap(&memory, page << 12).expect("mapped before");
        shadow.remove_leaves_to(&memory, pa, 4096);
    }
    let (again, again_pages) = window(second_range);
    let watched = Watched {
        memory: &memory,
        readable: readable(&stage2),
    };
    if shadow_range(
        &watched,
        &mut frames,
        root_ipa,
        &second,
        &shadow,
        again,
        again_pages * 4096,
        256,
        allow_1g,
    )
    .is_ok()
    {
        for page in 0..again_pages {
            let iova = again + page * 4096;
            let composed = compose_page(&watched, root_ipa, &second, iova, allow_1g);
            let shadowed = shadow
                .lookup(&memory, iova)
                .map(|(pa, perms)| (pa & !0xfff, perms));
            assert_eq!(shadowed, composed, "iova {iova:#x}");
        }
    }
    assert_confined(&memory, &shadow, &stage2, start, pages);
    assert_confined(&memory, &shadow, &stage2, again, again_pages);
});
