//! x86_64 support: PVH boot, COM1 console, descriptor tables, QEMU exit.
//!
//! Address-space layout (see kernel/README.md for the picture):
//! - `0xFFFF_FFFF_8000_0000 + pa`: the kernel image (linked there, code model
//!   `kernel`), backed by the first GiB of physical memory.
//! - `0xFFFF_8000_0000_0000 + pa`: the direct map of the first 4 GiB of
//!   physical memory (RAM, ACPI tables, the local APIC, the VT-d registers
//!   and PCI ECAM all sit below 4 GiB on q35).
//! - The lower half is left empty for user address spaces.

mod apic;
mod boot;
mod io;
mod ioapic;
pub mod paging;
mod serial;
mod trap;
mod user;

#[cfg(feature = "bench")]
pub use user::user_bench_program;
#[cfg(feature = "self-tests")]
pub use user::user_probe_program;
pub use user::{Exit, UserContext, run_user, set_address_space};

use crate::boot_types::{BootInfo, MemoryKind, MemoryRegion, Platform};
use zerocopy::FromBytes;

/// Where the direct map of physical memory starts.
pub const PHYS_MAP_BASE: u64 = 0xFFFF_8000_0000_0000;
/// How much physical memory the boot direct map covers.
const PHYS_MAP_SIZE: u64 = 4 << 30;

/// Returns whether `[pa, pa + len)` lies inside the direct map.
pub fn phys_map_covers(pa: u64, len: u64) -> bool {
    pa.checked_add(len).is_some_and(|end| end <= PHYS_MAP_SIZE)
}

/// Where the kernel image is linked: `KERNEL_VIRT_BASE + pa`.
const KERNEL_VIRT_BASE: u64 = 0xFFFF_FFFF_8000_0000;

/// Physical address of a kernel-image (static) virtual address.
pub fn kernel_virt_to_phys(va: u64) -> u64 {
    va - KERNEL_VIRT_BASE
}

/// The architecture's name as the tools spell it.
pub const NAME: &str = "x86_64";

/// `hvm_start_info` from the Xen PVH boot ABI (xen/include/public/arch-x86/hvm/start_info.h).
#[derive(FromBytes)]
#[repr(C)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    module_count: u32,
    module_list: u64,
    cmdline: u64,
    rsdp: u64,
    memory_map: u64,
    memory_map_entries: u32,
    reserved: u32,
}

/// One `hvm_modlist_entry`: a boot module (QEMU `-initrd`).
#[allow(dead_code)]
#[derive(FromBytes)]
#[repr(C)]
struct HvmModule {
    address: u64,
    size: u64,
    cmdline: u64,
    reserved: u64,
}

/// One `hvm_memmap_table_entry` (E820 types).
#[derive(FromBytes)]
#[repr(C)]
struct HvmMemoryMapEntry {
    address: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

const HVM_START_MAGIC: u32 = 0x336e_c578;

/// Brings the architecture up (called by the code [`super::entry!`]
/// defines, from the boot trampoline in the upper half) and reads the PVH
/// start info at `start_info`.
pub fn start(start_info: u64, upcalls: &'static super::Upcalls) -> Result<BootInfo, &'static str> {
    super::set_upcalls(upcalls);
    serial::init();
    mask_legacy_pic();
    trap::init();
    user::init();
    apic::init();
    ioapic::init();
    remove_identity_map();
    read_start_info(start_info, upcalls.phys_bytes)
}

/// Masks every line of the two 8259 PICs: interrupts come through the
/// local APIC only, and a stale PIC timer line must not arrive as vector 8.
fn mask_legacy_pic() {
    // SAFETY: ports 0x21 and 0xA1 are the PIC data ports; writing 0xFF masks
    // all lines and touches nothing else.
    unsafe {
        io::out8(0x21, 0xFF);
        io::out8(0xA1, 0xFF);
    }
}

/// Drops the boot identity map (PML4 slot 0) so the lower half is empty.
fn remove_identity_map() {
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags))
    };
    let pml4 = (PHYS_MAP_BASE + (cr3 & !0xFFF)) as *mut u64;
    // SAFETY: CR3 names the boot PML4, reachable through the direct map; the
    // kernel now runs from the upper half only, so slot 0 is unused. Writing
    // CR3 back flushes the stale translations.
    unsafe {
        pml4.write_volatile(0);
        core::arch::asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags));
    }
}

/// Borrows physical memory nothing writes after boot (`Upcalls::phys_bytes`).
type PhysBytes = fn(u64, usize) -> Option<&'static [u8]>;

