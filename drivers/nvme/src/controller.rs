//! The controller: bring-up (NVMe base spec 2.0, 3.5.1), Identify, the
//! I/O queue pair, and Read/Write of namespace 1 with PRPs (base spec
//! 4.1.1 "Physical Region Page Entry and List").

use crate::command::{self, SubmissionEntry};
use crate::identify::{self, ControllerIdentity, NamespaceIdentity};
use crate::queue::{Hardware, QueuePair};
use crate::registers::{
    self, ACQ, AQA, ASQ, CAP, CC, CC_ENABLE, CSTS, CSTS_FATAL, CSTS_READY, Capabilities, VS,
    Version,
};
use crate::{Delay, Dma, DmaPage, Error, Iova, PAGE_SIZE, QueueKind, Registers, WaitingFor};

/// Create I/O Completion Queue dword 11: IEN (interrupts enabled), and IV
/// (the interrupt vector) in bits 31:16; vector 0 here.
const INTERRUPTS_ENABLED: u32 = 1 << 1;

/// How long a poll of CSTS.RDY waits between looks.
const READY_POLL_MICROSECONDS: u32 = 1000;

/// PRP entries in one PRP list page.
const PRP_ENTRIES_PER_PAGE: usize = PAGE_SIZE / 8;

/// Choices the caller makes at bring-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Entries in each queue (admin and I/O), at least 2; the driver uses
    /// the smallest of this, CAP.MQES + 1 and 64 (one page of 64-byte
    /// submission entries).
    pub queue_depth: u16,
    /// Interrupt mode: the caller routed the controller's MSI-X vector 0
    /// to its [`Delay::wait_for_interrupt`] before bring-up. The I/O
    /// completion queue is then created with interrupts enabled on vector
    /// 0 (the admin completion queue always interrupts on it), and every
    /// look at a completion queue that finds nothing waits for an
    /// interrupt instead of delaying. `false`: polling.
    pub interrupts: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            queue_depth: 32,
            interrupts: false,
        }
    }
}

/// A controller brought up: its admin and I/O queue pairs, what Identify
/// said, and the pages it owns. Only a controller that came up is ever
/// built, so every method can issue commands.
pub struct Controller<R, D: Dma, W> {
    hardware: Hardware<R, D, W>,
    capabilities: Capabilities,
    version: Version,
    admin: QueuePair<D::Page>,
    io: QueuePair<D::Page>,
    prp_list: DmaPage<D::Page>,
    identity: ControllerIdentity,
    namespace: NamespaceIdentity,
    max_transfer_pages: usize,
}

