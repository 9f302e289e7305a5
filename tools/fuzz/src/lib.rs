//! What several fuzz targets share: a stand-in kernel for the userland code
//! that makes system calls (init's system builder, rt's ELF loader).
//!
//! The stand-in answers every call `Ok`, except that it has room for only
//! [`OBJECT_BUDGET`] new objects: `Untyped.Retype` answers
//! `UntypedExhausted` after that, as a real machine runs out of memory. So
//! an input asking for terabytes of frames ends quickly, as it would under
//! the kernel, instead of looping for hours. It remembers every
//! `Frame.Map` so that targets can check where things were mapped.

use abi::Invocation;
use abi::bootinfo::{self, BootInfo};
use std::cell::RefCell;
use std::rc::Rc;
use sys::host::{SyscallIn, set_kernel};
use sys::ipc::IpcBuffer;
use sys::syscall::SyscallOut;
use sys::{Error, MessageInfo};

/// Objects the stand-in kernel creates before answering `UntypedExhausted`.
pub const OBJECT_BUDGET: u32 = 4096;

/// One `Frame.Map` the stand-in kernel accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMapping {
    /// The virtual address (message register 0).
    pub address: u64,
    /// The `MapRights` bits (message register 1).
    pub rights: u64,
}

/// What the stand-in kernel saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Objects created so far.
    pub objects: u32,
    /// Every accepted `Frame.Map`, in order.
    pub frame_maps: Vec<FrameMapping>,
}

/// Installs the stand-in kernel on this thread (replacing any earlier one)
/// and returns what it records.
pub fn install_stand_in_kernel() -> Rc<RefCell<Seen>> {
    let seen = Rc::new(RefCell::new(Seen::default()));
    let log = Rc::clone(&seen);
    set_kernel(move |call: SyscallIn, _buffer: &mut IpcBuffer| {
        let label = MessageInfo::from_word(call.info).map_or(0, |info| info.label);
        let mut seen = log.borrow_mut();
        if label == Invocation::UntypedRetype as u32 {
            // A retype that succeeds replies with the count it made (MR0),
            // as the kernel does: the typed `sys` API refuses anything else.
            let status = if seen.objects >= OBJECT_BUDGET {
                u64::from(Error::UntypedExhausted.code())
            } else {
                seen.objects += 1;
                0
            };
            return SyscallOut {
                status,
                info: MessageInfo::new(0, 1).to_word(),
                mrs: [call.mrs[3], 0, 0, 0],
                ..SyscallOut::default()
            };
        }
        if label == Invocation::FrameMap as u32 {
            seen.frame_maps.push(FrameMapping {
                address: call.mrs[0],
                rights: call.mrs[1],
            });
        }
        SyscallOut::default()
    });
    seen
}

/// A boot-info page like the kernel's: the arena Untyped and one large RAM
/// Untyped (the stand-in kernel's budget is what really limits objects).
pub fn boot_info() -> BootInfo {
    let mut info = BootInfo {
        magic: bootinfo::BOOT_INFO_MAGIC,
        version: 1,
        untyped_count: 2,
        first_free_slot: 18,
        image_address: 0,
        image_length: 0,
        untypeds: [Default::default(); bootinfo::MAX_UNTYPEDS],
    };
    info.untypeds[0].size_bits = 17;
    info.untypeds[1].size_bits = 28;
    info
}

/// The repository's root (tools/fuzz/../..).
pub fn repository_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The two platforms of `images/platforms/` and the workspace's user
/// programs, read once: what `cargo xtask` validates images against.
pub struct ImageContext {
    /// q35 (x86_64, VT-d) and virt (aarch64, SMMUv3).
    pub platforms: Vec<sysimage::Platform>,
    /// The user programs images may name.
    pub programs: Vec<String>,
}

/// The [`ImageContext`] of this checkout.
pub fn image_context() -> &'static ImageContext {
    static CONTEXT: std::sync::OnceLock<ImageContext> = std::sync::OnceLock::new();
    CONTEXT.get_or_init(|| {
        let root = repository_root();
        let platforms = ["q35", "virt"]
            .iter()
            .map(|name| {
                sysimage::platform::load(&root.join("images/platforms"), name)
                    .expect("images/platforms/ loads")
            })
            .collect();
        let programs = sysimage::workspace_programs(&root).expect("the workspace manifest reads");
        ImageContext {
            platforms,
            programs,
        }
    })
}
