//! An executable model of an NVMe controller for host tests (feature
//! `model`): the registers the driver uses (CAP, VS, CC, CSTS, AQA, ASQ,
//! ACQ), doorbells at the CAP.DSTRD stride, the admin queue pair and one
//! I/O queue pair with phase tags, Identify (controller and namespace),
//! Create/Delete I/O queues, and Read/Write of a RAM-backed namespace 1
//! through PRP1, PRP2 and PRP lists (chained lists too).
//!
//! Every access the modelled device makes to memory goes through an IOVA
//! translation that knows only the pages [`ModelDma`] handed out (at
//! scattered device addresses, never equal to the CPU handle, never
//! contiguous); an access anywhere else is recorded as a [`Fault`] and
//! fails the command with Data Transfer Error, as an IOMMU would. What
//! the driver does against the protocol (a doorbell off the stride, a
//! queue register written while enabled, a completion queue overrun) is
//! recorded in [`Model::violations`]. Tests assert both lists stay empty.
//!
//! Commands run synchronously when their submission doorbell is written;
//! a real controller answers later, which the driver's polling covers.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::command::{self, COMPLETION_ENTRY_BYTES, CompletionEntry, SUBMISSION_ENTRY_BYTES};
use crate::registers::{
    ACQ, AQA, ASQ, CAP, CC, CC_ENABLE, CSTS, CSTS_FATAL, CSTS_READY, DOORBELLS, VS,
};
use crate::{Delay, Dma, DmaError, DmaPage, Iova, PAGE_SIZE, Registers};

/// When the modelled controller sets CSTS.RDY after CC.EN is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyBehaviour {
    /// At once.
    Immediately,
    /// After this many reads of CSTS.
    AfterPolls(u32),
    /// Never: a controller that hangs in reset.
    Never,
}

/// The modelled controller's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// CAP.MQES + 1: the largest queue.
    pub max_queue_entries: u16,
    /// CAP.DSTRD: doorbells are 4 << this bytes apart.
    pub doorbell_stride_shift: u8,
    /// CAP.TO in 500 ms units.
    pub timeout_units: u8,
    /// When CSTS.RDY follows CC.EN.
    pub ready: ReadyBehaviour,
    /// Whether CAP.CSS offers the NVM command set.
    pub nvm_command_set: bool,
    /// Identify Controller NN.
    pub namespaces: u32,
    /// Identify Controller MDTS (0: no limit).
    pub max_transfer_shift: u8,
    /// Namespace 1's size in blocks.
    pub namespace_blocks: u64,
    /// Namespace 1's LBA format (FLBAS): 0 is 512-byte blocks, 1 is 4 KiB
    /// blocks, 2 is 512-byte blocks with 8 metadata bytes.
    pub format_index: u8,
    /// Whether the controller starts enabled and ready (as firmware may
    /// leave it), so the driver must disable it first.
    pub start_enabled: bool,
}

impl Default for ModelConfig {
    fn default() -> ModelConfig {
        ModelConfig {
            max_queue_entries: 64,
            doorbell_stride_shift: 0,
            timeout_units: 2,
            ready: ReadyBehaviour::Immediately,
            nvm_command_set: true,
            namespaces: 1,
            max_transfer_shift: 7,
            namespace_blocks: 2048,
            format_index: 0,
            start_enabled: false,
        }
    }
}

/// A device access at an address the IOVA translation does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The device address.
    pub address: u64,
    /// Whether the device was writing.
    pub write: bool,
}

/// A command the controller fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandRecord {
    /// The submission queue it came from.
    pub queue: u16,
    /// Its opcode.
    pub opcode: u8,
    /// PRP entry 1.
    pub prp1: u64,
    /// PRP entry 2.
    pub prp2: u64,
    /// The status it completed with (the completion's status field).
    pub status: u16,
}

/// The CPU's handle to a page of model memory: an index, unrelated to the
/// page's device address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelPage(usize);

/// Where [`ModelDma`] starts handing out device addresses; each page is
/// followed by a two-page gap no translation covers.
pub const FIRST_IOVA: u64 = 0x0000_00d0_0000_0000;