impl<R: Registers, D: Dma, W: Delay> Controller<R, D, W> {
    /// Brings the controller up (base spec 3.5.1): checks CAP, disables it
    /// if enabled, sets up the admin queues, enables it, identifies the
    /// controller and namespace 1, and creates I/O queue pair 1. Every
    /// wait is bounded by CAP.TO.
    pub fn bring_up(
        mut registers: R,
        dma: D,
        delay: W,
        config: Config,
    ) -> Result<Controller<R, D, W>, Error> {
        let capabilities = Capabilities {
            raw: registers.read64(CAP),
        };
        if !capabilities.nvm_command_set() {
            return Err(Error::NoNvmCommandSet {
                capabilities: capabilities.raw,
            });
        }
        if capabilities.min_page_shift() > 12 || capabilities.max_page_shift() < 12 {
            return Err(Error::PageSizeUnsupported {
                min_page_shift: capabilities.min_page_shift(),
                max_page_shift: capabilities.max_page_shift(),
            });
        }
        if capabilities.max_queue_entries() < 2 {
            return Err(Error::QueuesTooSmall {
                max_queue_entries: capabilities.max_queue_entries(),
            });
        }
        let depth = (config.queue_depth.max(2) as u32)
            .min(capabilities.max_queue_entries())
            .min((PAGE_SIZE / command::SUBMISSION_ENTRY_BYTES) as u32) as u16;
        let version = Version {
            raw: registers.read32(VS),
        };
        let mut hardware = Hardware {
            registers,
            dma,
            delay,
            doorbell_stride: capabilities.doorbell_stride(),
            // CAP.TO = 0 would allow no wait at all; wait one unit.
            timeout_milliseconds: capabilities.ready_timeout_milliseconds().max(500),
            interrupts: config.interrupts,
        };

        // Disable (a controller left enabled, e.g. by firmware, must reset
        // before its admin queue registers may change) and wait for RDY=0.
        let configuration = hardware.registers.read32(CC);
        if configuration & CC_ENABLE != 0 {
            hardware.registers.write32(CC, configuration & !CC_ENABLE);
        }
        wait_ready(&mut hardware, false)?;

        let mut admin = new_queue_pair(&mut hardware, QueueKind::Admin, depth)?;
        hardware
            .registers
            .write32(AQA, registers::admin_queue_attributes(depth));
        hardware
            .registers
            .write64(ASQ, admin.submission.device_address.0);
        hardware
            .registers
            .write64(ACQ, admin.completion.device_address.0);
        hardware
            .registers
            .write32(CC, registers::controller_configuration_enabled());
        wait_ready(&mut hardware, true)?;

        let identify_page = allocate(&mut hardware.dma)?;
        let prp_list = allocate(&mut hardware.dma)?;
        let (identity, namespace) = identify(&mut hardware, &mut admin, &identify_page)?;
        let io = new_queue_pair(&mut hardware, QueueKind::Io, depth)?;
        create_io_queues(&mut hardware, &mut admin, &io)?;

        // MDTS counts pages of CAP.MPSMIN; PRP1 plus one list page of
        // entries is the most this driver describes.
        let mut max_transfer_pages = 1 + PRP_ENTRIES_PER_PAGE;
        if identity.max_transfer_shift != 0 {
            let shift =
                (identity.max_transfer_shift as u32 + capabilities.min_page_shift()).min(40);
            max_transfer_pages =
                max_transfer_pages.min(((1u64 << shift) / PAGE_SIZE as u64).max(1) as usize);
        }
        Ok(Controller {
            hardware,
            capabilities,
            version,
            admin,
            io,
            prp_list,
            identity,
            namespace,
            max_transfer_pages,
        })
    }

    /// Reads `blocks` blocks of namespace 1 from `lba` into `buffer`: the
    /// device addresses of page-aligned pages, as many as the blocks fill.
    pub fn read(&mut self, lba: u64, blocks: u32, buffer: &[Iova]) -> Result<(), Error> {
        self.transfer(command::READ, lba, blocks, buffer)
    }

    /// Writes `blocks` blocks of namespace 1 at `lba` from `buffer` (as
    /// for [`Controller::read`]).
    pub fn write(&mut self, lba: u64, blocks: u32, buffer: &[Iova]) -> Result<(), Error> {
        self.transfer(command::WRITE, lba, blocks, buffer)
    }

    fn transfer(
        &mut self,
        opcode: u8,
        lba: u64,
        blocks: u32,
        buffer: &[Iova],
    ) -> Result<(), Error> {
        if blocks == 0 || blocks > 1 << 16 {
            return Err(Error::TransferBlocksInvalid { blocks });
        }
        let namespace_blocks = self.namespace.blocks;
        if lba
            .checked_add(blocks as u64)
            .is_none_or(|end| end > namespace_blocks)
        {
            return Err(Error::OutOfRange {
                lba,
                blocks,
                namespace_blocks,
            });
        }
        let bytes = (blocks as usize) << self.namespace.block_shift;
        let pages_needed = bytes.div_ceil(PAGE_SIZE);
        if buffer.len() != pages_needed {
            return Err(Error::BufferSizeMismatch {
                pages_given: buffer.len(),
                pages_needed,
            });
        }
        if pages_needed > self.max_transfer_pages {
            return Err(Error::TransferTooLarge {
                pages: pages_needed,
                max_pages: self.max_transfer_pages,
            });
        }
        if let Some(index) = buffer.iter().position(|page| !page.is_page_aligned()) {
            return Err(Error::BufferNotAligned {
                index,
                device_address: buffer[index],
            });
        }
        let Some((&first, rest)) = buffer.split_first() else {
            return Err(Error::TransferBlocksInvalid { blocks });
        };
        let prp2 = match rest {
            [] => None,
            [second] => Some(*second),
            _ => {
                // The list holds every page after the first, in order.
                for (index, page) in rest.iter().enumerate() {
                    self.hardware
                        .dma
                        .write(&self.prp_list.cpu, index * 8, &page.0.to_le_bytes());
                }
                Some(self.prp_list.device_address)
            }
        };
        let command = SubmissionEntry::new(opcode, 1)
            .with_prps(first, prp2)
            .with_dword(10, lba as u32)
            .with_dword(11, (lba >> 32) as u32)
            .with_dword(12, blocks - 1);
        self.io.execute(&mut self.hardware, command)?;
        Ok(())
    }

