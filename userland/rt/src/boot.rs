//! What the kernel gives the root task: the boot-info page and, when it
//! booted a packed system image, the image itself, both mapped read-only at
//! the addresses `abi::bootinfo` names.
//!
//! Only the root task has these mappings; for any other program the
//! functions here would read unmapped memory, so they are for root tasks
//! (init and the system tests the kernel starts directly).

#[cfg(target_os = "none")]
use abi::bootinfo;
use abi::bootinfo::BootInfo;

/// The boot-info page, if it carries the right magic.
#[cfg(target_os = "none")]
pub fn boot_info() -> Option<&'static BootInfo> {
    #[allow(unsafe_code)]
    // SAFETY: the kernel maps the root task's boot-info page read-only at
    // BOOT_INFO_ADDRESS for the task's whole life, page aligned, and
    // BootInfo (plain integers) fits in it; nothing writes it afterwards.
    let info = unsafe { &*(bootinfo::BOOT_INFO_ADDRESS as *const BootInfo) };
    (info.magic == bootinfo::BOOT_INFO_MAGIC).then_some(info)
}

/// On the host there is no boot-info page.
#[cfg(not(target_os = "none"))]
pub fn boot_info() -> Option<&'static BootInfo> {
    None
}

/// The packed system image (`sysdesc::archive` layout) the kernel booted,
/// or `None` when the boot module was a bare program.
#[cfg(target_os = "none")]
pub fn system_image() -> Option<&'static [u8]> {
    let info = boot_info()?;
    let length = info.image_length;
    if info.image_address != bootinfo::IMAGE_ADDRESS
        || length == 0
        || length > bootinfo::MAX_IMAGE_LENGTH
    {
        return None;
    }
    #[allow(unsafe_code)]
    // SAFETY: when BootInfo says so, the kernel has mapped the image's
    // `image_length` bytes read-only from IMAGE_ADDRESS, for the root task's
    // whole life (the window is checked above); nothing writes them.
    let bytes = unsafe { core::slice::from_raw_parts(IMAGE as *const u8, length as usize) };
    Some(bytes)
}

#[cfg(target_os = "none")]
const IMAGE: u64 = bootinfo::IMAGE_ADDRESS;

/// On the host there is no image.
#[cfg(not(target_os = "none"))]
pub fn system_image() -> Option<&'static [u8]> {
    None
}