#[derive(Clone, Copy, Debug)]
struct Queue {
    base: u64,
    size: u16,
    head: u16,
    tail: u16,
    phase: bool,
    completion_queue: u16,
    /// A completion queue's IEN: posting raises its interrupt (vector 0).
    interrupts: bool,
}

struct State {
    config: ModelConfig,
    configuration: u32,
    admin_attributes: u32,
    admin_submission: u64,
    admin_completion: u64,
    ready: bool,
    fatal: bool,
    polls_until_ready: u32,
    pages: Vec<Box<[u8; PAGE_SIZE]>>,
    translations: BTreeMap<u64, usize>,
    next_iova: u64,
    page_limit: Option<usize>,
    misalign_pages: bool,
    submission: [Option<Queue>; 2],
    completion: [Option<Queue>; 2],
    namespace: Vec<u8>,
    faults: Vec<Fault>,
    violations: Vec<String>,
    clock_microseconds: u64,
    injected: Vec<(u16, u8, u16)>,
    commands: Vec<CommandRecord>,
    stalled: bool,
    wrong_command_ids: u32,
    /// Interrupts raised (completions posted to a queue with IEN).
    interrupts_raised: u64,
    /// An interrupt raised and not yet taken by a wait.
    interrupt_pending: bool,
    /// `wait_for_interrupt` calls, and those that found no interrupt
    /// pending (a real platform would have blocked for good).
    waits: (u64, u64),
}

/// Status fields (completion dword 3 bits 31:17) the model returns.
mod status {
    pub const INVALID_OPCODE: u16 = 0x01;
    pub const INVALID_FIELD: u16 = 0x02;
    pub const DATA_TRANSFER_ERROR: u16 = 0x04;
    pub const INVALID_NAMESPACE: u16 = 0x0b;
    pub const PRP_OFFSET_INVALID: u16 = 0x13;
    pub const LBA_OUT_OF_RANGE: u16 = 0x80;
    pub const COMPLETION_QUEUE_INVALID: u16 = 0x100;
    pub const INVALID_QUEUE_IDENTIFIER: u16 = 0x101;
    pub const INVALID_QUEUE_SIZE: u16 = 0x102;
    pub const INVALID_QUEUE_DELETION: u16 = 0x10c;
}

/// The model: a handle to the controller's state, shared with the
/// [`ModelRegisters`], [`ModelDma`] and [`ModelDelay`] given to the
/// driver, so a test can look inside while the driver runs.
#[derive(Clone)]
pub struct Model {
    state: Rc<RefCell<State>>,
}

impl Model {
    /// A controller shaped by `config`, its namespace zeroed.
    pub fn new(config: ModelConfig) -> Model {
        let shift = format_shift(config.format_index);
        let state = State {
            config,
            configuration: if config.start_enabled { CC_ENABLE } else { 0 },
            admin_attributes: 0,
            admin_submission: 0,
            admin_completion: 0,
            ready: config.start_enabled,
            fatal: false,
            polls_until_ready: 0,
            pages: Vec::new(),
            translations: BTreeMap::new(),
            next_iova: FIRST_IOVA,
            page_limit: None,
            misalign_pages: false,
            submission: [None; 2],
            completion: [None; 2],
            namespace: vec![0; (config.namespace_blocks << shift) as usize],
            faults: Vec::new(),
            violations: Vec::new(),
            clock_microseconds: 0,
            injected: Vec::new(),
            commands: Vec::new(),
            stalled: false,
            wrong_command_ids: 0,
            interrupts_raised: 0,
            interrupt_pending: false,
            waits: (0, 0),
        };
        Model {
            state: Rc::new(RefCell::new(state)),
        }
    }

    /// The register block, for the driver.
    pub fn registers(&self) -> ModelRegisters {
        ModelRegisters(self.clone())
    }

    /// The DMA memory, for the driver (and for the test's data buffers).
    pub fn dma(&self) -> ModelDma {
        ModelDma(self.clone())
    }

    /// The clock, for the driver.
    pub fn delay(&self) -> ModelDelay {
        ModelDelay(self.clone())
    }

    /// Device accesses at addresses no handed-out page covers.
    pub fn faults(&self) -> Vec<Fault> {
        self.state.borrow().faults.clone()
    }

    /// What the driver did against the protocol.
    pub fn violations(&self) -> Vec<String> {
        self.state.borrow().violations.clone()
    }