    /// Deletes I/O queue pair 1 (Delete I/O Submission Queue, then Delete
    /// I/O Completion Queue: base spec 5.6, 5.5), disables the controller
    /// and waits for CSTS.RDY = 0, and hands back the register block, the
    /// DMA memory (every page the driver allocated can be reused once this
    /// returns) and the delay.
    pub fn shut_down(mut self) -> Result<(R, D, W), Error> {
        let id = self.io.id() as u32;
        let command =
            SubmissionEntry::new(command::DELETE_IO_SUBMISSION_QUEUE, 0).with_dword(10, id);
        self.admin.execute(&mut self.hardware, command)?;
        let command =
            SubmissionEntry::new(command::DELETE_IO_COMPLETION_QUEUE, 0).with_dword(10, id);
        self.admin.execute(&mut self.hardware, command)?;
        let configuration = self.hardware.registers.read32(CC);
        self.hardware
            .registers
            .write32(CC, configuration & !CC_ENABLE);
        wait_ready(&mut self.hardware, false)?;
        let Hardware {
            registers,
            dma,
            delay,
            ..
        } = self.hardware;
        Ok((registers, dma, delay))
    }

    /// CAP as read at bring-up.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// VS as read at bring-up.
    pub fn version(&self) -> Version {
        self.version
    }

    /// What Identify Controller said.
    pub fn identity(&self) -> &ControllerIdentity {
        &self.identity
    }

    /// What Identify Namespace said of namespace 1.
    pub fn namespace(&self) -> &NamespaceIdentity {
        &self.namespace
    }

    /// The most pages one read or write may move.
    pub fn max_transfer_pages(&self) -> usize {
        self.max_transfer_pages
    }

    /// The DMA memory the driver allocates from, for the caller's own
    /// data buffers (the same pages the device already reaches).
    pub fn dma(&mut self) -> &mut D {
        &mut self.hardware.dma
    }

    /// The depth of each queue.
    pub fn queue_depth(&self) -> u16 {
        self.io.depth
    }
}

/// Allocates a page and checks the device sees it page-aligned.
fn allocate<D: Dma>(dma: &mut D) -> Result<DmaPage<D::Page>, Error> {
    let page = dma.allocate_page()?;
    if !page.device_address.is_page_aligned() {
        return Err(Error::DmaPageNotAligned {
            device_address: page.device_address,
        });
    }
    Ok(page)
}

fn new_queue_pair<R, D: Dma, W>(
    hardware: &mut Hardware<R, D, W>,
    kind: QueueKind,
    depth: u16,
) -> Result<QueuePair<D::Page>, Error> {
    let submission = allocate(&mut hardware.dma)?;
    let completion = allocate(&mut hardware.dma)?;
    Ok(QueuePair::new(
        kind,
        depth,
        submission,
        completion,
        &mut hardware.dma,
    ))
}

