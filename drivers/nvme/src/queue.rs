//! A queue pair, polled or woken by interrupts: one submission queue and one completion
//! queue of the same depth, each in one DMA page, and one command in
//! flight at a time (NVMe base spec 2.0, 3.3.1 "Memory-based Transport
//! Queue Model", 4.6 "Completion Queue Entry" for the phase tag).
//!
//! Invariants: `submission_tail` and `completion_head` are below `depth`;
//! `phase` is the phase tag a new completion in the slot at
//! `completion_head` carries (1 on the first pass, flipped each time the
//! head wraps to slot 0). With one command in flight the submission queue
//! never fills, and the completion head doorbell is written after every
//! completion, so the controller never finds the completion queue full.

use crate::command::{
    COMPLETION_ENTRY_BYTES, CompletionEntry, SUBMISSION_ENTRY_BYTES, SubmissionEntry,
};
use crate::registers::{self, CSTS, CSTS_FATAL};
use crate::{Delay, Dma, DmaPage, Error, QueueKind, Registers, WaitingFor};

/// How long a poll waits between looks at a completion queue.
pub const COMPLETION_POLL_MICROSECONDS: u32 = 10;

/// Interrupt mode: wakes ([`Delay::wait_for_interrupt`]) one command may
/// take before the driver gives it up.
pub const MAX_WAKES: u32 = 1000;

/// What every command needs: the register block, the DMA memory, the way
/// to wait, and the doorbell stride and poll budget read from CAP.
pub struct Hardware<R, D, W> {
    /// BAR 0.
    pub registers: R,
    /// Device-visible memory.
    pub dma: D,
    /// The way to wait.
    pub delay: W,
    /// 4 << CAP.DSTRD.
    pub doorbell_stride: usize,
    /// How long a poll may wait in total (CAP.TO).
    pub timeout_milliseconds: u32,
    /// Interrupt mode (`Config::interrupts`): a look that finds no
    /// completion waits for an interrupt.
    pub interrupts: bool,
}

/// One submission/completion queue pair.
pub struct QueuePair<P> {
    /// Which pair: the admin pair is queue 0, the I/O pair queue 1.
    pub kind: QueueKind,
    /// Entries in each queue.
    pub depth: u16,
    /// The submission queue's page.
    pub submission: DmaPage<P>,
    /// The completion queue's page.
    pub completion: DmaPage<P>,
    submission_tail: u16,
    completion_head: u16,
    phase: bool,
    next_command_id: u16,
}

impl<P> QueuePair<P> {
    /// A pair of `depth` entries over two pages, the completion page
    /// zeroed here (so no stale entry carries phase 1) through `dma`.
    pub fn new<D: Dma<Page = P>>(
        kind: QueueKind,
        depth: u16,
        submission: DmaPage<P>,
        completion: DmaPage<P>,
        dma: &mut D,
    ) -> QueuePair<P> {
        let zeros = [0u8; COMPLETION_ENTRY_BYTES];
        for slot in 0..depth as usize {
            dma.write(&completion.cpu, slot * COMPLETION_ENTRY_BYTES, &zeros);
        }
        QueuePair {
            kind,
            depth,
            submission,
            completion,
            submission_tail: 0,
            completion_head: 0,
            phase: true,
            next_command_id: 0,
        }
    }

    /// The queue identifier.
    pub fn id(&self) -> u16 {
        match self.kind {
            QueueKind::Admin => 0,
            QueueKind::Io => 1,
        }
    }

    /// Submits `entry`, rings the tail doorbell, polls the completion
    /// queue for its completion (bounded by the hardware's timeout),
    /// consumes it and rings the head doorbell. Returns dword 0 of the
    /// completion, or the error status decoded.
    pub fn execute<R: Registers, D: Dma<Page = P>, W: Delay>(
        &mut self,
        hardware: &mut Hardware<R, D, W>,
        mut entry: SubmissionEntry,
    ) -> Result<u32, Error> {
        let command_id = self.next_command_id;
        self.next_command_id = self.next_command_id.wrapping_add(1);
        entry.set_command_id(command_id);
        let opcode = entry.opcode();
        hardware.dma.write(
            &self.submission.cpu,
            self.submission_tail as usize * SUBMISSION_ENTRY_BYTES,
            &entry.to_bytes(),
        );
        self.submission_tail = (self.submission_tail + 1) % self.depth;
        let stride = hardware.doorbell_stride;
        hardware.registers.write32(
            registers::doorbell(self.id(), false, stride),
            self.submission_tail as u32,
        );

        let completion = self.poll(hardware, opcode)?;
        self.completion_head = (self.completion_head + 1) % self.depth;
        if self.completion_head == 0 {
            self.phase = !self.phase;
        }
        hardware.registers.write32(
            registers::doorbell(self.id(), true, stride),
            self.completion_head as u32,
        );
        if completion.command_id != command_id || completion.submission_queue != self.id() {
            return Err(Error::UnexpectedCompletion {
                queue: self.kind,
                expected_command_id: command_id,
                command_id: completion.command_id,
                submission_queue: completion.submission_queue,
            });
        }
        let status = crate::Status::from_field(completion.status);
        if status.is_success() {
            Ok(completion.result)
        } else {
            Err(Error::Command {
                queue: self.kind,
                opcode,
                status,
            })
        }
    }

    /// Looks at the slot at the completion head until its phase tag is
    /// the expected one, waiting [`COMPLETION_POLL_MICROSECONDS`] between
    /// looks, for at most the hardware's timeout (in interrupt mode, for
    /// an interrupt between looks, at most [`MAX_WAKES`] times). A controller that
    /// reports a fatal status ends the wait at once.
    fn poll<R: Registers, D: Dma<Page = P>, W: Delay>(
        &self,
        hardware: &mut Hardware<R, D, W>,
        opcode: u8,
    ) -> Result<CompletionEntry, Error> {
        let budget = hardware.timeout_milliseconds as u64 * 1000;
        let mut waited = 0u64;
        let mut wakes = 0;
        loop {
            let mut bytes = [0u8; COMPLETION_ENTRY_BYTES];
            hardware.dma.read(
                &self.completion.cpu,
                self.completion_head as usize * COMPLETION_ENTRY_BYTES,
                &mut bytes,
            );
            let entry = CompletionEntry::from_bytes(&bytes);
            if entry.phase == self.phase {
                return Ok(entry);
            }
            let status = hardware.registers.read32(CSTS);
            if status & CSTS_FATAL != 0 {
                return Err(Error::ControllerFatal { status });
            }
            if hardware.interrupts {
                if wakes == MAX_WAKES {
                    return Err(Error::NoCompletionAfterWakes {
                        queue: self.kind,
                        opcode,
                        wakes,
                    });
                }
                hardware.delay.wait_for_interrupt();
                wakes += 1;
                continue;
            }
            if waited >= budget {
                return Err(Error::Timeout {
                    waiting_for: WaitingFor::Completion {
                        queue: self.kind,
                        opcode,
                    },
                    milliseconds: hardware.timeout_milliseconds,
                });
            }
            hardware
                .delay
                .delay_microseconds(COMPLETION_POLL_MICROSECONDS);
            waited += COMPLETION_POLL_MICROSECONDS as u64;
        }
    }
}