/// Borrows a NUL-terminated UTF-8 string of at most 4 KiB at `pa`.
fn phys_c_str(phys_bytes: PhysBytes, pa: u64) -> Option<&'static str> {
    const MAX: usize = 4096;
    let mut len = 0;
    while len < MAX {
        if *phys_bytes(pa + len as u64, 1)?.first()? == 0 {
            return core::str::from_utf8(phys_bytes(pa, len)?).ok();
        }
        len += 1;
    }
    None
}

fn read_start_info(pa: u64, phys_bytes: PhysBytes) -> Result<BootInfo, &'static str> {
    let bytes =
        phys_bytes(pa, size_of::<HvmStartInfo>()).ok_or("PVH start info outside the direct map")?;
    let (start, _) = HvmStartInfo::read_from_prefix(bytes).map_err(|_| "too short")?;
    if start.magic != HVM_START_MAGIC {
        return Err("wrong magic");
    }
    let mut info = BootInfo::new(Platform::Acpi { rsdp: start.rsdp });
    if start.cmdline != 0 {
        info.cmdline = phys_c_str(phys_bytes, start.cmdline)
            .ok_or("command line is not UTF-8 or not terminated")?;
    }
    if start.module_count > 0 {
        let bytes = phys_bytes(start.module_list, size_of::<HvmModule>())
            .ok_or("module list outside the direct map")?;
        let (module, _) = HvmModule::read_from_prefix(bytes).map_err(|_| "short module entry")?;
        info.initrd = Some((module.address, module.size));
    }
    if start.version < 1 || start.memory_map == 0 {
        return Err("no memory map (start info version 0)");
    }
    let entry_size = size_of::<HvmMemoryMapEntry>();
    let count = start.memory_map_entries as usize;
    let table = phys_bytes(start.memory_map, count * entry_size)
        .ok_or("memory map outside the direct map")?;
    for raw in table.chunks_exact(entry_size) {
        let (entry, _) =
            HvmMemoryMapEntry::read_from_prefix(raw).map_err(|_| "short memory map entry")?;
        let kind = match entry.kind {
            1 => MemoryKind::Ram,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::AcpiNvs,
            5 => MemoryKind::Unusable,
            _ => MemoryKind::Reserved,
        };
        info.add_memory(MemoryRegion {
            start: entry.address,
            size: entry.size,
            kind,
        });
    }
    Ok(info)
}

/// Ends the QEMU session with `status` through the isa-debug-exit device
/// (QEMU's own exit code becomes `2 * status + 1`).
pub fn exit_qemu(status: u32) -> ! {
    // SAFETY: port 0xF4 is QEMU's isa-debug-exit device, configured by the
    // runner; writing it ends the VM.
    unsafe { io::out32(0xF4, status) };
    halt()
}