    /// The commands fetched so far, oldest first.
    pub fn commands(&self) -> Vec<CommandRecord> {
        self.state.borrow().commands.clone()
    }

    /// Interrupts raised so far: completions posted to a completion queue
    /// with interrupts enabled (the admin queue's always are).
    pub fn interrupts_raised(&self) -> u64 {
        self.state.borrow().interrupts_raised
    }

    /// [`ModelDelay`]'s waits for an interrupt so far, and how many of
    /// them found none pending (on a real platform, blocked for good).
    pub fn interrupt_waits(&self) -> (u64, u64) {
        self.state.borrow().waits
    }

    /// The time the driver has waited through [`ModelDelay`].
    pub fn elapsed_microseconds(&self) -> u64 {
        self.state.borrow().clock_microseconds
    }

    /// The next command with `opcode` on submission queue `queue`
    /// completes with the status field `status` (SCT << 8 | SC) and does
    /// nothing else.
    pub fn inject_status(&self, queue: u16, opcode: u8, status: u16) {
        self.state
            .borrow_mut()
            .injected
            .push((queue, opcode, status));
    }

    /// From now on the controller fetches nothing: doorbells are taken
    /// but no command runs or completes (a hung controller that does not
    /// say so).
    pub fn stall(&self) {
        self.state.borrow_mut().stalled = true;
    }

    /// The next `count` completions carry a command identifier one more
    /// than the command's (a controller answering the wrong command).
    pub fn corrupt_command_ids(&self, count: u32) {
        self.state.borrow_mut().wrong_command_ids = count;
    }

    /// Sets CSTS.CFS, as a controller that failed.
    pub fn fail_fatally(&self) {
        self.state.borrow_mut().fatal = true;
    }

    /// Removes the translation of the page at `device_address` (the CPU
    /// view stays): what unmapping it from the IOMMU does.
    pub fn revoke(&self, device_address: Iova) {
        self.state
            .borrow_mut()
            .translations
            .remove(&device_address.0);
    }

    /// Allocations beyond `pages` pages in all fail.
    pub fn limit_pages(&self, pages: usize) {
        self.state.borrow_mut().page_limit = Some(pages);
    }

    /// From now on [`ModelDma`] hands out device addresses 2 KiB into a
    /// page: a broken allocator.
    pub fn misalign_pages(&self) {
        self.state.borrow_mut().misalign_pages = true;
    }

    /// A copy of namespace 1's bytes.
    pub fn namespace(&self) -> Vec<u8> {
        self.state.borrow().namespace.clone()
    }

    /// Overwrites namespace 1's bytes from the start.
    pub fn fill_namespace(&self, bytes: &[u8]) {
        self.state.borrow_mut().namespace[..bytes.len()].copy_from_slice(bytes);
    }

    /// Whether CSTS.RDY reads 1.
    pub fn is_ready(&self) -> bool {
        self.state.borrow().ready
    }

    /// How many I/O queues (submission plus completion) exist.
    pub fn io_queues(&self) -> usize {
        let state = self.state.borrow();
        state.submission[1].is_some() as usize + state.completion[1].is_some() as usize
    }
}

/// log2 of the block size of LBA format `index` of the model.
fn format_shift(index: u8) -> u8 {
    if index == 1 { 12 } else { 9 }
}

impl State {
    fn capabilities(&self) -> u64 {
        let config = &self.config;
        (config.max_queue_entries as u64 - 1)
            | 1 << 16
            | (config.timeout_units as u64) << 24
            | (config.doorbell_stride_shift as u64) << 32
            | (config.nvm_command_set as u64) << 37
            | 4 << 52
    }

