//! Interrupt invocations: `IrqControl.Get`, `IrqHandler.SetNotification`,
//! `MsiMessage`, `Ack`.

use super::{Call, Reply};
use crate::objects::CapSystem;
use crate::sched::Target;
use abi::{Error, Invocation};
use caps::{ObjectId, ObjectKind, Rights, SlotId};

/// A decoded interrupt invocation.
pub(super) enum IrqOp {
    /// `IrqControl.Get`: a handler for `line` into the slot `dest`.
    Get {
        control: SlotId,
        line: u16,
        dest: SlotId,
    },
    /// Deliver the handler's line to `notification`.
    SetNotification {
        handler: ObjectId,
        notification: Target,
    },
    /// Bind the handler's line `irq` to the IoDevice `device` (requester
    /// id `requester`).
    MsiMessage {
        handler: ObjectId,
        irq: u16,
        device: ObjectId,
        requester: u16,
        /// The IoSpace the device translates through (aarch64: where the
        /// doorbell is mapped).
        space: Option<ObjectId>,
    },
    Ack {
        handler: ObjectId,
    },
}

/// Decodes an IrqControl or IrqHandler invocation; changes nothing.
#[inline(always)]
pub(super) fn decode(caps: &CapSystem, call: &Call) -> Result<IrqOp, Error> {
    let handler = |caps: &CapSystem| {
        Ok::<_, Error>(
            caps.lookup_as(call.slot, ObjectKind::IrqHandler, Rights::WRITE)?
                .object(),
        )
    };
    match (call.kind, call.invocation) {
        (ObjectKind::IrqControl, Invocation::IrqControlGet) => {
            let line = u16::try_from(call.argument(0)?).map_err(|_| Error::OutOfScope)?;
            if !crate::arch::irq_line_available(line) {
                return Err(Error::OutOfScope);
            }
            let dest = call.slot_argument(caps, 1)?;
            crate::sched::irq_binding_room()?;
            Ok(IrqOp::Get {
                control: call.slot,
                line,
                dest,
            })
        }
        (ObjectKind::IrqHandler, Invocation::IrqHandlerSetNotification) => {
            if call.message.info.extra_caps == 0 {
                return Err(Error::TruncatedMessage);
            }
            let handler = handler(caps)?;
            let notification = call.notification(caps, 0)?;
            crate::sched::registry_room(&[(notification.object, notification.paddr)])?;
            Ok(IrqOp::SetNotification {
                handler,
                notification,
            })
        }
        (ObjectKind::IrqHandler, Invocation::IrqHandlerMsiMessage) => {
            let handler = handler(caps)?;
            let Some(caps::ObjectState::IrqHandler { irq }) =
                caps.object(handler).map(|o| *o.state())
            else {
                return Err(Error::DeadObject);
            };
            // The device that will raise it: only its requester id passes
            // the line's interrupt remapping entry.
            let device = call.extra_cap(caps, 0)?;
            let device = caps
                .lookup_as(device, ObjectKind::IoDevice, Rights::WRITE)?
                .object();
            let Some(caps::ObjectState::IoDevice { rid, attached, .. }) =
                caps.object(device).map(|o| *o.state())
            else {
                return Err(Error::DeadObject);
            };
            let requester = u16::try_from(rid).map_err(|_| Error::InvalidArgument)?;
            let space = attached.map(|a| a.space);
            // On aarch64 the MSI is a DMA write through the device's
            // IoSpace, which must hold the doorbell: attach first.
            if cfg!(target_arch = "aarch64") && space.is_none() {
                return Err(Error::DeviceNotAttached);
            }
            Ok(IrqOp::MsiMessage {
                handler,
                irq,
                device,
                requester,
                space,
            })
        }
        (ObjectKind::IrqHandler, Invocation::IrqHandlerAck) => Ok(IrqOp::Ack {
            handler: handler(caps)?,
        }),
        _ => Err(Error::InvalidInvocation),
    }
}

/// Performs a decoded interrupt invocation. What may still refuse:
/// `Get`: the model's `issue_irq_handler` (`DeviceInUse`, ..., nothing
/// changed); the kernel's line bindings have room (decode checked
/// `sched::irq_binding_room`).
/// `SetNotification` finds the registry room decode checked
/// (`sched::registry_room`; the scheduler's answer is still passed on).
/// `MsiMessage`: `InvalidArgument` when the line is not an MSI line (the
/// architecture answers before it writes anything); on aarch64 then
/// `TableMemoryExhausted` when the IoSpace's reservation cannot hold the
/// doorbell's stage-2 walk (nothing changed).
#[inline(always)]
pub(super) fn perform(caps: &mut CapSystem, op: IrqOp) -> Result<Reply, Error> {
    match op {
        IrqOp::Get {
            control,
            line,
            dest,
        } => {
            let handler = caps.issue_irq_handler(control, line, dest)?;
            crate::sched::bind_irq(handler, line);
        }
        IrqOp::SetNotification {
            handler,
            notification,
        } => crate::sched::set_irq_notification(handler, notification)?,
        IrqOp::MsiMessage {
            handler,
            irq,
            device,
            requester,
            space,
        } => {
            let (address, data) =
                crate::arch::bind_msi_line(irq, requester).ok_or(Error::InvalidArgument)?;
            // aarch64: the doorbell, mapped into the device's IoSpace; the
            // device writes its IPA (or an IOVA its stage 1 maps there).
            #[cfg(target_arch = "aarch64")]
            let address =
                crate::io_space::map_msi_doorbell(space.ok_or(Error::DeviceNotAttached)?, address)?;
            #[cfg(not(target_arch = "aarch64"))]
            let _ = space;
            crate::sched::set_msi_device(handler, device, u32::from(requester))?;
            return Ok(Reply {
                mrs: [address, u64::from(data), 0, 0, 0, 0, 0, 0],
                length: 2,
            });
        }
        IrqOp::Ack { handler } => crate::sched::ack_irq(handler)?,
    }
    Ok(Reply::EMPTY)
}
