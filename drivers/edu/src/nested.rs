//! The driver's DMA memory: an IoSpace (the kernel's stage 2) that maps the
//! driver's stage-1 table frames read-only and its buffers, and the stage-1
//! table itself, built with `iopt` in the driver's own memory and installed
//! with `IoDevice.AttachNested`.
//!
//! ```text
//!   driver VA              IPA (IoSpace, stage 2)        IOVA (stage 1)
//!   TABLES  rw  ──frame──  TABLES_IPA  read-only  <── the IOMMU walks them
//!   BUFFERS rw  ──frame──  BUFFERS_IPA rights     <── IOVA_BASE + ...
//! ```

use crate::device::Why;
use iopt::{BitmapPool, Config, Format, InvalidationRange, IoPageTable, SliceMemory};
use rt::space::{Objects, map_frame};
use sys::{
    Cap, Frame, IoDevice, IoFaultQueue, IoSpace, IoUserTable, IommuControl, MapRights,
    Notification, PageTable, Rights,
};

/// Table frames of one stage-1 table.
pub const TABLE_FRAMES: usize = 16;
/// The IOVAs this driver uses (below edu's 28-bit DMA mask on q35).
pub const IOVA_WINDOW: u64 = 16 << 20;
/// Where the table frames and buffers sit: per instance, 4 GiB apart.
const TABLES_VA: u64 = 0x30_0000_0000;
const BUFFERS_VA: u64 = 0x30_0010_0000;
const INSTANCE_STRIDE: u64 = 0x1_0000_0000;
/// The table frames' IPA in the instance's IoSpace.
pub const TABLES_IPA: u64 = 0x4000_0000;
/// The buffers' first IPA in the instance's IoSpace.
pub const BUFFERS_IPA: u64 = 0x5000_0000;

/// This machine's stage-1 format: iopt's, the kernel's name for it, and
/// the IPA width the table may use.
#[cfg(target_arch = "x86_64")]
pub const FORMAT: (Format, sys::UserTableFormat, u32) = (
    Format::VtdFirstStage,
    sys::UserTableFormat::X86FirstStage4Level,
    48,
);
/// This machine's stage-1 format (see the x86_64 one).
#[cfg(target_arch = "aarch64")]
pub const FORMAT: (Format, sys::UserTableFormat, u32) = (
    Format::ArmStage1,
    sys::UserTableFormat::ArmStage1Granule4k48Bit,
    44,
);

fn why(args: core::fmt::Arguments<'_>) -> Why {
    rt::testing::Failure(rt::__format!("{args}"))
}

/// One 4 KiB buffer: mapped in the driver and in the IoSpace.
#[derive(Clone, Copy)]
pub struct Buffer {
    /// Its address in the driver.
    pub cpu: u64,
    /// Its IPA in the IoSpace.
    pub ipa: u64,
    /// The Frame capability that holds the IO mapping.
    pub io: Cap<Frame>,
}

impl Buffer {
    /// Byte `i` (volatile: the device writes it).
    #[allow(unsafe_code)]
    pub fn read(&self, i: u64) -> u8 {
        // SAFETY: `cpu` is a 4 KiB Frame mapped read-write for the program's
        // life; `i` is masked into it.
        unsafe { ((self.cpu + (i & 0xfff)) as *const u8).read_volatile() }
    }

    /// Sets the whole page to `value`.
    #[allow(unsafe_code)]
    pub fn fill(&self, value: u8) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_bytes(self.cpu as *mut u8, value, 4096) }
    }

    /// A checksum of the page (FNV-1a).
    pub fn checksum(&self) -> u64 {
        (0..4096).fold(0xcbf2_9ce4_8422_2325, |h, i| {
            (h ^ u64::from(self.read(i))).wrapping_mul(0x100_0000_01b3)
        })
    }
}

/// `IoUserTable.Invalidate` for iopt's flush.
pub struct Invalidate(pub Cap<IoUserTable>);

impl iopt::Invalidator for Invalidate {
    type Error = sys::Error;

    fn invalidate_range(&mut self, range: InvalidationRange) -> Result<(), sys::Error> {
        self.0.invalidate_range(range.iova, range.len)
    }

    fn invalidate_all(&mut self) -> Result<(), sys::Error> {
        // Shadow nesting composes per range: the driver's whole window.
        self.0.invalidate_range(0, IOVA_WINDOW)
    }
}

/// One instance's IoSpace, stage-1 table and buffers.
pub struct Nested {
    /// The stage 2.
    pub space: Cap<IoSpace>,
    /// The stage-1 table as the kernel knows it.
    pub table: Cap<IoUserTable>,
    /// The stage-1 table as the driver builds it.
    pub stage1: IoPageTable<BitmapPool<1>, SliceMemory<'static>>,
    buffers_va: u64,
    buffers: u64,
}