    fn read32(&mut self, offset: usize) -> u32 {
        match offset {
            CAP => self.capabilities() as u32,
            0x04 => (self.capabilities() >> 32) as u32,
            VS => 0x0001_0400,
            CC => self.configuration,
            CSTS => {
                // RDY comes up after the configured polls, once an
                // enable was accepted (it set up the admin queues).
                let starting = self.configuration & CC_ENABLE != 0
                    && !self.ready
                    && self.submission[0].is_some()
                    && matches!(self.config.ready, ReadyBehaviour::AfterPolls(_));
                if starting {
                    if self.polls_until_ready == 0 {
                        self.ready = true;
                    } else {
                        self.polls_until_ready -= 1;
                    }
                }
                ((self.ready as u32) * CSTS_READY) | ((self.fatal as u32) * CSTS_FATAL)
            }
            AQA => self.admin_attributes,
            ASQ => self.admin_submission as u32,
            0x2c => (self.admin_submission >> 32) as u32,
            ACQ => self.admin_completion as u32,
            0x34 => (self.admin_completion >> 32) as u32,
            _ => {
                self.violations.push(format!(
                    "read of register {offset:#x}, which the model does not have"
                ));
                0
            }
        }
    }

    fn write32(&mut self, offset: usize, value: u32) {
        let enabled = self.configuration & CC_ENABLE != 0;
        let low = |old: u64| (old & !0xffff_ffff) | value as u64;
        let high = |old: u64| (old & 0xffff_ffff) | (value as u64) << 32;
        match offset {
            CC => self.write_configuration(value),
            AQA | ASQ | 0x2c | ACQ | 0x34 if enabled => self.violations.push(format!(
                "register {offset:#x} written while CC.EN = 1 (base spec 3.1.3.8-10)"
            )),
            AQA => self.admin_attributes = value,
            ASQ => self.admin_submission = low(self.admin_submission),
            0x2c => self.admin_submission = high(self.admin_submission),
            ACQ => self.admin_completion = low(self.admin_completion),
            0x34 => self.admin_completion = high(self.admin_completion),
            _ if offset >= DOORBELLS => self.doorbell(offset - DOORBELLS, value),
            _ => self
                .violations
                .push(format!("write of {value:#x} to register {offset:#x}")),
        }
    }

    fn write_configuration(&mut self, value: u32) {
        let was_enabled = self.configuration & CC_ENABLE != 0;
        self.configuration = value;
        let enable = value & CC_ENABLE != 0;
        if was_enabled && !enable {
            // Controller reset: queues gone, not ready.
            self.submission = [None; 2];
            self.completion = [None; 2];
            self.ready = false;
            return;
        }
        if was_enabled || !enable {
            return;
        }
        let submission_entries = (self.admin_attributes & 0xfff) as u16 + 1;
        let completion_entries = ((self.admin_attributes >> 16) & 0xfff) as u16 + 1;
        let page_mask = PAGE_SIZE as u64 - 1;
        let problem = if (value >> 7) & 0xf != 0 {
            Some("CC.MPS is not 4 KiB")
        } else if (value >> 4) & 7 != 0 {
            Some("CC.CSS is not the NVM command set")
        } else if submission_entries < 2 || completion_entries < 2 {
            Some("AQA gives an admin queue fewer than 2 entries")
        } else if self.admin_submission == 0 || self.admin_submission & page_mask != 0 {
            Some("ASQ is 0 or not page-aligned")
        } else if self.admin_completion == 0 || self.admin_completion & page_mask != 0 {
            Some("ACQ is 0 or not page-aligned")
        } else {
            None
        };
        if let Some(problem) = problem {
            // The controller does not start: RDY stays 0.
            self.violations.push(format!("CC.EN set but {problem}"));
            return;
        }
        self.submission[0] = Some(Queue {
            base: self.admin_submission,
            size: submission_entries,
            head: 0,
            tail: 0,
            phase: true,
            completion_queue: 0,
            interrupts: false,
        });
        // The admin completion queue always interrupts (vector 0).
        self.completion[0] = Some(Queue {
            base: self.admin_completion,
            size: completion_entries,
            head: 0,
            tail: 0,
            phase: true,
            completion_queue: 0,
            interrupts: true,
        });
        match self.config.ready {
            ReadyBehaviour::Immediately => self.ready = true,
            ReadyBehaviour::AfterPolls(polls) => self.polls_until_ready = polls,
            ReadyBehaviour::Never => {}
        }
    }