/// Stops this CPU for good.
pub fn halt() -> ! {
    loop {
        // SAFETY: cli; hlt parks the CPU with interrupts off.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Writes bytes to the console.
pub fn console_write(bytes: &[u8]) {
    serial::write_bytes(bytes);
}

/// Orders earlier memory writes before a following device-register write.
/// x86 keeps stores in order; only the compiler must not move them.
pub fn io_write_barrier() {
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

/// The interrupt the preemption timer raises (its IDT vector).
pub const TIMER_IRQ: u32 = apic::TIMER_VECTOR as u32;

/// A user program that spins forever (`jmp .`), for preemption tests.
#[cfg(feature = "self-tests")]
pub const SPIN_PROGRAM: &[u8] = &[0xEB, 0xFE];

/// Arms the one-shot preemption timer `ticks` timer ticks from now.
pub fn timer_start(ticks: u32) {
    apic::timer_start(ticks);
}

/// Disarms the preemption timer.
pub fn timer_stop() {
    apic::timer_stop();
}

/// A free-running count that only grows (the time-stamp counter), for
/// deadlines: [`COUNTER_PER_SECOND`] counts are about a second.
pub fn counter() -> u64 {
    // SAFETY: RDTSC reads the time-stamp counter and changes nothing.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Counts of [`counter`] in about a second: the TSC of QEMU's and current
/// CPUs runs at 1-4 GHz, so a deadline of this many counts lasts 0.5-2 s.
pub const COUNTER_PER_SECOND: u64 = 2_000_000_000;

/// Identifies the interrupt that ended `run_user` with `Exit::Interrupt(vector)`.
pub fn acknowledge_interrupt(vector: u8) -> Option<u32> {
    Some(u32::from(vector))
}

/// Sleeps (`sti; hlt`) until an interrupt arrives and returns its id, for
/// the scheduler's idle; the caller ends it with [`end_interrupt`].
pub fn wait_for_interrupt() -> u32 {
    u32::from(user::halt_until_interrupt())
}

/// The interrupt an IOMMU fault event is delivered as: the VT-d fault event
/// MSI's vector (data), with its address aimed at this CPU's local APIC.
pub const IOMMU_FAULT_IRQ: u32 = 40;

/// The interrupt a page request is delivered as: VT-d's page request
/// event MSI uses the fault event's vector.
pub const IOMMU_PAGE_REQUEST_IRQ: u32 = IOMMU_FAULT_IRQ;

/// The MSI address and data that deliver `vector` to this CPU.
pub fn msi_message(vector: u32) -> (u64, u32) {
    (0xFEE0_0000, vector)
}

/// Whether interrupt `id` is waiting at the interrupt controller.
#[cfg(feature = "self-tests")]
pub fn interrupt_pending(id: u32) -> bool {
    u8::try_from(id).is_ok_and(apic::requested)
}

/// Ends the handling of interrupt `id` so another can arrive.
pub fn end_interrupt(_id: u32) {
    apic::end_of_interrupt();
}

/// The first MSI line: lines `MSI_LINES` are message-signalled, delivered
/// as vectors 48..64 (a device writes `msi_line_message(line)`).
pub const MSI_LINES: core::ops::Range<u16> = 16..32;
const FIRST_MSI_VECTOR: u32 = 48;

/// Whether user handlers may own interrupt line `line`: ISA IRQs 0..15
/// through the I/O APIC (not the one on the IOMMU's fault vector), and the
/// MSI lines.
pub fn irq_line_available(line: u16) -> bool {
    (line < ioapic::LINES && irq_line_id(line) != IOMMU_FAULT_IRQ) || MSI_LINES.contains(&line)
}

/// The interrupt id (vector) line `line` arrives as.
pub fn irq_line_id(line: u16) -> u32 {
    if MSI_LINES.contains(&line) {
        FIRST_MSI_VECTOR + u32::from(line - MSI_LINES.start)
    } else {
        u32::from(ioapic::FIRST_LINE_VECTOR) + u32::from(line)
    }
}

/// The MSI address and data a device writes to raise MSI line `line`.
pub fn msi_line_message(line: u16) -> Option<(u64, u32)> {
    MSI_LINES
        .contains(&line)
        .then(|| msi_message(irq_line_id(line)))
}

/// The I/O APIC lines (0..this); the MSI lines follow.
pub const IOAPIC_LINES: u16 = ioapic::LINES;

/// What interrupt routing asks of the IOMMU's interrupt remapping, lent by
/// `interrupt_remap` once remapping is on ([`reroute_interrupt_lines`]),
/// so `arch` calls nothing above it by name.
pub struct Remapping {
    /// The I/O APIC entry for `(line, vector, masked)` that names the
    /// line's remapping entry.
    pub ioapic_entry: fn(u16, u8, bool) -> Option<u64>,
    /// Writes MSI line `(line, vector)`'s remapping entry for requester
    /// `requester` and returns the MSI address and data naming it.
    pub bind_msi: fn(u16, u8, u16) -> Option<(u64, u32)>,
    /// Clears MSI line `line`'s remapping entry.
    pub release_msi: fn(u16),
}

/// Set once, when interrupt remapping is turned on; until then lines are
/// routed in the plain format.
static REMAPPING: spin::Once<Remapping> = spin::Once::new();

/// Interrupt remapping is on: keeps `remapping` and masks every I/O APIC
/// line again, in the entry format that matches it.
pub fn reroute_interrupt_lines(remapping: Remapping) {
    REMAPPING.call_once(|| remapping);
    for line in 0..ioapic::LINES {
        ioapic::set_line(line, true);
    }
}

/// Line `line` has no handler any more: an MSI line's remapping entry goes
/// away, so no device can raise it (I/O APIC lines are masked by
/// [`irq_line_enable`]).
pub fn irq_line_release(line: u16) {
    if MSI_LINES.contains(&line)
        && let Some(remapping) = REMAPPING.get()
    {
        (remapping.release_msi)(line);
    }
}

/// The MSI address and data that let only requester `requester` raise MSI
/// line `line`: remappable format naming the line's remapping entry when
/// interrupt remapping is on, else the plain message (which any device
/// could also write).
pub fn bind_msi_line(line: u16, requester: u16) -> Option<(u64, u32)> {
    let plain = msi_line_message(line)?;
    let vector = irq_line_id(line) as u8;
    let remapped = REMAPPING
        .get()
        .and_then(|remapping| (remapping.bind_msi)(line, vector, requester));
    Some(remapped.unwrap_or(plain))
}

/// Lets line `line` interrupt (`true`) or masks it. An MSI cannot be
/// masked at the interrupt controller: the kernel delivers it once to the
/// handler's notification, and the device raises the next only when its
/// driver asks (edge semantics).
pub fn irq_line_enable(line: u16, enabled: bool) {
    if line < ioapic::LINES {
        ioapic::set_line(line, !enabled);
    }
}