impl Nested {
    /// An IoSpace of `control` with `TABLE_FRAMES` table frames mapped
    /// read-only at [`TABLES_IPA`] and an empty stage-1 table bound in it.
    pub fn new(
        objects: &mut Objects,
        own: Cap<PageTable>,
        control: Cap<IommuControl>,
        instance: u64,
    ) -> Result<Nested, Why> {
        let space = objects
            .make_io_space(control)
            .map_err(|e| why(format_args!("retype an IoSpace: {e:?}")))?;
        let tables_va = TABLES_VA + instance * INSTANCE_STRIDE;
        for i in 0..TABLE_FRAMES as u64 {
            let frame: Cap<Frame> = objects
                .make_sized::<Frame>(12)
                .map_err(|e| why(format_args!("retype a table frame: {e:?}")))?;
            map_frame(
                objects,
                frame,
                own,
                tables_va + 4096 * i,
                MapRights::READ_WRITE,
            )
            .map_err(|e| why(format_args!("map table frame {i}: {e:?}")))?;
            let io = objects
                .mint(frame, Rights::ALL, 0)
                .map_err(|e| why(format_args!("copy table frame {i}: {e:?}")))?;
            space
                .map(io, TABLES_IPA + 4096 * i, MapRights::READ)
                .map_err(|e| why(format_args!("IoSpace.Map of table frame {i}: {e:?}")))?;
        }
        let stage1 = stage1_in(TABLES_IPA, table_frames(tables_va))?;
        let slot = objects
            .slot()
            .map_err(|e| why(format_args!("no slot: {e:?}")))?;
        let table = space
            .bind_user_table(stage1.root().ipa(), FORMAT.1, slot)
            .map_err(|e| why(format_args!("BindUserTable: {e:?}")))?;
        Ok(Nested {
            space,
            table,
            stage1,
            buffers_va: BUFFERS_VA + instance * INSTANCE_STRIDE,
            buffers: 0,
        })
    }

    /// A fresh 4 KiB buffer mapped in the driver and at the next IPA of
    /// [`BUFFERS_IPA`] with `rights` (the Frame capability's rights too).
    pub fn buffer(
        &mut self,
        objects: &mut Objects,
        own: Cap<PageTable>,
        rights: MapRights,
    ) -> Result<Buffer, Why> {
        let frame: Cap<Frame> = objects
            .make_sized::<Frame>(12)
            .map_err(|e| why(format_args!("retype a buffer: {e:?}")))?;
        let cpu = self.buffers_va + 4096 * self.buffers;
        map_frame(objects, frame, own, cpu, MapRights::READ_WRITE)
            .map_err(|e| why(format_args!("map a buffer: {e:?}")))?;
        let cap_rights = if rights.bits() & 2 != 0 {
            Rights::ALL
        } else {
            Rights::READ
        };
        let io = objects
            .mint(frame, cap_rights, 0)
            .map_err(|e| why(format_args!("copy a buffer cap: {e:?}")))?;
        let ipa = BUFFERS_IPA + 4096 * self.buffers;
        self.space
            .map(io, ipa, rights)
            .map_err(|e| why(format_args!("IoSpace.Map of a buffer at {ipa:#x}: {e:?}")))?;
        self.buffers += 1;
        Ok(Buffer { cpu, ipa, io })
    }

    /// Maps `iova -> ipa` (4 KiB) in the stage-1 table with `rights` and
    /// makes the hardware see it.
    pub fn map(&mut self, iova: u64, ipa: u64, rights: iopt::Rights) -> Result<(), Why> {
        self.stage1
            .map(iova, ipa, 4096, rights)
            .map_err(|e| why(format_args!("stage 1 map {iova:#x}: {e:?}")))?;
        self.flush()
    }

    /// Invalidates what the stage-1 table changed since the last flush.
    pub fn flush(&mut self) -> Result<(), Why> {
        self.stage1
            .flush(&mut Invalidate(self.table))
            .map_err(|e| why(format_args!("Invalidate: {e:?}")))
    }
}

/// The driver's stage-1 table, empty, of this machine's [`FORMAT`], built
/// in `frames`: table frames the driver maps read-write and the IoSpace
/// maps read-only from `tables_ipa`.
pub fn stage1_in(
    tables_ipa: u64,
    frames: &'static mut [[u64; 512]],
) -> Result<IoPageTable<BitmapPool<1>, SliceMemory<'static>>, Why> {
    let count = frames.len();
    let memory = SliceMemory::new(tables_ipa, frames)
        .ok_or_else(|| why(format_args!("the table window is not page aligned")))?;
    let pool = BitmapPool::<1>::new(tables_ipa, count)
        .ok_or_else(|| why(format_args!("the table pool does not fit")))?;
    let config = Config::new(FORMAT.0)
        .with_ipa_bits(FORMAT.2)
        .map_err(|e| why(format_args!("{e:?}")))?;
    IoPageTable::new(config, pool, memory).map_err(|e| why(format_args!("{e:?}")))
}

/// A fault queue bound to `device` (its badge is what the records carry)
/// and the Notification it signals.
pub fn fault_queue(
    objects: &mut Objects,
    device: Cap<IoDevice>,
) -> Result<(Cap<IoFaultQueue>, Cap<Notification>), Why> {
    let queue: Cap<IoFaultQueue> = objects
        .make::<IoFaultQueue>()
        .map_err(|e| why(format_args!("retype a fault queue: {e:?}")))?;
    let notification: Cap<Notification> = objects
        .make::<Notification>()
        .map_err(|e| why(format_args!("retype a notification: {e:?}")))?;
    queue
        .bind(notification, device)
        .map_err(|e| why(format_args!("IoFaultQueue.Bind: {e:?}")))?;
    Ok((queue, notification))
}

/// The table frames mapped at `va`, as iopt's memory.
#[allow(unsafe_code)]
fn table_frames(va: u64) -> &'static mut [[u64; 512]] {
    // SAFETY: `Nested::new` mapped TABLE_FRAMES fresh 4 KiB Frames read-write
    // at `va` for the program's life; this slice is the only Rust view of
    // them (each instance has its own `va`).
    unsafe { core::slice::from_raw_parts_mut(va as *mut [u64; 512], TABLE_FRAMES) }
}