    fn doorbell(&mut self, relative: usize, value: u32) {
        let stride = 4usize << self.config.doorbell_stride_shift;
        if !relative.is_multiple_of(stride) {
            self.violations.push(format!(
                "doorbell write at {:#x}, not on the {stride}-byte stride",
                DOORBELLS + relative
            ));
            return;
        }
        let index = relative / stride;
        let (queue, completion) = (index / 2, index % 2 == 1);
        let queues = if completion {
            &mut self.completion
        } else {
            &mut self.submission
        };
        let Some(Some(entry)) = queues.get_mut(queue) else {
            self.violations.push(format!(
                "doorbell {index} rung for queue {queue}, which does not exist"
            ));
            return;
        };
        if value >= entry.size as u32 {
            self.violations.push(format!(
                "doorbell {index} set to {value}, past the queue's {} entries",
                entry.size
            ));
            return;
        }
        if completion {
            entry.head = value as u16;
        } else {
            entry.tail = value as u16;
            self.process(queue);
        }
    }

    /// Runs every command between submission queue `queue`'s head and
    /// tail and posts their completions.
    fn process(&mut self, queue: usize) {
        while let Some(submission) = self.submission[queue] {
            if submission.head == submission.tail || self.fatal || self.stalled {
                return;
            }
            let mut bytes = [0u8; SUBMISSION_ENTRY_BYTES];
            let address = submission.base + submission.head as u64 * SUBMISSION_ENTRY_BYTES as u64;
            if !self.device_read(address, &mut bytes) {
                self.fatal = true;
                return;
            }
            let head = (submission.head + 1) % submission.size;
            if let Some(entry) = self.submission[queue].as_mut() {
                entry.head = head;
            }
            let dwords: [u32; 16] = core::array::from_fn(|index| {
                u32::from_le_bytes([
                    bytes[4 * index],
                    bytes[4 * index + 1],
                    bytes[4 * index + 2],
                    bytes[4 * index + 3],
                ])
            });
            let (result, status) = self.execute(queue as u16, &dwords);
            self.commands.push(CommandRecord {
                queue: queue as u16,
                opcode: dwords[0] as u8,
                prp1: dwords[6] as u64 | (dwords[7] as u64) << 32,
                prp2: dwords[8] as u64 | (dwords[9] as u64) << 32,
                status,
            });
            self.complete(
                submission.completion_queue,
                CompletionEntry {
                    result,
                    submission_head: head,
                    submission_queue: queue as u16,
                    command_id: (dwords[0] >> 16) as u16,
                    phase: false,
                    status,
                },
            );
        }
    }

    fn complete(&mut self, queue: u16, mut entry: CompletionEntry) {
        let Some(completion) = self.completion[queue as usize] else {
            // Its completion queue was deleted with it (Delete I/O SQ).
            return;
        };
        if (completion.tail + 1) % completion.size == completion.head {
            self.violations.push(format!(
                "completion queue {queue} full: the host did not move its head doorbell"
            ));
            return;
        }
        entry.phase = completion.phase;
        if self.wrong_command_ids > 0 {
            self.wrong_command_ids -= 1;
            entry.command_id = entry.command_id.wrapping_add(1);
        }
        let address = completion.base + completion.tail as u64 * COMPLETION_ENTRY_BYTES as u64;
        if !self.device_write(address, &entry.to_bytes()) {
            self.fatal = true;
            return;
        }
        if let Some(completion) = self.completion[queue as usize].as_mut() {
            completion.tail = (completion.tail + 1) % completion.size;
            if completion.tail == 0 {
                completion.phase = !completion.phase;
            }
            if completion.interrupts {
                self.interrupts_raised += 1;
                self.interrupt_pending = true;
            }
        }
    }

    /// Runs one command; returns completion dword 0 and the status field.
    fn execute(&mut self, queue: u16, dwords: &[u32; 16]) -> (u32, u16) {
        let opcode = dwords[0] as u8;
        if let Some(at) = self
            .injected
            .iter()
            .position(|&(on, code, _)| on == queue && code == opcode)
        {
            return (0, self.injected.remove(at).2);
        }
        let status = if queue == 0 {
            self.admin(opcode, dwords)
        } else {
            self.io(opcode, dwords)
        };
        (0, status)
    }