/// Identify Controller, then Identify Namespace 1, through the identify
/// page; checks what the driver depends on.
fn identify<R: Registers, D: Dma, W: Delay>(
    hardware: &mut Hardware<R, D, W>,
    admin: &mut QueuePair<D::Page>,
    page: &DmaPage<D::Page>,
) -> Result<(ControllerIdentity, NamespaceIdentity), Error> {
    let command = SubmissionEntry::new(command::IDENTIFY, 0)
        .with_prps(page.device_address, None)
        .with_dword(10, command::CNS_CONTROLLER);
    admin.execute(hardware, command)?;
    let mut head = [0u8; 84];
    let mut queues = [0u8; 8];
    hardware
        .dma
        .read(&page.cpu, identify::CONTROLLER_HEAD.start, &mut head);
    hardware
        .dma
        .read(&page.cpu, identify::CONTROLLER_QUEUES.start, &mut queues);
    let identity = ControllerIdentity::parse(&head, &queues);
    identity.check_entry_sizes()?;
    if identity.namespaces == 0 {
        return Err(Error::NoNamespace);
    }

    let command = SubmissionEntry::new(command::IDENTIFY, 1)
        .with_prps(page.device_address, None)
        .with_dword(10, command::CNS_NAMESPACE);
    admin.execute(hardware, command)?;
    let mut head = [0u8; 32];
    let mut formats = [0u8; 256];
    hardware
        .dma
        .read(&page.cpu, identify::NAMESPACE_HEAD.start, &mut head);
    hardware
        .dma
        .read(&page.cpu, identify::NAMESPACE_FORMATS.start, &mut formats);
    Ok((identity, NamespaceIdentity::parse(&head, &formats)?))
}

/// Create I/O Completion Queue 1, then Create I/O Submission Queue 1 on
/// it (base spec 5.3, 5.4): contiguous, interrupts on vector 0 in
/// interrupt mode, else off (polling).
fn create_io_queues<R: Registers, D: Dma, W: Delay>(
    hardware: &mut Hardware<R, D, W>,
    admin: &mut QueuePair<D::Page>,
    io: &QueuePair<D::Page>,
) -> Result<(), Error> {
    let size_and_id = ((io.depth as u32 - 1) << 16) | io.id() as u32;
    let command = SubmissionEntry::new(command::CREATE_IO_COMPLETION_QUEUE, 0)
        .with_prps(io.completion.device_address, None)
        .with_dword(10, size_and_id)
        // PC = 1 (contiguous); IEN as configured, IV = 0.
        .with_dword(
            11,
            1 | if hardware.interrupts {
                INTERRUPTS_ENABLED
            } else {
                0
            },
        );
    admin.execute(hardware, command)?;
    let command = SubmissionEntry::new(command::CREATE_IO_SUBMISSION_QUEUE, 0)
        .with_prps(io.submission.device_address, None)
        .with_dword(10, size_and_id)
        // PC = 1, QPRIO = 0, CQID = the completion queue just made.
        .with_dword(11, 1 | (io.id() as u32) << 16);
    admin.execute(hardware, command)?;
    Ok(())
}

/// Polls CSTS.RDY until it equals `ready`, for at most CAP.TO. A fatal
/// status (CFS) while waiting for ready ends the wait at once.
fn wait_ready<R: Registers, D, W: Delay>(
    hardware: &mut Hardware<R, D, W>,
    ready: bool,
) -> Result<(), Error> {
    let budget = hardware.timeout_milliseconds as u64 * 1000;
    let mut waited = 0u64;
    loop {
        let status = hardware.registers.read32(CSTS);
        if ready && status & CSTS_FATAL != 0 {
            return Err(Error::ControllerFatal { status });
        }
        if (status & CSTS_READY != 0) == ready {
            return Ok(());
        }
        if waited >= budget {
            return Err(Error::Timeout {
                waiting_for: if ready {
                    WaitingFor::Ready
                } else {
                    WaitingFor::Disabled
                },
                milliseconds: hardware.timeout_milliseconds,
            });
        }
        hardware.delay.delay_microseconds(READY_POLL_MICROSECONDS);
        waited += READY_POLL_MICROSECONDS as u64;
    }
}