    fn admin(&mut self, opcode: u8, dwords: &[u32; 16]) -> u16 {
        let prp1 = dwords[6] as u64 | (dwords[7] as u64) << 32;
        let prp2 = dwords[8] as u64 | (dwords[9] as u64) << 32;
        let queue_id = dwords[10] as u16;
        let size = (dwords[10] >> 16) as u16 as u32 + 1;
        match opcode {
            command::IDENTIFY => {
                let data = match dwords[10] & 0xff {
                    0x01 => self.identify_controller(),
                    0x00 if dwords[1] == 1 => self.identify_namespace(),
                    0x00 => return status::INVALID_NAMESPACE,
                    _ => return status::INVALID_FIELD,
                };
                self.transfer_to_host(prp1, prp2, &data)
            }
            command::CREATE_IO_COMPLETION_QUEUE | command::CREATE_IO_SUBMISSION_QUEUE => {
                let completion = opcode == command::CREATE_IO_COMPLETION_QUEUE;
                let exists = if completion {
                    self.completion[1].is_some()
                } else {
                    self.submission[1].is_some()
                };
                let entry_shift = if completion { 20 } else { 16 };
                let wanted_shift = if completion { 4 } else { 6 };
                if queue_id != 1 || exists {
                    return status::INVALID_QUEUE_IDENTIFIER;
                }
                if size < 2 || size > self.config.max_queue_entries as u32 {
                    return status::INVALID_QUEUE_SIZE;
                }
                if (self.configuration >> entry_shift) & 0xf != wanted_shift {
                    self.violations.push(format!(
                        "I/O queue created with CC entry size field {:#x}",
                        self.configuration
                    ));
                    return status::INVALID_QUEUE_SIZE;
                }
                if dwords[11] & 1 == 0 {
                    // CAP.CQR: queues must be contiguous.
                    return status::INVALID_FIELD;
                }
                if !prp1.is_multiple_of(PAGE_SIZE as u64) {
                    return status::PRP_OFFSET_INVALID;
                }
                let completion_queue = (dwords[11] >> 16) as u16;
                if !completion && (completion_queue != 1 || self.completion[1].is_none()) {
                    return status::COMPLETION_QUEUE_INVALID;
                }
                let queue = Some(Queue {
                    base: prp1,
                    size: size as u16,
                    head: 0,
                    tail: 0,
                    phase: true,
                    completion_queue,
                    // IEN, on vector 0 (IV, bits 31:16) only: the model
                    // has one vector.
                    interrupts: completion && dwords[11] & 0b10 != 0 && dwords[11] >> 16 == 0,
                });
                if completion {
                    self.completion[1] = queue;
                } else {
                    self.submission[1] = queue;
                }
                0
            }
            command::DELETE_IO_SUBMISSION_QUEUE => {
                if queue_id != 1 || self.submission[1].take().is_none() {
                    return status::INVALID_QUEUE_IDENTIFIER;
                }
                0
            }
            command::DELETE_IO_COMPLETION_QUEUE => {
                if queue_id != 1 || self.completion[1].is_none() {
                    return status::INVALID_QUEUE_IDENTIFIER;
                }
                if self.submission[1].is_some() {
                    return status::INVALID_QUEUE_DELETION;
                }
                self.completion[1] = None;
                0
            }
            _ => status::INVALID_OPCODE,
        }
    }

    fn io(&mut self, opcode: u8, dwords: &[u32; 16]) -> u16 {
        if opcode != command::READ && opcode != command::WRITE {
            return status::INVALID_OPCODE;
        }
        if dwords[1] != 1 {
            return status::INVALID_NAMESPACE;
        }
        let lba = dwords[10] as u64 | (dwords[11] as u64) << 32;
        let blocks = (dwords[12] & 0xffff) as u64 + 1;
        if lba + blocks > self.config.namespace_blocks {
            return status::LBA_OUT_OF_RANGE;
        }
        let shift = format_shift(self.config.format_index);
        let length = (blocks << shift) as usize;
        if self.config.max_transfer_shift != 0
            && length > PAGE_SIZE << self.config.max_transfer_shift
        {
            return status::INVALID_FIELD;
        }
        let prp1 = dwords[6] as u64 | (dwords[7] as u64) << 32;
        let prp2 = dwords[8] as u64 | (dwords[9] as u64) << 32;
        let start = (lba << shift) as usize;
        if opcode == command::READ {
            let data = self.namespace[start..start + length].to_vec();
            self.transfer_to_host(prp1, prp2, &data)
        } else {
            let segments = match self.prp_segments(prp1, prp2, length) {
                Ok(segments) => segments,
                Err(status) => return status,
            };
            let mut data = vec![0u8; length];
            let mut at = 0;
            for (address, bytes) in segments {
                if !self.device_read(address, &mut data[at..at + bytes]) {
                    return status::DATA_TRANSFER_ERROR;
                }
                at += bytes;
            }
            self.namespace[start..start + length].copy_from_slice(&data);
            0
        }
    }

    /// Writes `data` to the host memory the PRPs describe.
    fn transfer_to_host(&mut self, prp1: u64, prp2: u64, data: &[u8]) -> u16 {
        let segments = match self.prp_segments(prp1, prp2, data.len()) {
            Ok(segments) => segments,
            Err(status) => return status,
        };
        let mut at = 0;
        for (address, bytes) in segments {
            if !self.device_write(address, &data[at..at + bytes]) {
                return status::DATA_TRANSFER_ERROR;
            }
            at += bytes;
        }
        0
    }

    /// The (address, length) pieces of a `length`-byte transfer described
    /// by PRP1 and PRP2 (base spec 4.1.1): PRP1 may start inside a page;
    /// PRP2 is the second page if the rest fits in one, else a PRP list
    /// whose last entry in each page chains to the next list page when
    /// more entries are needed.
    fn prp_segments(
        &mut self,
        prp1: u64,
        prp2: u64,
        length: usize,
    ) -> Result<Vec<(u64, usize)>, u16> {
        let page = PAGE_SIZE as u64;
        if !prp1.is_multiple_of(4) {
            return Err(status::PRP_OFFSET_INVALID);
        }
        let first = length.min((page - prp1 % page) as usize);
        let mut segments = vec![(prp1, first)];
        let mut remaining = length - first;
        if remaining == 0 {
            return Ok(segments);
        }
        if remaining <= PAGE_SIZE {
            if !prp2.is_multiple_of(page) {
                return Err(status::PRP_OFFSET_INVALID);
            }
            segments.push((prp2, remaining));
            return Ok(segments);
        }
        if !prp2.is_multiple_of(8) {
            return Err(status::PRP_OFFSET_INVALID);
        }
        let mut entry_address = prp2;
        while remaining > 0 {
            let mut word = [0u8; 8];
            if !self.device_read(entry_address, &mut word) {
                return Err(status::DATA_TRANSFER_ERROR);
            }
            let entry = u64::from_le_bytes(word);
            if entry_address % page == page - 8 && remaining > PAGE_SIZE {
                if !entry.is_multiple_of(8) {
                    return Err(status::PRP_OFFSET_INVALID);
                }
                entry_address = entry;
                continue;
            }
            if !entry.is_multiple_of(page) {
                return Err(status::PRP_OFFSET_INVALID);
            }
            let bytes = remaining.min(PAGE_SIZE);
            segments.push((entry, bytes));
            remaining -= bytes;
            entry_address += 8;
        }
        Ok(segments)
    }

    fn identify_controller(&self) -> Vec<u8> {
        let mut data = vec![0u8; PAGE_SIZE];
        data[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        let put = |data: &mut [u8], at: usize, width: usize, text: &[u8]| {
            data[at..at + width].fill(b' ');
            data[at..at + text.len()].copy_from_slice(text);
        };
        put(&mut data, 4, 20, b"MODEL-0001");
        put(&mut data, 24, 40, b"Portcullis NVMe model");
        put(&mut data, 64, 8, b"1.0");
        data[77] = self.config.max_transfer_shift;
        data[80..84].copy_from_slice(&0x0001_0400u32.to_le_bytes());
        data[512] = 0x66;
        data[513] = 0x44;
        data[516..520].copy_from_slice(&self.config.namespaces.to_le_bytes());
        data
    }

    fn identify_namespace(&self) -> Vec<u8> {
        let mut data = vec![0u8; PAGE_SIZE];
        let blocks = self.config.namespace_blocks.to_le_bytes();
        data[0..8].copy_from_slice(&blocks);
        data[8..16].copy_from_slice(&blocks);
        data[16..24].copy_from_slice(&blocks);
        data[25] = 2; // NLBAF: three formats (0-based)
        data[26] = self.config.format_index;
        // LBA formats: MS (15:0), LBADS (23:16).
        data[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
        data[132..136].copy_from_slice(&(12u32 << 16).to_le_bytes());
        data[136..140].copy_from_slice(&(9u32 << 16 | 8).to_le_bytes());
        data
    }

    /// The page index and offset a device address translates to, or a
    /// recorded fault.
    fn translate(&mut self, address: u64, write: bool) -> Option<(usize, usize)> {
        let base = address & !(PAGE_SIZE as u64 - 1);
        match self.translations.get(&base) {
            Some(&index) => Some((index, (address - base) as usize)),
            None => {
                self.faults.push(Fault { address, write });
                None
            }
        }
    }

    fn device_read(&mut self, mut address: u64, bytes: &mut [u8]) -> bool {
        let mut done = 0;
        while done < bytes.len() {
            let Some((index, offset)) = self.translate(address, false) else {
                return false;
            };
            let count = (bytes.len() - done).min(PAGE_SIZE - offset);
            bytes[done..done + count].copy_from_slice(&self.pages[index][offset..offset + count]);
            done += count;
            address += count as u64;
        }
        true
    }

    fn device_write(&mut self, mut address: u64, bytes: &[u8]) -> bool {
        let mut done = 0;
        while done < bytes.len() {
            let Some((index, offset)) = self.translate(address, true) else {
                return false;
            };
            let count = (bytes.len() - done).min(PAGE_SIZE - offset);
            self.pages[index][offset..offset + count].copy_from_slice(&bytes[done..done + count]);
            done += count;
            address += count as u64;
        }
        true
    }
}

/// The model's register block ([`Registers`]); 64-bit accesses are the
/// trait's default pairs of 32-bit ones.
pub struct ModelRegisters(Model);

impl Registers for ModelRegisters {
    fn read32(&mut self, offset: usize) -> u32 {
        self.0.state.borrow_mut().read32(offset)
    }

    fn write32(&mut self, offset: usize, value: u32) {
        self.0.state.borrow_mut().write32(offset, value)
    }
}

/// The model's DMA memory ([`Dma`]).
pub struct ModelDma(Model);

impl Dma for ModelDma {
    type Page = ModelPage;

    fn allocate_page(&mut self) -> Result<DmaPage<ModelPage>, DmaError> {
        let mut state = self.0.state.borrow_mut();
        if state
            .page_limit
            .is_some_and(|limit| state.pages.len() >= limit)
        {
            return Err(DmaError {
                reason: "the model's page limit is reached",
            });
        }
        let index = state.pages.len();
        state.pages.push(Box::new([0; PAGE_SIZE]));
        let iova = state.next_iova;
        state.next_iova += 3 * PAGE_SIZE as u64;
        state.translations.insert(iova, index);
        let offset = if state.misalign_pages { 0x800 } else { 0 };
        Ok(DmaPage {
            cpu: ModelPage(index),
            device_address: Iova(iova + offset),
        })
    }

    fn read(&mut self, page: &ModelPage, offset: usize, bytes: &mut [u8]) {
        let state = self.0.state.borrow();
        bytes.copy_from_slice(&state.pages[page.0][offset..offset + bytes.len()]);
    }

    fn write(&mut self, page: &ModelPage, offset: usize, bytes: &[u8]) {
        let mut state = self.0.state.borrow_mut();
        state.pages[page.0][offset..offset + bytes.len()].copy_from_slice(bytes);
    }
}

/// The model's clock ([`Delay`]): waiting only advances it.
pub struct ModelDelay(Model);

impl Delay for ModelDelay {
    fn delay_microseconds(&mut self, microseconds: u32) {
        self.0.state.borrow_mut().clock_microseconds += microseconds as u64;
    }

    /// Takes the pending interrupt; with none pending, counts a wait that
    /// would have blocked for good and returns (so a test ends).
    fn wait_for_interrupt(&mut self) {
        let mut state = self.0.state.borrow_mut();
        state.waits.0 += 1;
        if !state.interrupt_pending {
            state.waits.1 += 1;
        }
        state.interrupt_pending = false;
    }
}
